#include "core/error.h"
#include "kv/dense_cache.h"
#include "kv/kv_cache.h"

namespace longkv {

std::unique_ptr<KvCache> make_kv_cache(const std::string& mode, const KvShape& shape, ThreadPool& pool) {
  if (mode == "f32") return std::make_unique<DenseKvCacheF32>(shape, pool);
  if (mode == "f16") return std::make_unique<DenseKvCacheF16>(shape, pool);
  fail("unknown KV cache mode '%s' (accepted: f32, f16)", mode.c_str());
}

double kv_mode_bytes_per_token(const std::string& mode, const KvShape& shape) {
  if (mode == "f32") return 8.0 * shape.kv_dim();
  if (mode == "f16") return 4.0 * shape.kv_dim();
  fail("unknown KV cache mode '%s' (accepted: f32, f16)", mode.c_str());
}

}  // namespace longkv

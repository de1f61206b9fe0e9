#include "core/error.h"
#include "kv/dense_cache.h"
#include "kv/kv_cache.h"
#include "kv/kv_mode.h"
#include "kv/quant_cache.h"
#include "kv/rotated_cache.h"

namespace longkv {

std::unique_ptr<KvCache> make_kv_cache(const std::string& mode, const KvShape& shape, ThreadPool& pool) {
  const KvMode m = parse_kv_mode(mode);
  switch (m.kind) {
    case KvKind::f32: return std::make_unique<DenseKvCacheF32>(shape, pool);
    case KvKind::f16: return std::make_unique<DenseKvCacheF16>(shape, pool);
    case KvKind::quant: {
      if (!m.rotate) return std::make_unique<QuantKvCache>(m, shape, pool);
      KvMode inner = m;
      inner.rotate = false;
      return std::make_unique<RotatedKvCache>(std::make_unique<QuantKvCache>(inner, shape, pool));
    }
  }
  fail("KV mode '%s' is not implemented yet", m.to_string().c_str());
}

double kv_mode_bytes_per_token(const std::string& mode, const KvShape& shape) {
  const KvMode m = parse_kv_mode(mode);
  switch (m.kind) {
    case KvKind::f32: return 8.0 * shape.kv_dim();
    case KvKind::f16: return 4.0 * shape.kv_dim();
    // Steady state: codes + fp16 scales and zeros; the fp16 sinks and window
    // are a fixed overhead that footprint() counts on a real cache.
    case KvKind::quant: return QuantKvCache::steady_bytes_per_token(m, shape);
  }
  fail("KV mode '%s' is not implemented yet", m.to_string().c_str());
}

KvFootprint total_footprint(const std::vector<std::unique_ptr<KvCache>>& caches) {
  KvFootprint total;
  for (const auto& c : caches) total.add_layer(c->footprint());
  return total;
}

}  // namespace longkv

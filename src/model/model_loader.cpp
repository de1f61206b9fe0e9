#include "model/model_loader.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "formats/gguf.h"
#include "model/loader_common.h"

namespace longkv {

namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void check_range(int64_t v, int64_t lo, int64_t hi, const std::string& src, const char* what) {
  LONGKV_CHECK(v >= lo && v <= hi, "%s: %s = %lld is out of range [%lld, %lld]", src.c_str(), what,
               static_cast<long long>(v), static_cast<long long>(lo), static_cast<long long>(hi));
}

}  // namespace

void validate_model_config(const ModelConfig& c, const std::string& src) {
  // Bounds are far above any published model yet small enough that products
  // like n_layers * ffn_dim * dim fit easily in 64 bits.
  check_range(c.n_vocab, 1, 1 << 24, src, "n_vocab");
  check_range(c.dim, 1, 1 << 16, src, "dim");
  check_range(c.n_layers, 1, 4096, src, "n_layers");
  check_range(c.n_heads, 1, 4096, src, "n_heads");
  check_range(c.n_kv_heads, 1, c.n_heads, src, "n_kv_heads");
  LONGKV_CHECK(c.n_heads % c.n_kv_heads == 0, "%s: n_kv_heads %d does not divide n_heads %d",
               src.c_str(), c.n_kv_heads, c.n_heads);
  check_range(c.head_dim, 2, 1024, src, "head_dim");
  LONGKV_CHECK(c.head_dim % 2 == 0, "%s: head_dim %d is odd (RoPE rotates pairs)", src.c_str(),
               c.head_dim);
  check_range(c.rope_dim, 2, c.head_dim, src, "rope_dim");
  LONGKV_CHECK(c.rope_dim % 2 == 0, "%s: rope_dim %d is odd", src.c_str(), c.rope_dim);
  check_range(static_cast<int64_t>(c.n_heads) * c.head_dim, 1, 1 << 18, src, "n_heads * head_dim");
  check_range(c.ffn_dim, 1, 1 << 20, src, "ffn_dim");
  check_range(c.ctx_len, 1, 1 << 24, src, "ctx_len");
  LONGKV_CHECK(std::isfinite(c.rms_eps) && c.rms_eps > 0 && c.rms_eps < 1,
               "%s: rms_eps %g is not in (0, 1)", src.c_str(), c.rms_eps);
  LONGKV_CHECK(std::isfinite(c.rope_base) && c.rope_base > 1,
               "%s: rope_base %g is not a finite value above 1", src.c_str(), c.rope_base);
  const size_t n_factors = c.rope_freq_factors.size();
  LONGKV_CHECK(n_factors == 0 || n_factors == static_cast<size_t>(c.rope_dim / 2),
               "%s: %zu RoPE frequency factors for rope_dim %d (expected %d)", src.c_str(), n_factors, c.rope_dim,
               c.rope_dim / 2);
  for (size_t i = 0; i < n_factors; ++i) {
    const float f = c.rope_freq_factors[i];
    LONGKV_CHECK(std::isfinite(f) && f > 0, "%s: RoPE frequency factor %zu is %g (must be finite and > 0)",
                 src.c_str(), i, f);
  }
}

std::vector<float> weight_to_floats(WeightType t, const uint8_t* data, int64_t n) {
  const WeightTypeTraits& tr = weight_traits(t);
  LONGKV_ASSERT(n % tr.block_size == 0);
  std::vector<float> out(static_cast<size_t>(n));
  tr.to_float_ref(data, out.data(), n);
  return out;
}

std::string path_stem(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && !p.has_filename() && p.has_parent_path() && p != p.parent_path()) {
    p = p.parent_path();  // "dir/" -> "dir"
  }
  return p.stem().string();
}

int checked_int(int64_t v, const std::string& src, const char* what) {
  LONGKV_CHECK(v >= INT_MIN && v <= INT_MAX, "%s: %s = %lld does not fit in 32 bits", src.c_str(),
               what, static_cast<long long>(v));
  return static_cast<int>(v);
}

LoadedModel load_model(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec) || ends_with(path, ".safetensors") ||
      ends_with(path, ".json")) {
    return load_safetensors_model(path);
  }
  std::ifstream f(path, std::ios::binary);
  LONGKV_CHECK(f.good(), "%s: cannot open: %s", path.c_str(), std::strerror(errno));
  unsigned char head[9] = {};
  f.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = f.gcount();
  if (got >= 4 && std::memcmp(head, "GGUF", 4) == 0) return load_gguf_model(GgufFile::open(path));
  // A safetensors file under another name: small u64 header length, then '{'.
  if (got == 9 && head[8] == '{' && head[7] == 0 && head[6] == 0 && head[5] == 0) {
    return load_safetensors_model(path);
  }
  return load_llama2c_model(path);
}

}  // namespace longkv

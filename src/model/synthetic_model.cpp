#include "model/synthetic_model.h"

#include <cmath>
#include <cstring>
#include <memory>

#include "core/error.h"

namespace longkv {

namespace {

struct Shape {
  const char* name;
  int dim, n_layers, n_heads, n_kv_heads, head_dim, ffn, vocab, ctx;
  float rope_base;
  const char* arch;
};

constexpr Shape kShapes[] = {
    {"llama3-8b", 4096, 32, 32, 8, 128, 14336, 128256, 8192, 500000.0f, "llama"},
    {"llama2-7b", 4096, 32, 32, 32, 128, 11008, 32000, 4096, 10000.0f, "llama"},
    {"mistral-7b", 4096, 32, 32, 8, 128, 14336, 32000, 32768, 1000000.0f, "llama"},
    {"qwen2-7b", 3584, 28, 28, 4, 128, 18944, 152064, 32768, 1000000.0f, "qwen2"},
    {"llama-1b", 2048, 16, 32, 8, 64, 8192, 128256, 131072, 500000.0f, "llama"},
    {"tiny", 256, 2, 8, 2, 32, 512, 512, 2048, 10000.0f, "llama"},
};

// xorshift64*: fast enough to fill gigabytes in seconds.
struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f; }
};

// Fills rows [r0, r1) of a matrix with random values of a plausible scale.
void fill_rows(WeightType t, uint8_t* data, int64_t cols, int64_t r0, int64_t r1, float scale, uint64_t seed) {
  Rng rng{seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(r0) + 1};
  const size_t rb = row_bytes(t, cols);
  std::vector<float> tmp;
  for (int64_t r = r0; r < r1; ++r) {
    uint8_t* row = data + rb * static_cast<size_t>(r);
    switch (t) {
      case WeightType::Q8_0: {
        auto* b = reinterpret_cast<BlockQ8_0*>(row);
        for (int64_t i = 0; i < cols / kQK; ++i) {
          b[i].d = f32_to_f16(scale / 127.0f);
          for (int j = 0; j < kQK; j += 8) {
            const uint64_t x = rng.next();
            std::memcpy(b[i].qs + j, &x, 8);
          }
        }
        break;
      }
      case WeightType::Q4_0: {
        auto* b = reinterpret_cast<BlockQ4_0*>(row);
        for (int64_t i = 0; i < cols / kQK; ++i) {
          b[i].d = f32_to_f16(scale / 8.0f);
          const uint64_t x = rng.next(), y = rng.next();
          std::memcpy(b[i].qs, &x, 8);
          std::memcpy(b[i].qs + 8, &y, 8);
        }
        break;
      }
      default: {
        tmp.resize(cols);
        for (auto& v : tmp) v = rng.uniform() * scale;
        if (t == WeightType::F32) {
          std::memcpy(row, tmp.data(), rb);
        } else {
          const FromFloatFn tr = weight_traits(t).from_float_ref;
          LONGKV_CHECK(tr, "cannot build synthetic weights of type %s", weight_traits(t).name);
          tr(tmp.data(), row, cols);
        }
      }
    }
  }
}

}  // namespace

std::vector<std::string> synthetic_shape_names() {
  std::vector<std::string> v;
  for (const auto& s : kShapes) v.push_back(s.name);
  return v;
}

ModelConfig synthetic_config(const std::string& shape) {
  for (const auto& s : kShapes) {
    if (shape != s.name) continue;
    ModelConfig c;
    c.arch = s.arch;
    c.name = std::string("synthetic-") + s.name;
    c.n_vocab = s.vocab;
    c.dim = s.dim;
    c.n_layers = s.n_layers;
    c.n_heads = s.n_heads;
    c.n_kv_heads = s.n_kv_heads;
    c.head_dim = s.head_dim;
    c.rope_dim = s.head_dim;
    c.ffn_dim = s.ffn;
    c.ctx_len = s.ctx;
    c.rope_base = s.rope_base;
    return c;
  }
  std::string names;
  for (const auto& s : kShapes) names += std::string(names.empty() ? "" : ", ") + s.name;
  fail("unknown synthetic model '%s' (known: %s)", shape.c_str(), names.c_str());
}

ModelWeights make_synthetic_model(const ModelConfig& cfg, WeightType wtype, uint64_t seed, ThreadPool& pool) {
  return make_synthetic_model(cfg, WeightMix{wtype, false, weight_traits(wtype).name}, seed, pool);
}

ModelWeights make_synthetic_model(const ModelConfig& cfg, const WeightMix& wt, uint64_t seed,
                                  ThreadPool& pool) {
  ModelWeights w;
  w.cfg = cfg;
  w.source = "synthetic";
  uint64_t salt = seed;
  auto matrix = [&](int64_t rows, int64_t cols, MatrixRole role, int layer = 0) {
    const WeightType wtype = mix_matrix_type(wt, role, layer, cfg.n_layers);
    LONGKV_CHECK(cols % weight_traits(wtype).block_size == 0, "%s rows of %lld do not split into %s blocks",
                 cfg.name.c_str(), static_cast<long long>(cols), weight_traits(wtype).name);
    WeightView v;
    v.type = wtype;
    v.rows = rows;
    v.cols = cols;
    const size_t bytes = v.nbytes();
    std::shared_ptr<uint8_t[]> buf(new uint8_t[bytes]);
    const float scale = 1.0f / std::sqrt(static_cast<float>(cols));
    const uint64_t s = ++salt;
    pool.parallel_for(rows, [&](int64_t r0, int64_t r1, int) { fill_rows(wtype, buf.get(), cols, r0, r1, scale, s); },
                      64);
    v.data = buf.get();
    w.storage.push_back(std::shared_ptr<const void>(buf, buf.get()));
    return v;
  };
  w.tok_embd = matrix(cfg.n_vocab, cfg.dim, MatrixRole::token_embd);
  w.output = matrix(cfg.n_vocab, cfg.dim, MatrixRole::output);
  w.output_norm.assign(cfg.dim, 1.0f);
  for (int l = 0; l < cfg.n_layers; ++l) {
    LayerWeights L;
    L.attn_norm.assign(cfg.dim, 1.0f);
    L.ffn_norm.assign(cfg.dim, 1.0f);
    L.wq = matrix(cfg.q_dim(), cfg.dim, MatrixRole::attn_q, l);
    L.wk = matrix(cfg.kv_dim(), cfg.dim, MatrixRole::attn_k, l);
    L.wv = matrix(cfg.kv_dim(), cfg.dim, MatrixRole::attn_v, l);
    L.wo = matrix(cfg.dim, cfg.q_dim(), MatrixRole::attn_output, l);
    L.w_gate = matrix(cfg.ffn_dim, cfg.dim, MatrixRole::ffn_gate, l);
    L.w_up = matrix(cfg.ffn_dim, cfg.dim, MatrixRole::ffn_up, l);
    L.w_down = matrix(cfg.dim, cfg.ffn_dim, MatrixRole::ffn_down, l);
    if (cfg.arch == "qwen2") {
      L.bq.assign(cfg.q_dim(), 0.0f);
      L.bk.assign(cfg.kv_dim(), 0.0f);
      L.bv.assign(cfg.kv_dim(), 0.0f);
    }
    w.layers.push_back(std::move(L));
  }
  return w;
}

}  // namespace longkv

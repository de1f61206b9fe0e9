// llama2.c legacy (version 0) checkpoint -> ModelWeights. The file is seven
// int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len) followed by fp32 arrays, all row-major [out][in], so every
// matrix is a zero-copy view into the mapping. A negative vocab_size means
// the classifier is stored separately at the end of the file.
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/loader_common.h"
#include "model/model_loader.h"

namespace longkv {

namespace {

constexpr size_t kHeaderBytes = 7 * sizeof(int32_t);
// Newer llama2.c exports (version >= 1) start with this magic instead.
constexpr uint32_t kLlama2cMagic = 0x616b3432;  // "ak42"

// Walks the fp32 arrays in file order.
class FloatCursor {
 public:
  explicit FloatCursor(const uint8_t* p) : p_(p) {}
  const uint8_t* take(uint64_t n_floats) {
    const uint8_t* at = p_;
    p_ += n_floats * sizeof(float);
    return at;
  }

 private:
  const uint8_t* p_;
};

WeightView f32_view(const uint8_t* data, int64_t rows, int64_t cols) {
  WeightView v;
  v.type = WeightType::F32;
  v.rows = rows;
  v.cols = cols;
  v.data = data;
  return v;
}

std::vector<float> f32_vec(const uint8_t* data, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  std::memcpy(v.data(), data, v.size() * sizeof(float));
  return v;
}

}  // namespace

LoadedModel load_llama2c_model(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path);
  const char* nm = path.c_str();
  const uint64_t size = file->size();
  LONGKV_CHECK(size >= kHeaderBytes, "%s: file has %llu bytes, too small for a llama2.c header",
               nm, static_cast<unsigned long long>(size));
  int32_t h[7];
  std::memcpy(h, file->data(), sizeof h);
  LONGKV_CHECK(static_cast<uint32_t>(h[0]) != kLlama2cMagic,
               "%s: llama2.c version %d export is not supported (only legacy version 0)", nm, h[1]);

  ModelConfig c;
  c.arch = "llama";
  c.name = path_stem(path);
  c.dim = h[0];
  c.ffn_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  const bool shared_classifier = h[5] > 0;
  LONGKV_CHECK(h[5] != 0 && h[5] != INT32_MIN, "%s: vocab_size %d is invalid", nm, h[5]);
  c.n_vocab = h[5] > 0 ? h[5] : -h[5];
  c.ctx_len = h[6];
  LONGKV_CHECK(c.dim > 0 && c.n_heads > 0 && c.dim % c.n_heads == 0,
               "%s: n_heads %d does not divide dim %d", nm, c.n_heads, c.dim);
  c.head_dim = c.dim / c.n_heads;
  c.rope_dim = c.head_dim;
  c.rope = RopeStyle::interleaved;
  c.rope_base = 10000.0f;
  c.rms_eps = 1e-5f;
  validate_model_config(c, path);

  // Sizes in floats; validate_model_config bounds every factor, so none of
  // these products can overflow 64 bits.
  const uint64_t D = static_cast<uint64_t>(c.dim), H = static_cast<uint64_t>(c.ffn_dim);
  const uint64_t L = static_cast<uint64_t>(c.n_layers), V = static_cast<uint64_t>(c.n_vocab);
  const uint64_t KV = static_cast<uint64_t>(c.kv_dim());
  const uint64_t body = V * D + L * (2 * D + 2 * D * D + 2 * KV * D + 3 * H * D) + D;
  const uint64_t rope_tables = static_cast<uint64_t>(c.ctx_len) * static_cast<uint64_t>(c.head_dim);
  const uint64_t classifier = shared_classifier ? 0 : V * D;
  const uint64_t with_tables = kHeaderBytes + 4 * (body + rope_tables + classifier);
  const uint64_t without_tables = kHeaderBytes + 4 * (body + classifier);
  LONGKV_CHECK(size == with_tables || size == without_tables,
               "%s: file has %llu bytes, header implies %llu", nm,
               static_cast<unsigned long long>(size), static_cast<unsigned long long>(with_tables));

  LoadedModel out;
  ModelWeights& w = out.weights;
  w.cfg = c;
  w.source = "llama2c";
  w.storage.push_back(file);
  FloatCursor cur(file->data() + kHeaderBytes);
  w.tok_embd = f32_view(cur.take(V * D), c.n_vocab, c.dim);
  w.layers.resize(static_cast<size_t>(c.n_layers));
  // Each array holds all layers back to back.
  for (auto& l : w.layers) l.attn_norm = f32_vec(cur.take(D), c.dim);
  for (auto& l : w.layers) l.wq = f32_view(cur.take(D * D), c.dim, c.dim);
  for (auto& l : w.layers) l.wk = f32_view(cur.take(KV * D), c.kv_dim(), c.dim);
  for (auto& l : w.layers) l.wv = f32_view(cur.take(KV * D), c.kv_dim(), c.dim);
  for (auto& l : w.layers) l.wo = f32_view(cur.take(D * D), c.dim, c.dim);
  for (auto& l : w.layers) l.ffn_norm = f32_vec(cur.take(D), c.dim);
  for (auto& l : w.layers) l.w_gate = f32_view(cur.take(H * D), c.ffn_dim, c.dim);  // w1
  for (auto& l : w.layers) l.w_down = f32_view(cur.take(D * H), c.dim, c.ffn_dim);  // w2
  for (auto& l : w.layers) l.w_up = f32_view(cur.take(H * D), c.ffn_dim, c.dim);    // w3
  w.output_norm = f32_vec(cur.take(D), c.dim);
  if (size == with_tables) cur.take(rope_tables);  // legacy freq_cis tables, recomputed at run time
  if (shared_classifier) {
    w.output = w.tok_embd;
    w.tied_output = true;
  } else {
    w.output = f32_view(cur.take(V * D), c.n_vocab, c.dim);
  }
  return out;
}

}  // namespace longkv

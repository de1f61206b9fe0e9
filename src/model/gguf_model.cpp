// GGUF -> ModelWeights: configuration from {arch}.* metadata, matrices as
// zero-copy views into the GgufFile's mapping.
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/gguf.h"
#include "model/loader_common.h"
#include "model/model_loader.h"

namespace longkv {

namespace {

std::string ne_string(const std::vector<uint64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(ne[i]);
  }
  return s + "]";
}

// ggml pads every shape to 4 dims with 1s, so [n] and [n, 1] are the same.
bool same_shape(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  for (size_t i = 0; i < 4; ++i) {
    const uint64_t x = i < a.size() ? a[i] : 1;
    const uint64_t y = i < b.size() ? b[i] : 1;
    if (x != y) return false;
  }
  return a.size() <= 4 && b.size() <= 4;
}

// The weight types a model may use, by their GGUF names ("F32, F16, ...").
std::string supported_type_names() {
  std::string out;
  for (uint32_t id = 0; id < 64; ++id) {
    if (weight_type_traits(id) == nullptr) continue;
    out += (out.empty() ? "" : ", ") + std::string(ggml_type_name(id));
  }
  return out;
}

class GgufModelReader {
 public:
  explicit GgufModelReader(const GgufFile& g) : g_(g), name_(g.name()) {}

  // A tensor with the expected shape (GGUF order: ne[0] = columns) and a
  // type we can compute with; nullptr if optional and absent.
  const GgufTensorInfo* tensor(const std::string& name, const std::vector<uint64_t>& ne,
                               bool required = true) const {
    const GgufTensorInfo* t = g_.find_tensor(name);
    if (!t) {
      LONGKV_CHECK(!required, "%s: missing tensor '%s'", name_.c_str(), name.c_str());
      return nullptr;
    }
    LONGKV_CHECK(same_shape(t->ne, ne), "%s: tensor '%s' has shape %s, expected %s", name_.c_str(),
                 name.c_str(), ne_string(t->ne).c_str(), ne_string(ne).c_str());
    LONGKV_CHECK(weight_type_traits(t->type) != nullptr,
                 "%s: tensor '%s' has unsupported type %s (longkv computes with %s; a Q2_K, Q3_K_M, Q4_K_M, "
                 "Q5_K_M, Q6_K, Q8_0 or IQ4_XS file of the model loads)",
                 name_.c_str(), name.c_str(), ggml_type_name(t->type), supported_type_names().c_str());
    return t;
  }

  WeightView matrix(const std::string& name, int64_t rows, int64_t cols) const {
    const GgufTensorInfo* t =
        tensor(name, {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)});
    WeightView v;
    v.type = static_cast<WeightType>(t->type);
    v.rows = rows;
    v.cols = cols;
    v.data = t->data;
    // GgufFile validated nbytes against the type's block geometry.
    LONGKV_ASSERT(v.nbytes() == t->nbytes);
    return v;
  }

  std::vector<float> vec(const std::string& name, int64_t n, bool required = true) const {
    const GgufTensorInfo* t = tensor(name, {static_cast<uint64_t>(n)}, required);
    if (!t) return {};
    const WeightTypeTraits* tr = weight_type_traits(t->type);
    LONGKV_CHECK(n % tr->block_size == 0, "%s: tensor '%s' of %lld elements is not whole %s blocks",
                 name_.c_str(), name.c_str(), static_cast<long long>(n), tr->name);
    return weight_to_floats(tr->type, t->data, n);
  }

 private:
  const GgufFile& g_;
  const std::string& name_;
};

}  // namespace

LoadedModel load_gguf_model(std::shared_ptr<GgufFile> gguf) {
  LONGKV_ASSERT(gguf != nullptr);
  const GgufFile& g = *gguf;
  const std::string& src = g.name();

  const std::string arch = g.get("general.architecture").as_string("general.architecture");
  LONGKV_CHECK(arch == "llama" || arch == "mistral" || arch == "qwen2",
               "%s: unsupported architecture '%s' (supported: llama, mistral, qwen2)", src.c_str(),
               arch.c_str());
  const std::string p = arch + ".";
  auto key_int = [&](const char* k) { return checked_int(g.get_int(p + k), src, (p + k).c_str()); };
  auto key_int_def = [&](const char* k, int64_t def) {
    return checked_int(g.get_int(p + k, def), src, (p + k).c_str());
  };

  // RoPE scaling: "linear" divides every frequency by rope.scaling.factor;
  // Llama 3.1's per-frequency scaling comes as the tensor rope_freqs.weight
  // (below) with the type left "none", as llama.cpp's converter writes it.
  // YaRN and LongRoPE also change attention's temperature: not supported.
  const std::string scaling = g.get_string(p + "rope.scaling.type", "none");
  LONGKV_CHECK(scaling == "none" || scaling == "linear",
               "%s: %srope.scaling.type '%s' is not supported (none and linear are)", src.c_str(), p.c_str(),
               scaling.c_str());
  const double linear_factor = scaling == "linear" ? g.get_float(p + "rope.scaling.factor") : 1.0;
  LONGKV_CHECK(std::isfinite(linear_factor) && linear_factor > 0, "%s: %srope.scaling.factor %g must be > 0",
               src.c_str(), p.c_str(), linear_factor);

  ModelConfig c;
  c.arch = arch;
  c.name = g.get_string("general.name", "");
  if (c.name.empty()) c.name = path_stem(src);
  c.dim = key_int("embedding_length");
  c.n_layers = key_int("block_count");
  c.ffn_dim = key_int("feed_forward_length");
  c.n_heads = key_int("attention.head_count");
  c.n_kv_heads = key_int_def("attention.head_count_kv", c.n_heads);
  c.rms_eps = static_cast<float>(g.get_float(p + "attention.layer_norm_rms_epsilon"));
  c.rope_base = static_cast<float>(g.get_float(p + "rope.freq_base", 10000.0));
  c.ctx_len = key_int("context_length");
  LONGKV_CHECK(c.n_heads > 0 && c.dim > 0, "%s: %sembedding_length %d / attention.head_count %d "
               "must be positive", src.c_str(), p.c_str(), c.dim, c.n_heads);
  const bool has_key_length = g.find(p + "attention.key_length") != nullptr;
  LONGKV_CHECK(has_key_length || c.dim % c.n_heads == 0,
               "%s: attention.head_count %d does not divide embedding_length %d", src.c_str(),
               c.n_heads, c.dim);
  c.head_dim = key_int_def("attention.key_length", c.dim / c.n_heads);
  const int value_length = key_int_def("attention.value_length", c.head_dim);
  LONGKV_CHECK(value_length == c.head_dim,
               "%s: %sattention.value_length %d differs from key_length %d (not supported)",
               src.c_str(), p.c_str(), value_length, c.head_dim);
  c.rope_dim = key_int_def("rope.dimension_count", c.head_dim);
  c.rope = arch == "qwen2" ? RopeStyle::neox : RopeStyle::interleaved;

  // The vocabulary size comes from the embedding; check it before trusting it.
  const GgufTensorInfo* embd = g.find_tensor("token_embd.weight");
  LONGKV_CHECK(embd, "%s: missing tensor 'token_embd.weight'", src.c_str());
  LONGKV_CHECK(embd->ne.size() == 2, "%s: tensor 'token_embd.weight' has shape %s, expected 2 dims",
               src.c_str(), ne_string(embd->ne).c_str());
  LONGKV_CHECK(embd->ne[1] <= (1u << 24), "%s: tensor 'token_embd.weight' has %llu rows (too many)",
               src.c_str(), static_cast<unsigned long long>(embd->ne[1]));
  c.n_vocab = static_cast<int>(embd->ne[1]);
  const int64_t vocab_key = g.get_int(p + "vocab_size", c.n_vocab);
  LONGKV_CHECK(vocab_key == c.n_vocab, "%s: %svocab_size %lld disagrees with token_embd rows %d",
               src.c_str(), p.c_str(), static_cast<long long>(vocab_key), c.n_vocab);
  validate_model_config(c, src);

  GgufModelReader r(g);
  LoadedModel out;
  ModelWeights& w = out.weights;
  w.cfg = c;
  w.source = "gguf";
  std::vector<float>& rf = w.cfg.rope_freq_factors;
  rf = r.vec("rope_freqs.weight", c.rope_dim / 2, false);
  if (!rf.empty()) w.cfg.rope_scaling = "rope_freqs";
  if (scaling == "linear") {
    if (rf.empty()) rf.assign(static_cast<size_t>(c.rope_dim / 2), 1.0f);
    for (float& f : rf) f = static_cast<float>(f * linear_factor);
    w.cfg.rope_scaling = strprintf("linear x%g%s", linear_factor, w.cfg.rope_scaling == "none" ? "" : " + rope_freqs");
  }
  validate_model_config(w.cfg, src);  // the factors' count and values
  w.storage.push_back(gguf);
  w.tok_embd = r.matrix("token_embd.weight", c.n_vocab, c.dim);
  w.output_norm = r.vec("output_norm.weight", c.dim);
  if (g.find_tensor("output.weight")) {
    w.output = r.matrix("output.weight", c.n_vocab, c.dim);
  } else {
    w.output = w.tok_embd;
    w.tied_output = true;
  }
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    l.attn_norm = r.vec(b + "attn_norm.weight", c.dim);
    l.wq = r.matrix(b + "attn_q.weight", c.q_dim(), c.dim);
    l.wk = r.matrix(b + "attn_k.weight", c.kv_dim(), c.dim);
    l.wv = r.matrix(b + "attn_v.weight", c.kv_dim(), c.dim);
    l.wo = r.matrix(b + "attn_output.weight", c.dim, c.q_dim());
    l.bq = r.vec(b + "attn_q.bias", c.q_dim(), false);
    l.bk = r.vec(b + "attn_k.bias", c.kv_dim(), false);
    l.bv = r.vec(b + "attn_v.bias", c.kv_dim(), false);
    l.ffn_norm = r.vec(b + "ffn_norm.weight", c.dim);
    l.w_gate = r.matrix(b + "ffn_gate.weight", c.ffn_dim, c.dim);
    l.w_up = r.matrix(b + "ffn_up.weight", c.ffn_dim, c.dim);
    l.w_down = r.matrix(b + "ffn_down.weight", c.dim, c.ffn_dim);
    LONGKV_CHECK(!g.find_tensor(b + "attn_output.bias"),
                 "%s: tensor '%sattn_output.bias' is not supported", src.c_str(), b.c_str());
  }

  if (g.find("tokenizer.ggml.tokens")) {
    out.vocab = vocab_from_gguf(g);
    LONGKV_CHECK(out.vocab->size() == c.n_vocab,
                 "%s: tokenizer.ggml.tokens has %d entries but token_embd has %d rows", src.c_str(),
                 out.vocab->size(), c.n_vocab);
  }
  return out;
}

}  // namespace longkv

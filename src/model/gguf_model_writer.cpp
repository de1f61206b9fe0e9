// ModelWeights + Vocab -> GGUF v3, the layout llama.cpp's converter writes.
#include <cstring>
#include <string>
#include <utility>

#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "formats/gguf.h"
#include "model/loader_common.h"
#include "model/model_loader.h"
#include "model/weight_mix.h"

namespace longkv {

namespace {

// RoPE convention a GGUF of this architecture is read with (llama.cpp:
// LLAMA_ROPE_TYPE_NORM for llama/mistral, NEOX for qwen2).
RopeStyle gguf_rope_style(const std::string& arch) {
  return arch == "qwen2" ? RopeStyle::neox : RopeStyle::interleaved;
}

// Reorders the rows of each head between the two RoPE pairings. For pair p
// of a head of hd rows, neox keeps the pair at rows (p, p + hd/2) and
// interleaved at rows (2p, 2p + 1); `row_bytes` lets the same code move
// quantized rows, float rows and bias entries.
std::vector<uint8_t> permute_heads(const std::vector<uint8_t>& src, int n_heads, int head_dim,
                                   size_t row_bytes, RopeStyle from) {
  LONGKV_ASSERT(src.size() == static_cast<size_t>(n_heads) * head_dim * row_bytes);
  std::vector<uint8_t> dst(src.size());
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    for (int p = 0; p < half; ++p) {
      for (int j = 0; j < 2; ++j) {
        const size_t neox_row = static_cast<size_t>(h) * head_dim + j * half + p;
        const size_t inter_row = static_cast<size_t>(h) * head_dim + 2 * p + j;
        const size_t s = from == RopeStyle::neox ? neox_row : inter_row;
        const size_t d = from == RopeStyle::neox ? inter_row : neox_row;
        std::memcpy(dst.data() + d * row_bytes, src.data() + s * row_bytes, row_bytes);
      }
    }
  }
  return dst;
}

class ModelGgufWriter {
 public:
  ModelGgufWriter(const ModelWeights& w, const std::string& path, std::optional<WeightMix> out_mix,
                  const GgufSaveWork& work)
      : w_(w), path_(path), out_mix_(std::move(out_mix)), work_(work) {
    permute_ = w.cfg.rope != gguf_rope_style(w.cfg.arch);
    total_ = w.tok_embd.rows * w.tok_embd.cols + (w.tied_output ? 0 : w.output.rows * w.output.cols);
    for (const LayerWeights& l : w.layers)
      for (const WeightView* v : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) total_ += v->rows * v->cols;
  }

  GgufWriter& gguf() { return out_; }
  bool quantized() const { return quantized_; }

  // `heads` > 0 marks wq/wk, whose rows are reordered when the RoPE
  // convention changes. `role` and `layer` pick the format of a mix.
  void matrix(const std::string& name, const WeightView& v, int64_t rows, int64_t cols, MatrixRole role,
              int layer = 0, int heads = 0) {
    LONGKV_CHECK(v.data != nullptr && v.rows == rows && v.cols == cols,
                 "%s: weight '%s' is [%lld x %lld], the config implies [%lld x %lld]",
                 path_.c_str(), name.c_str(), static_cast<long long>(v.rows),
                 static_cast<long long>(v.cols), static_cast<long long>(rows),
                 static_cast<long long>(cols));
    WeightType type = v.type;
    std::vector<uint8_t> bytes;
    const WeightType to = out_mix_ ? mix_matrix_type(*out_mix_, role, layer, w_.cfg.n_layers) : v.type;
    if (to != v.type && convertible(name, v, to)) {
      type = to;
      bytes = convert(v, type, work_.pool);
    } else {
      bytes.assign(v.data, v.data + v.nbytes());
    }
    if (heads > 0 && permute_) {
      bytes = permute_heads(bytes, heads, w_.cfg.head_dim, row_bytes(type, v.cols), w_.cfg.rope);
    }
    const auto& tr = weight_traits(type);
    if (tr.block_size > 1) quantized_ = true;
    out_.add_tensor(name, {static_cast<uint64_t>(v.cols), static_cast<uint64_t>(v.rows)},
                    static_cast<uint32_t>(type), bytes);
    done_ += v.rows * v.cols;
    if (work_.progress) work_.progress(done_, total_);
  }

  void vec(const std::string& name, const std::vector<float>& v, int64_t n, int heads = 0) {
    LONGKV_CHECK(static_cast<int64_t>(v.size()) == n, "%s: vector '%s' has %zu entries, expected %lld",
                 path_.c_str(), name.c_str(), v.size(), static_cast<long long>(n));
    std::vector<uint8_t> bytes(v.size() * sizeof(float));
    std::memcpy(bytes.data(), v.data(), bytes.size());
    if (heads > 0 && permute_) {
      bytes = permute_heads(bytes, heads, w_.cfg.head_dim, sizeof(float), w_.cfg.rope);
    }
    out_.add_tensor(name, {static_cast<uint64_t>(v.size())}, static_cast<uint32_t>(WeightType::F32),
                    bytes);
  }

 private:
  bool convertible(const std::string& name, const WeightView& v, WeightType to) const {
    const auto& tr = weight_traits(to);
    if (tr.from_float_ref == nullptr) {
      log_warn("%s: cannot produce %s; keeping '%s' as %s", path_.c_str(), tr.name, name.c_str(),
               weight_traits(v.type).name);
      return false;
    }
    if (v.cols % tr.block_size != 0) {
      log_warn("%s: '%s' rows of %lld are not whole %s blocks of %d; keeping %s", path_.c_str(),
               name.c_str(), static_cast<long long>(v.cols), tr.name, tr.block_size,
               weight_traits(v.type).name);
      return false;
    }
    return true;
  }

  // Row by row through float, so only one row a thread is ever expanded;
  // rows are independent, so the bytes are the same on any pool.
  static std::vector<uint8_t> convert(const WeightView& v, WeightType to, ThreadPool* pool) {
    const auto& src = weight_traits(v.type);
    const auto& dst = weight_traits(to);
    const size_t out_row = row_bytes(to, v.cols);
    std::vector<uint8_t> bytes(out_row * static_cast<size_t>(v.rows));
    auto rows = [&](int64_t r0, int64_t r1, int) {
      std::vector<float> row(static_cast<size_t>(v.cols));
      for (int64_t r = r0; r < r1; ++r) {
        src.to_float_ref(v.row(r), row.data(), v.cols);
        dst.from_float_ref(row.data(), bytes.data() + out_row * static_cast<size_t>(r), v.cols);
      }
    };
    if (pool) pool->parallel_for(v.rows, rows, 16);
    else rows(0, v.rows, 0);
    return bytes;
  }

  const ModelWeights& w_;
  const std::string& path_;
  std::optional<WeightMix> out_mix_;
  GgufSaveWork work_;
  int64_t total_ = 0, done_ = 0;  // weights of every matrix / of those written
  bool permute_ = false;
  bool quantized_ = false;
  GgufWriter out_;
};

}  // namespace

void save_model_gguf(const ModelWeights& w, const Vocab& vocab, const std::string& path,
                     std::optional<WeightType> out_type) {
  std::optional<WeightMix> mix;
  if (out_type) mix = WeightMix{*out_type, false, weight_traits(*out_type).name};
  save_model_gguf(w, vocab, path, mix);
}

void save_model_gguf(const ModelWeights& w, const Vocab& vocab, const std::string& path,
                     const std::optional<WeightMix>& out_mix) {
  save_model_gguf(w, vocab, path, out_mix, GgufSaveWork{});
}

void save_model_gguf(const ModelWeights& w, const Vocab& vocab, const std::string& path,
                     const std::optional<WeightMix>& out_mix, const GgufSaveWork& work) {
  const ModelConfig& c = w.cfg;
  LONGKV_CHECK(c.arch == "llama" || c.arch == "mistral" || c.arch == "qwen2",
               "%s: cannot write architecture '%s' (supported: llama, mistral, qwen2)", path.c_str(),
               c.arch.c_str());
  validate_model_config(c, path);
  LONGKV_CHECK(w.layers.size() == static_cast<size_t>(c.n_layers),
               "%s: model has %zu layers but its config says %d", path.c_str(), w.layers.size(),
               c.n_layers);
  const bool permute = c.rope != gguf_rope_style(c.arch);
  // Partial rotary dims would need a permutation of only the rotated part;
  // no supported architecture has them.
  LONGKV_CHECK(!permute || c.rope_dim == c.head_dim,
               "%s: cannot convert RoPE convention with rope_dim %d != head_dim %d", path.c_str(),
               c.rope_dim, c.head_dim);
  LONGKV_CHECK(vocab.size() == 0 || vocab.size() == c.n_vocab,
               "%s: vocabulary has %d tokens but the model has %d embedding rows", path.c_str(),
               vocab.size(), c.n_vocab);

  ModelGgufWriter mw(w, path, out_mix, work);
  GgufWriter& g = mw.gguf();
  const std::string p = c.arch + ".";
  auto u32 = [](int64_t v) { return GgufValue::make_u32(static_cast<uint32_t>(v)); };
  g.set("general.architecture", GgufValue::make_string(c.arch));
  g.set("general.name", GgufValue::make_string(c.name.empty() ? path_stem(path) : c.name));
  g.set("general.alignment", u32(32));
  g.set(p + "vocab_size", u32(c.n_vocab));
  g.set(p + "context_length", u32(c.ctx_len));
  g.set(p + "embedding_length", u32(c.dim));
  g.set(p + "block_count", u32(c.n_layers));
  g.set(p + "feed_forward_length", u32(c.ffn_dim));
  g.set(p + "attention.head_count", u32(c.n_heads));
  g.set(p + "attention.head_count_kv", u32(c.n_kv_heads));
  g.set(p + "attention.key_length", u32(c.head_dim));
  g.set(p + "attention.value_length", u32(c.head_dim));
  g.set(p + "attention.layer_norm_rms_epsilon", GgufValue::make_f32(c.rms_eps));
  g.set(p + "rope.dimension_count", u32(c.rope_dim));
  g.set(p + "rope.freq_base", GgufValue::make_f32(c.rope_base));

  if (vocab.size() > 0) {
    LONGKV_CHECK(vocab.scores.size() == vocab.pieces.size() &&
                     vocab.types.size() == vocab.pieces.size(),
                 "%s: vocabulary has %zu pieces, %zu scores and %zu types", path.c_str(),
                 vocab.pieces.size(), vocab.scores.size(), vocab.types.size());
    std::vector<int32_t> types(vocab.types.size());
    for (size_t i = 0; i < types.size(); ++i) types[i] = static_cast<int32_t>(vocab.types[i]);
    g.set("tokenizer.ggml.model", GgufValue::make_string(vocab.model));
    g.set("tokenizer.ggml.tokens", GgufValue::make_string_array(vocab.pieces));
    g.set("tokenizer.ggml.scores", GgufValue::make_f32_array(vocab.scores));
    g.set("tokenizer.ggml.token_type", GgufValue::make_i32_array(types));
    // A negative id means "none"; GGUF expresses that by omitting the key.
    if (vocab.bos >= 0) g.set("tokenizer.ggml.bos_token_id", u32(vocab.bos));
    if (vocab.eos >= 0) g.set("tokenizer.ggml.eos_token_id", u32(vocab.eos));
    if (vocab.unk >= 0) g.set("tokenizer.ggml.unknown_token_id", u32(vocab.unk));
    g.set("tokenizer.ggml.add_bos_token", GgufValue::make_bool(vocab.add_bos));
    g.set("tokenizer.ggml.add_space_prefix", GgufValue::make_bool(vocab.add_space_prefix));
  } else {
    log_warn("%s: writing a GGUF without a vocabulary", path.c_str());
  }

  // RoPE scaling of any kind as llama.cpp stores Llama 3.1's: the divisors
  // in rope_freqs.weight, the scaling type left "none".
  if (!c.rope_freq_factors.empty()) mw.vec("rope_freqs.weight", c.rope_freq_factors, c.rope_dim / 2);
  // A tied model's embedding table is its output matrix too: llama.cpp gives
  // it the output's format.
  mw.matrix("token_embd.weight", w.tok_embd, c.n_vocab, c.dim,
            w.tied_output ? MatrixRole::output : MatrixRole::token_embd);
  mw.vec("output_norm.weight", w.output_norm, c.dim);
  if (!w.tied_output) mw.matrix("output.weight", w.output, c.n_vocab, c.dim, MatrixRole::output);
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const LayerWeights& l = w.layers[static_cast<size_t>(i)];
    mw.vec(b + "attn_norm.weight", l.attn_norm, c.dim);
    mw.matrix(b + "attn_q.weight", l.wq, c.q_dim(), c.dim, MatrixRole::attn_q, i, c.n_heads);
    mw.matrix(b + "attn_k.weight", l.wk, c.kv_dim(), c.dim, MatrixRole::attn_k, i, c.n_kv_heads);
    mw.matrix(b + "attn_v.weight", l.wv, c.kv_dim(), c.dim, MatrixRole::attn_v, i);
    mw.matrix(b + "attn_output.weight", l.wo, c.dim, c.q_dim(), MatrixRole::attn_output, i);
    if (!l.bq.empty()) mw.vec(b + "attn_q.bias", l.bq, c.q_dim(), c.n_heads);
    if (!l.bk.empty()) mw.vec(b + "attn_k.bias", l.bk, c.kv_dim(), c.n_kv_heads);
    if (!l.bv.empty()) mw.vec(b + "attn_v.bias", l.bv, c.kv_dim());
    mw.vec(b + "ffn_norm.weight", l.ffn_norm, c.dim);
    mw.matrix(b + "ffn_gate.weight", l.w_gate, c.ffn_dim, c.dim, MatrixRole::ffn_gate, i);
    mw.matrix(b + "ffn_up.weight", l.w_up, c.ffn_dim, c.dim, MatrixRole::ffn_up, i);
    mw.matrix(b + "ffn_down.weight", l.w_down, c.dim, c.ffn_dim, MatrixRole::ffn_down, i);
  }
  if (mw.quantized()) g.set("general.quantization_version", u32(2));
  g.write(path);
}

}  // namespace longkv

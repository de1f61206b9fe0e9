#include "model/llama_model.h"

#include <algorithm>

#include "backend/cpu/matmul.h"
#include "core/error.h"
#include "core/timer.h"

namespace longkv {

LlamaModel::LlamaModel(const ModelWeights& weights, ThreadPool& pool)
    : w_(weights),
      pool_(pool),
      rope_(weights.cfg.head_dim, weights.cfg.rope_dim > 0 ? weights.cfg.rope_dim : weights.cfg.head_dim,
            weights.cfg.rope_base, weights.cfg.rope, weights.cfg.rope_freq_factors) {}

KvShape LlamaModel::kv_shape(int max_tokens) const {
  KvShape s;
  s.n_heads = w_.cfg.n_heads;
  s.n_kv_heads = w_.cfg.n_kv_heads;
  s.head_dim = w_.cfg.head_dim;
  s.max_tokens = max_tokens;
  s.rope = &rope_;
  return s;
}

std::vector<std::unique_ptr<KvCache>> LlamaModel::make_caches(const std::string& kv_mode, int max_tokens) const {
  std::vector<std::unique_ptr<KvCache>> caches;
  for (int l = 0; l < w_.cfg.n_layers; ++l) caches.push_back(make_kv_cache(kv_mode, kv_shape(max_tokens), pool_));
  return caches;
}

void LlamaModel::ensure_scratch(int n) {
  if (n <= scratch_n_) return;
  const auto& c = w_.cfg;
  const size_t sn = static_cast<size_t>(n);
  x_.resize(sn * c.dim);
  xb_.resize(sn * c.dim);
  q_.resize(sn * c.q_dim());
  k_.resize(sn * c.kv_dim());
  v_.resize(sn * c.kv_dim());
  att_.resize(sn * c.q_dim());
  tmp_.resize(sn * std::max(c.dim, c.q_dim()));
  gate_.resize(sn * c.ffn_dim);
  up_.resize(sn * c.ffn_dim);
  scratch_n_ = n;
}

static void add_bias(float* y, const std::vector<float>& b, int n_rows, int width) {
  if (b.empty()) return;
  for (int r = 0; r < n_rows; ++r)
    for (int i = 0; i < width; ++i) y[static_cast<size_t>(r) * width + i] += b[i];
}

void LlamaModel::forward(const int32_t* tokens, int n, int pos, std::vector<std::unique_ptr<KvCache>>& caches,
                         float* logits, bool all_logits) {
  run_segments(tokens, n, {Segment{&caches, pos, n}}, logits, all_logits);
}

void LlamaModel::forward_batch(const int32_t* tokens, int n, std::vector<std::unique_ptr<KvCache>>* const* seqs,
                               float* logits) {
  std::vector<Segment> segs;
  for (int i = 0; i < n; ++i) {
    LONGKV_CHECK(seqs[i] && !seqs[i]->empty(), "forward_batch: sequence %d has no caches", i);
    for (int j = 0; j < i; ++j) LONGKV_CHECK(seqs[j] != seqs[i], "forward_batch: sequence %d given twice", i);
    segs.push_back(Segment{seqs[i], (*seqs[i])[0]->size(), 1});
  }
  run_segments(tokens, n, segs, logits, true);
}

void LlamaModel::run_segments(const int32_t* tokens, int n, const std::vector<Segment>& segs, float* logits,
                              bool all_logits) {
  const auto& c = w_.cfg;
  for (const Segment& sg : segs) LONGKV_ASSERT(static_cast<int>(sg.caches->size()) == c.n_layers);
  const double t0 = now_seconds();
  ensure_scratch(n);
  const int dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.ffn_dim;

  for (int t = 0; t < n; ++t) {
    LONGKV_CHECK(tokens[t] >= 0 && tokens[t] < c.n_vocab, "token id %d out of range [0, %d)", tokens[t], c.n_vocab);
    get_row(w_.tok_embd, tokens[t], &x_[static_cast<size_t>(t) * dim]);
  }

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w_.layers[l];

    for (int t = 0; t < n; ++t)
      rmsnorm(&xb_[static_cast<size_t>(t) * dim], &x_[static_cast<size_t>(t) * dim], L.attn_norm.data(), dim,
              c.rms_eps);
    matmul(L.wq, xb_.data(), dim, q_.data(), qd, n, pool_);
    matmul(L.wk, xb_.data(), dim, k_.data(), kvd, n, pool_);
    matmul(L.wv, xb_.data(), dim, v_.data(), kvd, n, pool_);
    add_bias(q_.data(), L.bq, n, qd);
    add_bias(k_.data(), L.bk, n, kvd);
    add_bias(v_.data(), L.bv, n, kvd);
    for (int s0 = 0; const Segment& sg : segs) {  // s0: the segment's first row
      KvCache& cache = *(*sg.caches)[l];
      LONGKV_ASSERT(cache.size() == sg.pos);
      const bool pre_rope = cache.wants_pre_rope_keys();
      for (int t = s0; t < s0 + sg.n; ++t) {
        rope_apply(rope_, &q_[static_cast<size_t>(t) * qd], c.n_heads, sg.pos + t - s0);
        if (!pre_rope) rope_apply(rope_, &k_[static_cast<size_t>(t) * kvd], c.n_kv_heads, sg.pos + t - s0);
      }
      const double ta = now_seconds();
      cache.append(&k_[static_cast<size_t>(s0) * kvd], &v_[static_cast<size_t>(s0) * kvd], sg.n);
      cache.attend(&q_[static_cast<size_t>(s0) * qd], sg.n, &att_[static_cast<size_t>(s0) * qd], nullptr);
      timings_.attention_s += now_seconds() - ta;
      s0 += sg.n;
    }

    matmul(L.wo, att_.data(), qd, tmp_.data(), dim, n, pool_);
    for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] += tmp_[i];

    for (int t = 0; t < n; ++t)
      rmsnorm(&xb_[static_cast<size_t>(t) * dim], &x_[static_cast<size_t>(t) * dim], L.ffn_norm.data(), dim,
              c.rms_eps);
    matmul(L.w_gate, xb_.data(), dim, gate_.data(), ffn, n, pool_);
    matmul(L.w_up, xb_.data(), dim, up_.data(), ffn, n, pool_);
    for (int t = 0; t < n; ++t)
      swiglu(&gate_[static_cast<size_t>(t) * ffn], &gate_[static_cast<size_t>(t) * ffn],
             &up_[static_cast<size_t>(t) * ffn], ffn);
    matmul(L.w_down, gate_.data(), ffn, tmp_.data(), dim, n, pool_);
    for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] += tmp_[i];
  }

  if (logits) {
    const int first = all_logits ? 0 : n - 1;
    const int rows = n - first;
    for (int t = first; t < n; ++t)
      rmsnorm(&xb_[static_cast<size_t>(t) * dim], &x_[static_cast<size_t>(t) * dim], w_.output_norm.data(), dim,
              c.rms_eps);
    matmul(w_.output, &xb_[static_cast<size_t>(first) * dim], dim, logits, c.n_vocab, rows, pool_);
  }
  timings_.total_s += now_seconds() - t0;
}

}  // namespace longkv

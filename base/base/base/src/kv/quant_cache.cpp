#include "kv/quant_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "backend/cpu/vec.h"
#include "core/error.h"
#include "kv/dense_attention.h"

namespace longkv {

// Query rows per prefill work item: rows x g query vectors share each pass
// over the codes (the kernels take them four at a time from L1).
constexpr int kTileRows = 8;
// Fewest groups a decode key split gets (splitting finer costs more merges
// than it gains).
constexpr int kMinGroupsPerSplit = 8;
// How many groups ahead attend_quant prefetches.
constexpr int kPrefetchGroups = 2;
// Tokens cut before the anchor threshold comes from their histogram rather
// than from the current window alone.
constexpr int64_t kAnchorWarmup = 256;
// Bucket b of the score histogram holds scores in [2^((b - kScoreBias) / 4),
// 2^((b - kScoreBias + 1) / 4)): 2^-48 .. 2^16 (a score is at most n_heads).
constexpr int kScoreBias = 192;

QuantKvCache::QuantKvCache(const KvMode& mode, const KvShape& shape, ThreadPool& pool)
    : KvCache(shape), mode_(mode), pool_(pool) {
  const std::string name = mode.to_string();
  LONGKV_CHECK(mode.kind == KvKind::quant && kv_bits_supported(mode.k_bits) && kv_bits_supported(mode.v_bits),
               "KV mode '%s' is not a quantized mode", name.c_str());
  LONGKV_CHECK(shape.n_kv_heads > 0 && shape.head_dim > 0 && shape.n_heads % shape.n_kv_heads == 0 &&
                   shape.max_tokens >= 0,
               "KV mode '%s': bad cache shape (%d heads, %d KV heads, head dim %d, %d tokens)", name.c_str(),
               shape.n_heads, shape.n_kv_heads, shape.head_dim, shape.max_tokens);
  const int G = mode.group, d = shape.head_dim;
  LONGKV_CHECK(G % kKvCodeBlock == 0, "KV mode '%s': group size %d must be a multiple of %d for quantized caches",
               name.c_str(), G, kKvCodeBlock);
  LONGKV_CHECK(d % G == 0 && d / G <= 32,
               "KV mode '%s': group size %d must divide the head dimension %d (values are grouped per token over G "
               "channels)",
               name.c_str(), G, d);
  if (mode.pre_rope) {
    LONGKV_CHECK(shape.rope != nullptr,
                 "KV mode '%s' stores keys before RoPE (rope=pre) but the model gave the cache no RoPE table "
                 "(KvShape::rope is null); use rope=post",
                 name.c_str());
    LONGKV_CHECK(shape.rope->head_dim == d, "KV mode '%s': RoPE table head dimension %d != cache head dimension %d",
                 name.c_str(), shape.rope->head_dim, d);
    angles_.init(*shape.rope);
  }
  const int n_out = kv_outlier_count(mode.outlier_pct, G, d);
  LONGKV_CHECK(n_out == 0 || (G <= 256 && d <= 256),
               "KV mode '%s': outliers need group size and head dimension <= 256 (byte indices), got %d and %d",
               name.c_str(), G, d);
  klay_ = kv_group_layout(G, d, mode.k_bits, n_out);
  vlay_ = kv_group_layout(G, d, mode.v_bits, n_out);
  sink_cap_ = std::min(mode.sinks, shape.max_tokens);
  win_cap_ = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(mode.residual) + G, shape.max_tokens));
  exact_cap_ = sink_cap_ + win_cap_;
  // A group is cut when the window reaches R + G tokens, so at most
  // floor((max_tokens - S - R) / G) groups ever exist.
  max_groups_ = std::max<int64_t>(0, (static_cast<int64_t>(shape.max_tokens) - mode.sinks - mode.residual) / G);
  const size_t n_kv = shape.n_kv_heads;
  // Uninitialized: pages are committed only as data is written.
  k_codes_ = make_huge_array<uint8_t>(n_kv * max_groups_ * klay_.bytes);
  v_codes_ = make_huge_array<uint8_t>(n_kv * max_groups_ * vlay_.bytes);
  exact_k_ = make_huge_array<f16_t>(n_kv * exact_cap_ * d);
  exact_v_ = make_huge_array<f16_t>(n_kv * exact_cap_ * d);
  if (anchored()) {
    LONGKV_CHECK(!mode.pre_rope, "KV mode '%s': anchor tokens need keys after RoPE", name.c_str());
    anchor_cap_ = static_cast<int>(std::ceil(mode.anchor_pct / 100.0 * shape.max_tokens - 1e-9));
    if (mode.anchor_score == KvAnchorScore::kdev) {
      // The burst reserve of one group (cut_anchored_groups) on top of P%.
      anchor_cap_ = std::min(anchor_cap_ + G, shape.max_tokens);
      kdev_ = std::make_unique<KeyDeviationScore>(shape.n_kv_heads, d, mode.anchor_pct / 100.0);
    }
    anchor_k_ = make_huge_array<f16_t>(n_kv * anchor_cap_ * d);
    anchor_v_ = make_huge_array<f16_t>(n_kv * anchor_cap_ * d);
    score_hist_.assign(kScoreBuckets, 0);
  }
}

void QuantKvCache::clear() {
  n_tokens_ = n_sinks_ = n_groups_ = n_window_ = 0;
  anchor_pos_.clear();
  win_mass_.clear();
  win_obs_.clear();
  std::fill(score_hist_.begin(), score_hist_.end(), 0);
  if (kdev_) kdev_->clear();
  n_scored_ = 0;
}

bool QuantKvCache::is_exact(int token) const {
  if (token < n_sinks_ || token >= window_start()) return true;
  return std::binary_search(anchor_pos_.begin(), anchor_pos_.end(), token);
}

double QuantKvCache::steady_bytes_per_token(const KvMode& mode, const KvShape& shape) {
  const int n_out = kv_outlier_count(mode.outlier_pct, mode.group, shape.head_dim);
  const KvGroupLayout k = kv_group_layout(mode.group, shape.head_dim, mode.k_bits, n_out);
  const KvGroupLayout v = kv_group_layout(mode.group, shape.head_dim, mode.v_bits, n_out);
  const double codes = static_cast<double>(shape.n_kv_heads) * static_cast<double>(k.bytes + v.bytes) / mode.group;
  if (!(mode.anchor_pct > 0)) return codes;
  // A share p of the tokens stays fp16 (key and value) instead of coded.
  const double p = mode.anchor_pct / 100.0;
  return (1.0 - p) * codes + p * 2.0 * shape.n_kv_heads * shape.head_dim * sizeof(f16_t);
}

void QuantKvCache::append(const float* k, const float* v, int n) {
  LONGKV_CHECK(n >= 0 && static_cast<int64_t>(n_tokens_) + n <= shape_.max_tokens,
               "KV cache full: %d + %d tokens exceed the capacity of %d", n_tokens_, n, shape_.max_tokens);
  const int d = shape_.head_dim, kvd = shape_.kv_dim();
  // cut=attend without anchors: an append that no attend() followed (a
  // synthetic fill, a prompt loaded without scoring) first cuts what the
  // last one left, so only the newest append's tokens wait for their rows.
  if (!anchored() && mode_.defer) cut_window();
  if (deferred()) reserve_window(n_window_ + n);
  for (int t = 0; t < n; ++t) {
    int s;
    if (n_sinks_ < sink_cap_ && n_tokens_ == n_sinks_) {
      s = n_sinks_++;
    } else {
      s = sink_cap_ + n_window_++;
    }
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      f32_to_f16_n(k + static_cast<size_t>(t) * kvd + h * d, &exact_k_[slot(h, s)], d);
      f32_to_f16_n(v + static_cast<size_t>(t) * kvd + h * d, &exact_v_[slot(h, s)], d);
    }
    ++n_tokens_;
    // The mean key the deviation is measured from leaves the sinks out:
    // they stay exact anyway, and the first one's key is far off.
    if (kdev_ && s >= sink_cap_) kdev_->add_keys(k + static_cast<size_t>(t) * kvd, 1);
    if (!deferred() && n_window_ == mode_.residual + mode_.group) quantize_oldest_group();
  }
  if (anchored()) {
    win_mass_.resize(n_window_, 0.0f);
    win_obs_.resize(n_window_, 0.0f);
  }
}

void QuantKvCache::cut_window() {
  // The same groups cutting on append makes, now that the rows which
  // arrived with these tokens have read them exactly.
  while (n_window_ >= mode_.residual + mode_.group) quantize_oldest_group();
}

void QuantKvCache::reserve_window(int n) {
  if (n <= win_cap_) return;
  // Amortized doubling, never beyond what max_tokens can need.
  const int cap = static_cast<int>(std::min<int64_t>(std::max<int64_t>(n, 2 * static_cast<int64_t>(win_cap_)),
                                                     shape_.max_tokens));
  LONGKV_ASSERT(cap >= n);
  const int d = shape_.head_dim, new_exact = sink_cap_ + cap, used = sink_cap_ + n_window_;
  const size_t n_kv = shape_.n_kv_heads;
  HugeArray<f16_t> k = make_huge_array<f16_t>(n_kv * new_exact * d), v = make_huge_array<f16_t>(n_kv * new_exact * d);
  for (size_t h = 0; h < n_kv; ++h) {
    std::memcpy(&k[h * new_exact * d], &exact_k_[slot(static_cast<int>(h), 0)], sizeof(f16_t) * used * d);
    std::memcpy(&v[h * new_exact * d], &exact_v_[slot(static_cast<int>(h), 0)], sizeof(f16_t) * used * d);
  }
  exact_k_ = std::move(k);
  exact_v_ = std::move(v);
  win_cap_ = cap;
  exact_cap_ = new_exact;
}

// Scores of the window's tokens from the last attend(): row i (position
// first_pos + i) gave token j exp(s_ij - lse_i), lse_i over everything the
// row saw (the merged state), summed over the query heads of every KV head.
// Only the rows within observe_span() of a token count: a token leaves the
// window at least R positions old, so with R > 0 every token is scored by
// the same R rows whether it arrived at the start of a prefill chunk, at
// its end, or in decode (the rows far away attend diffusely and would bias
// the score by position in the chunk).
// Recomputes the window's scores rather than keeping attend_block's: a
// per-call score buffer would be n_q x n_heads x n_window floats, quadratic
// in the size of a prefill append; this costs one more q.k pass over the
// window (the exact part's, not the quantized groups').
void QuantKvCache::observe_window(const float* q, int n_q, const AttnState* final_state) {
  const int d = shape_.head_dim, g = shape_.group(), n_kv = shape_.n_kv_heads, qd = shape_.q_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int first_pos = n_tokens_ - n_q, w0 = window_start(), nw = n_window_, span = observe_span();
  if (nw == 0) return;
  std::vector<float> mass(static_cast<size_t>(pool_.size()) * nw, 0.0f);
  pool_.parallel_for(static_cast<int64_t>(n_q) * n_kv, [&](int64_t b, int64_t e, int thread) {
    float* acc = &mass[static_cast<size_t>(thread) * nw];
    for (int64_t it = b; it < e; ++it) {
      const int row = static_cast<int>(it / n_kv), kvh = static_cast<int>(it % n_kv);
      const int pos = first_pos + row, n_vis = std::min(nw, pos + 1 - w0), j0 = std::max(0, pos - w0 - span + 1);
      for (int h = 0; h < g; ++h) {
        const size_t hi = static_cast<size_t>(row) * shape_.n_heads + static_cast<size_t>(kvh) * g + h;
        const float lse = final_state[hi].lse();
        const float* qh = q + static_cast<size_t>(row) * qd + (static_cast<size_t>(kvh) * g + h) * d;
        for (int j = j0; j < n_vis; ++j)
          acc[j] += std::exp(vec_dot_f16(qh, &exact_k_[slot(kvh, sink_cap_ + j)], d) * scale - lse);
      }
    }
  });
  for (int j = 0; j < nw; ++j) {
    float m = 0;
    for (int t = 0; t < pool_.size(); ++t) m += mass[static_cast<size_t>(t) * nw + j];
    win_mass_[j] += m;
    const int p = w0 + j;  // rows p .. p + span - 1 observe it
    win_obs_[j] += static_cast<float>(std::max(0, std::min(n_tokens_, p + span) - std::max(p, first_pos)));
  }
}

// The (1 - P%) quantile of the anchor scores: of every token cut so far
// (bucket lower edge, so slightly more than P% pass; the rate cap of
// cut_anchored_groups limits them), or while few were cut, of the oldest n
// window tokens (the candidates).
float QuantKvCache::anchor_threshold(int n) const {
  const double p = mode_.anchor_pct / 100.0;
  if (n_scored_ >= kAnchorWarmup) {
    const double want = p * static_cast<double>(n_scored_);
    int64_t above = 0;
    for (int b = kScoreBuckets - 1; b > 0; --b) {
      above += score_hist_[b];
      if (static_cast<double>(above) >= want) return std::exp2(static_cast<float>(b - kScoreBias) / 4.0f);
    }
    return 0.0f;
  }
  std::vector<float> sc;
  for (int w = 0; w < n; ++w)
    if (win_obs_[w] > 0) sc.push_back(window_score(w));
  if (sc.empty()) return std::numeric_limits<float>::infinity();
  const size_t k = std::min(sc.size() - 1, static_cast<size_t>(std::floor((1.0 - p) * static_cast<double>(sc.size()))));
  std::nth_element(sc.begin(), sc.begin() + k, sc.end());
  return sc[k];
}

int QuantKvCache::observe_span() const { return mode_.residual > 0 ? mode_.residual : mode_.group; }

void QuantKvCache::cut_anchored_groups() {
  const int G = mode_.group, R = mode_.residual, d = shape_.head_dim, n_kv = shape_.n_kv_heads;
  const int limit = n_window_ - R;  // the walk stays within the oldest n_window - R tokens
  if (limit < G) return;
  // Which of those may become anchors: at or above tau, the best first, and
  // no more than P% of the tokens cut so far (rounded up) allow. The rate
  // cap keeps the capacity (P% of max_tokens) from being spent early: in
  // the first prefill chunk of a real model a threshold alone picked 5% of
  // the tokens and left none for the rest of the context.
  // kdev: a burst reserve of one group (G tokens) on top of the rate cap,
  // so that a sentence of distinctive tokens can be kept whole wherever it
  // sits (with the cap alone, a needle at depth 25% of 4K could only get
  // P% of the ~1,000 tokens before it, minus what the steady state spent).
  const int64_t burst = kdev_ ? G : 0;
  const int64_t allowed = std::min<int64_t>(
      anchor_cap_,
      static_cast<int64_t>(std::ceil(mode_.anchor_pct / 100.0 * static_cast<double>(n_scored_ + limit) - 1e-9)) + burst);
  std::vector<char> picked(limit, 0);
  // Candidates are the tokens whose score cs reaches cut_at (kdev: scores
  // relative to each head's threshold, so cut_at = 1).
  std::vector<float> cs(limit, 0.0f);
  float cut_at = 1.0f;
  std::vector<float> dev;  // kdev: [n_kv][limit] scores, recorded below once cut
  if (kdev_) {
    dev.resize(static_cast<size_t>(n_kv) * limit);
    for (int h = 0; h < n_kv; ++h) {
      float* dh = &dev[static_cast<size_t>(h) * limit];
      kdev_->score(h, &exact_k_[slot(h, sink_cap_)], limit, dh);
      const float th = kdev_->threshold(h, dh, limit);
      for (int w = 0; w < limit; ++w) cs[w] = std::max(cs[w], dh[w] / th);
    }
  } else {
    cut_at = anchor_threshold(limit);
    for (int w = 0; w < limit; ++w) cs[w] = window_score(w);
  }
  if (allowed > n_anchors()) {
    std::vector<int> cand;
    for (int w = 0; w < limit; ++w)
      if (cs[w] >= cut_at) cand.push_back(w);
    const size_t take = std::min(cand.size(), static_cast<size_t>(allowed - n_anchors()));
    std::partial_sort(cand.begin(), cand.begin() + take, cand.end(), [&](int x, int y) { return cs[x] > cs[y]; });
    for (size_t i = 0; i < take; ++i) picked[cand[i]] = 1;
  }
  std::vector<float> kb(static_cast<size_t>(G) * d), vb(kb.size());
  std::vector<int> members, new_anchors;
  int start = 0;                  // window slots [0, start) are cut
  const int w0 = window_start();  // position of slot 0 until the window is compacted below
  while (limit - start >= G) {
    members.clear();
    new_anchors.clear();
    int w = start;
    for (; w < limit && static_cast<int>(members.size()) < G; ++w) (picked[w] ? new_anchors : members).push_back(w);
    if (static_cast<int>(members.size()) < G) break;  // picked anchors left over stay in the window
    LONGKV_ASSERT(n_groups_ < max_groups_);
    const int anchors_before = n_anchors();
    for (int h = 0; h < n_kv; ++h) {
      for (size_t a = 0; a < new_anchors.size(); ++a) {
        const int dst = anchors_before + static_cast<int>(a);
        std::memcpy(&anchor_k_[anchor_slot(h, dst)], &exact_k_[slot(h, sink_cap_ + new_anchors[a])], sizeof(f16_t) * d);
        std::memcpy(&anchor_v_[anchor_slot(h, dst)], &exact_v_[slot(h, sink_cap_ + new_anchors[a])], sizeof(f16_t) * d);
      }
      for (int t = 0; t < G; ++t) {
        f16_to_f32_n(&exact_k_[slot(h, sink_cap_ + members[t])], &kb[static_cast<size_t>(t) * d], d);
        f16_to_f32_n(&exact_v_[slot(h, sink_cap_ + members[t])], &vb[static_cast<size_t>(t) * d], d);
      }
      const size_t rec = rec_index(h, n_groups_);
      kv_quantize_keys(kb.data(), d, G, d, mode_.k_bits, mode_.symmetric, &k_codes_[rec * klay_.bytes], klay_.outliers,
                       mode_.fit_mse);
      kv_quantize_values(vb.data(), d, G, d, mode_.v_bits, mode_.symmetric, &v_codes_[rec * vlay_.bytes],
                         vlay_.outliers, mode_.fit_mse);
    }
    for (int a : new_anchors) anchor_pos_.push_back(w0 + a);
    for (int x = start; x < w; ++x) {
      if (kdev_) {
        for (int h = 0; h < n_kv; ++h) kdev_->record(h, dev[static_cast<size_t>(h) * limit + x]);
        ++n_scored_;
        continue;
      }
      const float sc = window_score(x);
      const int b = sc > 0 ? std::clamp(static_cast<int>(std::floor(4.0f * std::log2(sc))) + kScoreBias, 0,
                                        kScoreBuckets - 1)
                           : 0;
      ++score_hist_[b];
      ++n_scored_;
    }
    ++n_groups_;
    start = w;
  }
  if (start == 0) return;
  const int keep = n_window_ - start;
  for (int h = 0; h < n_kv; ++h) {
    std::memmove(&exact_k_[slot(h, sink_cap_)], &exact_k_[slot(h, sink_cap_ + start)], sizeof(f16_t) * keep * d);
    std::memmove(&exact_v_[slot(h, sink_cap_)], &exact_v_[slot(h, sink_cap_ + start)], sizeof(f16_t) * keep * d);
  }
  win_mass_.erase(win_mass_.begin(), win_mass_.begin() + start);
  win_obs_.erase(win_obs_.begin(), win_obs_.begin() + start);
  n_window_ = keep;
}

void QuantKvCache::quantize_oldest_group() {
  LONGKV_ASSERT(n_groups_ < max_groups_);
  const int G = mode_.group, d = shape_.head_dim, keep = n_window_ - G;
  std::vector<float> buf(static_cast<size_t>(G) * d);
  for (int h = 0; h < shape_.n_kv_heads; ++h) {
    const size_t rec = rec_index(h, n_groups_);
    f16_to_f32_n(&exact_k_[slot(h, sink_cap_)], buf.data(), static_cast<int64_t>(G) * d);
    kv_quantize_keys(buf.data(), d, G, d, mode_.k_bits, mode_.symmetric, &k_codes_[rec * klay_.bytes], klay_.outliers,
                     mode_.fit_mse);
    f16_to_f32_n(&exact_v_[slot(h, sink_cap_)], buf.data(), static_cast<int64_t>(G) * d);
    kv_quantize_values(buf.data(), d, G, d, mode_.v_bits, mode_.symmetric, &v_codes_[rec * vlay_.bytes],
                       vlay_.outliers, mode_.fit_mse);
    // Slide the window: R tokens x 2 x d halves per G tokens appended.
    std::memmove(&exact_k_[slot(h, sink_cap_)], &exact_k_[slot(h, sink_cap_ + G)], sizeof(f16_t) * keep * d);
    std::memmove(&exact_v_[slot(h, sink_cap_)], &exact_v_[slot(h, sink_cap_ + G)], sizeof(f16_t) * keep * d);
  }
  n_window_ = keep;
  ++n_groups_;
}

void QuantKvCache::get_k(int kvh, int token, float* dst) const {
  LONGKV_ASSERT(token >= 0 && token < n_tokens_ && kvh >= 0 && kvh < shape_.n_kv_heads);
  const int d = shape_.head_dim, G = mode_.group;
  if (token < n_sinks_) return f16_to_f32_n(&exact_k_[slot(kvh, token)], dst, d);
  if (token >= window_start()) return f16_to_f32_n(&exact_k_[slot(kvh, sink_cap_ + token - window_start())], dst, d);
  const auto it = std::lower_bound(anchor_pos_.begin(), anchor_pos_.end(), token);
  const int a = static_cast<int>(it - anchor_pos_.begin());
  if (it != anchor_pos_.end() && *it == token) return f16_to_f32_n(&anchor_k_[anchor_slot(kvh, a)], dst, d);
  // Groups hold the non-anchor tokens in order: skip the a anchors before.
  const int grp = (token - n_sinks_ - a) / G, t = (token - n_sinks_ - a) % G;
  std::vector<float> all(static_cast<size_t>(G) * d);
  kv_dequantize_keys(krec(kvh, grp), G, d, mode_.k_bits, all.data(), d, klay_.outliers);
  std::copy_n(&all[static_cast<size_t>(t) * d], d, dst);
}

void QuantKvCache::get_v(int kvh, int token, float* dst) const {
  LONGKV_ASSERT(token >= 0 && token < n_tokens_ && kvh >= 0 && kvh < shape_.n_kv_heads);
  const int d = shape_.head_dim, G = mode_.group;
  if (token < n_sinks_) return f16_to_f32_n(&exact_v_[slot(kvh, token)], dst, d);
  if (token >= window_start()) return f16_to_f32_n(&exact_v_[slot(kvh, sink_cap_ + token - window_start())], dst, d);
  const auto it = std::lower_bound(anchor_pos_.begin(), anchor_pos_.end(), token);
  const int a = static_cast<int>(it - anchor_pos_.begin());
  if (it != anchor_pos_.end() && *it == token) return f16_to_f32_n(&anchor_v_[anchor_slot(kvh, a)], dst, d);
  // Groups hold the non-anchor tokens in order: skip the a anchors before.
  const int grp = (token - n_sinks_ - a) / G, t = (token - n_sinks_ - a) % G;
  std::vector<float> all(static_cast<size_t>(G) * d);
  kv_dequantize_values(vrec(kvh, grp), G, d, mode_.v_bits, all.data(), d, vlay_.outliers);
  std::copy_n(&all[static_cast<size_t>(t) * d], d, dst);
}

KvFootprint QuantKvCache::footprint() const {
  const size_t n_kv = shape_.n_kv_heads;
  const KvQuantBytes b = kv_quant_bytes(shape_.n_kv_heads, shape_.head_dim, mode_.group, n_groups_, klay_.bytes,
                                        vlay_.bytes, static_cast<size_t>(n_sinks_) + n_window_ + n_anchors(), n_tokens_);
  KvFootprint f;
  f.tokens = n_tokens_;
  f.cpu_bytes = b.k + b.v;
  f.capacity_bytes = n_kv * max_groups_ * (klay_.bytes + vlay_.bytes) +
                     2 * n_kv * (static_cast<size_t>(exact_cap_) + anchor_cap_) * shape_.head_dim * sizeof(f16_t);
  f.k_bits = b.k_bits;
  f.v_bits = b.v_bits;
  return f;
}

// Pre-RoPE: the exact slots rotated to their positions, as f32 [n_kv][n][d]
// (keys) and the values converted alongside so attend_block<float> reads both.
void QuantKvCache::rotate_exact(std::vector<float>& kr, std::vector<float>& vr) const {
  const int d = shape_.head_dim, n = n_sinks_ + n_window_;
  kr.resize(static_cast<size_t>(shape_.n_kv_heads) * n * d);
  vr.resize(kr.size());
  KvRopeWalker walk;
  for (int s = 0; s < n; ++s) {
    const int slot_index = s < n_sinks_ ? s : sink_cap_ + s - n_sinks_;
    if (s == 0 || s == n_sinks_) walk.start(*shape_.rope, s < n_sinks_ ? 0 : window_start(), 1);
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      float* kd = &kr[(static_cast<size_t>(h) * n + s) * d];
      f16_to_f32_n(&exact_k_[slot(h, slot_index)], kd, d);
      kv_rope_rotate(*shape_.rope, walk.cos(), walk.sin(), kd);
      f16_to_f32_n(&exact_v_[slot(h, slot_index)], &vr[(static_cast<size_t>(h) * n + s) * d], d);
    }
    walk.next();
  }
}

// Running softmax of nv query vectors (already scaled by 1/sqrt(d)) over
// quantized groups [grp0, grp1) of one KV head; vector v sees positions
// <= limit[v]. acc [nv][d] ends normalized, st [nv] holds (m, l).
void QuantKvCache::attend_quant(const float* qv, int nv, int g, const int* limit, int kvh, int grp0, int grp1,
                                float* acc, AttnState* st) const {
  const int d = shape_.head_dim, G = mode_.group;
  thread_local std::vector<float> scores;
  thread_local std::vector<double> bc, bs;
  scores.resize(static_cast<size_t>(nv) * G);
  std::fill(acc, acc + static_cast<size_t>(nv) * d, 0.0f);
  for (int v = 0; v < nv; ++v) st[v] = AttnState{};
  const int max_lim = *std::max_element(limit, limit + nv), min_lim = *std::min_element(limit, limit + nv);
  // Decode (every token of the range visible to every vector, keys after
  // RoPE): the fused kernel, four query vectors per pass over the codes.
  if (!mode_.pre_rope && grp1 > grp0 && n_sinks_ + grp1 * G - 1 <= min_lim) {
    for (int v0 = 0; v0 < nv; v0 += 4) {
      const int n = std::min(4, nv - v0);
      float m[4], l[4];
      kv_attend_groups(krec(kvh, grp0), klay_.bytes, vrec(kvh, grp0), vlay_.bytes, grp1 - grp0, G, d, mode_.k_bits,
                       mode_.v_bits, qv + static_cast<size_t>(v0) * d, n, acc + static_cast<size_t>(v0) * d, m, l,
                       klay_.outliers, vlay_.outliers);
      for (int v = 0; v < n; ++v) st[v0 + v] = AttnState{m[v], l[v]};
    }
    (void)g;
    return;
  }
  const int blocks = G / kKvCodeBlock;
  KvRopeWalker walk;
  if (mode_.pre_rope) {
    walk.start(*shape_.rope, n_sinks_ + static_cast<int64_t>(grp0) * G, kKvCodeBlock);
    bc.resize(static_cast<size_t>(blocks) * angles_.half);
    bs.resize(bc.size());
  }
  for (int grp = grp0; grp < grp1; ++grp) {
    const int tok0 = n_sinks_ + grp * G;
    if (tok0 > max_lim) break;
    // Pull a later group's records toward L2 while this one computes: the
    // K and V streams interleave per group, which the hardware prefetcher
    // follows late.
    if (grp + kPrefetchGroups < grp1) {
      const char* kp = reinterpret_cast<const char*>(krec(kvh, grp + kPrefetchGroups));
      const char* vp = reinterpret_cast<const char*>(vrec(kvh, grp + kPrefetchGroups));
      for (size_t off = 0; off < klay_.bytes; off += 64) __builtin_prefetch(kp + off, 0, 1);
      for (size_t off = 0; off < vlay_.bytes; off += 64) __builtin_prefetch(vp + off, 0, 1);
    }
    if (mode_.pre_rope) {
      for (int j = 0; j < blocks; ++j, walk.next()) {
        std::copy_n(walk.cos(), angles_.half, &bc[static_cast<size_t>(j) * angles_.half]);
        std::copy_n(walk.sin(), angles_.half, &bs[static_cast<size_t>(j) * angles_.half]);
      }
      kv_key_scores_rope(krec(kvh, grp), G, d, mode_.k_bits, angles_, bc.data(), bs.data(), qv, nv, scores.data(),
                         klay_.outliers);
    } else {
      kv_key_scores(krec(kvh, grp), G, d, mode_.k_bits, qv, nv, scores.data(), klay_.outliers);
    }
    const bool masked = tok0 + G - 1 > min_lim;
    for (int v = 0; v < nv; ++v) {
      float* s = &scores[static_cast<size_t>(v) * G];
      const int vis = masked ? std::clamp(limit[v] - tok0 + 1, 0, G) : G;
      if (vis > 0) {
        const float mg = kv_max(s, vis);
        if (mg > st[v].m) {
          if (st[v].l > 0) {
            const float f = std::exp(st[v].m - mg);
            float* a = acc + static_cast<size_t>(v) * d;
            for (int c = 0; c < d; ++c) a[c] *= f;
            st[v].l *= f;
          }
          st[v].m = mg;
        }
        st[v].l += kv_exp_sum(s, vis, st[v].m);
      }
      std::fill(s + vis, s + G, 0.0f);
    }
    kv_value_accum(vrec(kvh, grp), G, d, mode_.v_bits, scores.data(), nv, acc, vlay_.outliers);
  }
  (void)g;
  for (int v = 0; v < nv; ++v)
    if (st[v].l > 0) {
      const float inv = 1.0f / st[v].l;
      for (int c = 0; c < d; ++c) acc[static_cast<size_t>(v) * d + c] *= inv;
    }
}

void QuantKvCache::attend(const float* q, int n_q, float* out, AttendStats* stats) {
  LONGKV_ASSERT(n_q > 0 && n_q <= n_tokens_);
  const int d = shape_.head_dim, g = shape_.group(), n_kv = shape_.n_kv_heads, qd = shape_.q_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int first_pos = n_tokens_ - n_q;
  const int rows_per_tile = n_q == 1 ? 1 : kTileRows;
  const int n_tiles = (n_q + rows_per_tile - 1) / rows_per_tile;
  const int64_t base = static_cast<int64_t>(n_kv) * n_tiles;
  int qsplits = n_groups_ > 0 ? 1 : 0;
  if (n_groups_ > 0 && base < 4 * pool_.size()) {
    const int want = static_cast<int>((4 * pool_.size() + base - 1) / base);
    qsplits = std::max(1, std::min(want, n_groups_ / kMinGroupsPerSplit));
  }
  // Anchors (older than every query row: fully visible) are one more exact part.
  const int anchor_parts = n_anchors() > 0 ? 1 : 0;
  const int parts = qsplits + anchor_parts + 1;  // + the exact fp16 part
  const int64_t n_items = base * parts;
  const size_t nv_max = static_cast<size_t>(rows_per_tile) * g;
  std::vector<float> part_out(static_cast<size_t>(n_items) * nv_max * d);
  std::vector<AttnState> part_state(static_cast<size_t>(n_items) * nv_max);

  std::vector<float> kr, vr;  // pre-RoPE: rotated exact slots
  const int n_exact = n_sinks_ + n_window_;
  if (mode_.pre_rope) rotate_exact(kr, vr);

  pool_.parallel_for(n_items, [&](int64_t b, int64_t e, int) {
    thread_local std::vector<float> qv, sc;
    thread_local std::vector<int> lim;
    for (int64_t it = b; it < e; ++it) {
      const int part = static_cast<int>(it % parts);
      const int64_t rest = it / parts;
      const int kvh = static_cast<int>(rest % n_kv), tile = static_cast<int>(rest / n_kv);
      const int r0 = tile * rows_per_tile, rows = std::min(rows_per_tile, n_q - r0), nv = rows * g;
      float* acc = &part_out[static_cast<size_t>(it) * nv_max * d];
      AttnState* st = &part_state[static_cast<size_t>(it) * nv_max];
      if (part < qsplits) {
        qv.resize(static_cast<size_t>(nv) * d);
        lim.resize(nv);
        for (int r = 0; r < rows; ++r) {
          const float* src = q + static_cast<size_t>(r0 + r) * qd + static_cast<size_t>(kvh) * g * d;
          for (int i = 0; i < g * d; ++i) qv[static_cast<size_t>(r) * g * d + i] = src[i] * scale;
          for (int h = 0; h < g; ++h) lim[r * g + h] = first_pos + r0 + r;
        }
        const int grp0 = static_cast<int>(static_cast<int64_t>(n_groups_) * part / qsplits);
        const int grp1 = static_cast<int>(static_cast<int64_t>(n_groups_) * (part + 1) / qsplits);
        attend_quant(qv.data(), nv, g, lim.data(), kvh, grp0, grp1, acc, st);
        continue;
      }
      if (part < qsplits + anchor_parts) {
        const int na = n_anchors();
        sc.resize(static_cast<size_t>(g) * na);
        for (int r = 0; r < rows; ++r)
          attend_block(q + static_cast<size_t>(r0 + r) * qd + static_cast<size_t>(kvh) * g * d, g, d,
                       &anchor_k_[anchor_slot(kvh, 0)], &anchor_v_[anchor_slot(kvh, 0)], na, scale,
                       acc + static_cast<size_t>(r) * g * d, st + r * g, sc.data());
        continue;
      }
      // Exact part: sinks then window, a contiguous prefix of the slots.
      for (int r = 0; r < rows; ++r) {
        const int pos = first_pos + r0 + r;
        const int n_vis = std::min(n_sinks_, pos + 1) + std::clamp(pos + 1 - window_start(), 0, n_window_);
        const float* qrow = q + static_cast<size_t>(r0 + r) * qd + static_cast<size_t>(kvh) * g * d;
        sc.resize(static_cast<size_t>(g) * std::max(n_vis, 1));
        float* o = acc + static_cast<size_t>(r) * g * d;
        if (mode_.pre_rope)
          attend_block(qrow, g, d, &kr[static_cast<size_t>(kvh) * n_exact * d], &vr[static_cast<size_t>(kvh) * n_exact * d],
                       n_vis, scale, o, st + r * g, sc.data());
        else
          attend_block(qrow, g, d, &exact_k_[slot(kvh, 0)], &exact_v_[slot(kvh, 0)], n_vis, scale, o, st + r * g,
                       sc.data());
      }
    }
  });

  // Merge the parts of each (row, head) in order.
  std::vector<AttnState> final_state(static_cast<size_t>(n_q) * shape_.n_heads);
  for (int tile = 0; tile < n_tiles; ++tile)
    for (int kvh = 0; kvh < n_kv; ++kvh) {
      const int r0 = tile * rows_per_tile, rows = std::min(rows_per_tile, n_q - r0);
      const int64_t item0 = (static_cast<int64_t>(tile) * n_kv + kvh) * parts;
      for (int r = 0; r < rows; ++r)
        for (int h = 0; h < g; ++h) {
          const size_t vi = static_cast<size_t>(r) * g + h;
          float* dst = out + static_cast<size_t>(r0 + r) * qd + (static_cast<size_t>(kvh) * g + h) * d;
          AttnState acc{};
          for (int p = 0; p < parts; ++p) {
            const size_t base_i = static_cast<size_t>(item0 + p) * nv_max;
            attn_state_merge(dst, acc, &part_out[(base_i + vi) * d], part_state[base_i + vi], d);
          }
          if (acc.l <= 0) std::fill(dst, dst + d, 0.0f);
          final_state[static_cast<size_t>(r0 + r) * shape_.n_heads + kvh * g + h] = acc;
        }
    }

  if (stats && stats->lse)
    for (size_t i = 0; i < final_state.size(); ++i) stats->lse[i] = final_state[i].lse();
  if (stats && stats->token_mass) {
    // Slow path: every stored key read back (dequantized, rotated in
    // pre-RoPE mode) and scored against the final log-sum-exp.
    pool_.parallel_for(n_kv, [&](int64_t b, int64_t e, int) {
      std::vector<float> key(d);
      for (int64_t kvh = b; kvh < e; ++kvh) {
        float* mass = stats->token_mass + static_cast<size_t>(kvh) * n_tokens_;
        for (int j = 0; j < n_tokens_; ++j) {
          get_k(static_cast<int>(kvh), j, key.data());
          if (mode_.pre_rope) rope_apply(*shape_.rope, key.data(), 1, j);
          for (int row = std::max(0, j - first_pos); row < n_q; ++row)
            for (int h = 0; h < g; ++h) {
              const size_t hi = static_cast<size_t>(row) * shape_.n_heads + kvh * g + h;
              const float* qh = q + hi * d;
              double s = 0;
              for (int c = 0; c < d; ++c) s += static_cast<double>(qh[c]) * key[c];
              mass[j] += static_cast<float>(std::exp(s * scale - final_state[hi].lse()));
            }
        }
      }
    });
  }
  if (anchored()) {
    if (!kdev_) observe_window(q, n_q, final_state.data());
    cut_anchored_groups();
  } else if (mode_.defer) {
    cut_window();
  }
}

}  // namespace longkv

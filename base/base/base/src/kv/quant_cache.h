// Scalar-quantized KV cache (KIVI / KVQuant style) over the codes of
// kv_codec.h, built by make_kv_cache for modes "k<B>v<B>[:g][:r][:s][:rope][:sym][:o][:a]".
//
// Token lifecycle (positions are token indices):
//   [0, S)              attention sinks: fp16 forever
//   [S, S + nq)         quantized groups of G tokens: one key group record
//                       (per-channel scale/zero over the G tokens) and one
//                       value group record (per-token, G channels per
//                       scale/zero) per KV head
//   [S + nq, size())    fp16 residual window; when it holds R + G tokens the
//                       oldest G become the next quantized group, so it keeps
//                       R .. R+G-1 tokens (R = 0: fewer than G)
// Quantization reads the fp16 window copy (the f32 input is gone by then),
// exactly as a streaming cache would.
//
// Pre-RoPE mode (rope=pre): append() takes keys before RoPE; sinks, window
// and codes hold them unrotated; attend() rotates with shape().rope at each
// token's position: quantized tiles are dequantized and rotated 32 tokens at
// a time in L1 (kv_key_scores_rope), fp16 parts are rotated per call.
//
// attend() works from the codes (no dequantized copy): work items are (KV
// head, tile of query rows, part), where parts are contiguous ranges of
// quantized groups (several only when (head, tile) pairs are too few to feed
// the threads, i.e. decode) plus one exact fp16 part (sinks + window); each
// part keeps a running softmax per query vector and the parts are combined
// through the (o, m, l) merge. A part whose tokens every query row sees
// (decode, post-RoPE keys) runs the fused kv_attend_groups, which is bound
// by its float FMAs (8 per 32 codes and 4 query heads, keys and values
// alike), not by DRAM: at 2 bits it reads ~1/5 of the f16 bytes.
//
// Anchor tokens (mode field ":a<P>", AnTKV): retrieving one far token needs
// that token's key exact, and 2-bit keys blur it. So some tokens leave the
// window as fp16 "anchors" (whole key and value, every KV head) instead of
// going into a group.
//   - Deferred cutting: append() only adds to the window; groups are cut at
//     the end of attend(), after the attention of the queries that just
//     arrived (anchor=attn needs it). The window may therefore hold R + G +
//     (the last append) tokens; its storage grows on demand. Groups and
//     anchors are then always older than every later query row (fully
//     visible).
//   - Score "kdev" (default; anchor_score.h says why): a token's distance
//     ||k - mu_h|| from the mean key of KV head h, in units of the head's
//     spread sqrt(E||k - mu_h||^2) (running sums over every non-sink key
//     appended so far), per head. Each head has its own
//     threshold, the (1 - P%/4) quantile of its scores of the tokens cut so
//     far (1/64-octave histogram; the candidates' own quantile while fewer
//     than 256 were cut); a candidate's score is max over heads of score /
//     threshold, and it may be picked at >= 1. Budget: ceil(P% of the tokens
//     cut so far) + G (a burst reserve of one group), capacity ceil(P% of
//     max_tokens) + G. Steady state spends well under P%; a sentence of
//     distinctive tokens (a pass key) can be kept whole wherever it sits.
//   - Score "attn" (anchor=attn): the attention a window token received
//     (exp(s - lse) with lse the final, merged log-sum-exp of the row),
//     summed over all query heads, averaged over the query rows that saw it
//     among the R rows from its own position on (G when R = 0). Fixed rows,
//     not all of them: with chunked prefill a token at the start of a chunk
//     is seen by up to chunk + R rows and one at its end by R, and the far
//     rows attend diffusely, so the score would depend on the position in
//     the chunk rather than on the token. Threshold tau = the (1 - P%)
//     quantile of the scores of all tokens cut so far (log-bucket
//     histogram), or of the candidates' while fewer than kAnchorWarmup
//     tokens have been cut; budget ceil(P% of the tokens cut so far),
//     capacity ceil(P% of max_tokens). On the evaluation model it picks
//     framing words and filler, not the digits a later question needs.
//   - Selection at a cut: among the oldest n_window - R tokens, those at or
//     above the threshold, best first, up to the budget, are picked; then
//     walking from the oldest token, picked ones become anchors and the
//     others fill groups of G.
//   - Groups hold the G non-anchor tokens in position order: a quantized
//     token's record index is its index among the non-anchor tokens.
//   - Attention: one more exact part (the anchors) merged like the others.
// Without ":a" the anchor part does not run. The groups are the ones cutting
// on append() would make, cut at the end of attend() (cut=attend, the
// default), so the rows of a prefill chunk read the chunk's own tokens
// exactly, as a decode step reads its window (docs/quality.md, "Streamed
// token by token"); an append() that follows an append() first cuts what the
// previous one left. cut=append cuts them as tokens arrive.
//
// Memory: codes for every group max_tokens can need are reserved up front
// (make_huge_array: pages are committed as groups are written).
#pragma once

#include <memory>
#include <vector>

#include "core/fp16.h"
#include "core/huge_array.h"
#include "kv/anchor_score.h"
#include "kv/attn_state.h"
#include "kv/kv_cache.h"
#include "kv/kv_codec.h"
#include "kv/kv_mode.h"

namespace longkv {

class QuantKvCache final : public KvCache {
 public:
  // Throws Error on unsupported parameters (group not a multiple of 32 or not
  // dividing head_dim; rope=pre without shape.rope).
  QuantKvCache(const KvMode& mode, const KvShape& shape, ThreadPool& pool);

  void append(const float* k, const float* v, int n) override;
  bool wants_pre_rope_keys() const override { return mode_.pre_rope; }
  void attend(const float* q, int n_q, float* out, AttendStats* stats) override;
  KvFootprint footprint() const override;
  int size() const override { return n_tokens_; }
  void clear() override;
  std::string mode() const override { return mode_.to_string(); }

  // Bytes per token once the cache is long (codes + scales + zeros only).
  static double steady_bytes_per_token(const KvMode& mode, const KvShape& shape);

  // Introspection (tests, tools).
  int n_sinks() const { return n_sinks_; }
  int n_quantized() const { return n_groups_ * mode_.group; }
  int n_window() const { return n_window_; }
  int n_anchors() const { return static_cast<int>(anchor_pos_.size()); }
  int anchor_capacity() const { return anchor_cap_; }
  const std::vector<int>& anchor_positions() const { return anchor_pos_; }
  // Sinks, anchors and window tokens are held in fp16.
  bool is_exact(int token) const;
  // Stored key/value of a token as f32 (keys as appended: pre-RoPE in
  // pre-RoPE mode); quantized tokens are dequantized with the reference.
  void get_k(int kv_head, int token, float* dst) const;
  void get_v(int kv_head, int token, float* dst) const;

 private:
  bool anchored() const { return mode_.anchor_pct > 0; }
  // Groups cut at the end of attend() instead of in append() (cut=attend,
  // the default, and always with anchors).
  bool deferred() const { return anchored() || mode_.defer; }
  void quantize_oldest_group();
  // Plain cut=attend: quantizes the window down to fewer than R + G tokens.
  void cut_window();
  // Anchor modes: room for n window tokens; the attention the last n_q rows
  // gave the window; groups and anchors cut from the window.
  void reserve_window(int n);
  void observe_window(const float* q, int n_q, const AttnState* final_state);
  void cut_anchored_groups();
  float anchor_threshold(int n) const;
  int observe_span() const;  // query rows after a token that score it
  float window_score(int w) const { return win_obs_[w] > 0 ? win_mass_[w] / win_obs_[w] : 0.0f; }
  size_t anchor_slot(int kvh, int a) const { return (static_cast<size_t>(kvh) * anchor_cap_ + a) * shape_.head_dim; }
  void attend_quant(const float* qv, int nv, int g, const int* limit, int kvh, int grp0, int grp1, float* acc,
                    AttnState* st) const;
  void rotate_exact(std::vector<float>& kr, std::vector<float>& vr) const;
  size_t rec_index(int kvh, int grp) const { return static_cast<size_t>(kvh) * max_groups_ + grp; }
  const uint8_t* krec(int kvh, int grp) const { return &k_codes_[rec_index(kvh, grp) * klay_.bytes]; }
  const uint8_t* vrec(int kvh, int grp) const { return &v_codes_[rec_index(kvh, grp) * vlay_.bytes]; }
  // Exact (fp16) slots of a KV head: sinks at [0, sink_cap_), the window at
  // [sink_cap_, sink_cap_ + win_cap_), so the tokens a query row can see
  // form one contiguous prefix of the slots.
  size_t slot(int kvh, int s) const { return (static_cast<size_t>(kvh) * exact_cap_ + s) * shape_.head_dim; }
  int window_start() const { return n_sinks_ + n_quantized() + n_anchors(); }  // position of window slot 0

  KvMode mode_;
  ThreadPool& pool_;
  KvGroupLayout klay_, vlay_;
  int max_groups_ = 0;  // per KV head
  int win_cap_ = 0;     // min(R + G, max_tokens); grows in anchor modes
  HugeArray<uint8_t> k_codes_, v_codes_;  // [n_kv][max_groups][record]
  HugeArray<f16_t> exact_k_, exact_v_;    // [n_kv][exact_cap][d]
  int sink_cap_ = 0, exact_cap_ = 0;
  KvRopeAngles angles_;  // pre-RoPE only
  int n_tokens_ = 0, n_sinks_ = 0, n_groups_ = 0, n_window_ = 0;

  // Anchor modes only.
  static constexpr int kScoreBuckets = 256;  // quarter-octave buckets of log2(score)
  int anchor_cap_ = 0;
  HugeArray<f16_t> anchor_k_, anchor_v_;  // [n_kv][anchor_cap][d]
  std::vector<int> anchor_pos_;           // positions, ascending (= slot order)
  std::vector<float> win_mass_, win_obs_;  // per window slot: attention summed, query rows that saw it
  std::vector<int64_t> score_hist_;       // scores of the tokens cut so far
  std::unique_ptr<KeyDeviationScore> kdev_;  // score "kdev" only
  int64_t n_scored_ = 0;
};

}  // namespace longkv

// Key-deviation anchor score: which tokens leaving the fp16 window of a
// quantized cache should stay exact (mode ":a<P>", default score
// "anchor=kdev"; quant_cache.h has the cut that uses it).
//
// Why this score. Retrieving one far token (a pass key ~3,000 positions
// back) needs that token's key exact: 2-bit per-channel groups blur it
// below the hundreds of filler keys that compete with it. Which tokens a
// later question will retrieve is unknown when the token is cut, and the
// attention a token gets from its neighbours in the window does not predict
// it (on the evaluation model the pass-key digits get no more attention in
// the window than the filler around them). What bounds the attention any future
// query q can give token j over an average token is q.(k_j - mu), mu the
// mean key of the head: the softmax is invariant to the common part q.mu,
// so only a key far from the mean can ever win a softmax by a wide margin.
// AnTKV's sensitivity a_ij ||q_i|| ||v_j - o_i|| ||dk_j|| needs the
// attention of the query that will retrieve j; ||k_j - mu|| is its bound
// over all future queries of a given norm. On the evaluation model the
// tokens the retrieval head reads (layer 7, KV head 1: the pass key's
// digits) are nearly always among the top 1% of their head by this score
// (docs/quality.md, "Anchor tokens").
//
// Normalized. The score is ||k_j - mu|| / sigma, sigma^2 = E||k - mu||^2 over
// the same keys (from the same running sums): the distance in units of the
// head's spread. The raw distance drifts upward while the running mean
// settles (on the evaluation model a threshold learned from earlier tokens
// then let many times P% of a later cut through, and the budget was gone before a
// needle came); the ratio keeps its distribution over the context.
//
// Per KV head. A token can be distinctive for one head only, and heads
// have different key scales, so each head keeps its own running mean and
// its own histogram of the scores of the tokens cut so far; a candidate's
// score is taken relative to its head's threshold, and a token is a
// candidate if it passes the threshold of any head (anchors are stored for
// every KV head, see quant_cache.h).
//
// Threshold and burst. The threshold is the (1 - P%/kAnchorThresholdDivisor)
// quantile, so in steady state the heads together pick well under P% of
// the tokens, and the rest of the budget is a reserve for bursts: a needle
// is a sentence of distinctive tokens in one or two groups, where a quantile
// at exactly P% would let through only P% of that cut.
//
// Threading: not thread-safe; one per cache, called from attend/append.
#pragma once

#include <cstdint>
#include <vector>

#include "core/fp16.h"

namespace longkv {

// Steady-state share of the anchor budget P% that the threshold lets
// through, as a divisor (the remaining 3/4 absorb bursts).
constexpr double kAnchorThresholdDivisor = 4.0;

class KeyDeviationScore {
 public:
  // `share`: the anchor budget as a fraction (P/100), in (0, 0.1].
  KeyDeviationScore(int n_kv_heads, int head_dim, double share);

  void clear();
  // Adds n keys to the running mean of every head: k is [n][n_kv_heads][d].
  void add_keys(const float* k, int n);
  // ||k - mean|| / spread of n fp16 keys of KV head h (stride head_dim)
  // into out[n], mean and spread over the keys added so far.
  void score(int h, const f16_t* k, int n, float* out) const;
  // The score head h's candidates must reach: the (1 - share/divisor)
  // quantile of the scores recorded for h, or while fewer than
  // kWarmupTokens were recorded, of the n candidate scores given.
  float threshold(int h, const float* candidates, int n) const;
  // Records the score of one token of head h that left the window.
  void record(int h, float score);

  int64_t recorded() const { return n_recorded_; }  // per head

  // Tokens recorded before the threshold comes from the histogram.
  static constexpr int64_t kWarmupTokens = 256;
  // 1/64-octave buckets of log2(score) over 2^-16 .. 2^16.
  static constexpr int kBuckets = 2048;
  static constexpr int kBucketsPerOctave = 64;
  static int bucket(float score);
  static float bucket_floor(int b);

 private:
  int n_kv_ = 0, d_ = 0;
  double share_ = 0;
  std::vector<double> key_sum_;  // [n_kv][d]
  std::vector<double> key_sq_;   // [n_kv]: sum of ||k||^2
  int64_t n_keys_ = 0;
  std::vector<int64_t> hist_;  // [n_kv][kBuckets]
  std::vector<int64_t> head_recorded_;
  int64_t n_recorded_ = 0;
};

}  // namespace longkv

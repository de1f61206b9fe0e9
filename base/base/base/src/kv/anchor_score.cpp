#include "kv/anchor_score.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace longkv {

KeyDeviationScore::KeyDeviationScore(int n_kv_heads, int head_dim, double share)
    : n_kv_(n_kv_heads), d_(head_dim), share_(share) {
  LONGKV_ASSERT(n_kv_heads > 0 && head_dim > 0 && share > 0 && share <= 1);
  key_sum_.assign(static_cast<size_t>(n_kv_) * d_, 0.0);
  key_sq_.assign(n_kv_, 0.0);
  hist_.assign(static_cast<size_t>(n_kv_) * kBuckets, 0);
  head_recorded_.assign(n_kv_, 0);
}

void KeyDeviationScore::clear() {
  std::fill(key_sum_.begin(), key_sum_.end(), 0.0);
  std::fill(key_sq_.begin(), key_sq_.end(), 0.0);
  std::fill(hist_.begin(), hist_.end(), 0);
  std::fill(head_recorded_.begin(), head_recorded_.end(), 0);
  n_keys_ = n_recorded_ = 0;
}

void KeyDeviationScore::add_keys(const float* k, int n) {
  // Double sums: a million keys of magnitude ~10 keep ~1e-9 relative error.
  const size_t kvd = static_cast<size_t>(n_kv_) * d_;
  for (int t = 0; t < n; ++t)
    for (size_t i = 0; i < kvd; ++i) {
      const double x = k[t * kvd + i];
      key_sum_[i] += x;
      key_sq_[i / d_] += x * x;
    }
  n_keys_ += n;
}

void KeyDeviationScore::score(int h, const f16_t* k, int n, float* out) const {
  const double inv = n_keys_ > 0 ? 1.0 / static_cast<double>(n_keys_) : 0.0;
  const double* sum = &key_sum_[static_cast<size_t>(h) * d_];
  // Spread of the keys around the mean, E||k - mu||^2 = E||k||^2 - ||mu||^2.
  double mu2 = 0;
  for (int c = 0; c < d_; ++c) mu2 += (sum[c] * inv) * (sum[c] * inv);
  const double spread = std::sqrt(std::max(key_sq_[h] * inv - mu2, 1e-30));
  for (int t = 0; t < n; ++t) {
    double e = 0;
    for (int c = 0; c < d_; ++c) {
      const double x = static_cast<double>(f16_to_f32(k[static_cast<size_t>(t) * d_ + c])) - sum[c] * inv;
      e += x * x;
    }
    out[t] = static_cast<float>(std::sqrt(e) / spread);
  }
}

int KeyDeviationScore::bucket(float score) {
  if (!(score > 0)) return 0;
  const int b = static_cast<int>(std::floor(kBucketsPerOctave * std::log2(score))) + kBuckets / 2;
  return std::clamp(b, 0, kBuckets - 1);
}

float KeyDeviationScore::bucket_floor(int b) {
  return std::exp2(static_cast<float>(b - kBuckets / 2) / kBucketsPerOctave);
}

float KeyDeviationScore::threshold(int h, const float* candidates, int n) const {
  const double p = share_ / kAnchorThresholdDivisor;
  const int64_t rec = head_recorded_[h];
  if (rec >= kWarmupTokens) {
    // Lower edge of the bucket where the top p of the recorded scores
    // begins (a bucket is 1.1% wide, so barely more than p pass).
    const double want = p * static_cast<double>(rec);
    const int64_t* hh = &hist_[static_cast<size_t>(h) * kBuckets];
    int64_t above = 0;
    for (int b = kBuckets - 1; b > 0; --b) {
      above += hh[b];
      if (static_cast<double>(above) >= want) return bucket_floor(b);
    }
    return std::numeric_limits<float>::min();
  }
  if (n <= 0) return std::numeric_limits<float>::infinity();
  std::vector<float> sc(candidates, candidates + n);
  const size_t k = std::min(sc.size() - 1, static_cast<size_t>(std::floor((1.0 - p) * static_cast<double>(n))));
  std::nth_element(sc.begin(), sc.begin() + k, sc.end());
  return std::max(sc[k], std::numeric_limits<float>::min());
}

void KeyDeviationScore::record(int h, float score) {
  ++hist_[static_cast<size_t>(h) * kBuckets + bucket(score)];
  ++head_recorded_[h];
  if (h == 0) ++n_recorded_;
}

}  // namespace longkv

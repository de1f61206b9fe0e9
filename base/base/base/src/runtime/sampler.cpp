#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/error.h"

namespace longkv {

std::string SamplerParams::describe() const {
  if (temperature <= 0) return "greedy";
  return strprintf("temp=%.2f top_k=%d top_p=%.2f min_p=%.3f repeat_penalty=%.2f/%d seed=%llu", temperature, top_k,
                   top_p, min_p, repeat_penalty, repeat_last_n, static_cast<unsigned long long>(seed));
}

int32_t argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

bool candidate_before(const Candidate& a, const Candidate& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {}

int Sampler::top_only(int n_vocab, int max_k) const {
  const bool penalty = p_.repeat_penalty != 1.0f && p_.repeat_last_n != 0;
  return p_.temperature > 0 && !penalty && p_.top_k >= 1 && p_.top_k <= max_k && p_.top_k < n_vocab ? p_.top_k : 0;
}

int32_t Sampler::sample_top(std::span<const Candidate> top) {
  LONGKV_CHECK(p_.temperature > 0 && p_.top_k >= 1 && top.size() == static_cast<size_t>(p_.top_k),
               "sample_top: %zu candidates for top_k %d (temperature %.2f)", top.size(), p_.top_k, p_.temperature);
  cand_.assign(top.begin(), top.end());
  return draw();
}

int32_t Sampler::sample(float* logits, int n_vocab, std::span<const int32_t> history) {
  if (p_.repeat_penalty != 1.0f && p_.repeat_last_n != 0) {
    const size_t n = p_.repeat_last_n < 0 ? history.size()
                                           : std::min(history.size(), static_cast<size_t>(p_.repeat_last_n));
    std::unordered_set<int32_t> seen(history.end() - n, history.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= n_vocab) continue;
      // CTRL-style: shrink positive logits, push negative ones further down.
      logits[t] = logits[t] > 0 ? logits[t] / p_.repeat_penalty : logits[t] * p_.repeat_penalty;
    }
  }
  if (p_.temperature <= 0) return argmax(logits, n_vocab);

  cand_.clear();
  cand_.reserve(n_vocab);
  for (int i = 0; i < n_vocab; ++i) cand_.emplace_back(logits[i], i);
  size_t keep = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    keep = static_cast<size_t>(p_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), candidate_before);
    cand_.resize(keep);
  } else {
    std::sort(cand_.begin(), cand_.end(), candidate_before);
  }
  return draw();
}

int32_t Sampler::draw() {
  // Softmax with temperature over the survivors (sorted descending).
  const float m = cand_[0].first;
  double sum = 0;
  for (auto& c : cand_) {
    c.first = std::exp((c.first - m) / p_.temperature);
    sum += c.first;
  }
  for (auto& c : cand_) c.first = static_cast<float>(c.first / sum);
  if (p_.top_p < 1.0f) {
    double acc = 0;
    size_t i = 0;
    for (; i < cand_.size(); ++i) {
      acc += cand_[i].first;
      if (acc >= p_.top_p) break;
    }
    cand_.resize(std::min(cand_.size(), i + 1));
  }
  if (p_.min_p > 0) {
    const float thr = cand_[0].first * p_.min_p;
    size_t i = 1;
    while (i < cand_.size() && cand_[i].first >= thr) ++i;
    cand_.resize(i);
  }
  double total = 0;
  for (const auto& c : cand_) total += c.first;
  std::uniform_real_distribution<double> u(0.0, total);
  double r = u(rng_);
  for (const auto& c : cand_) {
    r -= c.first;
    if (r <= 0) return c.second;
  }
  return cand_.back().second;
}

}  // namespace longkv

// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition
// penalty, seeded. Order (as llama.cpp's default chain): repetition penalty,
// top-k, temperature, softmax, top-p, min-p, draw.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace longkv {

struct SamplerParams {
  float temperature = 0.8f;  // <= 0: greedy (argmax)
  int top_k = 40;            // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;
  uint64_t seed = 0;

  std::string describe() const;
};

// A candidate (logit, token id). Candidates are ordered by logit, larger
// first, and among equal logits by the lower id (as argmax), so the top-k
// of a row is one well-defined list wherever it is computed.
using Candidate = std::pair<float, int32_t>;
bool candidate_before(const Candidate& a, const Candidate& b);

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);
  // Picks a token from logits[n_vocab]; `history` are the tokens so far
  // (for the repetition penalty). logits are modified.
  int32_t sample(float* logits, int n_vocab, std::span<const int32_t> history);
  // The k of sample_top: when the draw needs only a row's top-k candidates
  // -- temperature > 0, 1 <= top_k <= max_k, top_k < n_vocab, no repetition
  // penalty -- top_k; else 0 (sample() needs the whole row).
  int top_only(int n_vocab, int max_k) const;
  // sample() given the row's top_only() candidates in candidate_before
  // order (e.g. selected on the GPU): the same token as sample() on the
  // whole row, and the same state of the random stream after.
  int32_t sample_top(std::span<const Candidate> top);

 private:
  int32_t draw();  // temperature, softmax, top-p, min-p and the draw over cand_ (sorted)

  SamplerParams p_;
  std::mt19937_64 rng_;
  std::vector<Candidate> cand_;
};

int32_t argmax(const float* x, int n);

}  // namespace longkv

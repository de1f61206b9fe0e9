// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition
// penalty, seeded. Order (as llama.cpp's default chain): repetition penalty,
// top-k, temperature, softmax, top-p, min-p, draw.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
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

class Sampler {
 public:
  explicit Sampler(const SamplerParams& p);
  // Picks a token from logits[n_vocab]; `history` are the tokens so far
  // (for the repetition penalty). logits are modified.
  int32_t sample(float* logits, int n_vocab, std::span<const int32_t> history);

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

int32_t argmax(const float* x, int n);

}  // namespace longkv

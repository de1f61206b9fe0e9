// Models of real shapes with random weights, built in memory, for speed
// measurements at 8B scale without carrying a model file (`bench
// --synthetic llama3-8b`). The numbers they produce are meaningless; their
// memory traffic and compute are those of the real model.
#pragma once

#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/model_weights.h"

namespace longkv {

// Named shapes: llama3-8b, llama2-7b, mistral-7b, qwen2-7b, llama-1b, tiny.
std::vector<std::string> synthetic_shape_names();
// Throws Error listing the names for an unknown shape.
ModelConfig synthetic_config(const std::string& shape);

// The matrices' formats: one for all, or a mix as llama.cpp's Q4_K_M and
// Q5_K_M files have it (`q4_k_m`, `q5_k_m`): the base format, with Q6_K for
// the output matrix and for attn_v and ffn_down in the layers given more
// bits (more_bits_layer).
struct SyntheticWeights {
  WeightType base = WeightType::Q8_0;
  bool k_m = false;  // the _M mix
  std::string name;  // "Q4_0", "Q4_K_M", ...
};
// Parses "q4_0", "Q6_K", "q4_k_m", ...; false if unknown.
bool parse_synthetic_weights(const std::string& name, SyntheticWeights* out);
// The layers of n whose attn_v and ffn_down take Q6_K in a _M mix: the first
// and the last eighth, and every third layer between them.
bool more_bits_layer(int layer, int n_layers);

// Random weights of `cfg`'s shape with matrices in `wtype` (norms f32).
ModelWeights make_synthetic_model(const ModelConfig& cfg, WeightType wtype, uint64_t seed, ThreadPool& pool);
ModelWeights make_synthetic_model(const ModelConfig& cfg, const SyntheticWeights& wt, uint64_t seed,
                                  ThreadPool& pool);

}  // namespace longkv

// Models of real shapes with random weights, built in memory, for speed
// measurements at 8B scale without carrying a model file (`bench
// --synthetic llama3-8b`). The numbers they produce are meaningless; their
// memory traffic and compute are those of the real model.
#pragma once

#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "model/model_weights.h"
#include "model/weight_mix.h"

namespace longkv {

// Named shapes: llama3-8b, llama2-7b, mistral-7b, qwen2-7b, llama-1b, tiny.
std::vector<std::string> synthetic_shape_names();
// Throws Error listing the names for an unknown shape.
ModelConfig synthetic_config(const std::string& shape);

// Random weights of `cfg`'s shape with matrices in `wtype` (norms f32).
ModelWeights make_synthetic_model(const ModelConfig& cfg, WeightType wtype, uint64_t seed, ThreadPool& pool);
ModelWeights make_synthetic_model(const ModelConfig& cfg, const WeightMix& wt, uint64_t seed,
                                  ThreadPool& pool);

}  // namespace longkv

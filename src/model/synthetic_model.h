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

// The matrices' formats: one for all, or a mix as llama.cpp's _M files have
// it (`q3_k_m`, `q4_k_m`, `q5_k_m`; synthetic_matrix_type).
struct SyntheticWeights {
  WeightType base = WeightType::Q8_0;
  bool k_m = false;  // the _M mix
  std::string name;  // "Q4_0", "Q4_K_M", ...
};
// Parses "q4_0", "Q6_K", "q4_k_m", ...; false if unknown.
bool parse_synthetic_weights(const std::string& name, SyntheticWeights* out);
// The layers of n whose attn_v and ffn_down take Q6_K in a Q4_K_M / Q5_K_M
// mix: the first and the last eighth, and every third layer between them.
bool more_bits_layer(int layer, int n_layers);

// Which matrix of a model (layer matrices by their GGUF names).
enum class MatrixRole { token_embd, output, attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down };
// The format llama.cpp's quantizer gives a llama model's matrix in wt's
// layout (llama_tensor_get_type, for models without experts; its rules read,
// not its code): the base format, except in the _M mixes
//   Q4_K_M, Q5_K_M: Q6_K for the output, and for attn_v and ffn_down in the
//                   more_bits_layer layers;
//   Q3_K_M:         Q6_K for the output; attn_v Q5_K in layers 0 and 1, Q4_K
//                   after; ffn_down Q5_K in the first sixteenth of the
//                   layers, Q4_K after; attn_output Q4_K.
WeightType synthetic_matrix_type(const SyntheticWeights& wt, MatrixRole role, int layer, int n_layers);

// Random weights of `cfg`'s shape with matrices in `wtype` (norms f32).
ModelWeights make_synthetic_model(const ModelConfig& cfg, WeightType wtype, uint64_t seed, ThreadPool& pool);
ModelWeights make_synthetic_model(const ModelConfig& cfg, const SyntheticWeights& wt, uint64_t seed,
                                  ThreadPool& pool);

}  // namespace longkv

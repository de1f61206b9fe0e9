// Which format each matrix of a model takes: one for all, or a mix in the
// layout of llama.cpp's _M files. Used by the synthetic models (`bench
// --wtype q4_k_m`) and by `convert --type q4_k_m`, so that a model converted
// here is laid out as the files users download.
#pragma once

#include <string>

#include "formats/weight_types.h"

namespace longkv {

// The matrices' formats: one for all, or a mix as llama.cpp's _M files have
// it (`q3_k_m`, `q4_k_m`, `q5_k_m`; mix_matrix_type).
struct WeightMix {
  WeightType base = WeightType::Q8_0;
  bool k_m = false;  // the _M mix
  std::string name;  // "Q4_0", "Q4_K_M", ...
};
// Parses "q4_0", "Q6_K", "q4_k_m", ...; false if unknown.
bool parse_weight_mix(const std::string& name, WeightMix* out);
// Every name parse_weight_mix takes, for help texts and errors:
// "f32, f16, q4_0, ..., bf16; q3_k_m, q4_k_m, q5_k_m".
std::string weight_mix_names();
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
WeightType mix_matrix_type(const WeightMix& wt, MatrixRole role, int layer, int n_layers);

}  // namespace longkv

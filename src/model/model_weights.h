// A Llama-family model as the forward pass sees it: configuration plus
// non-owning weight views. Loaders (GGUF, llama2.c, safetensors) fill it;
// the storage the views point into (mmaps, converted buffers) is kept alive
// by `storage`.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/rope.h"
#include "formats/weight_types.h"

namespace longkv {

struct ModelConfig {
  std::string arch = "llama";  // llama, mistral, qwen2
  std::string name;            // general.name or file stem
  int n_vocab = 0;
  int dim = 0;          // hidden size
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;     // dim / n_heads unless the file says otherwise
  int ffn_dim = 0;
  int ctx_len = 0;      // trained context
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;
  int rope_dim = 0;     // rotated dims per head (== head_dim for Llama)
  RopeStyle rope = RopeStyle::interleaved;
  // Empty, or rope_dim / 2 divisors of the RoPE frequencies (RopeTable):
  // Llama 3.1's "llama3" scaling, linear scaling, or a GGUF's
  // rope_freqs.weight. rope_scaling says which, for the model's description.
  std::vector<float> rope_freq_factors;
  std::string rope_scaling = "none";

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

struct LayerWeights {
  std::vector<float> attn_norm;     // [dim]
  std::vector<float> ffn_norm;      // [dim]
  WeightView wq, wk, wv, wo;        // [q_dim][dim], [kv_dim][dim] x2, [dim][q_dim]
  std::vector<float> bq, bk, bv;    // optional biases (Qwen2), empty if absent
  WeightView w_gate, w_up, w_down;  // [ffn][dim], [ffn][dim], [dim][ffn]
};

struct ModelWeights {
  ModelConfig cfg;
  WeightView tok_embd;              // [n_vocab][dim]
  WeightView output;                // [n_vocab][dim]; == tok_embd when tied
  bool tied_output = false;
  std::vector<float> output_norm;   // [dim]
  std::vector<LayerWeights> layers;
  std::string source;               // "gguf", "llama2c", "safetensors"
  std::vector<std::shared_ptr<const void>> storage;  // keeps mapped/converted data alive

  // Bytes of all weight matrices (what one decode step streams).
  size_t weight_bytes() const;
  // The matrices' formats, most bytes first, joined by '+': "Q8_0", or
  // "Q4_K+Q6_K" for a llama.cpp Q4_K_M file (the token embedding counted).
  std::string weight_types() const;
};

}  // namespace longkv

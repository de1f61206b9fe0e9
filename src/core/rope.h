// Rotary position embedding (RoPE): conventions and the rotation itself.
// Part of the key format: the model applies it before appending keys, and a
// KV cache that stores pre-RoPE keys applies it at attention time.
#pragma once

#include <cstdint>
#include <vector>

namespace longkv {

// Which pairs of a head's dimensions RoPE rotates.
enum class RopeStyle {
  interleaved,  // (x[2i], x[2i+1]): GGUF "llama", llama2.c
  neox,         // (x[i], x[i + d/2]): Hugging Face rotate_half, GGUF qwen2
};
const char* rope_style_name(RopeStyle s);

// Precomputed RoPE frequencies for one model.
struct RopeTable {
  int head_dim = 0;
  int rope_dim = 0;  // rotated dims (<= head_dim), even
  RopeStyle style = RopeStyle::interleaved;
  // rope_dim / 2 entries: base^(-2i/rope_dim) / freq_factors[i] (rope_dim <= 1024).
  float inv_freq[512];

  RopeTable() = default;
  // freq_factors: empty, or rope_dim / 2 divisors of the frequencies (each
  // finite and > 0) -- how a model trained for a longer context than its
  // base frequencies give stretches them (rope_scaling_factors below).
  RopeTable(int head_dim, int rope_dim, float base, RopeStyle style, const std::vector<float>& freq_factors = {});
};

// The divisors of Llama 3.1's RoPE scaling (Hugging Face rope_type "llama3";
// llama.cpp stores the same values as the tensor rope_freqs.weight): the
// frequencies whose wavelength is under original_ctx / high_freq_factor are
// kept, those over original_ctx / low_freq_factor divided by `factor`, and
// the band between interpolated smoothly. rope_dim / 2 entries.
std::vector<float> llama3_rope_factors(int rope_dim, float base, double factor, double low_freq_factor,
                                       double high_freq_factor, double original_ctx);

// Rotates n_heads heads of x (each head_dim long, contiguous) to position pos.
void rope_apply(const RopeTable& t, float* x, int n_heads, int64_t pos);

}  // namespace longkv

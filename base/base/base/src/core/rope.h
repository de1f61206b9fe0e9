// Rotary position embedding (RoPE): conventions and the rotation itself.
// Part of the key format: the model applies it before appending keys, and a
// KV cache that stores pre-RoPE keys applies it at attention time.
#pragma once

#include <cstdint>

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
  float inv_freq[512];  // rope_dim / 2 entries: base^(-2i/rope_dim) (rope_dim <= 1024)

  RopeTable() = default;
  RopeTable(int head_dim, int rope_dim, float base, RopeStyle style);
};

// Rotates n_heads heads of x (each head_dim long, contiguous) to position pos.
void rope_apply(const RopeTable& t, float* x, int n_heads, int64_t pos);

}  // namespace longkv

// Element-wise and row-wise ops of the forward pass (CPU).
#pragma once

#include <cstdint>

#include "model/model_weights.h"

namespace longkv {

// y = x / rms(x) * w over n elements (y may alias x).
void rmsnorm(float* y, const float* x, const float* w, int n, float eps);

// Precomputed RoPE frequencies for one model.
struct RopeTable {
  int head_dim = 0;
  int rope_dim = 0;  // rotated dims (<= head_dim), even
  RopeStyle style = RopeStyle::interleaved;
  float inv_freq[512];  // rope_dim / 2 entries (rope_dim <= 1024): base^(-2i/rope_dim)

  RopeTable(int head_dim, int rope_dim, float base, RopeStyle style);
};

// Rotates n_heads heads of x (each head_dim long, contiguous) for position pos.
void rope_apply(const RopeTable& t, float* x, int n_heads, int64_t pos);

// out[i] = silu(gate[i]) * up[i]
void swiglu(float* out, const float* gate, const float* up, int n);

// In place: x = softmax(x) over n; returns nothing.
void softmax(float* x, int n);

}  // namespace longkv

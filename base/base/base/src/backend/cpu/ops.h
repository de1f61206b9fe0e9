// Element-wise and row-wise ops of the forward pass (CPU).
#pragma once

#include <cstdint>



namespace longkv {

// y = x / rms(x) * w over n elements (y may alias x).
void rmsnorm(float* y, const float* x, const float* w, int n, float eps);

// out[i] = silu(gate[i]) * up[i]
void swiglu(float* out, const float* gate, const float* up, int n);

// In place: x = softmax(x) over n; returns nothing.
void softmax(float* x, int n);

}  // namespace longkv

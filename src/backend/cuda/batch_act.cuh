// The activation a batched step's GEMV reads (BatchAct, gemv_batch), made by
// the kernel that converts it to the GEMV's operand form (int8 or f16 cells,
// or f32 for the exact path) as it loads it: x itself, RMSNorm(x) * norm, or
// SwiGLU over the gate|up GEMV's output. Milestone 58: a batched step made
// RMSNorm and SwiGLU kernels of their own, each a launch and a round trip
// through memory before the converter; now they are part of it.
//
// Grid: blockIdx.y = token t (0 .. npad - 1; tokens past n give zeros),
// blockIdx.x a slice of kActThreads units, one unit (32 columns) a thread.
// Per-element arithmetic as rmsnorm_kernel ((x * inv_rms) * norm) and
// swiglu_kernel (g / (1 + expf(-g)) * u). RMSNorm's sum of squares is every
// block's own pass over the token's row, in one order whatever the batch:
// thread i adds units i, i + kActThreads, ... (its own unit's squares in
// column order), then the warps' shuffle sums, then the warps in order. So a
// token's activation never depends on n or the other tokens (the batch's
// bit-for-bit rule), though it may round differently from rmsnorm_kernel's
// float4 order.
#pragma once

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/weight_decode.cuh"

namespace longkv::cuda {

constexpr int kActThreads = 128;  // units a converter block makes

// Unit u of token t (both in range) as the GEMV's activation, before RMSNorm's
// scale (which needs the whole row: batch_act_unit).
__device__ __forceinline__ void batch_act_load(const BatchAct& a, int t, int u, int units, float (&v)[32]) {
  const size_t cols = 32 * static_cast<size_t>(units);
  if (a.kind != BatchAct::swiglu) {
    ldx(a.x + t * cols + 32 * static_cast<size_t>(u), v, 32);
    return;
  }
  const float* gu = a.x + t * 2 * cols;  // the token's gate|up row
  float g[32], up[32];
  if (a.pairs) {  // (gate_c, up_c) at 2c, 2c + 1
    float p[64];
    ldx(gu + 64 * static_cast<size_t>(u), p, 64);
#pragma unroll
    for (int k = 0; k < 32; ++k) g[k] = p[2 * k], up[k] = p[2 * k + 1];
  } else {  // [gate | up]
    ldx(gu + 32 * static_cast<size_t>(u), g, 32);
    ldx(gu + cols + 32 * static_cast<size_t>(u), up, 32);
  }
#pragma unroll
  for (int k = 0; k < 32; ++k) v[k] = g[k] / (1.0f + expf(-g[k])) * up[k];
}

// This thread's unit of the converter grid's token (see the header), its
// activation in v; false (v zeros) past the units or the tokens. Every
// thread of the block must call it (RMSNorm syncs the block).
__device__ __forceinline__ bool batch_act_unit(const BatchAct& a, int n, int units, float (&v)[32]) {
  const int t = blockIdx.y, u = blockIdx.x * kActThreads + threadIdx.x;
  const bool real = t < n && u < units;
#pragma unroll
  for (int k = 0; k < 32; ++k) v[k] = 0;
  if (real) batch_act_load(a, t, u, units, v);
  if (a.kind != BatchAct::rmsnorm || t >= n) return real;  // both uniform over the block
  const size_t cols = 32 * static_cast<size_t>(units);
  float ss = 0;
  for (int j = threadIdx.x; j < units; j += kActThreads) {
    float w[32];
    if (j == u) {
#pragma unroll
      for (int k = 0; k < 32; ++k) w[k] = v[k];
    } else {
      ldx(a.x + t * cols + 32 * static_cast<size_t>(j), w, 32);
    }
#pragma unroll
    for (int k = 0; k < 32; ++k) ss += w[k] * w[k];
  }
  __shared__ float red[kActThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0;
#pragma unroll
  for (int i = 0; i < kActThreads / 32; ++i) total += red[i];
  const float scale = rsqrtf(total / static_cast<float>(cols) + a.eps);
  if (real) {
    float w[32];
    ldx(a.norm + 32 * static_cast<size_t>(u), w, 32);
#pragma unroll
    for (int k = 0; k < 32; ++k) v[k] = v[k] * scale * w[k];
  }
  return real;
}

// The converter grid for n tokens padded to npad, `units` units a row.
inline dim3 batch_act_grid(int units, int npad) { return dim3((units + kActThreads - 1) / kActThreads, npad); }

}  // namespace longkv::cuda

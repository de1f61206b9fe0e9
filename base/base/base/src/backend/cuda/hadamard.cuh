// The ":rot" rotation on the GPU, in the layouts the kernels hold vectors
// in: hadamard_rotate (kv/rotated_cache.cpp) stage for stage -- pairs
// (j, j + len) for len = 1, 2, 4, ... become (a + b, a - b) -- then one f32
// multiply by the same 1/sqrt(d). Every variant below performs the same
// single IEEE operations on the same operands, so the rotated keys and values,
// hence the codes, are the CPU cache's bits (at 2 bits a last-bit difference
// of a key flips a code and moves perplexity). Used by the rotated cache's own
// kernels (kv_rotated_gpu.cu) and, inside one decode step, by the decode
// block and the v3 kernel (milestone 19, DecodeRope::hadamard).
#pragma once

#include "backend/cuda/cuda_common.cuh"

namespace longkv::cuda {

// The butterfly stages of n vectors of d floats at x (shared memory), the
// n d / 2 pairs of a stage spread over nt threads (this one: t). sync()
// orders the stages: __syncthreads for a block, __syncwarp for a warp. Every
// thread of the group calls it; it syncs before the first stage and after
// the last. The caller scales.
template <class Sync>
__device__ __forceinline__ void hadamard_stages(float* x, int n, int d, int t, int nt, Sync sync) {
  const int half = d / 2;
  for (int len = 1; len < d; len <<= 1) {
    sync();
    for (int i = t; i < n * half; i += nt) {
      const int p = i % half;
      const int j = (i / half) * d + (p / len) * 2 * len + p % len;
      const float a = x[j], b = x[j + len];
      x[j] = __fadd_rn(a, b);
      x[j + len] = __fsub_rn(a, b);
    }
  }
  sync();
}

// N vectors of D floats at x (shared memory) rotated and scaled by one warp
// (compile-time trip counts: in the v3 kernel, at its register cap, the
// runtime loops of hadamard_stages cost spills).
template <int N, int D>
__device__ __forceinline__ void hadamard_warp(float* x, int lane, float scale) {
  constexpr int kPairs = N * D / 2;
  static_assert(kPairs % 32 == 0, "whole pairs a lane");
#pragma unroll
  for (int len = 1; len < D; len <<= 1) {
    __syncwarp();
#pragma unroll
    for (int r = 0; r < kPairs / 32; ++r) {
      const int i = lane + 32 * r, p = i % (D / 2);
      const int j = (i / (D / 2)) * D + (p / len) * 2 * len + p % len;
      const float a = x[j], b = x[j + len];
      x[j] = __fadd_rn(a, b);
      x[j + len] = __fsub_rn(a, b);
    }
  }
  __syncwarp();
#pragma unroll
  for (int r = 0; r < N * D / 32; ++r) x[lane + 32 * r] = __fmul_rn(x[lane + 32 * r], scale);
  __syncwarp();
}

// One vector of D floats held N consecutive dims a lane by kLanes = D / N
// lanes (lane index li of its copy: dims N li .. N li + N - 1), rotated and
// scaled in registers. Stages of len < N pair dims inside the lane; len = N m
// pairs lane li with li ^ m, the lane with bit m clear holding the pair's
// first element. All 32 lanes of the warp call it (the shuffles stay inside
// each copy's kLanes lanes).
template <int N, int kLanes>
__device__ __forceinline__ void hadamard_regs(float (&x)[N], int li, float scale) {
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0 && (N & (N - 1)) == 0,
                "a vector within one warp");
#pragma unroll
  for (int len = 1; len < N; len <<= 1)
#pragma unroll
    for (int e = 0; e < N; ++e)
      if (!(e & len)) {
        const float a = x[e], b = x[e + len];
        x[e] = __fadd_rn(a, b);
        x[e + len] = __fsub_rn(a, b);
      }
#pragma unroll
  for (int m = 1; m < kLanes; m <<= 1) {
    const bool second = li & m;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const float p = __shfl_xor_sync(0xffffffffu, x[e], m);
      x[e] = second ? __fsub_rn(p, x[e]) : __fadd_rn(x[e], p);
    }
  }
#pragma unroll
  for (int e = 0; e < N; ++e) x[e] = __fmul_rn(x[e], scale);
}

// The decode tiles' layout (decode_tile.cuh): 8 dims a lane, lane `sub` of
// the kLpt = D / 8 lanes of a copy.
template <int kLpt>
__device__ __forceinline__ void hadamard_lane8(float (&x)[8], int sub, float scale) {
  hadamard_regs<8, kLpt>(x, sub, scale);
}

// The merges' layout (decode_merge.cuh): float4 d4 = lane % kD4 of a head's
// output, kD4 = D / 4 consecutive lanes a head.
template <int kD4>
__device__ __forceinline__ float4 hadamard_float4(float4 o, int lane, float scale) {
  float x[4] = {o.x, o.y, o.z, o.w};
  hadamard_regs<4, kD4>(x, lane, scale);
  return make_float4(x[0], x[1], x[2], x[3]);
}

// The v3 kernel's queries after RoPE (kv_quant_decode_v3.cu, its q
// prologue): the lane holds, per head h, the pairs j = lane + 32 r (r < D/64)
// -- x[r][h][0] at dim c0 = 2j (interleaved) or j (NeoX), x[r][h][1] at
// c1 = 2j + 1 or j + D/2. Interleaved, a dim's bit 0 is e, bits 1-5 are the
// lane's and bit 6 is r; NeoX, bits 0-4 are the lane's, then r (D = 128),
// then e. So every stage, in order of len, is inside the lane or one
// shuffle, with no shared-memory round (CudaTuning::rot_q_regs).
template <int D, int GP>
__device__ __forceinline__ void hadamard_pairs(float (&x)[D / 64][GP][2], int lane, bool neox, float scale) {
  constexpr int kR = D / 64;
  auto pair = [](float& a, float& b) {
    const float u = a, v = b;
    a = __fadd_rn(u, v);
    b = __fsub_rn(u, v);
  };
  auto in_e = [&] {
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int h = 0; h < GP; ++h) pair(x[r][h][0], x[r][h][1]);
  };
  auto in_r = [&] {
    if constexpr (kR == 2) {
#pragma unroll
      for (int h = 0; h < GP; ++h)
#pragma unroll
        for (int e = 0; e < 2; ++e) pair(x[0][h][e], x[1][h][e]);
    }
  };
  auto across = [&] {
#pragma unroll
    for (int m = 1; m < 32; m <<= 1) {
      const bool second = lane & m;
#pragma unroll
      for (int r = 0; r < kR; ++r)
#pragma unroll
        for (int h = 0; h < GP; ++h)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = __shfl_xor_sync(0xffffffffu, x[r][h][e], m);
            x[r][h][e] = second ? __fsub_rn(p, x[r][h][e]) : __fadd_rn(x[r][h][e], p);
          }
    }
  };
  if (neox) {
    across();
    in_r();
    in_e();
  } else {
    in_e();
    across();
    in_r();
  }
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int h = 0; h < GP; ++h)
#pragma unroll
      for (int e = 0; e < 2; ++e) x[r][h][e] = __fmul_rn(x[r][h][e], scale);
}

}  // namespace longkv::cuda

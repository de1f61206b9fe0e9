// The RoPE rotation of one pair, shared by rope_kernel (ops.cu) and the
// GEMV's store (gemv.cu, milestone 8b) so both produce the same bits: the
// angle is formed in double like the CPU's rope_apply (at a million positions
// a float product is ~0.1 rad off), and the rotation is spelled with explicit
// FMAs (no compiler-chosen contraction that could differ between callers) in
// the form the CPU build (-march=native, GCC's contraction of
// a*cs - b*sn and a*sn + b*cs) and nvcc's default contraction both produce:
// fma(a, cs, -(b*sn)), fma(a, sn, b*cs). Rounding every product separately
// instead moved the GPU's 2-bit perplexity 0.4% further from the CPU's (codes
// at 2 bits flip on last-bit differences of the keys).
// Also the GEMV store's per-row helpers.
#pragma once

#include <cstdint>

#include "backend/cuda/cuda_common.cuh"

namespace longkv::cuda {

__device__ __forceinline__ void rope_cos_sin(int64_t pos, float inv_freq, float& cs, float& sn) {
  double s, c;
  sincos(static_cast<double>(pos) * inv_freq, &s, &c);
  cs = static_cast<float>(c);
  sn = static_cast<float>(s);
}

// (a, b) rotated by the angle whose cosine / sine are cs / sn.
__device__ __forceinline__ float2 rope_rotate(float a, float b, float cs, float sn) {
  return make_float2(__fmaf_rn(a, cs, -__fmul_rn(b, sn)), __fmaf_rn(a, sn, __fmul_rn(b, cs)));
}

using GemvRope = GemvAct::Rope;

// Whether GEMV output row `row` is rotated (interleaved RoPE, GemvAct::rope),
// and its angle.
__device__ __forceinline__ bool rope_row_angle(const GemvRope& rp, int row, float& cs, float& sn) {
  if (rp.inv_freq == nullptr || row >= rp.heads * rp.head_dim) return false;
  const int j = row % rp.head_dim;
  if (j >= rp.rope_dim) return false;
  rope_cos_sin(rp.dpos ? static_cast<int64_t>(*rp.dpos) : rp.pos0, rp.inv_freq[j / 2], cs, sn);
  return true;
}

// Row `row`'s half of its rotated pair: s its sum, p its partner's (row ^ 1).
__device__ __forceinline__ float rope_own_half(int row, float s, float p, float cs, float sn) {
  return row & 1 ? rope_rotate(p, s, cs, sn).y : rope_rotate(s, p, cs, sn).x;
}

}  // namespace longkv::cuda

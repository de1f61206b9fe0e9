// The slab GEMV's activation, made in its load (gemv.cu, milestones 6, 21
// and 37): a lane's unit of x, with RMSNorm or SwiGLU applied on the way, and
// the int8 x passed between two GEMVs (GemvAct::X8, milestone 36): the
// reader's 1/rms and the writer's int8 form. Split from gemv.cu (milestone
// 38), unchanged: device functions only, inlined into the slab kernels.
#pragma once

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/weight_decode.cuh"

namespace longkv::cuda {

constexpr int kMaxSlabWarps = 16;  // 512 threads: up to 128 registers a lane

// inv_rms = rsqrt(mean(x^2) + eps) over the whole row of `cols`, every
// thread of the block taking part (x comes from L2: each block reads it once).
__device__ __forceinline__ float block_inv_rms(const float* __restrict__ x, int cols, float eps) {
  __shared__ float red[kMaxSlabWarps];
  float ss = 0;
  for (int i = 4 * threadIdx.x; i < cols; i += 4 * blockDim.x) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(x + i));
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = ss;
  __syncthreads();
  float tot = 0;
  for (int k = 0; k < static_cast<int>(blockDim.x / 32); ++k) tot += red[k];
  return rsqrtf(tot / cols + eps);
}

// A lane's unit of x: its own 32 or 16 floats (Slab::load_x), or with XC
// (milestone 21: the pipelined int8 kernels of Q4_0 and the formats whose
// units lie as its do, slab_xc; CudaTuning::gemv_x_coalesced) the warp's
// units loaded coalesced through shared memory (ldx_warp_units; no sums of
// x: the int8 kernels take XI8's).
template <WeightType T, bool XC>
__device__ __forceinline__ void load_unit(const float* p, int u, const XSrc& xs, typename Slab<T>::X& xr) {
  static_assert(!XC || slab_xc(T), "coalesced x: units of 32 contiguous activations");
  if constexpr (XC) {
    ldx_warp_units(p, xs, xr.v);
  } else {
    Slab<T>::load_x(p, u, xr);
  }
}

// Units of two vectors at the same offsets (load_unit twice; with XC both
// sets of loads in flight before either is handed to the lanes).
template <WeightType T, bool XC>
__device__ __forceinline__ void load_unit_pair(const float* p, const float* q, int u, const XSrc& xs,
                                               typename Slab<T>::X& xr, typename Slab<T>::X& o) {
  if constexpr (XC) {
    ldx_warp_units_pair(p, q, xs, xr.v, o.v);
  } else {
    Slab<T>::load_x(p, u, xr);
    Slab<T>::load_x(q, u, o);
  }
}

// Q2_K's, Q4_K's, Q5_K's, Q4_1's and Q5_1's per-unit sums of the
// (transformed) activations (their mins).
template <WeightType T>
__device__ __forceinline__ void unit_sums(typename Slab<T>::X& xr) {
  if constexpr (T == WeightType::Q2_K || T == WeightType::Q4_K || T == WeightType::Q5_K || T == WeightType::Q4_1 ||
                T == WeightType::Q5_1) {
    xr.sum_lo = xr.sum_hi = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      xr.sum_lo += xr.v[i];
      xr.sum_hi += xr.v[16 + i];
    }
  }
}

// The unit's activations with the op before the GEMV applied as they are
// loaded: RMSNorm scales by inv_rms * norm (norm read at the same offsets as
// x), SwiGLU takes silu(gate) * up; same per-element arithmetic as
// rmsnorm_kernel / swiglu_kernel. The per-unit sums (unit_sums) follow the new values.
template <WeightType T, bool XC, bool Pair = true>
__device__ __forceinline__ void load_x_act(const GemvAct& a, int u, const XSrc& xs, float inv_rms,
                                           typename Slab<T>::X& xr) {
  using S = Slab<T>;
  typename S::X o;
  if constexpr (Pair) {
    if (a.kind == GemvAct::plain) {
      load_unit<T, XC>(a.x, u, xs, xr);
      return;
    }
    load_unit_pair<T, XC>(a.x, a.kind == GemvAct::rmsnorm ? a.norm : a.up, u, xs, xr, o);
  } else {
    load_unit<T, XC>(a.x, u, xs, xr);
    if (a.kind == GemvAct::plain) return;
    load_unit<T, XC>(a.kind == GemvAct::rmsnorm ? a.norm : a.up, u, xs, o);
  }
  if (a.kind == GemvAct::rmsnorm) {
#pragma unroll
    for (int i = 0; i < S::kXElems; ++i) xr.v[i] = xr.v[i] * inv_rms * o.v[i];
  } else {
#pragma unroll
    for (int i = 0; i < S::kXElems; ++i) xr.v[i] = xr.v[i] / (1.0f + expf(-xr.v[i])) * o.v[i];
  }
  unit_sums<T>(xr);
}

// RMSNorm made from the lanes' own units when the block covers the whole
// row (no column slices; milestone 8): x and norm are loaded together, the
// sum of squares is the block's sum over its valid lanes (no second pass
// over x through L2 before the loads can start), and the unit becomes
// (x * norm) * inv_rms (rmsnorm_kernel: (x * inv_rms) * norm; the products
// round differently, well inside the checks' tolerance).
// Pair: x and norm through load_unit_pair (not in the RoPE kernels, where
// the two sets of loads in flight made ptxas spill 12-16 bytes; the same
// in load_x_act).
template <WeightType T, bool XC, bool Pair>
__device__ __forceinline__ void load_x_rmsnorm_whole_row(const GemvAct& a, int u, const XSrc& xs, bool valid,
                                                         int cols, typename Slab<T>::X& xr) {
  using S = Slab<T>;
  __shared__ float red[kMaxSlabWarps];
  typename S::X o;
  if constexpr (Pair) {
    load_unit_pair<T, XC>(a.x, a.norm, u, xs, xr, o);
  } else {
    load_unit<T, XC>(a.x, u, xs, xr);
    load_unit<T, XC>(a.norm, u, xs, o);
  }
  float ss = 0;
#pragma unroll
  for (int i = 0; i < S::kXElems; ++i) ss += xr.v[i] * xr.v[i];
  ss = warp_sum(valid ? ss : 0.0f);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = ss;
#pragma unroll
  for (int i = 0; i < S::kXElems; ++i) xr.v[i] *= o.v[i];
  __syncthreads();
  float tot = 0;
  for (int k = 0; k < static_cast<int>(blockDim.x / 32); ++k) tot += red[k];
  const float inv_rms = rsqrtf(tot / cols + a.eps);
#pragma unroll
  for (int i = 0; i < S::kXElems; ++i) xr.v[i] *= inv_rms;
  unit_sums<T>(xr);
}

// GemvAct::X8, the reader's 1/rms: every 16 outputs' sum of squares, a
// lane the two of its unit, summed over the block (the row is whole).
__device__ __forceinline__ float x8_inv_rms(const float* ss, int u, bool valid, int cols, float eps) {
  __shared__ float red[kMaxSlabWarps];
  const float2 p = valid ? reinterpret_cast<const float2*>(ss)[u] : make_float2(0.0f, 0.0f);
  const float t = warp_sum(p.x + p.y);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = t;
  __syncthreads();
  float tot = 0;
  for (int k = 0; k < static_cast<int>(blockDim.x / 32); ++k) tot += red[k];
  return rsqrtf(tot / cols + eps);
}

// GemvAct::X8, the writer's part: thread t < 16 of a 16-row batch (lanes
// 0..15 of warp 0, all present: rows % 16 == 0) holds output r0 + t, and
// norm = o.norm[r0 + t], loaded before the batch's dots.
// No ss (CudaTuning::gemv_x8 bits 8 and 16, timing only): nothing stored.
__device__ __forceinline__ void store_x8(const GemvAct::X8& o, int r0, int t, float v, float norm) {
  if (!o.ss) return;
  const float w = v * norm;
  float m = fabsf(w), ss = v * v;
#pragma unroll
  for (int k = 8; k > 0; k >>= 1) {
    m = fmaxf(m, __shfl_xor_sync(0xFFFFu, m, k));
    ss += __shfl_xor_sync(0xFFFFu, ss, k);
  }
  const float inv = m > 0 ? 127.0f / m : 0.0f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: the low byte is rn(w * inv), as quantize_x_i8
  o.q[r0 + t] = static_cast<int8_t>(__float_as_uint(__fadd_rn(__fmul_rn(w, inv), kRound)) & 0xFF);
  if (t == 0) {
    o.dx[r0 / 16] = m / 127.0f;
    o.ss[r0 / 16] = ss;
  }
}

}  // namespace longkv::cuda

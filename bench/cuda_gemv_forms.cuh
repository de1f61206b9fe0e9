// The GEMV probes' shared kernel forms (bench/cuda_gemv_probe.cu, which
// times them shape by shape, and bench/cuda_ffn_probe.cu, which chains them
// as a feed-forward block): gemv.cu's pipelined slab kernel (a lane owns one
// 32-element unit of every row it visits, RB rows a batch, the next batch's
// loads issued before the current batch's reduction, PDL) with its inner
// product and extras chosen at compile time. Header-only; each probe is its
// own translation unit.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/pdl.cuh"
#include "backend/cuda/weight_decode.cuh"

namespace gemv_forms {

using longkv::WeightType;
using longkv::cuda::Slab;

// Milestone 33's splits of dp4a's head: kDp4aCvt the same dots after
// quantize_x_i8_cvt (below: the engine's quantizer until milestone 33, the
// same bits), kDp4aRaw the dots on x's raw f32 bits (no quantization; wrong
// results), kQNone the quantization without the dots (none's fold on q[0];
// wrong results).
enum Dot { kF32, kDp4a, kNone, kDp4aCvt, kDp4aRaw, kQNone };
constexpr int kMaxWarps = 16;

// Milestone 13's quantizer (weight_decode.cuh's quantize_x_i8 until
// milestone 33): the same bits, rounded by 32 F2I conversions.
__device__ __forceinline__ void quantize_x_i8_cvt(const float (&v)[32], longkv::cuda::XI8& r) {
  float amax = 0;
#pragma unroll
  for (int i = 0; i < 32; ++i) amax = fmaxf(amax, fabsf(v[i]));
  r.dx = amax / 127.0f;
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  int s = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int e0 = j < 4 ? 4 * j : 16 + 4 * (j - 4);
    uint32_t w = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int q = __float2int_rn(__fmul_rn(v[e0 + k], inv));
      s += q;
      w |= (static_cast<uint32_t>(q) & 0xFFu) << (8 * k);
    }
    r.q[j] = static_cast<int>(w);
  }
  r.off = 8 * s;
}

// The same int8 form made by RG consecutive lanes of a warp, each holding
// kE = 32 / RG of the unit's elements (part p = lane % RG: elements
// p kE .. p kE + kE - 1), for a block that quantizes x once for several row
// groups (the GEMV probe's shared-x form, milestone 34): the same bits as
// quantize_x_i8 -- the maximum is exact in any order, every code is its own
// element's, the offset an integer sum. w[j] is word p kE / 4 + j of the unit (elements
// 4 (p kE / 4 + j) .. + 3); dx and off come out in all RG lanes.
template <int RG>
__device__ __forceinline__ void quantize_x_i8_part(const float (&v)[32 / RG], int (&w)[32 / RG / 4], float& dx,
                                                   int& off) {
  constexpr int kE = 32 / RG;
  static_assert(32 % RG == 0 && kE % 4 == 0 && RG <= 32, "a lane quantizes whole code words");
  float amax = 0;
#pragma unroll
  for (int i = 0; i < kE; ++i) amax = fmaxf(amax, fabsf(v[i]));
#pragma unroll
  for (int o = 1; o < RG; o *= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  dx = amax / 127.0f;
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23, as quantize_x_i8
  int s = 0;
#pragma unroll
  for (int j = 0; j < kE / 4; ++j) {
    uint32_t b[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) b[k] = __float_as_uint(__fadd_rn(__fmul_rn(v[4 * j + k], inv), kRound));
    w[j] = static_cast<int>(__byte_perm(__byte_perm(b[0], b[1], 0x0040), __byte_perm(b[2], b[3], 0x0040), 0x5410));
    s = __dp4a(w[j], 0x01010101, s);
  }
#pragma unroll
  for (int o = 1; o < RG; o *= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  off = 8 * s;
}

// A lane's activations in the form its inner product wants.
template <Dot D>
struct Xr {
  longkv::cuda::XI8 q;  // the shipped int8 form (weight_decode.cuh)
};
template <>
struct Xr<kF32> {
  Slab<WeightType::Q4_0>::X x;
};
template <>
struct Xr<kNone> {
  Slab<WeightType::Q4_0>::X x;
};

// XC (milestone 32): the warp's units loaded coalesced through shared memory
// (the engine's ldx_warp_units, 256 float4 a warp) instead of lane by lane.
template <Dot D, bool XC = false>
__device__ __forceinline__ void make_x(const float* x, int u, int nb, Xr<D>& xr) {
  Slab<WeightType::Q4_0>::X f;
  if constexpr (XC) {
    extern __shared__ float4 probe_sx[];
    const int warp = threadIdx.x / 32;
    const longkv::cuda::XSrc xs{probe_sx + 256 * warp, 32 * warp, min(32, nb - 32 * warp)};
    longkv::cuda::ldx_warp_units(x, xs, f.v);
  } else {
    Slab<WeightType::Q4_0>::load_x(x, u, f);
  }
  if constexpr (D == kDp4a) {
    longkv::cuda::quantize_x_i8(f.v, xr.q);
  } else if constexpr (D == kQNone) {
    quantize_x_i8_cvt(f.v, xr.q);
    for (int j = 1; j < 8; ++j) xr.q.q[0] ^= xr.q.q[j];  // every q word into the one the fold reads
    xr.q.q[0] ^= xr.q.off;
  } else if constexpr (D == kDp4aCvt) {
    quantize_x_i8_cvt(f.v, xr.q);
  } else if constexpr (D == kDp4aRaw) {
#pragma unroll
    for (int j = 0; j < 8; ++j) xr.q.q[j] = __float_as_int(f.v[j < 4 ? 4 * j : 12 + j]);
    xr.q.dx = f.v[1];
    xr.q.off = __float_as_int(f.v[2]);
  } else {
    xr.x = f;
  }
}

template <Dot D>
__device__ __forceinline__ float dot(const Slab<WeightType::Q4_0>::Unit& w, const Xr<D>& xr) {
  if constexpr (D == kF32) {
    return Slab<WeightType::Q4_0>::dot(w, xr.x, 0);
  } else if constexpr (D == kDp4a || D == kDp4aCvt || D == kDp4aRaw) {
    return longkv::cuda::dot_q4_0_i8(w.q, w.d, xr.q);
  } else if constexpr (D == kQNone) {
    return w.d +
           __int_as_float(static_cast<int>((w.q.x ^ w.q.y ^ w.q.z ^ w.q.w ^ xr.q.q[0]) & 0x3FFFFFFFu)) * xr.q.dx;
  } else {
    return w.d + __int_as_float(static_cast<int>((w.q.x ^ w.q.y ^ w.q.z ^ w.q.w) & 0x3FFFFFFFu)) * xr.x.v[0];
  }
}

// MinB, MaxT (milestone 31): ptxas is asked for MinB blocks of MaxT threads
// an SM, so a 14-warp row like llama3-8b's down GEMV's runs 28 warps an SM
// instead of 14: MinB 2 with 512 threads leaves 64 registers a lane (it
// spilled), with 448 threads 72. DB (milestone 31): two register
// sets of RB rows, a batch's loads issued two batches ahead -- before the
// dots of the batch in between -- so the dots run while the next rows are on
// their way (the shipped kernel issues them only after its dots, reusing
// the registers). Early (milestone 32): rows of the first batch requested
// before the PDL wait, the rest after x is made -- the engine's 16-row
// kernel requests 8 early (gemv.cu's kEarly: x and the norm beside 16 units
// would pass its 128 registers). XC: make_x above. GLU (milestone 32): rows
// interleaved gate, up; the gate row's thread stores silu(gate) up at row / 2
// (the engine's SwiGLU in the gate|up store).
// x is deliberately not __restrict__ (milestone 34): through a const
// __restrict__ pointer its loads are invariant to the compiler, which
// hoisted them above griddepcontrol.wait (SASS: the LDG.E.128.CONSTANT of x
// before ACQBULK). With a static x that only flattered the timings; behind a
// kernel that writes x (bench/cuda_ffn_probe.cu's pair) it read x too early.
// gemv.cu's kernels take x through GemvAct and load it after the wait.
template <Dot D, int RB, int MinB = 1, bool DB = false, int MaxT = kMaxWarps * 32, int Early = RB, bool XC = false,
          bool GLU = false>
__global__ void __launch_bounds__(MaxT, MinB) probe_kernel(const uint8_t* __restrict__ w, size_t ld, int rows,
                                                                int nb, const float* x,
                                                                float* __restrict__ y) {
  using S = Slab<WeightType::Q4_0>;
  __shared__ float red[2][RB][kMaxWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  const int ui = warp * 32 + lane;
  const bool valid = ui < nb;
  const int u = valid ? ui : 0;
  const int stride = gridDim.x * RB;
  S::Unit wa[RB];
  [[maybe_unused]] S::Unit wb[DB ? RB : 1];
  auto load_rows = [&](S::Unit(&wu)[RB], int r0, int lo, int hi) {
#pragma unroll
    for (int r = lo; r < hi; ++r) wu[r] = S::load(w + ld * static_cast<size_t>(min(r0 + r, rows - 1)), u, nb);
  };
  auto load_batch = [&](S::Unit(&wu)[RB], int r0) { load_rows(wu, r0, 0, RB); };
  static_assert(Early >= 1 && Early <= RB && (Early == RB || !DB), "early rows: a part of the first batch");
  const int r00 = blockIdx.x * RB;
  if (r00 < rows) load_rows(wa, r00, 0, Early);
  if constexpr (DB) {
    if (r00 + stride < rows) load_batch(wb, r00 + stride);
  }
  longkv::cuda::pdl_trigger();
  longkv::cuda::pdl_wait();
  Xr<D> xr;
  make_x<D, XC>(x, u, nb, xr);
  if constexpr (Early < RB) {
    if (r00 < rows) load_rows(wa, r00, Early, RB);
  }
  constexpr int kAhead = DB ? 2 : 1;  // batches between a set's use and its refill
  int buf = 0;
  auto step = [&](S::Unit(&wu)[RB], int r0) {
    float acc[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) acc[r] = valid ? dot<D>(wu[r], xr) : 0.0f;
    if (r0 + kAhead * stride < rows) load_batch(wu, r0 + kAhead * stride);
    longkv::cuda::publish_row_partials(acc, red[buf], warp, lane);
    if (threadIdx.x < RB && r0 + static_cast<int>(threadIdx.x) < rows) {
      const float s = longkv::cuda::row_total(red[buf][threadIdx.x], n_warps);
      if constexpr (GLU) {
        if (!(threadIdx.x & 1)) {
          const float pu = longkv::cuda::row_total(red[buf][threadIdx.x + 1], n_warps);
          y[(r0 + threadIdx.x) / 2] = s / (1.0f + expf(-s)) * pu;
        }
      } else {
        y[r0 + threadIdx.x] = s;
      }
    }
    buf ^= 1;
  };
  for (int r0 = r00; r0 < rows; r0 += kAhead * stride) {
    step(wa, r0);
    if constexpr (DB) {
      if (r0 + stride < rows) step(wb, r0 + stride);
    }
  }
}

}  // namespace gemv_forms

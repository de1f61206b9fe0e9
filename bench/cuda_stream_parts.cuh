// What bench/cuda_stream_probe.cu's kernels share (cuda-notes milestone
// 45): the step's links, x in the engine's int8 form in shared memory, and
// the dots of a stage's rows. Included by the probe's translation unit only.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/weight_decode.cuh"
#include "cuda_gemv_forms.cuh"

namespace stream_probe {

using longkv::cuda::bulk_copy;
using longkv::cuda::dot_q4_0_i8;
using longkv::cuda::fence_mbar_init;
using longkv::cuda::mbar_arrive;
using longkv::cuda::mbar_arrive_expect;
using longkv::cuda::mbar_init;
using longkv::cuda::mbar_try;
using longkv::cuda::mbar_wait;
using longkv::cuda::quantize_x_i8;
using longkv::cuda::XI8;

constexpr int kLayers = 32, kLinksPerLayer = 4, kLinks = kLayers * kLinksPerLayer;
constexpr int kStageBytes = 32256;  // 14 rows of 4096 columns (2304 B) or 4 of 14336 (8064 B)

// One GEMV link: y = W x over the split-layout Q4_0 rows w (row stride
// 18 cols / 32 bytes); glu: rows interleaved gate, up and y[j] = silu(g_j) u_j.
struct Link {
  const uint8_t* w;
  const float* x;
  float* y;
  int rows, cols, glu;
};
// The step's links, in global memory (set once by the host). The barrier
// kernel's blocks copy those of their launch into shared memory first; the
// wavefront kernel reads them here. (Read from __constant__ memory instead,
// the same loops cost as much: milestone 45, calls 7-8.)
__device__ Link g_links[kLinks];

// A lane's unit u of x (32 floats, through L2: a block of the previous link
// may have written it from another SM), in the engine's int8 form.
__device__ __forceinline__ void load_x(const float* x, int u, XI8& xq) {
  float v[32];
  const float4* p = reinterpret_cast<const float4*>(x + 32 * u);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float4 f = __ldcg(p + k);
    v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
  }
  quantize_x_i8(v, xq);
}

__device__ __forceinline__ float warp_sum(float p) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) p += __shfl_xor_sync(0xffffffffu, p, o);
  return p;
}

// The gate|up store: g u / (|g| + |u|) instead of SwiGLU's silu(g) u. The
// probe has no RMSNorm, and silu(g) u, of degree 2 in x's scale, took the
// activations to 0 within a few layers (the first run); this stand-in is of
// degree 1, so over 32 layers their scale only drifts.
__device__ __forceinline__ float glu(float g, float u) {
  const float a = fabsf(g) + fabsf(u);
  return a > 0 ? g * u / a : 0.0f;
}

// x in shared memory, in the engine's int8 form: unit u's codes lo[u]
// (elements 0..15), hi[u] (16..31) and (dx, 8 sum q) -- separate arrays, so
// that a warp reading units lane + 32 j is free of bank conflicts.
constexpr int kMaxUnits = 14336 / 32;
struct XSmem {
  uint4 lo[kMaxUnits], hi[kMaxUnits];
  float2 s[kMaxUnits];
};

// Unit u's part `part` (elements 4 part .. 4 part + 3, 8 lanes a unit, the
// warp's lanes in step) quantized into xs: quantize_x_i8_part, the bits of
// quantize_x_i8, which the check's plain chain uses.
__device__ __forceinline__ void put_x_part(const float4& f, int u, bool valid, XSmem& xs) {
  const int part = threadIdx.x % 8;
  float v[4] = {f.x, f.y, f.z, f.w};
  int w[1];
  float dx;
  int off;
  gemv_forms::quantize_x_i8_part<8>(v, w, dx, off);  // every lane of the warp takes part
  if (valid) {
    reinterpret_cast<int*>(part < 4 ? &xs.lo[u] : &xs.hi[u])[part % 4] = w[0];
    if (part == 0) xs.s[u] = make_float2(dx, __int_as_float(off));
  }
}

__device__ __forceinline__ XI8 x_unit(const XSmem& xs, int u) {
  XI8 xq;
  const uint4 lo = xs.lo[u], hi = xs.hi[u];
  const float2 sc = xs.s[u];
  xq.q[0] = lo.x, xq.q[1] = lo.y, xq.q[2] = lo.z, xq.q[3] = lo.w;
  xq.q[4] = hi.x, xq.q[5] = hi.y, xq.q[6] = hi.z, xq.q[7] = hi.w;
  xq.dx = sc.x, xq.off = __float_as_int(sc.y);
  return xq;
}

// Rows st + ro[r] (r < nr <= R; split layout, NB units) . x: a lane's
// units lane + 32 j summed in j order, then each row's warp sum (every lane
// gets it). x from the lane's registers xr (NB = 128: its 4 units, loaded
// once a link) or, read once for all R rows, from shared memory (the first
// form of milestone 45 read x from shared memory for every row: the dots
// were bound by shared-memory bandwidth). Unused slots are branched over:
// computing them instead (call 16) made the 30-warp form 2% slower.
// before(j) runs before the units of step j are read (the wavefront
// kernel's wait for x's slices; a no-op otherwise).
template <int NB, int R, bool XR, typename Before>
__device__ __forceinline__ void rows_dot(const uint8_t* st, const int (&ro)[R], int nr, const XSmem& xs,
                                         const XI8* xr, int lane, float (&acc)[R], Before&& before) {
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0;
#pragma unroll(NB == 128 ? 4 : 2)
  for (int j = 0; j < (NB + 31) / 32; ++j) {
    before(j);
    const int u = lane + 32 * j;
    if (NB % 32 == 0 || u < NB) {
      const XI8 xq = NB == 128 && XR ? xr[j] : x_unit(xs, u);
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (r < nr) {
          const uint8_t* row = st + ro[r];
          acc[r] += dot_q4_0_i8(*reinterpret_cast<const uint4*>(row + 16 * u),
                                longkv::cuda::ld_f16(row + 16 * NB + 2 * u), xq);
        }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
}

// A 14-row (4096-column) stage's rows for warp wg of a group of GW warps, as
// byte offsets ro[0..n) in the stage, n returned: gate|up pairs wg, wg + GW
// (rows 2u, 2u + 1 each), other links' rows wg + r GW.
template <int R, int GW>
__device__ __forceinline__ int warp_rows(bool glu, int wg, int nr, int rb, int (&ro)[R]) {
  int n = 0;
  if (glu) {
#pragma unroll
    for (int r = 0; r < R; ++r) ro[r] = (2 * (wg + (r / 2) * GW) + r % 2) * rb;
    n = R == 4 && wg + GW < nr / 2 ? 4 : wg < nr / 2 ? 2 : 0;
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      ro[r] = (wg + r * GW) * rb;
      n += wg + r * GW < nr ? 1 : 0;
    }
  }
  return n;
}

}  // namespace stream_probe

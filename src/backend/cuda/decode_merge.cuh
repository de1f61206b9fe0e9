// Where decode splits meet: the online-softmax states (m, l and the
// unnormalized o) of a block's warps combined into one per query head, and
// the block partials of a KV head merged into the output by the block that
// finishes last. Shared by the f16 decode block (attention_block.cu) and the
// quantized kernel's two-launch step (kv_quant_decode_v3.cu, milestone 15),
// which merges the decode block's partial of the fp16 part with its own:
// one spelling of the arithmetic for both.
#pragma once

#include <cfloat>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/hadamard.cuh"

namespace longkv::cuda {

// Float4 d4 of head h's combined o (unnormalized) over NW warps, and the
// combined (m, l) in mm, ll. Warp j's o of head h starts at o0 + j * ostride
// (o0 = warp 0's o of head h), its (m, l) at ml0[j * mlstride] and
// ml0[j * mlstride + 1]. A warp with l = 0 (no token) weighs nothing.
template <int NW>
__device__ __forceinline__ float4 combine_warp_states(const float* o0, int ostride, const float* ml0, int mlstride,
                                                      int d4, float& mm, float& ll) {
  mm = -FLT_MAX;
#pragma unroll
  for (int j = 0; j < NW; ++j)
    if (ml0[j * mlstride + 1] > 0) mm = fmaxf(mm, ml0[j * mlstride]);
  ll = 0;
  float4 o = make_float4(0, 0, 0, 0);
#pragma unroll
  for (int j = 0; j < NW; ++j) {
    const float lj = ml0[j * mlstride + 1];
    const float wt = lj > 0 ? __expf(ml0[j * mlstride] - mm) : 0.0f;
    const float4 x = reinterpret_cast<const float4*>(o0 + j * ostride)[d4];
    ll = fmaf(lj, wt, ll);
    o.x = fmaf(x.x, wt, o.x);
    o.y = fmaf(x.y, wt, o.y);
    o.z = fmaf(x.z, wt, o.z);
    o.w = fmaf(x.w, wt, o.w);
  }
  return o;
}

// Most partials per query head one merge takes (the weights sit in shared
// memory).
constexpr int kMaxMergeParts = 256;

// One block (nthreads threads, a multiple of 32) merges the nbt partials of
// each of the g query heads of KV head hk -- unnormalized o at part_o
// [n_heads][nbt][D], (m, l) at part_ml [n_heads][nbt][2] -- into out
// [n_heads][D], normalized. Reads the partials from L2 (__ldcg: other blocks
// wrote them). Shared scratch: 2 g kMaxMergeParts + g floats at sm.
// hadamard != 0 (":rot", DecodeRope::hadamard): the outputs are rotated back
// by the normalized Walsh-Hadamard matrix (this its scale) before they are
// stored, in registers: each warp's lanes hold whole heads.
template <int D>
__device__ void merge_head_partials(const float* part_o, const float* part_ml, int hk, int g, int nbt, float* out,
                                    float* sm, int nthreads, float hadamard = 0) {
  constexpr int kD4 = D / 4;
  const int tid = threadIdx.x, lane = tid % 32, w = tid / 32;
  float* smm = sm;                          // [g][kMaxMergeParts] m, then the weights
  float* sml = sm + g * kMaxMergeParts;     // [g][kMaxMergeParts] l
  float* sl = sm + 2 * g * kMaxMergeParts;  // [g] the heads' sums of weights
  for (int i = tid; i < g * nbt; i += nthreads) {
    const int h = i / nbt, b = i % nbt;
    const float2 ml = __ldcg(reinterpret_cast<const float2*>(part_ml) + (static_cast<size_t>(hk) * g + h) * nbt + b);
    smm[h * kMaxMergeParts + b] = ml.x;
    sml[h * kMaxMergeParts + b] = ml.y;
  }
  __syncthreads();
  for (int h = w; h < g; h += nthreads / 32) {
    float mm = -FLT_MAX;
    for (int b = lane; b < nbt; b += 32)
      if (sml[h * kMaxMergeParts + b] > 0) mm = fmaxf(mm, smm[h * kMaxMergeParts + b]);
    mm = warp_max(mm);
    float ll = 0;
    for (int b = lane; b < nbt; b += 32) {
      const float lb = sml[h * kMaxMergeParts + b];
      const float wt = lb > 0 ? __expf(smm[h * kMaxMergeParts + b] - mm) : 0.0f;
      smm[h * kMaxMergeParts + b] = wt;
      ll = fmaf(lb, wt, ll);
    }
    ll = warp_sum(ll);
    if (lane == 0) sl[h] = ll;
  }
  __syncthreads();
  // Partials in flight per thread: the merge is the tail of a decode step
  // (one block per KV head while the GPU idles), so latency, not bandwidth.
  // The sum runs over b in order whatever kU, so kU does not change bits.
  constexpr int kU = 16;
  // Whole warps per round (the rotation's shuffles); lanes past g kD4 idle.
  for (int i0 = tid - lane; i0 < g * kD4; i0 += nthreads) {
    const int i = i0 + lane;
    const bool live = i < g * kD4;
    const int h = live ? i / kD4 : 0, d4 = i % kD4;
    const size_t hq = static_cast<size_t>(hk) * g + h;
    const float4* po = reinterpret_cast<const float4*>(part_o) + hq * nbt * kD4 + d4;
    const float* wt = smm + h * kMaxMergeParts;
    float4 o = make_float4(0, 0, 0, 0);
    for (int b0 = 0; live && b0 < nbt; b0 += kU) {
      float4 x[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) x[u] = b0 + u < nbt ? __ldcg(po + static_cast<size_t>(b0 + u) * kD4) : float4{};
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const float f = b0 + u < nbt ? wt[b0 + u] : 0.0f;
        o.x = fmaf(x[u].x, f, o.x);
        o.y = fmaf(x[u].y, f, o.y);
        o.z = fmaf(x[u].z, f, o.z);
        o.w = fmaf(x[u].w, f, o.w);
      }
    }
    const float inv = sl[h] > 0 ? 1.0f / sl[h] : 0.0f;
    o = make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
    if (hadamard != 0) o = hadamard_float4<kD4>(o, lane, hadamard);
    if (live) reinterpret_cast<float4*>(out + hq * D)[d4] = o;
  }
}

}  // namespace longkv::cuda

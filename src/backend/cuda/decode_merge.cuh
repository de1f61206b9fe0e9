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

// Milestone 22: the merge spread over the last blocks of a KV head to finish.
// One block merging all of a KV head's query heads reads g nbt D floats from
// L2 (~100 KB at 131K tokens: 4 heads x ~51 block partials), in 4 rounds of
// kU loads a thread: ~3.8 µs at the end of every layer's attention while
// the rest of the GPU waits. Here the last q = min(g, nb) blocks each merge
// one query head (or every q-th): a block's warps split the partials, every
// thread's loads go out at once, one L2 round trip.

// Shared floats merge_one_head needs: the partials' maxima, then the runs'
// states.
template <int NW>
constexpr int kSplitMergeFloats = kMaxMergeParts + NW * 128 + 4 * NW;

// The ticket of a KV head's merge (*ticket 0 before the launch and after
// it): every block calls it once its partial is stored; the last q of the nb
// blocks to arrive get r = 0 .. q - 1, each once all nb have arrived, the
// others -1. A merging block waits on the device for the later arrivals:
// at most q - 1 blocks a KV head wait, and every block of the grid either
// is resident or gets an SM once a block that does not wait exits, so the
// waits end. The last merging block to pass resets the ticket.
__device__ __forceinline__ int merge_ticket(int* ticket, int nb, int q) {
  __shared__ int merge_r;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const int r = atomicAdd(ticket, 1) - (nb - q);
    if (r >= 0) {
      int v;
      do {
        asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(ticket) : "memory");
      } while (v < nb);
      if (atomicAdd(ticket, 1) == nb + q - 1) atomicExch(ticket, 0);  // every merging block has passed
    }
    merge_r = r;
  }
  __syncthreads();
  const int r = merge_r;
  if (r >= 0) __threadfence();
  return r;
}

// Query head hq's nbt partials (unnormalized o at part_o [hq][nbt][D],
// (m, l) at part_ml [hq][nbt][2]) merged into out [hq][D] by one block of
// NW warps. Every warp folds all (m, l) into the head's (max, sum) (two
// loads a lane in flight, an online-softmax butterfly), while the partials
// split into P = NW * 32 / kD4 runs of consecutive b, one a thread (its
// float4 d4 = lane % kD4), whose o it has requested first (kU at a time).
// Sums: each run in order of b, then the runs in order; hadamard as in
// merge_head_partials. sm: kSplitMergeFloats<NW> floats.
template <int D, int NW>
__device__ void merge_one_head(const float* part_o, const float* part_ml, size_t hq, int nbt, float* out, float* sm,
                               float hadamard = 0) {
  constexpr int kD4 = D / 4, kCopies = 32 / kD4, kP = NW * kCopies, kU = kD4 / 2;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int d4 = lane % kD4, p = w * kCopies + lane / kD4;
  float* sm_m = sm;                                          // [kMaxMergeParts] the partials' m (-FLT_MAX: empty)
  float4* so = reinterpret_cast<float4*>(sm + kMaxMergeParts);  // [kP][kD4] the runs' sums
  __syncthreads();  // sm is free (the block's own states, or the head before, are done with it)
  const int nq = (nbt + kP - 1) / kP, b0 = min(nbt, p * nq), b1 = min(nbt, b0 + nq);
  const float4* po = reinterpret_cast<const float4*>(part_o) + hq * nbt * kD4 + d4;
  const float2* pml = reinterpret_cast<const float2*>(part_ml) + hq * nbt;
  float4 x[kU];
#pragma unroll
  for (int u = 0; u < kU; ++u) x[u] = b0 + u < b1 ? __ldcg(po + static_cast<size_t>(b0 + u) * kD4) : float4{};
  // The head's (max, sum) in every warp; a warp keeps the m of its own runs.
  const int wb0 = w * kCopies * nq, wb1 = wb0 + kCopies * nq;
  float mx = -FLT_MAX, sx = 0;
#pragma unroll 2
  for (int b = lane; b < nbt; b += 32) {
    const float2 ml = __ldcg(pml + b);
    const bool live = ml.y > 0;
    if (b >= wb0 && b < wb1) sm_m[b] = live ? ml.x : -FLT_MAX;
    if (!live) continue;
    if (ml.x > mx) {
      sx = fmaf(sx, __expf(mx - ml.x), ml.y);
      mx = ml.x;
    } else {
      sx = fmaf(ml.y, __expf(ml.x - mx), sx);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float mo = __shfl_xor_sync(0xffffffffu, mx, o), so_ = __shfl_xor_sync(0xffffffffu, sx, o);
    const float mn = fmaxf(mx, mo);
    sx = (sx > 0 ? sx * __expf(mx - mn) : 0.0f) + (so_ > 0 ? so_ * __expf(mo - mn) : 0.0f);
    mx = mn;
  }
  __syncwarp();
  float4 o = make_float4(0, 0, 0, 0);
  for (int c0 = b0; c0 < b1; c0 += kU) {
    if (c0 > b0) {
#pragma unroll
      for (int u = 0; u < kU; ++u) x[u] = c0 + u < b1 ? __ldcg(po + static_cast<size_t>(c0 + u) * kD4) : float4{};
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const float f = c0 + u < b1 ? __expf(sm_m[c0 + u] - mx) : 0.0f;
      o.x = fmaf(x[u].x, f, o.x);
      o.y = fmaf(x[u].y, f, o.y);
      o.z = fmaf(x[u].z, f, o.z);
      o.w = fmaf(x[u].w, f, o.w);
    }
  }
  so[p * kD4 + d4] = o;
  __syncthreads();
  if (w != 0) return;
  float4 r = so[d4];
#pragma unroll
  for (int i = 1; i < kP; ++i) {
    const float4 y = so[i * kD4 + d4];
    r = make_float4(r.x + y.x, r.y + y.y, r.z + y.z, r.w + y.w);
  }
  const float inv = sx > 0 ? 1.0f / sx : 0.0f;
  r = make_float4(r.x * inv, r.y * inv, r.z * inv, r.w * inv);
  if (hadamard != 0) r = hadamard_float4<kD4>(r, lane, hadamard);
  if (lane < kD4) reinterpret_cast<float4*>(out + hq * D)[d4] = r;
}

}  // namespace longkv::cuda

// The per-tile step of the dense split-K decode kernels, shared by the split
// kernel (attention.cu) and the fused attention block (attention_block.cu,
// milestone 11) so both fold a tile of keys and values into the online
// softmax state in the same order, with the same bits.
//
// Lane layout (both kernels): lanes split head_dim into 16-byte pieces (8
// dims; kLpt = D / 8 lanes per token), the warp covers 32 / kLpt tokens per
// step and kSteps steps per tile. The tile's max is shared by the whole warp,
// so m is the same in every lane and the token groups' partial (l, acc) add
// up at the end (decode_sum_groups).
#pragma once

#include <cfloat>

#include "backend/cuda/cuda_common.cuh"

namespace longkv::cuda {

// The empty online-softmax state of G query heads (this lane's 8 dims).
template <int G>
__device__ __forceinline__ void decode_init_state(float (&m)[G], float (&l)[G], float (&acc)[G][8]) {
#pragma unroll
  for (int h = 0; h < G; ++h) {
    m[h] = -FLT_MAX;
    l[h] = 0;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0;
  }
}

// Loads one tile: this lane's 8 dims (kh, vh already offset to them) of
// token t0 + st * tps + grp for each step st, ok[st] whether that token is
// before t_end (else token t_begin is read as a harmless dummy).
template <int D, int kSteps>
__device__ __forceinline__ void decode_load_tile(const __half* kh, const __half* vh, int t0, int tps, int grp,
                                                 int t_begin, int t_end, uint4 (&kr)[kSteps], uint4 (&vr)[kSteps],
                                                 bool (&ok)[kSteps]) {
#pragma unroll
  for (int st = 0; st < kSteps; ++st) {
    const int t = t0 + st * tps + grp;
    ok[st] = t < t_end;
    const size_t off = static_cast<size_t>(ok[st] ? t : t_begin) * D;
    kr[st] = __ldg(reinterpret_cast<const uint4*>(kh + off));
    vr[st] = __ldg(reinterpret_cast<const uint4*>(vh + off));
  }
}

// Folds one tile (kr, vr: this lane's 8 dims of token step st; ok[st] false
// for tokens past the split) into (m, l, acc) of the G query heads; qr is the
// lane's 8 dims of each query, already scaled.
template <int D, int G, int kSteps>
__device__ __forceinline__ void decode_tile(const float (&qr)[G][8], const uint4 (&kr)[kSteps],
                                            const uint4 (&vr)[kSteps], const bool (&ok)[kSteps], float (&m)[G],
                                            float (&l)[G], float (&acc)[G][8]) {
  constexpr int kLpt = D / 8;
  float sc[kSteps][G];
#pragma unroll
  for (int st = 0; st < kSteps; ++st) {
    const __half2* k2 = reinterpret_cast<const __half2*>(&kr[st]);
    float kf[8];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __half22float2(k2[e]);
      kf[2 * e] = f.x;
      kf[2 * e + 1] = f.y;
    }
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float d = 0;
#pragma unroll
      for (int e = 0; e < 8; ++e) d = fmaf(qr[h][e], kf[e], d);
#pragma unroll
      for (int o = kLpt / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
      sc[st][h] = ok[st] ? d : -FLT_MAX;
    }
  }
#pragma unroll
  for (int h = 0; h < G; ++h) {
    float mx = sc[0][h];
#pragma unroll
    for (int st = 1; st < kSteps; ++st) mx = fmaxf(mx, sc[st][h]);
#pragma unroll
    for (int o = 16; o >= kLpt; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float mn = fmaxf(m[h], mx);
    const float corr = __expf(m[h] - mn);
    m[h] = mn;
    l[h] *= corr;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] *= corr;
#pragma unroll
    for (int st = 0; st < kSteps; ++st) {
      const float p = ok[st] ? __expf(sc[st][h] - mn) : 0.0f;
      l[h] += p;
      const __half2* v2 = reinterpret_cast<const __half2*>(&vr[st]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __half22float2(v2[e]);
        acc[h][2 * e] = fmaf(p, f.x, acc[h][2 * e]);
        acc[h][2 * e + 1] = fmaf(p, f.y, acc[h][2 * e + 1]);
      }
    }
  }
}

// Sums l and acc over the warp's token groups: afterwards every lane holds
// the totals of its 8 dims.
template <int D, int G>
__device__ __forceinline__ void decode_sum_groups(float (&l)[G], float (&acc)[G][8]) {
  constexpr int kLpt = D / 8;
#pragma unroll
  for (int h = 0; h < G; ++h) {
#pragma unroll
    for (int o = 16; o >= kLpt; o >>= 1) {
      l[h] += __shfl_xor_sync(0xffffffffu, l[h], o);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] += __shfl_xor_sync(0xffffffffu, acc[h][e], o);
    }
  }
}

}  // namespace longkv::cuda

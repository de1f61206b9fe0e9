// Quantized-KV decode for every code format of kv/kv_codec.h that the fast
// kernels (kv_quant_decode.cu, kv_quant_decode_v3.cu: G = 32, 8/4/2 bits)
// do not take: 3- and 1-bit codes, G = 64 and 128, any mix of key and value
// widths. Same split scheme and partial states (o, m, l) as those kernels,
// so the fp16 part and the merge are shared (kv_quant_gpu.cu).
//
// One warp per (KV head, split of groups). A group of G tokens is walked in
// blocks of 32 tokens: lane = token for the scores (the key scale of channel
// c is folded into the query once per group: qs = q * scale * s_c, plus one
// dot(q, z) per group), lane = channel for the values (p * s of the block's
// 32 tokens in shared memory per channel group, sum_t p z kept per lane
// until the end). Codes are read as whole plane words and expanded in
// registers (exact small integers in float): no dequantized copy. Outliers
// (":o<pct>", kv_codec.h) are added where the reference adds them: a key
// entry's q[c] delta to token t's score before the softmax, a value entry's
// p[t] delta to channel c. A record's entries are sorted by (t, c), so a
// token's are one run that its lane finds by binary search; value entries
// go token by token into a per-channel sum in shared memory (a token's
// channels are distinct: no two lanes add to one channel at once). The code
// width only picks which expansion runs (a warp-uniform switch per 32
// channels or tokens), so the kernel is instantiated per head_dim and
// padded query-head count only. It does exact float FMAs per code and head:
// a correct fallback, not tuned like the fast kernels.
#include <cfloat>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kv_quant_gpu.cuh"
#include "backend/cuda/pdl.cuh"

namespace longkv::cuda {
namespace {

// The 32 codes of run `r` (32 consecutive packed indices 32r .. 32r+31) at
// column `col` of a record's codes (kv_codec.h planes [rows][cols]): for B
// != 3 the B words (32r/n + j, col), for B = 3 two words of the 2-bit plane
// and one of the 1-bit plane. Calls f(k, code) for k = 0..31.
template <int B, typename F>
__device__ __forceinline__ void for_run_codes(const uint8_t* rec, int elems, int cols, int r, int col, F&& f) {
  const uint32_t* w = reinterpret_cast<const uint32_t*>(rec);
  if constexpr (B == 3) {
    const uint32_t* hi = reinterpret_cast<const uint32_t*>(rec + elems / 4);
    const uint32_t lo0 = __ldg(w + static_cast<size_t>(2 * r) * cols + col);
    const uint32_t lo1 = __ldg(w + static_cast<size_t>(2 * r + 1) * cols + col);
    const uint32_t h = __ldg(hi + static_cast<size_t>(r) * cols + col);
#pragma unroll
    for (int k = 0; k < 32; ++k) {
      const uint32_t lo = k < 16 ? lo0 : lo1;
      f(k, static_cast<float>(((lo >> (2 * (k % 16))) & 3u) | ((h >> k) & 1u) << 2));
    }
  } else {
    constexpr int n = 32 / B;
    uint32_t ws[B];
#pragma unroll
    for (int j = 0; j < B; ++j) ws[j] = __ldg(w + static_cast<size_t>(r * B + j) * cols + col);
#pragma unroll
    for (int k = 0; k < 32; ++k) f(k, static_cast<float>((ws[k / n] >> (B * (k % n))) & ((1u << B) - 1)));
  }
}

// Dispatch of for_run_codes over the code width (warp-uniform).
template <typename F>
__device__ __forceinline__ void run_codes(int bits, const uint8_t* rec, int elems, int cols, int r, int col, F&& f) {
  switch (bits) {
    case 8: for_run_codes<8>(rec, elems, cols, r, col, f); break;
    case 4: for_run_codes<4>(rec, elems, cols, r, col, f); break;
    case 3: for_run_codes<3>(rec, elems, cols, r, col, f); break;
    case 2: for_run_codes<2>(rec, elems, cols, r, col, f); break;
    default: for_run_codes<1>(rec, elems, cols, r, col, f); break;
  }
}

// First index of a record's outlier entries (sorted by t << 8 | c, the
// unused ones 0 at the end) whose entry is at or after token t.
__device__ __forceinline__ int outlier_lower_bound(const uint32_t* ent, int n_o, int t) {
  const uint32_t key = static_cast<uint32_t>(t) << 8;
  int lo = 0, hi = n_o;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    const uint32_t e = __ldg(ent + mid);
    const uint32_t at = mid > 0 && e == 0 ? 0xFFFFFFFFu : (e & 0xFFFFu);  // unused: after every token
    if (at < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

template <int D, int GP>
__global__ void __launch_bounds__(kQuantWarps * 32)
    quant_decode_any_kernel(const uint8_t* __restrict__ kcodes, const uint8_t* __restrict__ vcodes, QuantGeom geo,
                            int group_q, int n_groups, int gps, int n_splits, const float* __restrict__ q, float scale,
                            float* __restrict__ part_o, float* __restrict__ part_ml, int stride) {
  constexpr int kCh = D / 32;  // channels per lane; also the most channel groups (G >= 32)
  __shared__ float qsh_all[kQuantWarps][D][GP];      // q * scale
  __shared__ float qs_all[kQuantWarps][D][GP];       // q * scale * key scale of the group
  __shared__ float ps_all[kQuantWarps][kCh][32][GP]; // p * value scale, [channel group][token of the block]
  pdl_trigger();  // the fp16 part's split kernel may run beside this one (CudaTuning::decode_pdl)
  const int lane = threadIdx.x % 32, wi = threadIdx.x / 32;
  const int gw = blockIdx.x * kQuantWarps + wi;
  const int hk = gw / n_splits, split = gw % n_splits;
  if (hk >= geo.n_kv) return;
  const int G = geo.G, elems = G * D, ng = D / G;
  float(*qsh)[GP] = qsh_all[wi];
  float(*qs)[GP] = qs_all[wi];
  float(*ps)[32][GP] = ps_all[wi];
  const int n_o = geo.outliers;
  for (int c = lane; c < D; c += 32)
#pragma unroll
    for (int h = 0; h < GP; ++h)
      qsh[c][h] = h < group_q ? q[static_cast<size_t>(hk * group_q + h) * D + c] * scale : 0.0f;
  float m[GP], l[GP], acc[GP][kCh], pz[GP][kCh];
#pragma unroll
  for (int h = 0; h < GP; ++h) {
    m[h] = -FLT_MAX;
    l[h] = 0;
#pragma unroll
    for (int i = 0; i < kCh; ++i) acc[h][i] = pz[h][i] = 0;
  }
  const int g0 = split * gps, g1 = min(n_groups, g0 + gps);
  for (int grp = g0; grp < g1; ++grp) {
    const size_t rid = static_cast<size_t>(hk) * geo.max_groups + grp;
    const uint8_t* kr = kcodes + rid * geo.krec;
    const uint8_t* vr = vcodes + rid * geo.vrec;
    const __half* ksc = reinterpret_cast<const __half*>(kr + geo.kscale);
    const __half* kzr = reinterpret_cast<const __half*>(kr + geo.kzero);
    const __half* vsc = reinterpret_cast<const __half*>(vr + geo.vscale);
    const __half* vzr = reinterpret_cast<const __half*>(vr + geo.vzero);
    __syncwarp();  // the previous group's readers of qs are done
    float qz[GP];
#pragma unroll
    for (int h = 0; h < GP; ++h) qz[h] = 0;
#pragma unroll
    for (int i = 0; i < kCh; ++i) {
      const int c = i * 32 + lane;
      const float ks = __half2float(ksc[c]), kz = __half2float(kzr[c]);
#pragma unroll
      for (int h = 0; h < GP; ++h) {
        qs[c][h] = qsh[c][h] * ks;
        qz[h] = fmaf(qsh[c][h], kz, qz[h]);
      }
    }
#pragma unroll
    for (int h = 0; h < GP; ++h) qz[h] = warp_sum(qz[h]);
    __syncwarp();
    for (int b = 0; b < G / 32; ++b) {
      const int t = b * 32 + lane;  // this lane's token for the scores
      float sc[GP];
#pragma unroll
      for (int h = 0; h < GP; ++h) sc[h] = qz[h];
      // Key codes: channels 32r .. 32r+31 of token t (packed = channel, col = token).
#pragma unroll
      for (int r = 0; r < kCh; ++r)
        run_codes(geo.kbits, kr, elems, G, r, t, [&](int k, float code) {
#pragma unroll
          for (int h = 0; h < GP; ++h) sc[h] = fmaf(qs[32 * r + k][h], code, sc[h]);
        });
      // Key outliers of token t: q[c] delta each (the query already scaled).
      if (n_o > 0) {
        const uint32_t* ke = reinterpret_cast<const uint32_t*>(kr + geo.koff);
        const int j1 = outlier_lower_bound(ke, n_o, t + 1);
        for (int j = outlier_lower_bound(ke, n_o, t); j < j1; ++j) {
          const uint32_t e = __ldg(ke + j);
          const float dl = outlier_delta(e);
#pragma unroll
          for (int h = 0; h < GP; ++h) sc[h] = fmaf(qsh[e & 0xff][h], dl, sc[h]);
        }
      }
      // Online softmax; m is warp-uniform, l and the accumulators per lane.
      float pt[GP];  // this lane's token's p (value outliers)
#pragma unroll
      for (int h = 0; h < GP; ++h) {
        const float mn = fmaxf(m[h], warp_max(sc[h]));
        const float corr = __expf(m[h] - mn);
        m[h] = mn;
        const float p = __expf(sc[h] - mn);
        pt[h] = p;
        l[h] = fmaf(l[h], corr, p);
#pragma unroll
        for (int i = 0; i < kCh; ++i) acc[h][i] *= corr;
#pragma unroll
        for (int g = 0; g < kCh; ++g) {  // channel groups g < ng (unrolled: pz stays in registers)
          if (g >= ng) break;
          pz[h][g] = fmaf(p, __half2float(vzr[g * G + t]), pz[h][g] * corr);
          ps[g][lane][h] = p * __half2float(vsc[g * G + t]);
        }
      }
      __syncwarp();
      // Value codes: tokens 32b .. 32b+31 of channel c (packed = token, col = channel).
#pragma unroll
      for (int i = 0; i < kCh; ++i) {
        const int c = i * 32 + lane, g = (i * 32) / G;
        run_codes(geo.vbits, vr, elems, D, b, c, [&](int k, float code) {
#pragma unroll
          for (int h = 0; h < GP; ++h) acc[h][i] = fmaf(ps[g][k][h], code, acc[h][i]);
        });
      }
      // Value outliers of this block's tokens: p[t] delta to channel c,
      // summed per channel in ps (free once the codes are read: D x GP
      // floats) token by token, the entries of a token over the lanes.
      if (n_o > 0) {
        const uint32_t* ve = reinterpret_cast<const uint32_t*>(vr + geo.voff);
        const int s0 = outlier_lower_bound(ve, n_o, t), s1 = outlier_lower_bound(ve, n_o, t + 1);
        float* dsum = &ps[0][0][0];  // [D][GP]
        __syncwarp();  // every lane's value codes have read ps
#pragma unroll
        for (int i = 0; i < kCh; ++i)
#pragma unroll
          for (int h = 0; h < GP; ++h) dsum[(32 * i + lane) * GP + h] = 0;
        for (unsigned live = __ballot_sync(0xffffffffu, s1 > s0); live; live &= live - 1) {
          const int k = __ffs(live) - 1;
          const int a = __shfl_sync(0xffffffffu, s0, k), z = __shfl_sync(0xffffffffu, s1, k);
          float pk[GP];
#pragma unroll
          for (int h = 0; h < GP; ++h) pk[h] = __shfl_sync(0xffffffffu, pt[h], k);
          __syncwarp();  // the zeroing and the previous token's sums are visible
          for (int j = a + lane; j < z; j += 32) {
            const uint32_t e = __ldg(ve + j);
            const float dl = outlier_delta(e);
            float* d = dsum + (e & 0xff) * GP;
#pragma unroll
            for (int h = 0; h < GP; ++h) d[h] = fmaf(pk[h], dl, d[h]);
          }
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < kCh; ++i)
#pragma unroll
          for (int h = 0; h < GP; ++h) acc[h][i] += dsum[(32 * i + lane) * GP + h];
      }
      __syncwarp();  // ps is rewritten by the next block
    }
  }
#pragma unroll
  for (int h = 0; h < GP; ++h) {
    if (h >= group_q) break;
    const float lsum = warp_sum(l[h]);
    const float inv = lsum > 0 ? 1.0f / lsum : 0.0f;
    const size_t pi = static_cast<size_t>(hk * group_q + h) * stride + split;
#pragma unroll
    for (int i = 0; i < kCh; ++i) {
      float z = 0;  // sum_t p_t z_t of channel group (32 i) / G: a warp sum per group
#pragma unroll
      for (int g = 0; g < kCh; ++g) {
        if (g >= ng) break;
        const float s = warp_sum(pz[h][g]);
        if (g == (i * 32) / G) z = s;
      }
      part_o[pi * D + i * 32 + lane] = (acc[h][i] + z) * inv;
    }
    if (lane == 0) {
      part_ml[pi * 2] = m[h];
      part_ml[pi * 2 + 1] = lsum;
    }
  }
}

template <int D, int GP>
void launch_any(const QuantDecodeArgs& a, cudaStream_t s, int* warps) {
  if (warps) {  // only how many warps stay resident (cached per instantiation)
    static const int w = resident_warps(quant_decode_any_kernel<D, GP>, kQuantWarps * 32);
    *warps = w;
    return;
  }
  quant_decode_any_kernel<D, GP><<<a.grid, kQuantWarps * 32, 0, s>>>(a.kc, a.vc, a.geo, a.group_q, a.n_groups, a.gps,
                                                                     a.n_splits, a.q, a.scale, a.part_o, a.part_ml,
                                                                     a.stride);
}

}  // namespace

void launch_quant_decode_any(const QuantDecodeArgs& a, cudaStream_t s, int* warps) {
  const int D = a.geo.D, g = a.group_q;
  LONGKV_CHECK((D == 64 || D == 128) && g >= 1 && g <= 8 && a.geo.G % 32 == 0 && D % a.geo.G == 0,
               "quantized decode: head_dim %d, %d query heads per KV head, G %d not supported", D, g, a.geo.G);
  if (D == 128 && g <= 4) launch_any<128, 4>(a, s, warps);
  else if (D == 128) launch_any<128, 8>(a, s, warps);
  else if (g <= 4) launch_any<64, 4>(a, s, warps);
  else launch_any<64, 8>(a, s, warps);
}

}  // namespace longkv::cuda

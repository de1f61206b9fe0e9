// Outlier entries in the v3 kernel (milestone 67, kOut of
// kv_quant_decode_v3.cu): the one-launch step's kernels (q in shared memory,
// 4 query heads a KV head, as many key as value bits) add a record's n_o <=
// kV3MaxOutliers entries (kv_codec.h: c | t << 8 | f16(delta) << 16, sorted
// by (t, c)) where the reference codec adds them:
// - keys: q[c] delta of each entry to token t's score, before the softmax;
// - values: p[t] delta of each entry to output channel c, into a running
//   sum [D][4] that is rescaled with the accumulator and added to the
//   warp's o at the end.
// A warp reads a record's entries 32 at a time, a lane each, loaded into
// registers at the top of the group, ~300 instructions before their first
// use. The lanes of a read that share a token (keys: a segmented sum over
// adjacent lanes) or a channel (values: summed in entry order by the lowest
// of them, outlier_lead_sum) add once, so no two lanes add to one slot and
// the sums do not depend on timing. (Requesting the entries into L2 with
// the group's records, kStages - 1 groups ahead, measured no faster: 7.35
// against 7.37 ms a token of k2v2:o2 at 131K; not kept.) Included by
// kv_quant_decode_v3.cu only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cuda/kv_quant_gpu.cuh"

namespace longkv::cuda::v3 {

// A group's key and value entries: entry lane + 32 r of each record (0 past n_o).
template <int R>
struct V3OutEntries {
  uint32_t k[R], v[R];
  // keys at `ke` (the key record's entries), values kv_gap bytes on.
  __device__ __forceinline__ void load(const uint8_t* ke, ptrdiff_t kv_gap, int n_o, int lane) {
    const uint32_t* kp = reinterpret_cast<const uint32_t*>(ke);
    const uint32_t* vp = reinterpret_cast<const uint32_t*>(ke + kv_gap);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int j = lane + 32 * r;
      k[r] = j < n_o ? __ldg(kp + j) : 0u;
      v[r] = j < n_o ? __ldg(vp + j) : 0u;
    }
  }
};

// Key entries: osm[t][h] = sum of qf[c][h] delta over token t's entries
// (qf = q scale log2(e), the scores' units), then this thread's scores'
// sums: okey[i] = osm[token(gid, i)][tig] (head tig; GP = 4). Entries are
// sorted by (t, c), so a token's entries in a read are adjacent lanes: a
// segmented suffix sum (lane j adds lane j + o's partial while it is the
// same token; 5 steps) leaves each run's total in its first lane, which
// adds it to osm[t]; a run that goes on in the next read adds after it.
// (The values' form, outlier_lead_sum's match and lead, cost 1.42 ms a
// token of k2v2:o2 at 131K here, this one 0.58; H200, milestone 67.)
template <typename S>
__device__ __forceinline__ void v3_out_keys(const uint32_t (&ek)[S::kOutR], int n_o, const float4* qf4,
                                            float4* osm4, int lane, int gid, int tig, float (&okey)[4]) {
  osm4[lane] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  __syncwarp();
#pragma unroll
  for (int r = 0; r < S::kOutR; ++r) {
    if (32 * r >= n_o) break;
    const uint32_t e = ek[r];
    const bool valid = lane + 32 * r < n_o;
    const int t = valid ? (e >> 8) & 0xff : 256 + lane, c = e & 0xff;
    const float d = outlier_delta(e);
    const float4 qv = qf4[c];
    float w[4] = {qv.x * d, qv.y * d, qv.z * d, qv.w * d};
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int tn = __shfl_down_sync(0xffffffffu, t, o);
      float wn[4];
#pragma unroll
      for (int h = 0; h < 4; ++h) wn[h] = __shfl_down_sync(0xffffffffu, w[h], o);
      if (lane + o < 32 && tn == t)
#pragma unroll
        for (int h = 0; h < 4; ++h) w[h] += wn[h];
    }
    const int tp = __shfl_up_sync(0xffffffffu, t, 1);
    if (valid && (lane == 0 || tp != t)) {
      float4 x = osm4[t];
      x.x += w[0], x.y += w[1], x.z += w[2], x.w += w[3];
      osm4[t] = x;
    }
    __syncwarp();
  }
  const float* osm = reinterpret_cast<const float*>(osm4);
#pragma unroll
  for (int i = 0; i < 4; ++i) okey[i] = osm[S::token(gid, i) * 4 + tig];
}

// The running value sums follow the accumulator's rescaling: cr of head h
// is lane h's (gid 0, tig h); lane takes channels lane + 32 i.
template <int D>
__device__ __forceinline__ void v3_out_rescale(float4* vo4, float cr, int lane) {
  float ch[4];
#pragma unroll
  for (int h = 0; h < 4; ++h) ch[h] = __shfl_sync(0xffffffffu, cr, h);
#pragma unroll
  for (int c = lane; c < D; c += 32) {
    float4 x = vo4[c];
    x.x *= ch[0], x.y *= ch[1], x.z *= ch[2], x.w *= ch[3];
    vo4[c] = x;
  }
}

// Value entries: vo[c][h] += p[t][h] delta (osm4 holds the group's p by
// token, written by the value B build; the caller's __syncwarp made them
// visible). Ends with a __syncwarp.
template <int R>
__device__ __forceinline__ void v3_out_values(const uint32_t (&ev)[R], int n_o, const float4* osm4, float4* vo4,
                                              int lane) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (32 * r >= n_o) break;
    const uint32_t e = ev[r];
    const bool valid = lane + 32 * r < n_o;
    const int t = (e >> 8) & 0xff, c = e & 0xff;
    const float d = outlier_delta(e);
    const float4 pv = osm4[t];
    const float w[4] = {pv.x * d, pv.y * d, pv.z * d, pv.w * d};
    float sum[4];
    if (outlier_lead_sum<4>(w, valid ? c : 256 + lane, sum) && valid) {
      float4 x = vo4[c];
      x.x += sum[0], x.y += sum[1], x.z += sum[2], x.w += sum[3];
      vo4[c] = x;
    }
    __syncwarp();
  }
}

}  // namespace longkv::cuda::v3

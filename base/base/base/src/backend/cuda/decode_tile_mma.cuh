// The f16 decode block's tile step on tensor cores (milestone 14,
// CudaTuning::attn_block_mma): one warp folds a tile of kMmaTok = 16 tokens
// of its split into the online-softmax state of the G <= 8 query heads of
// its KV head with mma.sync m16n8k16 instead of per-lane FMAs.
//
// Why: the FMA step (decode_tile.cuh) spends ~8 instructions a key element
// on q.k, its shuffle reduction and p.v for G = 4, and at 216+ registers
// holds 2 warps a scheduler; ncu saw the attention block at its issue limit
// and ~60% of DRAM bandwidth at 131K tokens (docs/cuda-notes.md,
// milestone 13). Here a tile costs 16 ldmatrix and 48 MMAs a warp.
//
// Shapes (gid = lane / 4, tig = lane % 4; fragment layouts as in
// flash_prefill.cu):
//   S = Q K^T:      A = Q (16 x D; rows = query heads, rows >= G zero),
//                   B = K^T (D x 8 tokens, ldmatrix of K's rows), two 8-token
//                   n-tiles: lane holds s[nt][j] = score of head gid and
//                   token 8 nt + 2 tig + j.
//   O^T += V^T P^T: A = V^T (16 dims x 16 tokens, ldmatrix.trans of V's
//                   rows), B = P^T (16 tokens x 8 heads), which is exactly
//                   the S accumulators of head gid (b0 = n-tile 0's pair,
//                   b1 = n-tile 1's), so P never leaves registers; lane
//                   holds o[mt] = O of heads 2 tig, 2 tig + 1 at dims
//                   16 mt + gid (c0, c1) and + 8 (c2, c3): D / 4 floats, half
//                   the accumulators of the O = P V orientation.
// Precision: q and p enter as hi + lo f16 pairs (split_hi_lo: ~22
// significant bits), k and v are f16 already, products and sums in f32: the
// same values as the FMA step up to summation order (nmse 5e-14 - 8e-13 against
// it, Cuda.DecodeBlockMatchesReferenceAndOldPath).
#pragma once

#include <cfloat>

#include "backend/cuda/kv_quant_mma.cuh"

namespace longkv::cuda {

constexpr int kMmaTok = 16;  // tokens per tile and warp

// Bytes of one warp's stage: a K and a V tile of kMmaTok rows of D halves.
template <int D>
__host__ __device__ constexpr int mma_stage_bytes() {
  return 2 * kMmaTok * D * 2;
}

// Issues the cp.async copies of one tile (tokens t0 .. t0 + 15; rows at or
// past t_end zero-filled) of a KV head's K and V rows (kh, vh: its token 0)
// into a stage at shared address `stage`, rows swizzled (swz).
template <int D>
__device__ __forceinline__ void mma_issue_tile(uint32_t stage, const __half* kh, const __half* vh, int t0, int t_end,
                                               int lane) {
  constexpr int kCh = D / 8, kRowStep = 32 / kCh;
  const int c = lane % kCh, r0 = lane / kCh;
#pragma unroll
  for (int i = 0; i < kMmaTok / kRowStep; ++i) {
    const int row = r0 + i * kRowStep, t = t0 + row;
    const bool ok = t < t_end;
    const size_t off = ok ? static_cast<size_t>(t) * D + 8 * c : 0;
    const uint32_t dst = stage + 2 * swz<D>(row, c);
    cp_async16_zfill(dst, kh + off, ok);
    cp_async16_zfill(dst + 2 * kMmaTok * D, vh + off, ok);
  }
}

// Q as hi/lo A fragments from the warp's copy of the rotated, scaled queries
// (sq: [G][D] floats in shared memory). Rows >= G and the fragments' rows
// 8..15 (registers 1 and 3) are zero.
template <int D, int G>
__device__ __forceinline__ void mma_q_fragments(const float* sq, int lane, uint32_t (&qh)[D / 16][4],
                                                uint32_t (&ql)[D / 16][4]) {
  const int gid = lane / 4, tig = lane % 4;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qh[kk][1] = qh[kk][3] = ql[kk][1] = ql[kk][3] = 0;
    if (gid < G) {
      const float2 a = *reinterpret_cast<const float2*>(sq + gid * D + 16 * kk + 2 * tig);
      const float2 b = *reinterpret_cast<const float2*>(sq + gid * D + 16 * kk + 2 * tig + 8);
      split_hi_lo(a.x, a.y, &qh[kk][0], &ql[kk][0]);
      split_hi_lo(b.x, b.y, &qh[kk][2], &ql[kk][2]);
    } else {
      qh[kk][0] = qh[kk][2] = ql[kk][0] = ql[kk][2] = 0;
    }
  }
}

// Per-lane byte offsets of the ldmatrix row addresses inside a stage (as in
// flash_prefill.cu). K, not transposed: lanes 8i..8i+7 give tokens r8 of
// chunk 4 kp + i; with kp = 2a + e the swizzled chunk is 8a + ((4e + i) ^ r8),
// so two bases (e = 0, 1) plus an immediate cover every (n-tile, kp).
// V, transposed: lanes 8i..8i+7 give token r8 + 8 (i / 2) of chunk
// 2 mt + i % 2; with mt = 4a + e the chunk is 8a + ((2e + i % 2) ^ r8): four
// bases.
struct MmaTileOffsets {
  uint32_t k[2], v[4];
};
template <int D>
__device__ __forceinline__ MmaTileOffsets mma_tile_offsets(int lane) {
  const int r8 = lane & 7;
  MmaTileOffsets o;
#pragma unroll
  for (int e = 0; e < 2; ++e) o.k[e] = 2 * (r8 * D + (((4 * e + (lane >> 3)) ^ r8) << 3));
#pragma unroll
  for (int e = 0; e < 4; ++e)
    o.v[e] = 2 * kMmaTok * D + 2 * ((r8 + 8 * (lane >> 4)) * D + (((2 * e + ((lane >> 3) & 1)) ^ r8) << 3));
  return o;
}

// Folds the tile in stage `stage` (tokens t0 .. t0 + 15, those at or past
// t_end masked) into head gid's (m, l) -- m the same in the 4 lanes of a
// quad, l this lane's tokens only -- and o (layout above).
template <int D>
__device__ __forceinline__ void mma_decode_tile(uint32_t stage, const MmaTileOffsets& off,
                                                const uint32_t (&qh)[D / 16][4], const uint32_t (&ql)[D / 16][4],
                                                int t0, int t_end, int lane, float& m, float& l,
                                                float (&o)[D / 16][4]) {
  const int tig = lane % 4;
  // The hi and lo halves of q in separate accumulators: four independent
  // chains of D / 16 MMAs rather than two of D / 8 (each MMA waits for the
  // one before it on the same accumulator).
  float s[2][4], sl[2][4];
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    sl[nt][0] = sl[nt][1] = sl[nt][2] = sl[nt][3] = 0.0f;
#pragma unroll
    for (int kp = 0; kp < D / 32; ++kp) {
      uint32_t b[4];
      ldsm_x4(stage + off.k[kp % 2] + 2 * (nt * 8 * D + (kp / 2) * 64), b);
      mma_16816(sl[nt], ql[2 * kp], make_uint2(b[0], b[1]));
      mma_16816(sl[nt], ql[2 * kp + 1], make_uint2(b[2], b[3]));
      mma_16816(s[nt], qh[2 * kp], make_uint2(b[0], b[1]));
      mma_16816(s[nt], qh[2 * kp + 1], make_uint2(b[2], b[3]));
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) s[nt][j] += sl[nt][j];
  }
  if (t0 + kMmaTok > t_end) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        if (t0 + 8 * nt + 2 * tig + j >= t_end) s[nt][j] = -INFINITY;
  }
  // Head gid's max over the tile: the quad's 4 lanes hold its 16 tokens.
  float mx = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
  const float mn = fmaxf(m, mx);  // finite: a tile holds at least one token before t_end
  const float corr = __expf(m - mn);
  m = mn;
  float p[2][2];
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) p[nt][j] = __expf(s[nt][j] - mn);  // masked: exp(-inf) = 0
  l = l * corr + ((p[0][0] + p[0][1]) + (p[1][0] + p[1][1]));
  uint2 ph, pl;
  split_hi_lo(p[0][0], p[0][1], &ph.x, &pl.x);
  split_hi_lo(p[1][0], p[1][1], &ph.y, &pl.y);
  // o holds heads 2 tig and 2 tig + 1: their corrections live in quads
  // 2 tig and 2 tig + 1.
  const float c0 = __shfl_sync(0xffffffffu, corr, 8 * tig), c1 = __shfl_sync(0xffffffffu, corr, 8 * tig + 4);
#pragma unroll
  for (int mt = 0; mt < D / 16; ++mt) {
    o[mt][0] *= c0;
    o[mt][1] *= c1;
    o[mt][2] *= c0;
    o[mt][3] *= c1;
    uint32_t a[4];
    ldsm_x4_trans(stage + off.v[mt % 4] + 2 * (mt / 4) * 64, a);
    mma_16816(o[mt], a, pl);
    mma_16816(o[mt], a, ph);
  }
}

}  // namespace longkv::cuda

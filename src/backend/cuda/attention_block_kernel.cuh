// Milestone 11: one decode step's attention for the dense f16 cache in one
// launch (CudaTuning::attn_block). The old path is four kernels per layer --
// RoPE of q and k, the append of k and v, the split kernel, the merge -- each
// a few microseconds of launch ramp and drain for almost no work at short
// contexts, and each waiting for the one before it. Here:
//
// - Every warp of the split kernel's layout (decode_tile.cuh: one warp per
//   (KV head, split), all query heads of the group) rotates its own copy of
//   q in registers (the angles in double, as rope_kernel, rope_rotate.cuh:
//   same bits), and the one warp whose split holds the new token rotates k,
//   rounds k and v to f16, stores them in the cache slot and uses the same
//   register values for that token, so no warp reads the slot this launch
//   writes.
// - A block is kBlkWarps consecutive splits of one KV head; its warps'
//   states (m, l, unnormalized o) meet in shared memory into one block
//   partial. With one block per KV head (short contexts) that is already the
//   output. Otherwise each block writes its partial, then takes a ticket
//   (__threadfence + atomicAdd on a per-KV-head counter); the block that
//   draws the last ticket merges the head's partials, writes the output and
//   puts the counter back to 0 for the next launch (graph replay included).
// - Milestone 13 (CudaTuning::attn_block_stages, S >= 2): the tiles come
//   through shared memory, S - 1 of them in flight behind the one being
//   folded. With every tile in registers (S = 0, milestone 11) a warp's loads
//   and its arithmetic alternate, and with 216 registers only 8 warps fit on
//   an SM, so at 131K tokens ncu saw 58% of DRAM bandwidth on H200. cp.async
//   needs no registers for the tiles in flight; each lane copies and later
//   reads back only its own 16-byte pieces, so cp.async.wait_group alone
//   orders them (no barrier), and a stage is refilled only after the tile read
//   from it was folded.
// - Milestone 14 (CudaTuning::attn_block_mma, with S >= 2 stages): the tile
//   step on tensor cores (decode_tile_mma.cuh): tiles of 16 tokens copied
//   into swizzled rows (zero-filled past the split), read by ldmatrix; the
//   warp's rotated queries go through its slice of `sm` into hi/lo f16
//   fragments; the new token's k and v are written into the stage over the
//   stale slot's copy before the tile is folded.
// - Launched with PDL (CudaTuning::decode_pdl) behind the q|k|v GEMV: before
//   griddepcontrol.wait it reads only what no kernel of this step writes --
//   the position (*dpos, copied before the step's first kernel) and the RoPE
//   frequencies, and it asks L2 for its first tile of cache slots (before the
//   new one: written by earlier steps); it lets the wo GEMV launch once its
//   main loop is done.
// - Milestone 15 (DecodeBlockArgs::ext): the same kernel does the fp16 part
//   (sinks + window) of a quantized cache's steady step, first of two
//   launches: slot = position - the tokens held as codes, one block per KV
//   head; it writes its block partial behind the v3 kernel's and lets that
//   kernel launch right after its own wait; the v3 kernel's last block per
//   KV head merges (decode_merge.cuh, the same merge as the ticket's here).
//
// The kernel and its launcher are a header so that their instances can be
// compiled in three translation units in parallel (the 96 instances took
// ~90 s of one core in one file, the longest compile of the build):
// attention_block.cu (the register path, S = 0, and the host side),
// attention_block_mma.cu (tensor cores, S = 2, 3, 4) and
// attention_block_fma.cu (per-lane FMAs, S = 2, 3).
#pragma once

#include <algorithm>
#include <cfloat>

#include "backend/cuda/decode_block_args.cuh"
#include "backend/cuda/decode_merge.cuh"
#include "backend/cuda/decode_tile.cuh"
#include "backend/cuda/decode_tile_mma.cuh"
#include "backend/cuda/gpu_kv_cache.cuh"
#include "backend/cuda/hadamard.cuh"
#include "backend/cuda/kv_quant_mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope_rotate.cuh"

namespace longkv::cuda::attn_block {

constexpr int kBlkWarps = 4;
constexpr int kMaxBlocksPerHead = kMaxMergeParts;  // block partials one merge takes (shared-memory weights)
constexpr int kBlkSteps = 8;            // token steps per tile (CudaTuning::dense_decode_steps' default)
// Fewest tokens a split gets from the host's sizing: up to 4 x 64 = 256
// tokens (every replay bucket below 512) are one block per KV head, so short
// contexts skip the ticket merge (measured at depth 0 on H200: 16 splits of
// <= 16 tokens, i.e. 4 blocks per head and the ticket merge, took 11.4 us
// per launch in ncu, more than the split kernel and merge together; one
// block per head: 7.6 us).
constexpr int kMinSplitTokens = 64;

// Dynamic shared memory of the staged variants: per warp and stage, each
// lane's 16 bytes of k and of v per token step (FMA), or a K and a V tile
// of kMmaTok swizzled rows (tensor cores).
template <int D>
constexpr size_t stage_bytes(int stages, bool mma) {
  return static_cast<size_t>(stages) * kBlkWarps * (mma ? mma_stage_bytes<D>() : kBlkSteps * 32 * 32);
}

// kStages: 0 = tiles loaded into registers; >= 2 = through shared memory.
// kMma (kStages >= 2 only): the tile step on tensor cores.
// The kernel's body (a device function so that the batched launch below
// runs the same code): block blockIdx.x of the step described by a.
template <int D, int G, int kStages, bool kMma>
__device__ __forceinline__ void decode_block_body(const DecodeBlockArgs& a) {
  static_assert(!kMma || kStages >= 2, "the tensor-core step reads its tiles from shared memory");
  constexpr int kLpt = D / 8, kTps = 32 / kLpt, kTile = kTps * kBlkSteps, kD4 = D / 4;
  constexpr int kSm = kBlkWarps * G * D > 2 * G * kMaxMergeParts + G ? kBlkWarps * G * D : 2 * G * kMaxMergeParts + G;
  __shared__ __align__(16) float sm[kSm];  // warps' o, then the merge's (m, l) / weights
  __shared__ float sm_ml[kBlkWarps][G][2];
  __shared__ int sm_last;
  const int tid = threadIdx.x, lane = tid % 32, w = tid / 32;
  const int nb = a.n_splits / kBlkWarps;
  const int hk = blockIdx.x / nb, blk = blockIdx.x % nb, split = blk * kBlkWarps + w;
  const int sub = lane % kLpt, grp = lane / kLpt;
  const int pos = *a.dpos, slot_new = pos + a.tok_add, n_tok = slot_new + 1;
  const int tps = max(16, ((n_tok + a.n_splits - 1) / a.n_splits + 15) / 16 * 16);
  const int t_begin = split * tps, t_end = min(n_tok, t_begin + tps);
  const bool mine = t_begin <= slot_new && slot_new < t_end;  // this warp's split holds the new token

  // Angles of this lane's 8 dims (interleaved: 4 pairs inside the lane;
  // NeoX, rope_dim == D: dim d pairs with d + D/2, kLpt/2 lanes away).
  float cs[8], sn[8];
  bool rot[8];
  const bool neox = a.rope.neox, low = sub < kLpt / 2;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int d = 8 * sub + e;
    const int fi = neox ? d % (D / 2) : d / 2;
    rot[e] = a.rope.inv_freq != nullptr && (neox || (e % 2 == 0 && d < a.rope.rope_dim));
    cs[e] = 1;
    sn[e] = 0;
    if (rot[e]) rope_cos_sin(pos, a.rope.inv_freq[fi], cs[e], sn[e]);
  }
  auto rotate = [&](float (&x)[8]) {
    if (neox) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float p = __shfl_xor_sync(0xffffffffu, x[e], kLpt / 2);
        if (rot[e]) x[e] = low ? rope_rotate(x[e], p, cs[e], sn[e]).x : rope_rotate(p, x[e], cs[e], sn[e]).y;
      }
    } else {
#pragma unroll
      for (int e = 0; e < 8; e += 2)
        if (rot[e]) {
          const float2 o = rope_rotate(x[e], x[e + 1], cs[e], sn[e]);
          x[e] = o.x;
          x[e + 1] = o.y;
        }
    }
  };

  const __half* kh = a.kc + static_cast<size_t>(hk) * a.max_tokens * D + 8 * sub;
  const __half* vh = a.vc + static_cast<size_t>(hk) * a.max_tokens * D + 8 * sub;
  uint4 kr[kBlkSteps], vr[kBlkSteps];
  bool ok[kBlkSteps];
  auto load_tile = [&](int t0) {
    decode_load_tile<D, kBlkSteps>(kh, vh, t0, kTps, grp, t_begin, t_end, kr, vr, ok);
  };
  // Staged: per warp [stage][step][k | v][lane] 16-byte pieces: a warp's
  // copies and reads of one step's k (or v) are 512 contiguous bytes, 4
  // shared-memory wavefronts, no bank conflicts.
  extern __shared__ uint4 stg[];
  uint4* my_stg = stg + static_cast<size_t>(w) * (kStages > 0 ? kStages : 1) * kBlkSteps * 64 + lane;
  auto issue_tile = [&](int t0, int stage) {  // one commit group per call, empty past the split
    if (t0 < t_end) {
#pragma unroll
      for (int st = 0; st < kBlkSteps; ++st) {
        const int t = t0 + st * kTps + grp;
        const size_t off = static_cast<size_t>(t < t_end ? t : t_begin) * D;
        uint4* dst = my_stg + (stage * kBlkSteps + st) * 64;
        cp_async16(dst, kh + off);
        cp_async16(dst + 32, vh + off);
      }
    }
    cp_async_commit();
  };
  // The first tile's lines, fetched into L2 while the q|k|v GEMV drains:
  // slots written by earlier steps only. (Loading them into registers here
  // instead kept them live across the RoPE code: ptxas 255 registers + 144
  // B spilled at G 4, D 128, against no spills this way. A prefetch is only
  // a hint; the copies into shared memory wait for pdl_wait, after which the
  // previous step's slot is certainly complete, with a one-layer model too.)
#pragma unroll
  for (int st = 0; st < kBlkSteps; ++st) {
    const int t = t_begin + st * kTps + grp;
    if (t < t_end) {
      asm volatile("prefetch.global.L2 [%0];" ::"l"(kh + static_cast<size_t>(t) * D));
      asm volatile("prefetch.global.L2 [%0];" ::"l"(vh + static_cast<size_t>(t) * D));
    }
  }

  // Tensor-core variant: this warp's stages, and its K/V rows from token 0.
  constexpr int kMmaStage = mma_stage_bytes<D>();
  unsigned char* const mst = reinterpret_cast<unsigned char*>(stg) + static_cast<size_t>(w) * kStages * kMmaStage;
  const uint32_t mst_s = smem_u32(mst);
  const __half* kh0 = kh - 8 * sub;
  const __half* vh0 = vh - 8 * sub;
  auto issue_mma_tile = [&](int t0, int stage) {  // one commit group per call, empty past the split
    if (t0 < t_end) mma_issue_tile<D>(mst_s + stage * kMmaStage, kh0, vh0, t0, t_end, lane);
    cp_async_commit();
  };

  pdl_wait();  // q, k, v of this step are complete from here on
  // The quantized kernel behind this one (a.ext > 0) may launch now: it
  // needs only q (complete, as this launch's wait says) until it merges,
  // and waits for this launch first.
  if (a.ext > 0) pdl_trigger();
  if constexpr (kMma) {
#pragma unroll
    for (int sg = 0; sg < kStages - 1; ++sg) issue_mma_tile(t_begin + sg * kMmaTok, sg);
  } else if constexpr (kStages > 0) {
    // The first S - 1 tiles, in flight under q's RoPE. The new token's slot
    // is read stale and replaced from registers below.
#pragma unroll
    for (int sg = 0; sg < kStages - 1; ++sg) issue_tile(t_begin + sg * kTile, sg);
  }

  float qr[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    const float* qh = a.q + static_cast<size_t>(hk * G + h) * D + 8 * sub;
    const float4 x0 = reinterpret_cast<const float4*>(qh)[0], x1 = reinterpret_cast<const float4*>(qh)[1];
    float x[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    rotate(x);
    if (a.rope.hadamard != 0) hadamard_lane8<kLpt>(x, sub, a.rope.hadamard);
#pragma unroll
    for (int e = 0; e < 8; ++e) qr[h][e] = x[e] * a.scale;
  }
  uint4 knew = {}, vnew = {};
  if (mine) {  // the new token: rotated, rounded to f16 as append_kernel does, stored by token group 0
    const float* kp = a.k + static_cast<size_t>(hk) * D + 8 * sub;
    const float* vp = a.v + static_cast<size_t>(hk) * D + 8 * sub;
    const float4 k0 = reinterpret_cast<const float4*>(kp)[0], k1 = reinterpret_cast<const float4*>(kp)[1];
    const float4 v0 = reinterpret_cast<const float4*>(vp)[0], v1 = reinterpret_cast<const float4*>(vp)[1];
    float x[8] = {k0.x, k0.y, k0.z, k0.w, k1.x, k1.y, k1.z, k1.w};
    rotate(x);
    __half2* kn = reinterpret_cast<__half2*>(&knew);
    __half2* vn = reinterpret_cast<__half2*>(&vnew);
    float y[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
    if (a.rope.hadamard != 0) {  // ":rot": H k after RoPE, H v (`mine` is warp-uniform)
      hadamard_lane8<kLpt>(x, sub, a.rope.hadamard);
      hadamard_lane8<kLpt>(y, sub, a.rope.hadamard);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      kn[e] = __floats2half2_rn(x[2 * e], x[2 * e + 1]);
      vn[e] = __floats2half2_rn(y[2 * e], y[2 * e + 1]);
    }
    if (grp == 0) {
      const size_t slot = static_cast<size_t>(slot_new) * D;
      *reinterpret_cast<uint4*>(a.kc + static_cast<size_t>(hk) * a.max_tokens * D + 8 * sub + slot) = knew;
      *reinterpret_cast<uint4*>(a.vc + static_cast<size_t>(hk) * a.max_tokens * D + 8 * sub + slot) = vnew;
    }
  }

  if constexpr (kMma) {
    // The queries as hi/lo fragments, through this warp's slice of sm (free
    // until the warps meet below).
    float* sq = sm + w * G * D;
    if (grp == 0) {
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float4* dst = reinterpret_cast<float4*>(sq + h * D + 8 * sub);
        dst[0] = make_float4(qr[h][0], qr[h][1], qr[h][2], qr[h][3]);
        dst[1] = make_float4(qr[h][4], qr[h][5], qr[h][6], qr[h][7]);
      }
    }
    __syncwarp();
    uint32_t qh[D / 16][4], ql[D / 16][4];
    mma_q_fragments<D, G>(sq, lane, qh, ql);
    const MmaTileOffsets off = mma_tile_offsets<D>(lane);
    float mm = -FLT_MAX, ll = 0, o[D / 16][4];
#pragma unroll
    for (int i = 0; i < D / 16; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0;
    for (int t0 = t_begin, it = 0; t0 < t_end; t0 += kMmaTok, ++it) {
      __syncwarp();  // every lane's ldmatrix reads of the stage refilled now are done
      issue_mma_tile(t0 + (kStages - 1) * kMmaTok, (it + kStages - 1) % kStages);
      cp_async_wait<kStages - 1>();  // this lane's copies of tile `it` have landed ...
      __syncwarp();                  // ... and every lane's are visible to the warp
      const int stage = it % kStages;
      // The split's last tile holds the new token (slot t_end - 1): its
      // registers replace the slot's stale copy (lane sub has chunk sub).
      if (mine && t0 + kMmaTok >= t_end) {
        if (grp == 0) {
          const int r = slot_new - t0;
          unsigned char* row = mst + stage * kMmaStage + 2 * swz<D>(r, sub);
          *reinterpret_cast<uint4*>(row) = knew;
          *reinterpret_cast<uint4*>(row + 2 * kMmaTok * D) = vnew;
        }
        __syncwarp();
      }
      mma_decode_tile<D>(mst_s + stage * kMmaStage, off, qh, ql, t0, t_end, lane, mm, ll, o);
    }
    ll += __shfl_xor_sync(0xffffffffu, ll, 1);
    ll += __shfl_xor_sync(0xffffffffu, ll, 2);
    pdl_trigger();  // the wo GEMV may launch and load weights while the partials merge
    // The warp's state into its slice of sm (as the FMA path leaves it):
    // lane holds heads 2 tig, 2 tig + 1 at dims 16 mt + gid and + 8.
    const int gid = lane / 4, tig = lane % 4;
    __syncwarp();  // every lane has read its q fragments from the slice
#pragma unroll
    for (int mt = 0; mt < D / 16; ++mt) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int h = 2 * tig + j;
        if (h < G) {
          sq[h * D + 16 * mt + gid] = o[mt][j];
          sq[h * D + 16 * mt + gid + 8] = o[mt][j + 2];
        }
      }
    }
    if (tig == 0 && gid < G) {
      sm_ml[w][gid][0] = mm;
      sm_ml[w][gid][1] = ll;
    }
  } else {
    float m[G], l[G], acc[G][8];
    decode_init_state<G>(m, l, acc);
    for (int t0 = t_begin, it = 0; t0 < t_end; t0 += kTile, ++it) {
      if constexpr (kStages > 0) {
        issue_tile(t0 + (kStages - 1) * kTile, (it + kStages - 1) % kStages);
        cp_async_wait<kStages - 1>();  // this lane's pieces of tile `it` have landed
        const uint4* src = my_stg + (it % kStages) * kBlkSteps * 64;
#pragma unroll
        for (int st = 0; st < kBlkSteps; ++st) {
          kr[st] = src[st * 64];
          vr[st] = src[st * 64 + 32];
          ok[st] = t0 + st * kTps + grp < t_end;
        }
      } else {
        load_tile(t0);
      }
      // The split's last tile holds the new token (slot t_end - 1). Lanes
      // past the split loaded slot t_begin, which is the new one when the split is one
      // token long: they get the register copy too, since the slot's old bits
      // (uninitialized memory, possibly NaN) times their zero weight could
      // still poison acc.
      if (mine && t0 + kTile >= t_end) {
#pragma unroll
        for (int st = 0; st < kBlkSteps; ++st)
          if ((ok[st] ? t0 + st * kTps + grp : t_begin) == slot_new) {
            kr[st] = knew;
            vr[st] = vnew;
          }
      }
      decode_tile<D, G, kBlkSteps>(qr, kr, vr, ok, m, l, acc);
    }
    decode_sum_groups<D, G>(l, acc);
    pdl_trigger();  // the wo GEMV may launch and load weights while the partials merge

    // The block's warps meet: (m, l) and unnormalized o per warp and head.
    if (grp == 0) {
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float4* dst = reinterpret_cast<float4*>(sm + (w * G + h) * D + 8 * sub);
        dst[0] = make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
        dst[1] = make_float4(acc[h][4], acc[h][5], acc[h][6], acc[h][7]);
        if (sub == 0) {
          sm_ml[w][h][0] = m[h];
          sm_ml[w][h][1] = l[h];
        }
      }
    }
  }
  __syncthreads();
  const int nbt = a.ext + nb;  // partials per query head (the quantized kernel's first)
  // Whole warps per round (":rot" rotates the output by shuffles); lanes
  // past G kD4 idle.
  for (int i0 = tid - lane; i0 < G * kD4; i0 += kBlkWarps * 32) {
    const int i = i0 + lane;
    const bool live = i < G * kD4;
    const int h = live ? i / kD4 : 0, d4 = i % kD4;
    float mm, ll;
    const float4 o = combine_warp_states<kBlkWarps>(sm + h * D, G * D, &sm_ml[0][h][0], 2 * G, d4, mm, ll);
    const size_t hq = static_cast<size_t>(hk) * G + h;
    if (nbt == 1) {  // the only block of this KV head: o is the output
      const float inv = ll > 0 ? 1.0f / ll : 0.0f;
      float4 r = make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
      if (a.rope.hadamard != 0) r = hadamard_float4<kD4>(r, lane, a.rope.hadamard);
      if (live) reinterpret_cast<float4*>(a.out + hq * D)[d4] = r;
    } else if (live) {
      const size_t pi = hq * nbt + a.ext + blk;
      reinterpret_cast<float4*>(a.part_o + pi * D)[d4] = o;
      if (d4 == 0) reinterpret_cast<float2*>(a.part_ml)[pi] = make_float2(mm, ll);
    }
  }
  if (nbt == 1 || a.ext > 0) return;  // done, or the quantized kernel merges

  // Last block of this KV head done: it merges the head's block partials.
  __threadfence();
  __syncthreads();
  if (tid == 0) sm_last = atomicAdd(a.tickets + hk, 1) == nb - 1;
  __syncthreads();
  if (!sm_last) return;
  __threadfence();
  if (tid == 0) a.tickets[hk] = 0;  // the next launch is stream-ordered behind this one
  merge_head_partials<D>(a.part_o, a.part_ml, hk, G, nb, a.out, sm, kBlkWarps * 32, a.rope.hadamard);
}

template <int D, int G, int kStages, bool kMma>
__global__ void __launch_bounds__(kBlkWarps * 32) decode_block_kernel(const DecodeBlockArgs a) {
  decode_block_body<D, G, kStages, kMma>(a);
}

// A batched step's fp16 parts of quantized caches in one launch (milestone
// 55, CudaTuning::batch_one_launch): sequence blockIdx.y's step is s[y],
// whose grid is its n_kv blocks (ext > 0: one a KV head); the others of
// the launch's columns return. The arguments travel as the kernel's
// parameter (read through the constant cache), not as a copy in memory.
struct DecodeBlockBatch {
  DecodeBlockArgs s[kMaxBatchSeqs];
};
template <int D, int G>
__global__ void __launch_bounds__(kBlkWarps * 32) decode_block_batch_kernel(const __grid_constant__ DecodeBlockBatch b) {
  const DecodeBlockArgs& a = b.s[blockIdx.y];
  if (blockIdx.x >= static_cast<unsigned>(a.n_kv * (a.n_splits / kBlkWarps))) return;
  decode_block_body<D, G, 0, false>(a);
}

// Launches the instance for (D, group, stages), or with `warps` set only
// reports how many of its warps the GPU holds at once (cached per instance).
template <int D, int S, bool M>
void launch_block_staged(const DecodeBlockArgs& a, int group, cudaStream_t s, int* warps) {
  constexpr size_t smem = S > 0 ? stage_bytes<D>(S, M) : 0;
#define LONGKV_BLOCK_G(G_)                                                                              \
  case G_: {                                                                                           \
    auto* kern = decode_block_kernel<D, G_, S, M>;                                                     \
    static const int cached =                                                                          \
        resident_warps_smem(kern, kBlkWarps * 32, smem, cuda_tuning().attn_block_carveout);           \
    if (warps) *warps = cached;                                                                        \
    else launch_maybe_pdl(cuda_tuning().decode_pdl, kern, dim3(a.n_kv * (a.n_splits / kBlkWarps)),    \
                          dim3(kBlkWarps * 32), smem, s, a);                                           \
    break;                                                                                             \
  }
  switch (group) {
    LONGKV_BLOCK_G(1) LONGKV_BLOCK_G(2) LONGKV_BLOCK_G(3) LONGKV_BLOCK_G(4)
    LONGKV_BLOCK_G(5) LONGKV_BLOCK_G(6) LONGKV_BLOCK_G(7) LONGKV_BLOCK_G(8)
    default: fail("CUDA decode block: up to 8 query heads per KV head (model has %d)", group);
  }
#undef LONGKV_BLOCK_G
}

// The instances each translation unit defines (the others only call them).
#define LONGKV_BLOCK_EXTERN(D, S, M) \
  extern template void launch_block_staged<D, S, M>(const DecodeBlockArgs&, int, cudaStream_t, int*);
LONGKV_BLOCK_EXTERN(64, 2, true)
LONGKV_BLOCK_EXTERN(128, 2, true)
LONGKV_BLOCK_EXTERN(64, 3, true)
LONGKV_BLOCK_EXTERN(128, 3, true)
LONGKV_BLOCK_EXTERN(64, 4, true)
LONGKV_BLOCK_EXTERN(128, 4, true)
LONGKV_BLOCK_EXTERN(64, 2, false)
LONGKV_BLOCK_EXTERN(128, 2, false)
LONGKV_BLOCK_EXTERN(64, 3, false)
LONGKV_BLOCK_EXTERN(128, 3, false)
#undef LONGKV_BLOCK_EXTERN

}  // namespace longkv::cuda::attn_block

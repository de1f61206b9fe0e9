// Quantized-KV decode on tensor cores, milestone 9 ("v3"): the milestone-4
// kernel (kv_quant_decode.cu) restructured so that a group costs fewer
// instructions (680 SASS per group and warp at k2v2 d128 g4, 930 before the
// layout and LOP3 fixes below) and fewer dependent round trips. Same split
// scheme and partial states (o, m, l) as the other quantized kernels, so the
// fp16 part and the merge are unchanged; CudaTuning::quant_decode_v3.
//
// What differs from milestone 4 (whose fragment maps it keeps: key A rows =
// tokens 16mt + gid (+8), value A rows = channels (milestone 29: vchan), thread
// tig's k-slots = whole code words):
// - Records are staged by cp.async into a per-warp ring of kStages groups in
//   shared memory (kStages - 1 in flight ahead, no registers held). The four
//   tig threads read the same columns of different code rows, so each run
//   of rows a tig reads starts 8 words (banks) after the previous run (24
//   words of padding per record): conflict-free, and every fragment read is
//   a per-thread base plus a compile-time offset (XOR swizzles cost ~3
//   integer ops per load).
// - Codes enter the f16 mantissa at code_pos (2-3 shifts per word instead of
//   one per pair, then one mask); the B operands carry 2^(10 - pos). Since
//   milestone 25 without an exponent (code_pair_sub: exact subnormals, the
//   sums 2^14 low, scaled back once); before, with the 1.0 exponent in a
//   register (code_pair_pos, 1 + code 2^(pos - 10); kV3OnePlus).
// - Key B columns interleave hi/lo (column 2j = hi of head 4nt + j, 2j + 1 =
//   its lo), so thread (gid, tig) ends with the two halves of head 4nt + tig
//   in its own c0/c1 (c2/c3): scores stay in registers (4 tokens x 1 head per
//   thread); the max is a 4-element max and 3 shuffles (over gid), not the
//   shared-memory score round trip and 4 x 5 shuffles. The per-head key
//   constant is one FMA per (channel, head) and a halving reduction (7
//   shuffles for 4 heads instead of 20).
// - Value B = f16(2^(10 - pos) p s) in one column per head (GP <= 8: one n8
//   tile; no hi/lo, the FlashAttention trade: the weights are rounded once to
//   f16 (with 1 + code operands the zero/offset term subtracted exactly those
//   rounded values; subnormal operands have no offset), so the error is
//   relative 2^-11 on each p s code term). Written by the thread
//   that holds p (its 4 tokens x 1 head; one f16x2 store per token pair for
//   2-bit codes) from (2^(10 - pos) s, z) that lane = token prepared in
//   shared memory.
// - The accumulator columns of thread tig are heads 2tig, 2tig + 1; their
//   softmax corrections come by shuffle, and only when some head's maximum
//   grew (a warp vote).
// - With CudaTuning::decode_pdl it is launched with PDL behind the append
//   kernels (waiting for them on the device) and lets the fp16 part's split
//   kernel start beside it.
// Exactness of the keys is unchanged (hi/lo B, exact code operands), except
// in the k2v2 one-launch instantiations, whose default since milestone 26 is
// key B rounded to f16 once (kV3KeyF16 below).
//
// Milestone 25 (kForm): the code operands as f16 subnormals, so no B build
// takes a "1 +" part back out: 669 -> 634 SASS a group, v3 ~1.7% faster,
// and as close to the CPU (docs/cuda-notes, milestone 25).
//
// Milestone 24 (same bits, fewer instructions a group: 735 -> 669 SASS at
// k2v2 d128): the records' addresses and stage offsets advance per group;
// the per-lane layout constants are one register plus compile-time offsets
// (V3Shape's checks); and in the one-launch step q sits in shared memory
// once per block (CudaTuning::quant_decode_qsmem) instead of 16 registers a
// thread, so ptxas stops recomputing addresses inside the loop.
//
// Milestone 15 (QuantDecodeArgs::fuse, CudaTuning::quant_fused): a steady
// step's attention in two launches instead of five (RoPE, the append, this
// kernel, the fp16 part's split kernel, the merge). The decode block
// (attention_block.cu, ext_parts) goes first: it rotates and appends the new
// token and attends over the fp16 part (one block per KV head) and lets this
// kernel launch right away. This kernel rotates its copy of q itself
// (rope_rotate.cuh: the bits rope_kernel makes), its 4 warps -- consecutive
// splits of one KV head -- combine their states in shared memory
// (decode_merge.cuh) into one partial per block, and the block that finishes
// a KV head last (a ticket, as in the decode block) waits for the decode
// block's partial and merges them all.
#include <algorithm>
#include <cfloat>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/decode_merge.cuh"
#include "backend/cuda/hadamard.cuh"
#include "backend/cuda/kv_quant_decode_v3.cuh"
#include "backend/cuda/kv_quant_decode_v3_out.cuh"
#include "backend/cuda/kv_quant_gpu.cuh"
#include "backend/cuda/kv_quant_mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope_rotate.cuh"

namespace longkv::cuda {
namespace {

using v3::V3Fuse;
using v3::V3Query;
using v3::V3OutEntries;
using v3::V3Shape;
using v3::v3_out_keys;
using v3::v3_out_rescale;
using v3::v3_out_values;

// kForm: the operand forms (milestone 25). 0, the default everywhere but in
// the two instantiations below (whose default is kV3KeyF16): key
// and value A operands are code_pair_sub's exact subnormals (2^-14 of
// milestone 9's scale, put back by one FMA per score and output), so there
// is no "1 +" part: the value B build only rounds p s to f16 and adds the
// zero term, and the key constant is the zero term alone. Key B keeps its
// hi/lo halves. The other forms exist for two instantiations (k2v2 GP 4,
// 3 stages, q in shared memory: the one-launch step of llama3-8b's shape,
// d128, and of the evaluation model's, d64, for its quality runs) as
// comparisons: kV3OnePlus (LONGKV_CUDA_TUNING vsub=0) milestone
// 9's 1 + code 2^(pos - 10) operands, whose value B build subtracts the
// rounded weights; kV3KeyF16 (khl=0, their default since milestone 26) key
// B rounded to f16 once, no lo half (q s then carries one f16 rounding, as q
// does in a kernel that rounds q to f16; the scores are no longer exact in
// the codes, and the evaluation model's perplexity through the decode step
// moved 0.13%: docs/cuda-notes.md, milestone 26). Milestone 48: k4v4's two
// instantiations of that shape take kV3KeyF16 too (khl: hi/lo); no other
// form exists for them.
constexpr int kV3OnePlus = 1, kV3KeyF16 = 2;

// kProbe (one instantiation, k2v2 d128 GP 4 3 stages, LONGKV_CUDA_TUNING
// qfx >= 16; wrong results, timing only): main-loop parts switched off by
// fz.probe bits -- 16 the records' copies (no DRAM traffic), 32 the key B
// build, 64 the key code conversions and MMAs, 128 the value B build (with
// the exponentials), 256 the value code conversions and MMAs. Without it the
// probe tests below are compile-time false, so the shipped kernel is as before.
// Registers (milestone 24, stated instead of left to ptxas's choice, which
// moved with every change): <= 4 heads a KV head at most 128, so that 3
// blocks leave a block's worth of registers to the kernel after (the wo
// GEMV starts beside v3's tail); 8 heads as many as they need without
// spilling (168-194; shared memory allows 2-3 blocks).
// The kernel's body, a device function so that the batched launch
// (quant_decode_v3_batch_kernel, milestone 55) runs the same code.
template <int D, int GP, int KB, int VB, int kStages_, bool kProbe = false, bool kQS = false, int kForm = 0,
          bool kOut = false>
__device__ __forceinline__ void quant_decode_v3_body(const uint8_t* __restrict__ kcodes,
                                                     const uint8_t* __restrict__ vcodes, QuantGeom geo,
                                                     int group_q, int n_groups, int gps, int n_splits,
                                                     const float* __restrict__ q, float scale,
                                                     float* __restrict__ part_o, float* __restrict__ part_ml,
                                                     int stride, const V3Fuse fz) {
  using S = V3Shape<D, GP, KB, VB, kStages_, kQS, kOut>;
  constexpr int kNT = S::kNT, kKS = S::kKS, kPK = S::kPK, kWK = S::kWK, kNPL = S::kNPL, kPV = S::kPV;
  constexpr int kWV = S::kWV, kMT = S::kMT, kCG = S::kCG, kStages = S::kStages, kStageW = S::kStageW;
  constexpr bool kV1 = kForm & kV3OnePlus, kKF16 = kForm & kV3KeyF16;
  constexpr float kSubScale = kV1 ? 1.0f : kCodeSubScale;  // the score and value accumulators' factor
  extern __shared__ __align__(16) uint32_t v3_smem[];
  __shared__ float v3_ml[kQuantWarps][GP][2];  // fuse: each warp's (m, l) per head
  // Launched with PDL (CudaTuning::decode_pdl) the grid is resident before
  // the append kernels finish; it waits for them here, and only then lets the
  // fp16 part's split kernel (which reads the window they write) start.
  // With fuse this kernel runs behind the decode block, which let it launch
  // after its own wait for the q|k|v GEMV: q is complete, and the one wait
  // (for the decode block's partial) comes before the merge.
  if (!fz.on) pdl_wait();
  pdl_trigger();
  const int lane = threadIdx.x % 32, wi = threadIdx.x / 32, gid = lane >> 2, tig = lane & 3;
  const int pb = kProbe ? fz.probe : 0;
  const int gw = blockIdx.x * kQuantWarps + wi;
  const int hk = gw / n_splits, split = gw % n_splits;
  if (hk >= geo.n_kv) return;  // never with fuse (exact grid): its warps meet at a barrier below
  uint32_t* ring = v3_smem + wi * S::kWarpW;
  uint2* bk = reinterpret_cast<uint2*>(ring + kStages * kStageW);
  uint2* bv = bk + S::kBkW / 2;
  float2* vsz = reinterpret_cast<float2*>(bv + S::kBvW / 2);
  float4* sqk = reinterpret_cast<float4*>(v3_smem + kQuantWarps * S::kWarpW);  // kQS only
  // kOut (kv_quant_decode_v3_out.cuh): the group's per-token sums, the value
  // entries' running sums (this warp's), the plain q (the block's).
  float4* osm4 = reinterpret_cast<float4*>(vsz + S::kVszW / 2);
  float4* vo4 = osm4 + S::kOsmW / 4;
  float4* qf4 = reinterpret_cast<float4*>(v3_smem + kQuantWarps * S::kWarpW + S::kSqkW);
  const int n_o = kOut ? geo.outliers : 0;

  const int g0 = split * gps, g1 = min(n_groups, g0 + gps);
  const size_t rid0 = static_cast<size_t>(hk) * geo.max_groups;
  // Group grp's key and value records -> stage st (16-byte chunks; the
  // destination word of each chunk of this lane is fixed per kernel).
  int cdst[S::kChunkBases ? 1 : S::kChunks / 32];
  const int cb0 = S::chunk_dst(lane, 0), cb1 = 4 * lane;
  if constexpr (!S::kChunkBases) {
#pragma unroll
    for (int r = 0; r < S::kChunks / 32; ++r) cdst[r] = S::chunk_dst(lane, r);
  }
  auto chunk_word = [&](int r) {  // r is a constant after unrolling
    if constexpr (S::kChunkBases)
      return 32 * r + 31 < S::kKWords / 4 ? cb0 + (S::chunk_dst(0, r) - S::chunk_dst(0, 0)) : cb1 + S::chunk_dst(0, r);
    else
      return cdst[r];
  };
  // Groups are staged in order, group g0 + j into stage j % kStages: the
  // next group's records (at this lane's first chunk) and its stage advance
  // by one per call, so a group costs no 64-bit multiply or modulo
  // (milestone 24: they were ~10% of the loop's SASS).
  // With as many key as value bits the records have one size, so a group's
  // value record sits a fixed distance (the same for every lane and group:
  // a uniform register) after its key record and one pointer advances.
  const uint8_t* knext = kcodes + (rid0 + g0) * geo.krec + 16 * lane;
  const uint8_t* vnext = vcodes + (rid0 + g0) * geo.vrec + 16 * lane;
  // KB == VB: vnext = knext + kv_gap (a difference of pointers into two
  // allocations, taken in the device's one flat address space).
  const ptrdiff_t kv_gap = vcodes - kcodes;
  int snext = 0;  // words from ring
  auto next_stage = [](int w) { return w == (kStages - 1) * kStageW ? 0 : w + kStageW; };
  auto stage_next = [&]() {
    uint32_t* dst = ring + snext;
#pragma unroll
    for (int r = 0; r < S::kChunks / 32; ++r) {
      const int i = lane + 32 * r;
      if (!(pb & 16))
        cp_async16(dst + chunk_word(r), i < S::kKChunks ? knext + 512 * r
                                                         : (KB == VB ? knext + kv_gap : vnext) + 512 * r - 16 * S::kKChunks);
    }
    knext += geo.krec;
    if constexpr (KB != VB) vnext += geo.vrec;
    snext = next_stage(snext);
  };
  // The group's queries, [h][c] from qsrc + h * D + c: as given, or (fuse)
  // rotated by this warp into the key B area, which the first group's B
  // build overwrites only after every lane has read its values below. With
  // q in shared memory (kQS) warp wi prepares head wi alone: every warp of
  // the block attends to the same KV head, so the 4 warps share the work
  // (milestone 29; before, each rotated all 4 heads and warp 0 stored them).
  static_assert(!kQS || kQuantWarps == GP, "q in shared memory: one head a warp");
  constexpr int kQH = kQS ? 1 : GP;                           // heads this warp prepares
  const int qh0 = kQS ? wi : 0, qn = kQS ? (wi < group_q) : group_q;  // the first, how many are real
  const float* qsrc = q + (static_cast<size_t>(hk) * group_q + qh0) * D;
  // fuse: q, its frequencies and the step's position are loaded before the
  // first records are requested (CudaTuning::quant_q_early), from a number
  // of groups a KV head on (quant_q_early_groups; milestone 30).
  V3Query<D, kQH> vq;
  if (fz.on && fz.q_early) vq.load(qsrc, qn, fz, lane);
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (g0 + i < g1) stage_next();
    cp_async_commit();
  }
  if (fz.on) {
    if (!fz.q_early) vq.load(qsrc, qn, fz, lane);
    float* sq = reinterpret_cast<float*>(bk);
    vq.rotate_store(sq, fz, lane);
    qsrc = sq;
  }

  // Key B build (as milestone 4, lanes assigned as V3Shape says): lane's
  // channel pairs (owner thread, its pair pi); u32 slot of column col is
  // kk kBkRow + 2 (4 col + owner) + (pi & 1), kk = pi / 2. Pair n's key
  // scale half kc_lo0 + n, B slot kbase0 + n and 2^(pos - 10) (code_pair_pos)
  // kzf[n].
  float qk[kQS ? 1 : kNPL][2][GP];  // 2^(10 - pos) q scale (kQS: in sqk)
  // Scores in units of log2 (q carries log2 e; milestone 29): each weight is
  // one FADD and one MUFU (exp2_fast), and m is turned back into natural
  // units once, for the partials.
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  const float scale2 = scale * kLog2e;
  const int owner0 = lane / 8, pi0 = kNPL * (lane % 8);
  const int kc_lo0 = (32 / KB) * (owner0 * kWK + pi0 / kPK) + pi0 % kPK;
  const int kbase0 = (pi0 / 2) * S::kBkRow + 2 * owner0 + (pi0 & 1);
  int kpos[kNPL];
  float kzf[kNPL];
#pragma unroll
  for (int n = 0; n < kNPL; ++n) {
    kpos[n] = code_pos<KB>((pi0 + n) % kPK);
    kzf[n] = ldexpf(1.0f, kpos[n] - 10);
  }
  auto kc_lo = [&](int n) { return kc_lo0 + n; };
#pragma unroll
  for (int n = 0; n < kNPL; ++n) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
      for (int h = 0; h < kQH; ++h) {
        const float x = h < qn ? ldexpf(qsrc[h * D + kc_lo(n) + e * (16 / KB)] * scale2, 10 - kpos[n]) : 0.0f;
        if constexpr (kQS) reinterpret_cast<float*>(sqk)[((2 * n + e) * 32 + lane) * 4 + wi] = x;
        else qk[n][e][h] = x;
      }
    }
  }
  if constexpr (kOut) {  // head wi's plain q (kQS: one head a warp), sqk's values before 2^(10 - pos)
#pragma unroll
    for (int c = lane; c < D; c += 32) reinterpret_cast<float*>(qf4)[c * 4 + wi] = qn ? qsrc[c] * scale2 : 0.0f;
#pragma unroll
    for (int c = lane; c < D; c += 32) vo4[c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  __syncwarp();  // (fuse) every lane's q is in registers before bk is rewritten
  if constexpr (kQS) __syncthreads();  // every warp's head in sqk visible (fuse: no warp has returned)
  if constexpr (kKF16) {  // the lo columns (odd gid) stay 0: the B build writes only hi
#pragma unroll
    for (int i = 0; i < kNT * kKS; ++i)
      if (gid & 1) bk[i * (S::kBkRow / 2) + lane] = make_uint2(0, 0);
  }
  // Value B slots of this thread's tokens S::token(gid, i): the __half index
  // in bv[cg] for column 0 (+ 16 per column).
  const int vdst0 = S::vdst(gid, 0);
  auto vdst = [&](int i) { return vdst0 + (S::vdst(0, i) - S::vdst(0, 0)); };
  // The per-group (2^(10 - pos) s, z) preparation: lane takes tokens
  // tv, tv + 1 of channel groups lane / 16 + 2 i (one 4-byte load of s and
  // one of z for each pair; milestone 29, before token `lane` of every group
  // in 2-byte loads). vsz holds float4 (token t, token t + 8) per t with bit
  // 3 clear: tv's float2 at vsz_mine + 64 i, tv + 1's two floats later.
  const int tv = 2 * (lane % 16);
  const int vsz_mine = (lane / 16) * 32 + 2 * ((tv >> 4) * 8 + (tv & 7)) + ((tv >> 3) & 1);
  for (int i = lane; i < S::kBvW; i += 32) reinterpret_cast<uint32_t*>(bv)[i] = 0;  // unused head columns
  const int vj0 = (4 * tig) / kPV;                      // this thread's value word row(s)
  const int vshift = VB == 2 ? 8 * (tig & 1) : 0;       // 2-bit rows: tig pairs share a word
  // Code words of this thread: key row tig kWK + w, tokens t0 + 8 h and
  // t0 + 8 h + 1 at kwb + 32 w + 8 h (S::token); value row vj0 + w,
  // channels 32 g + 4 gid .. + 3 at vwb + D w + 32 g (one 16-byte load:
  // vchan below).
  const int kwb = (32 * kWK + 8) * tig + S::token(gid, 0);
  // Score pair (t, t + 8) = (2 mt, 2 mt + 1)'s (2^.. s, z) in vsz4: slot
  // 8 (t / 16) + t % 8.
  const int vsl0 = 8 * (gid / 4) + 2 * (gid % 4);
  const int vwb = S::kVOff + D * vj0 + 8 * (vj0 / kWV) + 4 * gid;
  // Value A row gid + 8 rh of m-tile mt (and the accumulator's) is channel
  // vchan(mt, rh): the tiles 2g, 2g + 1 cover channel group g (its scale in
  // bv[g]) and a thread's four channels of a group are adjacent, so its code
  // words of a group are one 16-byte load (milestone 29: 16 -> 4 loads a
  // group at 2 and 4 bits; 8-byte rows stay conflict-free, as the checks in
  // the milestone's notes work out).
  auto vchan = [&](int mt, int rh) { return 32 * (mt / 2) + 4 * gid + 2 * (mt % 2) + rh; };
  // 0x3C003C00 (the f16 exponent of code_pair_pos, kV3OnePlus only) in a
  // register the compiler cannot fold, so mask-and-or stays one LOP3.
  const uint32_t magic = 0x3C003C00u | (static_cast<uint32_t>(geo.n_kv) >> 30);

  float m[kNT], l[kNT], pz[kCG][kNT], acc[kMT][4];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    m[nt] = -FLT_MAX;
    l[nt] = 0;
#pragma unroll
    for (int g = 0; g < kCG; ++g) pz[g][nt] = 0;
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[mt][e] = 0;

  const uint8_t* ocur = kOut ? kcodes + (rid0 + g0) * geo.krec + geo.koff : nullptr;  // kOut: this group's entries
  for (int grp = g0, scur = 0; grp < g1; ++grp, scur = next_stage(scur)) {
    if (grp + kStages - 1 < g1) stage_next();
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    __syncwarp();
    const uint32_t* st = ring + scur;
    // kOut: this group's entries, a lane each per read.
    V3OutEntries<S::kOutR> oe;
    if constexpr (kOut) {
      oe.load(ocur, kv_gap, n_o, lane);
      ocur += geo.krec;
    }

    // (2^(10 - pos) s, z) of tokens tv, tv + 1 of groups lane / 16 + 2 i,
    // for the value B writers (s of group g, tokens 2j and 2j + 1: half2
    // g 16 + j; z D / 2 half2 later).
    {
      const __half2* vs2 = reinterpret_cast<const __half2*>(st + S::kVSc);
#pragma unroll
      for (int i = 0; i < kCG / 2; ++i) {
        const float2 sf = __half22float2(vs2[lane + 32 * i]), zf = __half22float2(vs2[D / 2 + lane + 32 * i]);
        vsz[vsz_mine + 64 * i] = make_float2(sf.x * S::kVFac0, zf.x);
        vsz[vsz_mine + 64 * i + 2] = make_float2(sf.y * S::kVFac1, zf.y);
      }
    }
    // Key B fragments and the per-head constant sum_c q s z_c - sum_c w_c.
    float corr[GP];
#pragma unroll
    for (int h = 0; h < GP; ++h) corr[h] = 0;
    if (!(pb & 32)) {
      const __half* ksc = reinterpret_cast<const __half*>(st + S::kKSc);
      // Pairs n: scales s0 (channel kc_lo(n)), s1 (its partner, 16 / KB
      // halves on), zeros z0, z1 D halves on; two pairs as half2 loads.
      float s0[kNPL], s1[kNPL], z0[kNPL], z1[kNPL];
      if constexpr (kNPL == 2) {
        const __half2* ksc2 = reinterpret_cast<const __half2*>(ksc);
        const float2 a = __half22float2(ksc2[kc_lo0 / 2]), b = __half22float2(ksc2[(kc_lo0 + 16 / KB) / 2]);
        const float2 c = __half22float2(ksc2[(D + kc_lo0) / 2]), d = __half22float2(ksc2[(D + kc_lo0 + 16 / KB) / 2]);
        s0[0] = a.x, s0[1] = a.y, s1[0] = b.x, s1[1] = b.y;
        z0[0] = c.x, z0[1] = c.y, z1[0] = d.x, z1[1] = d.y;
      } else {
#pragma unroll
        for (int n = 0; n < kNPL; ++n) {
          s0[n] = __half2float(ksc[kc_lo(n)]), s1[n] = __half2float(ksc[kc_lo(n) + 16 / KB]);
          z0[n] = __half2float(ksc[D + kc_lo(n)]), z1[n] = __half2float(ksc[D + kc_lo(n) + 16 / KB]);
        }
      }
      // qk z 2^(pos-10) = q scale z, the zero term (kV1: qk (z 2^(pos-10) - s) =
      // q scale z - w, the zero term and the "1 +" part at once).
      float d0[kNPL], d1[kNPL], qn[kNPL][2][GP];
#pragma unroll
      for (int n = 0; n < kNPL; ++n) {
        d0[n] = kV1 ? fmaf(z0[n], kzf[n], -s0[n]) : z0[n] * kzf[n];
        d1[n] = kV1 ? fmaf(z1[n], kzf[n], -s1[n]) : z1[n] * kzf[n];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          if constexpr (kQS) {
            const float4 x = sqk[(2 * n + e) * 32 + lane];
            qn[n][e][0] = x.x, qn[n][e][1] = x.y, qn[n][e][2] = x.z, qn[n][e][3] = x.w;
          } else {
#pragma unroll
            for (int h = 0; h < GP; ++h) qn[n][e][h] = qk[n][e][h];
          }
        }
      }
#pragma unroll
      for (int h = 0; h < GP; ++h) {
        uint32_t bhi[kNPL], blo[kNPL];  // head h's B words of pair n (blo: the hi/lo forms only)
#pragma unroll
        for (int n = 0; n < kNPL; ++n) {
          const float w0 = qn[n][0][h] * s0[n], w1 = qn[n][1][h] * s1[n];
          corr[h] = fmaf(qn[n][0][h], d0[n], corr[h]);
          corr[h] = fmaf(qn[n][1][h], d1[n], corr[h]);
          if constexpr (kKF16) bhi[n] = h2_bits(__floats2half2_rn(w0, w1));
          else split_hi_lo(w0, w1, &bhi[n], &blo[n]);
        }
        uint32_t* b32 = reinterpret_cast<uint32_t*>(bk) + (h / 4) * kKS * S::kBkRow + kbase0;
        const int col = 2 * (h % 4);
        if constexpr (kNPL == 2) {
          *reinterpret_cast<uint2*>(b32 + 8 * col) = make_uint2(bhi[0], bhi[1]);
          if constexpr (!kKF16) *reinterpret_cast<uint2*>(b32 + 8 * (col + 1)) = make_uint2(blo[0], blo[1]);
        } else {
          b32[8 * col] = bhi[0];
          if constexpr (!kKF16) b32[8 * (col + 1)] = blo[0];
        }
      }
    }
    // This thread's key code words: row tig * kWK + w, the tokens of scores
    // r = 0..3 (S::token: pairs 0, 2 and 1, 3 adjacent).
    uint32_t kwd[4][kWK];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int w = 0; w < kWK; ++w) {
        const uint2 x = *reinterpret_cast<const uint2*>(st + kwb + 32 * w + 8 * h);
        kwd[h][w] = x.x;
        kwd[h + 2][w] = x.y;
      }
    // Sum over lanes of GP values at once: each halving step keeps half of
    // the heads and adds the partner's (lane bit o decides which half), so
    // lane ends with the total of head lane / (32 / GP); GP - 1 + 5 - log2(GP)
    // shuffles instead of 5 GP.
#pragma unroll
    for (int o = 16, n = GP; n > 1; o >>= 1, n >>= 1) {
      const bool up = lane & o;
#pragma unroll
      for (int i = 0; i < n / 2; ++i) {
        const float keep = up ? corr[n / 2 + i] : corr[i], send = up ? corr[i] : corr[n / 2 + i];
        corr[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
      }
    }
#pragma unroll
    for (int o = 16 / GP; o > 0; o >>= 1) corr[0] += __shfl_xor_sync(0xffffffffu, corr[0], o);
    float cown[kNT];  // the constant of this thread's head 4 nt + tig
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) cown[nt] = __shfl_sync(0xffffffffu, corr[0], (4 * nt + tig) * (32 / GP));
    __syncwarp();

    // Scores: two m16 tiles of tokens, kNT n8 tiles of (head hi, head lo).
    float s[2][kNT][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0;
#pragma unroll
    for (int kk = 0; kk < kKS; ++kk) {
      if (pb & 64) break;
      const int p0 = 2 * kk, p1 = 2 * kk + 1;
      uint2 b[kNT];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
        b[nt] = *reinterpret_cast<const uint2*>(reinterpret_cast<const uint32_t*>(bk) + (nt * kKS + kk) * S::kBkRow +
                                                2 * lane);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        uint32_t a[4];
        a[0] = code_operand<KB, kV1>(kwd[2 * mt][p0 / kPK], p0 % kPK, magic);
        a[1] = code_operand<KB, kV1>(kwd[2 * mt + 1][p0 / kPK], p0 % kPK, magic);
        a[2] = code_operand<KB, kV1>(kwd[2 * mt][p1 / kPK], p1 % kPK, magic);
        a[3] = code_operand<KB, kV1>(kwd[2 * mt + 1][p1 / kPK], p1 % kPK, magic);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) mma_16816(s[mt][nt], a, b[nt]);
      }
    }

    // Online softmax, head 4 nt + tig, tokens S::token(gid, i).
    // (Agreeing on the maximum only after a vote that some lane's score
    // passed it -- the shuffles inside the branch -- cost ptxas registers:
    // 27 more SASS a group of recomputed lane constants; milestone 29.)
    float p[kNT][4], mnew[kNT];
    float okey[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // kOut: the key entries' sums for this thread's scores (GP = 4)
    if constexpr (kOut) v3_out_keys<S>(oe.k, n_o, qf4, osm4, lane, gid, tig, okey);
    bool grow = false;
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        p[nt][i] = fmaf(kKF16 ? s[i / 2][nt][2 * (i % 2)] : s[i / 2][nt][2 * (i % 2)] + s[i / 2][nt][2 * (i % 2) + 1],
                        kSubScale, cown[nt]) + okey[i];
      float mx = fmaxf(fmaxf(p[nt][0], p[nt][1]), fmaxf(p[nt][2], p[nt][3]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
      mnew[nt] = fmaxf(m[nt], mx);
      grow |= mnew[nt] > m[nt];
    }
    if (__any_sync(0xffffffffu, grow)) {
      float cr[kNT];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        cr[nt] = exp2_fast(m[nt] - mnew[nt]);
        m[nt] = mnew[nt];
        l[nt] *= cr[nt];
#pragma unroll
        for (int g = 0; g < kCG; ++g) pz[g][nt] *= cr[nt];
      }
      if constexpr (kOut) v3_out_rescale<D>(vo4, cr[0], lane);
      // Accumulator columns 2tig, 2tig + 1 are heads 2tig + e: their
      // corrections live in lane (gid, (2tig + e) % 4), tile (2tig + e) / 4.
      float ce[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int h = 2 * tig + e, src = (lane & ~3) | (h & 3);
        ce[e] = __shfl_sync(0xffffffffu, cr[0], src);
        if constexpr (kNT > 1) {
          const float c1 = __shfl_sync(0xffffffffu, cr[1], src);
          if (h >= 4) ce[e] = c1;
        }
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        acc[mt][0] *= ce[0];
        acc[mt][1] *= ce[1];
        acc[mt][2] *= ce[0];
        acc[mt][3] *= ce[1];
      }
    }
    __syncwarp();  // vsz visible
    // Value B: f16(2^(10 - pos) p s) of tokens t0 + mt and + 8 (one f16x2
    // store when they share a B register: 2-bit codes), pz -= what was stored.
    __half* bvh = reinterpret_cast<__half*>(bv);
    const float4* vsz4 = reinterpret_cast<const float4*>(vsz);
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      if (pb & 128) break;
      const int col = 4 * nt + tig;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const float pe0 = exp2_fast(p[nt][2 * mt] - m[nt]), pe1 = exp2_fast(p[nt][2 * mt + 1] - m[nt]);
        l[nt] += pe0 + pe1;
        if constexpr (kOut) {  // the weights by token for the value entries (the key sums were read above)
          reinterpret_cast<float*>(osm4)[S::token(gid, 2 * mt) * 4 + col] = pe0;
          reinterpret_cast<float*>(osm4)[S::token(gid, 2 * mt + 1) * 4 + col] = pe1;
        }
#pragma unroll
        for (int g = 0; g < kCG; ++g) {
          const float4 sz = vsz4[g * 16 + vsl0 + mt];
          const __half2 wh = __floats2half2_rn(pe0 * sz.x, pe1 * sz.z);
          if constexpr (kV1) {
            const float2 wb = __half22float2(wh);
            pz[g][nt] = fmaf(pe0, sz.y, pz[g][nt] - wb.x);
            pz[g][nt] = fmaf(pe1, sz.w, pz[g][nt] - wb.y);
          } else {
            pz[g][nt] = fmaf(pe1, sz.w, fmaf(pe0, sz.y, pz[g][nt]));
          }
          if constexpr (VB == 2) {
            reinterpret_cast<__half2*>(bvh)[(g * 256 + vdst(2 * mt) + col * 16) / 2] = wh;
          } else {
            bvh[g * 256 + vdst(2 * mt) + col * 16] = __low2half(wh);
            bvh[g * 256 + vdst(2 * mt + 1) + col * 16] = __high2half(wh);
          }
        }
      }
    }
    __syncwarp();
    if constexpr (kOut) v3_out_values(oe.v, n_o, osm4, vo4, lane);

    // Values: O[c][h] += sum_t code 2^(pos - 24) f16(2^(10 - pos) p s) (2^-14 of
    // the sum; kV1: sum_t (1 + code 2^(pos - 10)) f16(2^(10 - pos) p s)).
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      if (pb & 256) break;
      uint4 v4[kWV];
#pragma unroll
      for (int w = 0; w < kWV; ++w) v4[w] = *reinterpret_cast<const uint4*>(st + vwb + D * w + 32 * (mt / 2));
      uint32_t vw[2][kWV];
#pragma unroll
      for (int w = 0; w < kWV; ++w) {
        vw[0][w] = (mt % 2 ? v4[w].z : v4[w].x) >> vshift;
        vw[1][w] = (mt % 2 ? v4[w].w : v4[w].y) >> vshift;
      }
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        constexpr int kF = VB == 8 ? 2 : 4;
        const int q0 = 2 * kk, q1 = 2 * kk + 1;
        const int w0 = VB == 8 ? q0 / 2 : 0, f0 = q0 % kF;
        const int w1 = VB == 8 ? q1 / 2 : 0, f1 = q1 % kF;
        uint32_t a[4];
        a[0] = code_operand<VB, kV1>(vw[0][w0], f0, magic);
        a[1] = code_operand<VB, kV1>(vw[1][w0], f0, magic);
        a[2] = code_operand<VB, kV1>(vw[0][w1], f1, magic);
        a[3] = code_operand<VB, kV1>(vw[1][w1], f1, magic);
        mma_16816(acc[mt], a, bv[((mt / 2) * 2 + kk) * 32 + lane]);
      }
    }
    __syncwarp();  // this stage, bk, bv and vsz are rewritten next iteration
  }

  // l and the zero terms over the 8 gid lanes of each head; then each
  // accumulator column fetches its head's from lane (gid, h % 4).
  float L[kNT], Z[kCG][kNT];
#pragma unroll
  for (int nt = 0; nt < kNT; ++nt) {
    L[nt] = l[nt];
#pragma unroll
    for (int g = 0; g < kCG; ++g) Z[g][nt] = pz[g][nt];
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
      L[nt] += __shfl_xor_sync(0xffffffffu, L[nt], o);
#pragma unroll
      for (int g = 0; g < kCG; ++g) Z[g][nt] += __shfl_xor_sync(0xffffffffu, Z[g][nt], o);
    }
  }
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int h = 2 * tig + e, src = (lane & ~3) | (h & 3);
    float lh = __shfl_sync(0xffffffffu, L[0], src), zh[kCG];
#pragma unroll
    for (int g = 0; g < kCG; ++g) zh[g] = __shfl_sync(0xffffffffu, Z[g][0], src);
    if constexpr (kNT > 1) {
      const float l1 = __shfl_sync(0xffffffffu, L[1], src);
      if (h >= 4) lh = l1;
#pragma unroll
      for (int g = 0; g < kCG; ++g) {
        const float z1 = __shfl_sync(0xffffffffu, Z[g][1], src);
        if (h >= 4) zh[g] = z1;
      }
    }
    if (fz.on) {  // unnormalized o into this warp's ring: no copy is in flight any more
      if (h >= GP) continue;
      float* so = reinterpret_cast<float*>(ring) + h * D;
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) so[vchan(mt, rh)] = fmaf(acc[mt][2 * rh + e], kSubScale, zh[mt / 2]);
      continue;
    }
    if (h >= group_q) continue;
    const size_t pi = static_cast<size_t>(hk * group_q + h) * stride + split;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int rh = 0; rh < 2; ++rh) {
        const int c = vchan(mt, rh);
        part_o[pi * D + c] = lh > 0 ? fmaf(acc[mt][2 * rh + e], kSubScale, zh[mt / 2]) / lh : 0.0f;
      }
  }
  if constexpr (kOut) {  // fuse (kQS): the value entries' sums into the warp's o
    __syncwarp();
    float* so = reinterpret_cast<float*>(ring);
#pragma unroll
    for (int c = lane; c < D; c += 32) {
      const float4 x = vo4[c];
      so[c] += x.x, so[D + c] += x.y, so[2 * D + c] += x.z, so[3 * D + c] += x.w;
    }
  }
  if (gid == 0) {
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      const int h = 4 * nt + tig;
      if (fz.on) {
        v3_ml[wi][h][0] = m[nt] * kLn2;
        v3_ml[wi][h][1] = L[nt];
        continue;
      }
      if (h >= group_q) continue;
      const size_t pi = static_cast<size_t>(hk * group_q + h) * stride + split;
      part_ml[pi * 2] = m[nt] * kLn2;
      part_ml[pi * 2 + 1] = L[nt];
    }
  }
  if (!fz.on || (fz.probe & 4)) return;
  // fuse: the block's warps (splits 4b .. 4b + 3 of head hk) meet; one
  // partial per query head at index b.
  __syncthreads();
  const int blk = split / kQuantWarps;
  for (int i = threadIdx.x; i < group_q * (D / 4); i += kQuantWarps * 32) {
    const int h = i / (D / 4), d4 = i % (D / 4);
    float mm, ll;
    const float4 o = combine_warp_states<kQuantWarps>(reinterpret_cast<const float*>(v3_smem) + h * D, S::kWarpW,
                                                      &v3_ml[0][h][0], 2 * GP, d4, mm, ll);
    const size_t pi = static_cast<size_t>(hk * group_q + h) * stride + blk;
    reinterpret_cast<float4*>(part_o)[pi * (D / 4) + d4] = o;
    if (d4 == 0) reinterpret_cast<float2*>(part_ml)[pi] = make_float2(mm, ll);
  }
  // The last block of KV head hk merges its stride partials: this kernel's
  // n_splits / 4 and the decode block's at the end.
  __shared__ int v3_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) v3_last = atomicAdd(fz.tickets + hk, 1) == n_splits / kQuantWarps - 1;
  __syncthreads();
  if (!v3_last) return;
  __threadfence();
  if (threadIdx.x == 0) fz.tickets[hk] = 0;  // the next launch is stream-ordered behind this one
  if (fz.probe & 2) return;
  pdl_wait();  // the decode block (the grid before this one) and its partial are complete
  merge_head_partials<D>(part_o, part_ml, hk, group_q, stride, fz.out, reinterpret_cast<float*>(v3_smem),
                         kQuantWarps * 32, fz.rope.hadamard);
}

// kOut: at most 3 blocks an SM fit in shared memory (k2v2 d128: 73 KB a
// block), so registers for 3.
template <int D, int GP, int KB, int VB, int kStages_, bool kProbe = false, bool kQS = false, int kForm = 0,
          bool kOut = false>
__global__ void __launch_bounds__(kQuantWarps * 32, kOut ? 3 : GP <= 4 ? 4 : 2)
    quant_decode_v3_kernel(const uint8_t* __restrict__ kcodes, const uint8_t* __restrict__ vcodes, QuantGeom geo,
                           int group_q, int n_groups, int gps, int n_splits, const float* __restrict__ q,
                           float scale, float* __restrict__ part_o, float* __restrict__ part_ml, int stride,
                           const V3Fuse fz) {
  quant_decode_v3_body<D, GP, KB, VB, kStages_, kProbe, kQS, kForm, kOut>(kcodes, vcodes, geo, group_q, n_groups,
                                                                          gps, n_splits, q, scale, part_o, part_ml,
                                                                          stride, fz);
}

// A batched step's v3 launches in one (milestone 55,
// CudaTuning::batch_one_launch): sequence blockIdx.y's step from s[y] (its
// blocks n_kv * n_splits / 4 of the launch's columns; the others return
// whole, before any barrier). The common part -- geometry, heads, scale --
// is one copy. Through the kernel's parameter (the constant cache).
struct V3SeqArgs {
  const uint8_t* kc;
  const uint8_t* vc;
  const float* q;
  float* part_o;
  float* part_ml;
  int n_groups, gps, n_splits, stride;
  V3Fuse fz;
};
struct V3Batch {
  QuantGeom geo;
  int group_q;
  float scale;
  V3SeqArgs s[kMaxBatchSeqs];
};
template <int D, int GP, int KB, int VB, int kStages_, int kForm>
__global__ void __launch_bounds__(kQuantWarps * 32, GP <= 4 ? 4 : 2)
    quant_decode_v3_batch_kernel(const __grid_constant__ V3Batch b) {
  const V3SeqArgs& a = b.s[blockIdx.y];
  if (blockIdx.x >= static_cast<unsigned>(b.geo.n_kv * (a.n_splits / kQuantWarps))) return;
  quant_decode_v3_body<D, GP, KB, VB, kStages_, false, true, kForm>(a.kc, a.vc, b.geo, b.group_q, a.n_groups, a.gps,
                                                                    a.n_splits, a.q, b.scale, a.part_o, a.part_ml,
                                                                    a.stride, a.fz);
}

// The batched kernel of the one-launch step's default form at (D, bits):
// its shared memory and carveout set once, as launch_v3_stages sets them.
template <int D, int B>
void launch_v3_batch_form(const V3Batch& b, dim3 grid, bool pdl, cudaStream_t s) {
  using S = V3Shape<D, 4, B, B, 3, true>;
  constexpr size_t kSmem = sizeof(uint32_t) * (S::kWarpW * kQuantWarps + S::kQkBlockW);
  auto* kern = quant_decode_v3_batch_kernel<D, 4, B, B, 3, kV3KeyF16>;
  static const int resident =
      resident_warps_smem(kern, kQuantWarps * 32, kSmem, cuda_tuning().quant_decode_carveout);
  (void)resident;
  // CudaTuning::batch_carveout: the decode blocks' carveout (launch_decode_block_batch), so both share SMs.
  const int carve = cuda_tuning().batch_carveout ? 100 : cuda_tuning().quant_decode_carveout;
  set_carveout(reinterpret_cast<const void*>(kern), carve >= 0 ? carve : cudaSharedmemCarveoutDefault);
  launch_maybe_pdl(pdl, kern, grid, dim3(kQuantWarps * 32), kSmem, s, b);
}

template <int D, int GP, int KB, int VB, int kStages, bool kProbe = false, bool kQS = false, int kForm = 0,
          bool kOut = false>
void launch_v3_stages(const QuantDecodeArgs& a, cudaStream_t s, int* warps) {
  // Records with outliers (milestone 67): the one-launch step's kernels
  // with kOut, key B in either form (quant_decode_v3_takes says when).
  if constexpr (!kProbe && !kQS && GP == 4 && kStages == 3 && KB == VB && (KB == 2 || KB == 4)) {
    if (a.geo.outliers > 0) {
      LONGKV_CHECK(a.fuse || warps, "quantized decode v3: records with outliers only in the one-launch step");
      if (cuda_tuning().quant_key_hilo)
        return launch_v3_stages<D, GP, KB, VB, kStages, false, true, 0, true>(a, s, warps);
      return launch_v3_stages<D, GP, KB, VB, kStages, false, true, kV3KeyF16, true>(a, s, warps);
    }
  }
  LONGKV_CHECK(kOut == (a.geo.outliers > 0), "quantized decode v3: no kernel of this shape for records with %d "
               "outliers", a.geo.outliers);
  if constexpr (!kProbe && !kQS && D == 128 && GP == 4 && KB == 2 && VB == 2 && kStages == 3) {
    if (cuda_tuning().quant_fused_probe >= 16) return launch_v3_stages<D, GP, KB, VB, kStages, true>(a, s, warps);
  }
  // q in shared memory: the one-launch step's kernel, whose resident warps
  // the split sizing asks for (the same 3 blocks an SM as without it).
  if constexpr (!kProbe && !kQS && !kOut && GP == 4 && kStages == 3) {
    if (cuda_tuning().quant_decode_qsmem && (a.fuse || warps)) {
      if constexpr (KB == 2 && VB == 2) {  // the comparison forms (kForm)
        const int form = (cuda_tuning().quant_code_subnormal ? 0 : kV3OnePlus) |
                         (cuda_tuning().quant_key_hilo ? 0 : kV3KeyF16);
        if (form == 1) return launch_v3_stages<D, GP, KB, VB, kStages, false, true, 1>(a, s, warps);
        if (form == 2) return launch_v3_stages<D, GP, KB, VB, kStages, false, true, 2>(a, s, warps);
        if (form == 3) return launch_v3_stages<D, GP, KB, VB, kStages, false, true, 3>(a, s, warps);
      }
      if constexpr (KB == 4 && VB == 4) {  // milestone 48: k4v4's key B rounded once too (khl: hi/lo)
        if (!cuda_tuning().quant_key_hilo)
          return launch_v3_stages<D, GP, KB, VB, kStages, false, true, kV3KeyF16>(a, s, warps);
      }
      return launch_v3_stages<D, GP, KB, VB, kStages, false, true>(a, s, warps);
    }
  }
  LONGKV_CHECK(kProbe || cuda_tuning().quant_fused_probe < 16,
               "LONGKV_CUDA_TUNING qfx bits 16-256 probe only the k2v2, head_dim 128, <= 4 heads per KV head, "
               "3-stage v3 kernel (this launch: head_dim %d, %d/%d bits)", D, KB, VB);
  using S = V3Shape<D, GP, KB, VB, kStages, kQS, kOut>;
  constexpr size_t kSmem = sizeof(uint32_t) * (S::kWarpW * kQuantWarps + S::kQkBlockW);
  auto* kern = quant_decode_v3_kernel<D, GP, KB, VB, kStages, kProbe, kQS, kForm, kOut>;
  // Once per instantiation: the dynamic shared-memory limit, then how many
  // warps stay resident with it (the split sizing asks first).
  static const int resident = resident_warps_smem(kern, kQuantWarps * 32, kSmem, cuda_tuning().quant_decode_carveout);
  if (warps) {
    *warps = resident;
    return;
  }
  LONGKV_CHECK(!kQS || a.fuse, "quantized decode v3: q in shared memory needs the one-launch step");
  LONGKV_CHECK(!a.fuse || (a.n_splits % kQuantWarps == 0 &&
                            a.grid.x == static_cast<unsigned>(a.geo.n_kv * a.n_splits / kQuantWarps) && a.dpos &&
                            a.tickets && a.out && a.stride == a.n_splits / kQuantWarps + 1 &&
                            a.stride <= kMaxMergeParts),
               "quantized decode v3: the one-launch step needs whole blocks per KV head and the device position");
  V3Fuse fz;
  fz.on = a.fuse;
  fz.dpos = a.dpos;
  fz.rope = a.rope;
  fz.tickets = a.tickets;
  fz.out = a.out;
  fz.probe = cuda_tuning().quant_fused_probe;
  fz.rot_regs = cuda_tuning().rot_q_regs;
  fz.q_early = cuda_tuning().quant_q_early && a.n_groups >= cuda_tuning().quant_q_early_groups;
  launch_maybe_pdl(a.pdl, kern, a.grid, dim3(kQuantWarps * 32), kSmem, s, a.kc, a.vc, a.geo, a.group_q, a.n_groups,
                   a.gps, a.n_splits, a.q, a.scale, a.part_o, a.part_ml, a.stride, fz);
}

// Stages: CudaTuning::quant_decode_stages (0: 3 when k + v <= 8 bits, else
// 2; with more bits the shared memory of 3 stages would cost resident warps).
template <int D, int GP, int KB, int VB>
void launch_v3(const QuantDecodeArgs& a, cudaStream_t s, int* warps) {
  const int want = cuda_tuning().quant_decode_stages;
  if constexpr (KB + VB <= 8) {
    if (want != 2) return launch_v3_stages<D, GP, KB, VB, 3>(a, s, warps);
  }
  launch_v3_stages<D, GP, KB, VB, 2>(a, s, warps);
}

template <int D, int GP, int KB>
void launch_v3_vb(const QuantDecodeArgs& a, cudaStream_t s, int* warps) {
  switch (a.geo.vbits) {
    case 8: launch_v3<D, GP, KB, 8>(a, s, warps); break;
    case 4: launch_v3<D, GP, KB, 4>(a, s, warps); break;
    case 2: launch_v3<D, GP, KB, 2>(a, s, warps); break;
    default: fail("CUDA quantized KV: %d-bit values are not supported", a.geo.vbits);
  }
}
template <int D, int GP>
void launch_v3_kb(const QuantDecodeArgs& a, cudaStream_t s, int* warps) {
  switch (a.geo.kbits) {
    case 8: launch_v3_vb<D, GP, 8>(a, s, warps); break;
    case 4: launch_v3_vb<D, GP, 4>(a, s, warps); break;
    case 2: launch_v3_vb<D, GP, 2>(a, s, warps); break;
    default: fail("CUDA quantized KV: %d-bit keys are not supported", a.geo.kbits);
  }
}

}  // namespace

bool quant_decode_v3_takes(const QuantGeom& g, int group_q) {
  // The staging copies records' codes, scales and zeros as 16-byte chunks
  // in the kv_codec.h layout; outlier entries follow them.
  if (!quant_decode_mma_geometry(g) || !(g.D == 64 || g.D == 128) || group_q < 1 || group_q > 8) return false;
  const size_t kplain = 4 * static_cast<size_t>(g.D) * (g.kbits + 1);
  const size_t vplain = 4 * static_cast<size_t>(g.D) * (g.vbits + 1);
  if (g.outliers == 0) return g.krec == kplain && g.vrec == vplain;
  // Milestone 67: outliers in the one-launch step's kernels (kOut: q in
  // shared memory, 4 query heads a KV head, 3 stages, one record size,
  // subnormal code operands), up to 96 entries a record (2% of d128's 4,096
  // elements is 82; 3% is 123).
  const CudaTuning& t = cuda_tuning();
  return g.outliers <= v3::kV3MaxOutliers && group_q <= 4 && g.kbits == g.vbits && (g.kbits == 2 || g.kbits == 4) &&
         g.koff == kplain && g.voff == g.koff && g.krec % 16 == 0 &&
         g.krec >= kplain + 4 * static_cast<size_t>(g.outliers) && g.vrec == g.krec && t.quant_decode_qsmem &&
         t.quant_decode_stages != 2 && t.quant_code_subnormal && t.quant_fused_probe == 0;
}

// The one-launch step's default forms (GP 4, 3 stages, q in shared memory):
// k2v2 and k4v4 with key B rounded once, as launch_v3_stages picks them
// without tuning; anything else goes sequence by sequence.
bool quant_decode_v3_batch_takes(const QuantGeom& g, int group_q) {
  const CudaTuning& t = cuda_tuning();
  return quant_decode_v3_takes(g, group_q) && g.outliers == 0 && group_q <= 4 && g.kbits == g.vbits &&
         (g.kbits == 2 || g.kbits == 4) && t.quant_decode_stages != 2 && t.quant_decode_qsmem &&
         t.quant_code_subnormal && !t.quant_key_hilo && t.quant_fused_probe == 0;
}

void launch_quant_decode_v3_batch(const QuantDecodeArgs* a, int n, cudaStream_t s) {
  LONGKV_CHECK(n >= 1 && n <= kMaxBatchSeqs && quant_decode_v3_batch_takes(a[0].geo, a[0].group_q),
               "quantized decode v3: a batch of %d steps (1..%d) of a form the batched launch takes", n,
               kMaxBatchSeqs);
  V3Batch b;
  b.geo = a[0].geo;
  b.group_q = a[0].group_q;
  b.scale = a[0].scale;
  unsigned cols = 0;
  for (int i = 0; i < n; ++i) {
    const QuantDecodeArgs& x = a[i];
    LONGKV_CHECK(x.fuse && x.geo.D == b.geo.D && x.geo.n_kv == b.geo.n_kv && x.geo.kbits == b.geo.kbits &&
                     x.geo.vbits == b.geo.vbits && x.group_q == b.group_q && x.scale == b.scale &&
                     x.n_splits % kQuantWarps == 0 &&
                     x.grid.x == static_cast<unsigned>(x.geo.n_kv * x.n_splits / kQuantWarps) && x.dpos &&
                     x.tickets && x.out && x.stride == x.n_splits / kQuantWarps + 1 && x.stride <= kMaxMergeParts,
                 "quantized decode v3: a batch's steps need one geometry and the one-launch step's arguments");
    V3SeqArgs& y = b.s[i];
    y.kc = x.kc;
    y.vc = x.vc;
    y.q = x.q;
    y.part_o = x.part_o;
    y.part_ml = x.part_ml;
    y.n_groups = x.n_groups;
    y.gps = x.gps;
    y.n_splits = x.n_splits;
    y.stride = x.stride;
    y.fz.on = true;
    y.fz.dpos = x.dpos;
    y.fz.rope = x.rope;
    y.fz.tickets = x.tickets;
    y.fz.out = x.out;
    y.fz.probe = 0;
    y.fz.rot_regs = cuda_tuning().rot_q_regs;
    y.fz.q_early = cuda_tuning().quant_q_early && x.n_groups >= cuda_tuning().quant_q_early_groups;
    cols = std::max(cols, x.grid.x);
  }
  const dim3 grid(cols, n);
  const int D = b.geo.D, bits = b.geo.kbits;
  if (D == 128 && bits == 2) launch_v3_batch_form<128, 2>(b, grid, a[0].pdl, s);
  else if (D == 128) launch_v3_batch_form<128, 4>(b, grid, a[0].pdl, s);
  else if (bits == 2) launch_v3_batch_form<64, 2>(b, grid, a[0].pdl, s);
  else launch_v3_batch_form<64, 4>(b, grid, a[0].pdl, s);
  LONGKV_CUDA_LAUNCHED();
}

void launch_quant_decode_v3(const QuantDecodeArgs& a, cudaStream_t s, int* warps) {
  const int D = a.geo.D, g = a.group_q;
  LONGKV_CHECK(quant_decode_v3_takes(a.geo, g), "quantized decode v3: needs G = 32, 8/4/2-bit records, <= 8 query "
               "heads per KV head and head_dim 64/128; with outliers (<= %d) the one-launch step's default forms, "
               "<= 4 heads, 2 or 4 bits both (head_dim %d, %d heads, %d/%d bits, %d outliers)",
               v3::kV3MaxOutliers, D, g, a.geo.kbits, a.geo.vbits, a.geo.outliers);
  if (D == 128 && g <= 4) launch_v3_kb<128, 4>(a, s, warps);
  else if (D == 128) launch_v3_kb<128, 8>(a, s, warps);
  else if (g <= 4) launch_v3_kb<64, 4>(a, s, warps);
  else launch_v3_kb<64, 8>(a, s, warps);
}

}  // namespace longkv::cuda

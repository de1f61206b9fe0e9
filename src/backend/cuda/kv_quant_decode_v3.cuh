// The v3 quantized-decode kernel's layouts (kv_quant_decode_v3.cu): the
// staged group records and fragment maps of one instantiation (V3Shape,
// with the compile-time checks that keep its per-lane constants few), the
// two-launch step's extras of a launch (V3Fuse) and that step's query
// preparation (V3Query). Included by kv_quant_decode_v3.cu only.
#pragma once

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/decode_merge.cuh"
#include "backend/cuda/hadamard.cuh"
#include "backend/cuda/kv_quant_gpu.cuh"
#include "backend/cuda/kv_quant_mma.cuh"
#include "backend/cuda/rope_rotate.cuh"

namespace longkv::cuda::v3 {

// Outlier entries a record the v3 kernel takes (kOut; three reads of 32).
constexpr int kV3MaxOutliers = 96;

template <int D, int GP, int KB, int VB, int kStages_, bool kQS = false, bool kOut_ = false>
struct V3Shape {
  static constexpr int kNT = GP / 4;            // key n8 tiles (4 heads hi/lo each)
  static constexpr int kKS = D / 16;            // key k-steps
  static constexpr int kPK = 16 / KB;           // code pairs per key word
  static constexpr int kWK = D * KB / 128;      // key words per thread and token row
  static constexpr int kNPL = D / 64;           // key channel pairs per lane in the B build
  static constexpr int kPV = 16 / VB;           // code pairs per value word
  static constexpr int kWV = VB == 8 ? 2 : 1;   // value words per thread and channel row
  static constexpr int kMT = D / 16;            // value m-tiles
  static constexpr int kCG = D / 32;            // value channel groups
  static constexpr int kStages = kStages_;     // groups staged per warp (kStages - 1 in flight ahead)
  // One staged group, u32 words: key codes | key scale, zero | value codes |
  // value scale, zero (the record layout of kv_codec.h, code rows padded):
  // key row j (32 words) starts at 32 j + 8 (j / kWK), value row j (D words)
  // at D j + 8 (j / kWV).
  static constexpr int kKWords = D * KB, kVWords = D * VB;
  static constexpr int kKSc = kKWords + 24;                       // key scale, zero
  static constexpr int kVOff = kKSc + D;                          // value codes
  static constexpr int kVSc = kVOff + kVWords + 8 * (VB / kWV - 1);  // value scale, zero
  static constexpr int kStageW = kVSc + D;
  static constexpr int kChunks = (kKWords + kVWords + 2 * D) / 4, kKChunks = (kKWords + D) / 4;
  static constexpr int kBkRow = 64 + 512 / D;   // key B row (32 uint2) + padding: writes hit 32 banks
  static constexpr int kBkW = kNT * kKS * kBkRow;  // key B fragments [kNT][kKS][kBkRow words]
  static constexpr int kBvW = kCG * 128;        // value B fragments [kCG][2][32] uint2
  static constexpr int kVszW = kCG * 64;        // (2^VB s, z) [kCG][32 tokens] float2
  // kOut (milestone 67: records with outlier entries; the one-launch
  // step's q-in-shared-memory kernels, GP = 4): after vsz, a group's sums
  // per token [32][GP] (the key entries' q delta, later the group's weights
  // p) and the value entries' running sum of p delta [D][GP], rescaled
  // with the accumulator.
  static constexpr bool kOut = kOut_;
  static constexpr int kOutR = kV3MaxOutliers / 32;  // reads of 32 entries a record
  static constexpr int kOsmW = kOut ? 32 * GP : 0, kVoW = kOut ? D * GP : 0;
  static constexpr int kWarpW = kStages * kStageW + kBkW + kBvW + kVszW + kOsmW + kVoW;
  // kQS (CudaTuning::quant_decode_qsmem, the one-launch step only): the
  // lanes' 2^(10 - pos) q scale [kNPL][2][32 lanes] float4 (GP = 4 heads),
  // once per block after the warps' areas (its 4 warps attend to one KV
  // head), read per group instead of held in 16 registers. kOut: then the
  // plain q scale log2(e) [D][GP] for the key entries.
  static constexpr int kSqkW = kQS ? kNPL * 2 * 32 * 4 : 0, kQfW = kOut ? D * GP : 0;
  static constexpr int kQkBlockW = kSqkW + kQfW;
  static_assert(!kQS || GP == 4, "q in shared memory: 4 heads a float4");
  static_assert(!kOut || (kQS && KB == VB), "outliers: the one-launch step's kernels, one record size");
  static_assert((kWarpW - kOsmW - kVoW) % 4 == 0, "kOut: float4 areas");

  // Per-lane layout constants. The kernel holds one register per kind and
  // adds compile-time offsets where the checks below say the offset is the
  // same for every lane (milestone 24: fewer registers held through the
  // loop, fewer recomputed in it).
  // Stage word of 16-byte chunk r of lane l.
  static constexpr __host__ __device__ int chunk_dst(int l, int r) {
    const int i = l + 32 * r, iv = i - kKChunks;
    return i < kKWords / 4   ? 4 * i + 8 * ((i / 8) / kWK)
           : i < kKChunks    ? 4 * i + 24
           : iv < kVWords / 4 ? kVOff + 4 * iv + 8 * ((iv / (D / 4)) / kWV)
                              : kVOff + 4 * iv + 8 * (VB / kWV - 1);
  }
  // Chunks all of whose lanes copy key codes sit at a constant offset from
  // chunk 0; all others at a constant offset from 4 l (kChunkBases), unless a
  // chunk straddles the two (head_dim 64: per-lane words, as before).
  static constexpr bool chunk_bases_ok() {
    for (int r = 0; r < kChunks / 32; ++r)
      for (int l = 0; l < 32; ++l) {
        const bool key = 32 * r + 31 < kKWords / 4, other = 32 * r >= kKWords / 4;
        if (!key && !other) return false;
        if (key && chunk_dst(l, r) - chunk_dst(l, 0) != chunk_dst(0, r) - chunk_dst(0, 0)) return false;
        if (other && chunk_dst(l, r) - 4 * l != chunk_dst(0, r)) return false;
      }
    return true;
  }
  static constexpr bool kChunkBases = chunk_bases_ok();
  // Token (of the group's 32) of key A row gid + 8 (i % 2) of m-tile i / 2,
  // i.e. of score i of thread gid (milestone 29; before 16 (i / 2) + gid +
  // 8 (i % 2)): t0 + i / 2 + 8 (i % 2) with t0 = 2 (gid % 4) + 16 (gid / 4),
  // so a thread's tokens are two adjacent pairs -- its key code words of a
  // row two 8-byte loads instead of four -- and i = 2 mt, 2 mt + 1 are still
  // tokens t, t + 8 (one f16x2 value B store at 2 bits, one float4 of vsz).
  static constexpr __host__ __device__ int token(int gid, int i) {
    return 2 * (gid % 4) + 16 * (gid / 4) + i / 2 + 8 * (i % 2);
  }
  // Value B slot (__half index in bv[cg], column 0) of score i's token of thread gid.
  static constexpr __host__ __device__ int vdst(int gid, int i) {
    const int t = token(gid, i), per_word = 32 / VB, j = t / per_word, k = t % per_word;
    const int f = k % kPV, half = k / kPV, g = j * kPV + f, owner = g / 4, pi = g % 4;
    return (((pi / 2) * 32 + owner) * 2 + (pi & 1)) * 2 + half;
  }
  static constexpr bool vdst_linear() {
    for (int gid = 0; gid < 8; ++gid)
      for (int i = 0; i < 4; ++i)
        if (vdst(gid, i) - vdst(gid, 0) != vdst(0, i) - vdst(0, 0)) return false;
    return true;
  }
  static_assert(vdst_linear(), "value B slots: a constant offset per token from the thread's first");
  // Token t's value code position (its field in the owner's word; 2-bit
  // owners read their word pre-shifted to fields 0-3). A function of t's
  // parity alone, so the factors 2^(10 - pos) of a lane's tokens 2j, 2j + 1
  // in the per-group (s, z) preparation are two constants.
  static constexpr __host__ __device__ int vpos(int t) {
    const int k = t % (32 / VB), f = k % kPV;
    return code_pos<VB>(VB == 2 ? f % 4 : f);
  }
  static constexpr bool vpos_by_parity() {
    for (int t = 0; t < 32; ++t)
      if (vpos(t) != vpos(t % 2)) return false;
    return true;
  }
  static_assert(vpos_by_parity() && vpos(0) <= 10 && vpos(1) <= 10, "value factors: one per token parity");
  static constexpr float kVFac0 = static_cast<float>(1 << (10 - vpos(0)));
  static constexpr float kVFac1 = static_cast<float>(1 << (10 - vpos(1)));
  // The key B build: lane l builds pairs pi = kNPL (l % 8) + n of owner
  // thread l / 8 (milestone 29; before pair l % (D / 8) of owners l / (D / 8)
  // + 2 n). A lane's kNPL pairs are adjacent fields of one code word, so
  // adjacent channels (their scales one 4-byte load) and adjacent B slots
  // (one 8-byte store a head).
  static_assert(D / 8 == 8 * kNPL && kPK % kNPL == 0, "key B build: 8 lanes an owner, a lane's pairs in one word");
  static_assert(kChunks % 32 == 0 && kWK >= 1 && kWK * kPK == D / 8, "shape");
  // fuse: the rotated q [GP][D] f32 passes through the key B area before
  // the first group, the warp's o [GP][D] through its ring after the last.
  static_assert(kBkW >= GP * D && kStages * kStageW >= GP * D && kWarpW % 4 == 0, "fuse: room for q and o");
  static_assert(kQuantWarps * kWarpW >= 2 * GP * kMaxMergeParts + GP, "fuse: room for the merge's weights");
};

// The two-launch step's extras of a launch (QuantDecodeArgs::fuse).
struct V3Fuse {
  bool on = false;
  const int* dpos = nullptr;
  DecodeRope rope;
  int* tickets = nullptr;  // [n_kv], 0 between launches
  float* out = nullptr;    // [n_heads][D]
  int probe = 0;           // CudaTuning::quant_fused_probe
  bool rot_regs = false;   // CudaTuning::rot_q_regs
  bool q_early = true;     // CudaTuning::quant_q_early, from quant_q_early_groups groups a KV head
};

// The fused step's queries (V3Fuse): a lane's RoPE pairs j = lane + 32 r
// of NH heads, h < nh from src + h D (the rest 0), their frequencies and
// the step's position. Loaded before the kernel's first records are
// requested (CudaTuning::quant_q_early, milestone 29): behind the 2 stages
// of every warp (~9 MB), these loads waited one after the other (the
// position, then the frequency, then q) for ~13% of v3's warp time at 131K.
template <int D, int NH>
struct V3Query {
  static constexpr int kR = D / 64;
  float x[kR][NH][2], ifq[kR];
  bool rot[kR];
  int pos = 0;
  // Pair j: channels (2j, 2j + 1) interleaved, (j, j + D/2) NeoX (over the
  // whole head: decode_block_supported); frequency j either way.
  static __device__ void channels(bool neox, int j, int& c0, int& c1) {
    c0 = neox ? j : 2 * j;
    c1 = neox ? j + D / 2 : 2 * j + 1;
  }
  __device__ void load(const float* src, int nh, const V3Fuse& fz, int lane) {
    pos = *fz.dpos;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      int c0, c1;
      channels(fz.rope.neox, lane + 32 * r, c0, c1);
      rot[r] = !(fz.probe & 1) && fz.rope.inv_freq != nullptr && (fz.rope.neox || c0 < fz.rope.rope_dim);
      ifq[r] = rot[r] ? fz.rope.inv_freq[lane + 32 * r] : 0.0f;
#pragma unroll
      for (int h = 0; h < NH; ++h) {
        x[r][h][0] = h < nh ? src[h * D + c0] : 0.0f;
        x[r][h][1] = h < nh ? src[h * D + c1] : 0.0f;
      }
    }
  }
  // RoPE, then (":rot") the Hadamard rotation of each head; into sq [NH][D].
  __device__ void rotate_store(float* sq, const V3Fuse& fz, int lane) {
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      if (!rot[r]) continue;
      float cs, sn;
      rope_cos_sin(pos, ifq[r], cs, sn);
#pragma unroll
      for (int h = 0; h < NH; ++h) {
        const float2 y = rope_rotate(x[r][h][0], x[r][h][1], cs, sn);
        x[r][h][0] = y.x;
        x[r][h][1] = y.y;
      }
    }
    const bool regs = fz.rope.hadamard != 0 && fz.rot_regs;  // rotq: in registers (hadamard_pairs)
    if (regs) hadamard_pairs<D, NH>(x, lane, fz.rope.neox, fz.rope.hadamard);
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      int c0, c1;
      channels(fz.rope.neox, lane + 32 * r, c0, c1);
#pragma unroll
      for (int h = 0; h < NH; ++h) {
        sq[h * D + c0] = x[r][h][0];
        sq[h * D + c1] = x[r][h][1];
      }
    }
    __syncwarp();
    if (fz.rope.hadamard != 0 && !regs) hadamard_warp<NH, D>(sq, lane, fz.rope.hadamard);  // through shared memory
  }
};

}  // namespace longkv::cuda::v3

// Quantized-KV decode kernels (one query row straight from the code
// records; layout and split scheme in kv_quant_gpu.cu): the tensor-core
// kernel of milestone 4 and its dispatch over (head_dim, padded heads, key
// bits, value bits), which hands over to milestone 9's kernel
// (kv_quant_decode_v3.cu) when selected and the records have no outliers
// (milestone 4's kernel adds them; v3 only in the one-launch step, which
// kv_quant_gpu.cu launches directly), and to the format-generic FMA kernel
// (kv_quant_decode_any.cu; milestone 3's loop) when tensor cores are off.
#include <cfloat>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kv_quant_gpu.cuh"
#include "backend/cuda/kv_quant_mma.cuh"
#include "backend/cuda/pdl.cuh"

namespace longkv::cuda {
namespace {

// ---------------------------------------------------------------------------
// Decode from the codes on tensor cores (mma.sync m16n8k16, f16 in, f32
// accumulate). One warp per (KV head, split of groups), as above.
//
// Exactness: a b-bit code goes into an f16 mantissa as 1 + q / 2^b (exact,
// two codes per 32-bit register from one shift and one LOP3); the other
// operand carries 2^b * (q * s) split into hi + lo f16 halves (hi = f16(w),
// lo = f16(w - hi): ~22 significant bits), so the tensor core's products are
// exact and it sums in f32. The "1 +" part adds sum_c 2^b w_c, which is
// subtracted in f32 with the zero term. Columns of a n8 tile: heads 0-3 hi,
// heads 0-3 lo (GP = 8 uses two tiles).
//
// Keys:   S[t][h]  = sum_c A[t][c] B[c][h],  A = codes (rows = 32 tokens,
//         two m16 tiles), B = 2^KB q s_c (k = channels, D/16 k-steps).
// Values: O[c][h] += sum_t A[c][t] B[t][h], A = codes (rows = channels,
//         D/16 tiles), B = 2^VB p_t s_gt (k = 32 tokens, two k-steps), one B
//         per channel group g (its scales).
// The contraction index may be permuted freely as long as A and B agree:
// thread (gid, tig) supplies k-slots {2tig, 2tig+1, 2tig+8, 2tig+9} of each
// k-step in both fragments, so each thread takes whole code words (no
// shuffles) and the B fragments are built for exactly those channels/tokens.
// B is built cooperatively (lanes = channel pairs for keys, tokens for
// values) into shared memory in fragment order and read back with one
// 8-byte load per k-step.

// One read of 32 outlier entries (lane = entry): adds the lane's w[GP] to
// dst[0..GP) (shared memory) through outlier_lead_sum (kv_quant_gpu.cuh), so
// that no two lanes add to one slot at once. Invalid lanes pass a key of
// their own and add nothing. Ends with a __syncwarp, so the next read sees
// the sums.
template <int GP>
__device__ __forceinline__ void outlier_sum_into(const float (&w)[GP], int key, bool valid, float* dst) {
  float sum[GP];
  if (outlier_lead_sum(w, key, sum) && valid)
#pragma unroll
    for (int h = 0; h < GP; ++h) dst[h] += sum[h];
  __syncwarp();
}

template <int D, int GP>
struct MmaSmem {
  static constexpr int kNT = GP / 4;
  uint2 bk[kNT][D / 16][32];      // key B fragments per lane: (b0, b1) of each k-step
  uint2 bv[D / 32][kNT][2][32];   // value B fragments per channel group, k-step
  float sc[32][GP];               // scores [token][head]
};

// kV2 (milestone 7) changes only where rows of the A fragments come from
// and how many warps stay resident; the arithmetic is the same, so results
// are identical. Rows of the key A tiles are tokens and rows of the value A
// tiles are channels in any order we like, provided the score / output
// writes use the same map: with thread gid taking tokens 4gid..4gid+3 (keys)
// and channels 32i + 4gid..+3 of channel group i (values), each thread's
// code words are 4 consecutive words of the record, one 16-byte load instead
// of four 4-byte ones (a quarter of the load instructions and their address
// arithmetic). The old kernel needs 210-235 registers, i.e. 2 blocks = 8
// warps per SM (2 per scheduler), which looked too few to hide the
// per-group chains of shuffles and shared-memory round trips; kV2 caps
// registers for kMinB blocks per SM (3: 168 registers, 40-96 bytes of
// spills at D = 128, g = 4; 4: 128 registers, 324-560 bytes). Measured on
// H100 (milestone 7) both are slower than kMinB = 1 (milestone 4's kernel,
// the default): 3% with 3 blocks, 21% with 4 at k2v2 131K, so more resident
// warps alone do not pay for the spills; kept selectable for comparison.
//
// Outliers (kOut, milestone 66; kMinB = 1 only): a record's entries (sorted
// by (t, c), kv_codec.h) are read 32 at a time, a lane each. Keys: each
// lane's q[c] delta per head goes to its token's score in sm.sc (lane =
// token there) before the softmax; values: p[t] delta per head to channel
// c, into a per-channel sum in the key B fragments' space (free from the
// scores to the next group's B build), folded each group into ov, a
// lane-per-channel accumulator rescaled with acc and added at the store.
// Lanes whose entries share a token (keys) or a channel (values) in one
// read are summed by the lowest of them in entry order (__match_any_sync),
// so no two lanes add to one slot at once and the sums do not depend on
// timing.
template <int D, int GP, int KB, int VB, int kMinB, bool kOut = false>
__global__ void __launch_bounds__(kQuantWarps * 32, kMinB)
    quant_decode_mma_kernel(const uint8_t* __restrict__ kcodes, const uint8_t* __restrict__ vcodes, QuantGeom geo,
                            int group_q, int n_groups, int gps, int n_splits, const float* __restrict__ q, float scale,
                            float* __restrict__ part_o, float* __restrict__ part_ml, int stride) {
  constexpr int kNT = GP / 4;
  constexpr int kKS = D / 16;                // key k-steps
  constexpr int kPK = 16 / KB;               // pairs per key word
  constexpr int kWK = D * KB / 128;          // key words per thread and token row
  constexpr int kNPL = D / 64;               // key channel pairs per lane in the B build
  constexpr int kPV = 16 / VB;               // pairs per value word
  constexpr int kWV = VB == 8 ? 2 : 1;       // value words per thread and channel row
  constexpr int kMT = D / 16;                // value m-tiles
  constexpr int kCG = D / 32;                // value channel groups
  constexpr float kKMul = static_cast<float>(1 << KB), kVMul = static_cast<float>(1 << VB);
  constexpr bool kV2 = kMinB > 1;
  static_assert(kWK >= 1 && kWK * kPK == D / 8, "a thread's key words hold its D/8 channel pairs");
  static_assert(!kOut || !kV2, "outliers: the 1-block kernel only");
  static_assert(sizeof(MmaSmem<D, GP>::bk) == sizeof(float) * D * GP, "a value outlier sum per channel and head in bk");
  __shared__ MmaSmem<D, GP> sm_all[kQuantWarps];
  pdl_trigger();  // the fp16 part's split kernel may run beside this one (CudaTuning::decode_pdl)
  const int lane = threadIdx.x % 32, wi = threadIdx.x / 32, gid = lane >> 2, tig = lane & 3;
  const int gw = blockIdx.x * kQuantWarps + wi;
  const int hk = gw / n_splits, split = gw % n_splits;
  if (hk >= geo.n_kv) return;
  MmaSmem<D, GP>& sm = sm_all[wi];

  // Key B build: this lane's channel pairs (pair index i = lane + 32 n over
  // the D/2 pairs = (owner thread tig', its pair pi)), their queries.
  int kc_lo[kNPL], kdst[kNPL];
  float qk[kNPL][2][GP];  // 2^KB * q * scale
#pragma unroll
  for (int n = 0; n < kNPL; ++n) {
    const int idx = lane + 32 * n, owner = idx / (D / 8), pi = idx % (D / 8);
    const int jw = owner * kWK + pi / kPK;
    kc_lo[n] = (32 / KB) * jw + pi % kPK;
    kdst[n] = ((pi / 2) * 32 + owner) * 2 + (pi & 1);  // u32 index in bk[nt] (+ column * 8 below)
#pragma unroll
    for (int h = 0; h < GP; ++h)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = kc_lo[n] + e * (16 / KB);
        qk[n][e][h] = h < group_q ? q[static_cast<size_t>(hk * group_q + h) * D + c] * scale * kKMul : 0.0f;
      }
  }
  // Value B build: lane = token; where its two halves (hi, lo columns) go.
  int vdst;
  {
    const int per_word = 32 / VB, j = lane / per_word, k = lane % per_word;
    const int f = k % kPV, half = k / kPV, g = j * kPV + f, owner = g / 4, pi = g % 4;
    vdst = (((pi / 2) * 32 + owner) * 2 + (pi & 1)) * 2 + half;  // __half index in bv[cg][nt] (+ column * 16)
  }
  // This thread's value words: word j0 (+1 for 8 bits) of each channel row;
  // 2-bit rows share a word between tig pairs, pre-shifted to fields 0..7.
  const int vj0 = (4 * tig) / kPV;
  const int vshift = VB == 2 ? 8 * (tig & 1) : 0;

  float m[GP], l[GP], pz[kCG][GP], acc[kMT][kNT][4];
  constexpr int kOv = kOut ? D / 32 : 1;
  float ov[kOv][GP];  // kOut: value outliers' sum of p delta, channel 32 i + lane
#pragma unroll
  for (int i = 0; i < kOv; ++i)
#pragma unroll
    for (int h = 0; h < GP; ++h) ov[i][h] = 0;
  const int n_o = kOut ? geo.outliers : 0;
#pragma unroll
  for (int h = 0; h < GP; ++h) {
    m[h] = -FLT_MAX;
    l[h] = 0;
#pragma unroll
    for (int g = 0; g < kCG; ++g) pz[g][h] = 0;
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0;

  // Everything a group needs from memory; with small codes the next group's
  // loads are issued before this group's arithmetic (software pipelining:
  // each warp walks its groups one after the other, so otherwise every group
  // would wait a full memory latency).
  constexpr bool kPrefetch = KB + VB <= 8;
  struct GroupLoads {
    uint32_t kwd[4][kWK], vwd[kMT][2][kWV];
    float ks[kNPL][2], kz[kNPL][2], vs[kCG], vz[kCG];
  };
  auto load_group = [&](int grp, GroupLoads& L) {
    const size_t rid = static_cast<size_t>(hk) * geo.max_groups + grp;
    const uint8_t* kr = kcodes + rid * geo.krec;
    const uint8_t* vr = vcodes + rid * geo.vrec;
    if constexpr (kOut) {  // the group's outlier entries into L2, a 128-byte line a lane (keys, then values)
      const int span = 4 * n_o, lines = min(16, (span + 127) / 128 + 1), i = lane % 16;
      const uint8_t* e0 = (lane < 16 ? kr + geo.koff : vr + geo.voff);
      if (i < lines) asm volatile("prefetch.global.L2 [%0];" ::"l"(e0 + min(128 * i, span - 1)));
    }
    const uint32_t* kw32 = reinterpret_cast<const uint32_t*>(kr);
    const uint32_t* vw32 = reinterpret_cast<const uint32_t*>(vr);
    if constexpr (kV2) {
      // token 4gid + r of key row index r; channel 32i + 4gid + 2mh + rh of
      // value tile 2i + mh, row half rh (records are 16-byte aligned:
      // launch_quant_decode checks).
#pragma unroll
      for (int w = 0; w < kWK; ++w) {
        const uint4 u = __ldg(reinterpret_cast<const uint4*>(kw32 + (tig * kWK + w) * 32 + 4 * gid));
        L.kwd[0][w] = u.x;
        L.kwd[1][w] = u.y;
        L.kwd[2][w] = u.z;
        L.kwd[3][w] = u.w;
      }
#pragma unroll
      for (int i = 0; i < kMT / 2; ++i)
#pragma unroll
        for (int w = 0; w < kWV; ++w) {
          const uint4 u = __ldg(reinterpret_cast<const uint4*>(vw32 + (vj0 + w) * D + 32 * i + 4 * gid));
          L.vwd[2 * i][0][w] = u.x;
          L.vwd[2 * i][1][w] = u.y;
          L.vwd[2 * i + 1][0][w] = u.z;
          L.vwd[2 * i + 1][1][w] = u.w;
        }
    } else {
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int w = 0; w < kWK; ++w) L.kwd[r][w] = __ldg(kw32 + (tig * kWK + w) * 32 + gid + 8 * r);
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int rh = 0; rh < 2; ++rh)
#pragma unroll
          for (int w = 0; w < kWV; ++w) L.vwd[mt][rh][w] = __ldg(vw32 + (vj0 + w) * D + 16 * mt + gid + 8 * rh);
    }
    const __half* ksc = reinterpret_cast<const __half*>(kr + geo.kscale);
    const __half* kzr = reinterpret_cast<const __half*>(kr + geo.kzero);
#pragma unroll
    for (int n = 0; n < kNPL; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        L.ks[n][e] = __half2float(ksc[kc_lo[n] + e * (16 / KB)]);
        L.kz[n][e] = __half2float(kzr[kc_lo[n] + e * (16 / KB)]) * (1.0f / kKMul);
      }
#pragma unroll
    for (int g = 0; g < kCG; ++g) {
      L.vs[g] = __half2float(reinterpret_cast<const __half*>(vr + geo.vscale)[g * 32 + lane]) * kVMul;
      L.vz[g] = __half2float(reinterpret_cast<const __half*>(vr + geo.vzero)[g * 32 + lane]);
    }
  };

  const int g0 = split * gps, g1 = min(n_groups, g0 + gps);
  GroupLoads cur;
  load_group(g0, cur);
  for (int grp = g0; grp < g1; ++grp) {
    GroupLoads nxt;
    if constexpr (kPrefetch) load_group(min(grp + 1, g1 - 1), nxt);
    auto& kwd = cur.kwd;
    auto& vwd = cur.vwd;
    auto& ks = cur.ks;
    auto& kz = cur.kz;
    auto& vs = cur.vs;
    auto& vz = cur.vz;

    // Key B fragments and the per-head constant: sum_c q s z_c - sum_c w_c.
    float corr[GP];
#pragma unroll
    for (int h = 0; h < GP; ++h) corr[h] = 0;
    __syncwarp();  // the previous group's fragment readers are done
#pragma unroll
    for (int n = 0; n < kNPL; ++n)
#pragma unroll
      for (int h = 0; h < GP; ++h) {
        const float w0 = qk[n][0][h] * ks[n][0], w1 = qk[n][1][h] * ks[n][1];
        corr[h] = fmaf(qk[n][0][h], kz[n][0], corr[h] - w0);
        corr[h] = fmaf(qk[n][1][h], kz[n][1], corr[h] - w1);
        uint32_t hi, lo;
        split_hi_lo(w0, w1, &hi, &lo);
        uint32_t* bk = reinterpret_cast<uint32_t*>(sm.bk[h / 4]);
        bk[kdst[n] + (h % 4) * 8] = hi;
        bk[kdst[n] + (h % 4 + 4) * 8] = lo;
      }
#pragma unroll
    for (int h = 0; h < GP; ++h) corr[h] = warp_sum(corr[h]);
    __syncwarp();

    // Scores: two m16 tiles of tokens.
    float s[2][kNT][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0;
#pragma unroll
    for (int kk = 0; kk < kKS; ++kk) {
      const int p0 = 2 * kk, p1 = 2 * kk + 1;
      uint2 b[kNT];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) b[nt] = sm.bk[nt][kk][lane];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        uint32_t a[4];
        a[0] = code_pair<KB>(kwd[2 * mt][p0 / kPK], p0 % kPK);
        a[1] = code_pair<KB>(kwd[2 * mt + 1][p0 / kPK], p0 % kPK);
        a[2] = code_pair<KB>(kwd[2 * mt][p1 / kPK], p1 % kPK);
        a[3] = code_pair<KB>(kwd[2 * mt + 1][p1 / kPK], p1 % kPK);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) mma_16816(s[mt][nt], a, b[nt]);
      }
    }
    // hi + lo columns (tig ^ 2), then scores to [token][head].
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float v = s[mt][nt][e] + __shfl_xor_sync(0xffffffffu, s[mt][nt][e], 2);
          const int tok = kV2 ? 4 * gid + 2 * mt + (e >> 1) : 16 * mt + gid + 8 * (e >> 1);
          if (tig < 2) sm.sc[tok][4 * nt + 2 * tig + (e & 1)] = v;
        }
    __syncwarp();

    // Key outliers: q[c] scale delta to token t's scores.
    if constexpr (kOut) {
      const uint8_t* kr = kcodes + (static_cast<size_t>(hk) * geo.max_groups + grp) * geo.krec;
      for (int j0 = 0; j0 < n_o; j0 += 32) {
        const GpuOutlier o = gpu_outlier(kr, geo.koff, j0 + lane, n_o);
        float w[GP];
#pragma unroll
        for (int h = 0; h < GP; ++h)
          w[h] = h < group_q ? __ldg(q + static_cast<size_t>(hk * group_q + h) * D + o.c) * scale * o.delta : 0.0f;
        outlier_sum_into(w, o.valid ? o.t : 256 + lane, o.valid, &sm.sc[o.t][0]);
      }
    }

    // Online softmax with lane = token; m is warp-uniform.
    float p[GP], mx[GP];
    bool grow = false;
#pragma unroll
    for (int h = 0; h < GP; ++h) {
      p[h] = sm.sc[lane][h] + corr[h];
      mx[h] = warp_max(p[h]);
      grow |= mx[h] > m[h];
    }
    if (grow) {
      float cr[GP];
#pragma unroll
      for (int h = 0; h < GP; ++h) {
        const float mn = fmaxf(m[h], mx[h]);
        cr[h] = __expf(m[h] - mn);
        m[h] = mn;
        l[h] *= cr[h];
#pragma unroll
        for (int g = 0; g < kCG; ++g) pz[g][h] *= cr[h];
#pragma unroll
        for (int i = 0; i < kOv; ++i) ov[i][h] *= cr[h];
      }
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        // columns 2tig, 2tig+1 of tile nt: heads 4nt + 2(tig&1) + {0, 1}
        const float c0 = (tig & 1) ? cr[4 * nt + 2] : cr[4 * nt];
        const float c1 = (tig & 1) ? cr[4 * nt + 3] : cr[4 * nt + 1];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          acc[mt][nt][0] *= c0;
          acc[mt][nt][1] *= c1;
          acc[mt][nt][2] *= c0;
          acc[mt][nt][3] *= c1;
        }
      }
    }
#pragma unroll
    for (int h = 0; h < GP; ++h) {
      p[h] = __expf(p[h] - m[h]);
      l[h] += p[h];
    }
    // Value outliers: p[t] delta to channel c (sums in bk, folded into ov).
    if constexpr (kOut) {
      float* dsum = reinterpret_cast<float*>(&sm.bk[0][0][0]);  // [D][GP]
#pragma unroll
      for (int i = 0; i < kOv; ++i)
#pragma unroll
        for (int h = 0; h < GP; ++h) dsum[(32 * i + lane) * GP + h] = 0;
      __syncwarp();
      const uint8_t* vr = vcodes + (static_cast<size_t>(hk) * geo.max_groups + grp) * geo.vrec;
      for (int j0 = 0; j0 < n_o; j0 += 32) {
        const GpuOutlier o = gpu_outlier(vr, geo.voff, j0 + lane, n_o);
        float w[GP];
#pragma unroll
        for (int h = 0; h < GP; ++h) w[h] = __shfl_sync(0xffffffffu, p[h], o.t) * o.delta;
        outlier_sum_into(w, o.valid ? o.c : 256 + lane, o.valid, dsum + o.c * GP);
      }
#pragma unroll
      for (int i = 0; i < kOv; ++i)
#pragma unroll
        for (int h = 0; h < GP; ++h) ov[i][h] += dsum[(32 * i + lane) * GP + h];
    }
    // Value B fragments: 2^VB p s_gt (hi, lo) for this lane's token.
#pragma unroll
    for (int g = 0; g < kCG; ++g)
#pragma unroll
      for (int h = 0; h < GP; ++h) {
        const float w = p[h] * vs[g];
        pz[g][h] = fmaf(p[h], vz[g], pz[g][h] - w);
        const __half hi = __float2half_rn(w);
        const __half lo = __float2half_rn(w - __half2float(hi));
        __half* bv = reinterpret_cast<__half*>(sm.bv[g][h / 4]);
        bv[vdst + (h % 4) * 16] = hi;
        bv[vdst + (h % 4 + 4) * 16] = lo;
      }
    __syncwarp();
    if constexpr (VB == 2) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int rh = 0; rh < 2; ++rh) vwd[mt][rh][0] >>= vshift;
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      const int g = mt / 2;
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        // pairs 2kk, 2kk+1 of this thread: word, field (8 bits: two words)
        constexpr int kF = VB == 8 ? 2 : 4;
        const int p0 = 2 * kk, p1 = 2 * kk + 1;
        const int w0 = VB == 8 ? p0 / 2 : 0, f0 = p0 % kF;
        const int w1 = VB == 8 ? p1 / 2 : 0, f1 = p1 % kF;
        uint32_t a[4];
        a[0] = code_pair<VB>(vwd[mt][0][w0], f0);
        a[1] = code_pair<VB>(vwd[mt][1][w0], f0);
        a[2] = code_pair<VB>(vwd[mt][0][w1], f1);
        a[3] = code_pair<VB>(vwd[mt][1][w1], f1);
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) mma_16816(acc[mt][nt], a, sm.bv[g][nt][kk][lane]);
      }
    }
    if constexpr (kPrefetch) cur = nxt;
    else if (grp + 1 < g1) load_group(grp + 1, cur);
  }

  // Partials: l and the zero/offset terms over lanes, hi + lo columns.
  // kOut: ov to shared (bk, free after the loop), read by the store below.
  float* ovsh = reinterpret_cast<float*>(&sm.bk[0][0][0]);  // [D][GP]
  if constexpr (kOut) {
    __syncwarp();
#pragma unroll
    for (int i = 0; i < kOv; ++i)
#pragma unroll
      for (int h = 0; h < GP; ++h) ovsh[(32 * i + lane) * GP + h] = ov[i][h];
    __syncwarp();
  }
  float L[GP];
#pragma unroll
  for (int h = 0; h < GP; ++h) {
    L[h] = warp_sum(l[h]);
#pragma unroll
    for (int g = 0; g < kCG; ++g) pz[g][h] = warp_sum(pz[g][h]);
  }
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float v = acc[mt][nt][e] + __shfl_xor_sync(0xffffffffu, acc[mt][nt][e], 2);
        if (tig >= 2) continue;
        const int hh = 4 * nt + 2 * tig + (e & 1);
        if (hh >= group_q) continue;
        const int hs = 4 * nt + (e & 1);  // compile-time head for tig 0; +2 for tig 1
        const float lsum = tig ? L[hs + 2] : L[hs];
        const float z = tig ? pz[mt / 2][hs + 2] : pz[mt / 2][hs];
        const int c = kV2 ? 32 * (mt / 2) + 4 * gid + 2 * (mt % 2) + (e >> 1) : 16 * mt + gid + 8 * (e >> 1);
        const size_t pi = static_cast<size_t>(hk * group_q + hh) * stride + split;
        const float o = kOut ? ovsh[c * GP + hh] : 0.0f;
        part_o[pi * D + c] = lsum > 0 ? (v + z + o) / lsum : 0.0f;
      }
  if (lane == 0) {
#pragma unroll
    for (int h = 0; h < GP; ++h) {
      if (h >= group_q) break;
      const size_t pi = static_cast<size_t>(hk * group_q + h) * stride + split;
      part_ml[pi * 2] = m[h];
      part_ml[pi * 2 + 1] = L[h];
    }
  }
}

template <int D, int GP, int KB, int VB>
void launch_decode(dim3 grid, const uint8_t* kc, const uint8_t* vc, const QuantGeom& geo, int g, int ng,
                   int gps, int ns, const float* q, float scale, float* po, float* pml, int stride, cudaStream_t s,
                   int* warps) {
  // Records are whole 16-byte units (kv_group_layout: 4 d b + 4 d bytes,
  // d % 32 == 0), checked anyway since the v2 kernel's loads rely on it.
  const int want = cuda_tuning().quant_decode_v2;
  const bool out = geo.outliers > 0;  // kOut: the 1-block kernel
  const bool v2 = want > 0 && !out && geo.krec % 16 == 0 && geo.vrec % 16 == 0;
  // 8 heads at D = 128 hold twice the accumulators: capped below 255
  // registers they spill ~1 KB, so they keep 2 blocks.
  constexpr int kMid = GP == 8 && D == 128 ? 2 : 3;
  const bool four = v2 && want >= 4 && GP == 4;
  if (warps) {  // only how many warps stay resident (cached per kernel)
    static const int w_mma = resident_warps(quant_decode_mma_kernel<D, GP, KB, VB, 1>, kQuantWarps * 32);
    static const int w_v2 = resident_warps(quant_decode_mma_kernel<D, GP, KB, VB, kMid>, kQuantWarps * 32);
    static const int w_v4 =
        GP == 4 ? resident_warps(quant_decode_mma_kernel<D, GP, KB, VB, GP == 4 ? 4 : kMid>, kQuantWarps * 32) : 0;
    if (out) {
      static const int w_out = resident_warps(quant_decode_mma_kernel<D, GP, KB, VB, 1, true>, kQuantWarps * 32);
      *warps = w_out;
      return;
    }
    *warps = four ? w_v4 : v2 ? w_v2 : w_mma;
    return;
  }
  if (out)
    quant_decode_mma_kernel<D, GP, KB, VB, 1, true><<<grid, kQuantWarps * 32, 0, s>>>(kc, vc, geo, g, ng, gps, ns, q,
                                                                                      scale, po, pml, stride);
  else if (four)
    quant_decode_mma_kernel<D, GP, KB, VB, GP == 4 ? 4 : kMid><<<grid, kQuantWarps * 32, 0, s>>>(
        kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride);
  else if (v2)
    quant_decode_mma_kernel<D, GP, KB, VB, kMid><<<grid, kQuantWarps * 32, 0, s>>>(kc, vc, geo, g, ng, gps, ns, q,
                                                                                   scale, po, pml, stride);
  else
    quant_decode_mma_kernel<D, GP, KB, VB, 1><<<grid, kQuantWarps * 32, 0, s>>>(kc, vc, geo, g, ng, gps, ns, q, scale,
                                                                                po, pml, stride);
}
template <int D, int GP, int KB>
void launch_decode_vb(int vb, dim3 grid, const uint8_t* kc, const uint8_t* vc, const QuantGeom& geo, int g,
                      int ng, int gps, int ns, const float* q, float scale, float* po, float* pml, int stride,
                      cudaStream_t s, int* warps) {
  switch (vb) {
    case 8: launch_decode<D, GP, KB, 8>(grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    case 4: launch_decode<D, GP, KB, 4>(grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    case 2: launch_decode<D, GP, KB, 2>(grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    default: fail("CUDA quantized KV: %d-bit values are not supported", vb);
  }
}
template <int D, int GP>
void launch_decode_kb(int kb, int vb, dim3 grid, const uint8_t* kc, const uint8_t* vc, const QuantGeom& geo,
                      int g, int ng, int gps, int ns, const float* q, float scale, float* po, float* pml, int stride,
                      cudaStream_t s, int* warps) {
  switch (kb) {
    case 8: launch_decode_vb<D, GP, 8>(vb, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    case 4: launch_decode_vb<D, GP, 4>(vb, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    case 2: launch_decode_vb<D, GP, 2>(vb, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    default: fail("CUDA quantized KV: %d-bit keys are not supported", kb);
  }
}
}  // namespace

void launch_quant_decode(const QuantDecodeArgs& a, cudaStream_t s, int* warps) {
  // CudaTuning::quant_decode_mma off: milestone 3's FMA kernel, whose loop the
  // format-generic kernel (kv_quant_decode_any.cu) now is for every format.
  if (!a.mma) return launch_quant_decode_any(a, s, warps);
  if (cuda_tuning().quant_decode_v3 && a.geo.outliers == 0) return launch_quant_decode_v3(a, s, warps);
  const int D = a.geo.D, g = a.group_q, kb = a.geo.kbits, vb = a.geo.vbits;
#define LONGKV_QD(D_, GP_)                                                                                         \
  launch_decode_kb<D_, GP_>(kb, vb, a.grid, a.kc, a.vc, a.geo, g, a.n_groups, a.gps, a.n_splits, a.q, a.scale, \
                            a.part_o, a.part_ml, a.stride, s, warps)
  if (D == 128 && g <= 4) LONGKV_QD(128, 4);
  else if (D == 128) LONGKV_QD(128, 8);
  else if (g <= 4) LONGKV_QD(64, 4);
  else LONGKV_QD(64, 8);
#undef LONGKV_QD
}

}  // namespace longkv::cuda

// Scalar-quantized KV cache on the GPU: the twin of kv/quant_cache with the
// code records of kv/kv_codec.h byte for byte (the header is the one
// description of the layout; kernels here read and write exactly it).
//
// Storage per layer, device memory:
//   k/v codes  [n_kv][max_groups][record]  kv_group_layout(32, d, bits)
//   exact k/v  [n_kv][sink_cap + win_cap][d] f16: sinks at slots [0, sink_cap),
//              the residual window at [sink_cap, ...), oldest token first, so
//              the fp16 tokens every decode row sees are one contiguous prefix
//              of the slots (the dense split kernel reads them as they are).
// Token lifecycle as on the CPU (quant_cache.h): S sinks, then a window that
// is cut into a group of G = 32 tokens whenever it reaches R + G tokens.
//
// append(n) is O(1) kernels for any n: the groups the n tokens complete are
// quantized in one launch straight from their sources (the old window's f16
// slots, or the f32 input rounded to f16, which is what the window would
// have held), then the surviving window is rebuilt (through a scratch copy
// when it shifts) and new sinks written.
//
// Decode (one query row) works from the codes: one warp per (KV head, run of
// groups), lanes = tokens for keys (word (j, t) of a key record is lane t's,
// so a warp load is 128 contiguous bytes), lanes = channels for values; the
// per-channel key scale is folded into the query (qs = q * s, one dot(q, z)
// per group), the per-token value scale into the probabilities (ps = p * s,
// sum_t p z per channel group kept per lane until the end). Each split writes
// (o, m, l) beside the dense split kernel's states of the fp16 part; one
// merge kernel combines them. No dequantized copy of the cache exists.
//
// Prefill (n_q > 1) dequantizes the layer's keys/values into a scratch f16
// buffer (GpuAttnWorkspace::kv) and runs the dense prefill path: quantized
// values are rounded to f16 once more there (relative 2^-11), which decode
// does not do.
#include <cfloat>

#include "backend/cuda/gpu_kv_cache.cuh"
#include "kv/kv_codec.h"

namespace longkv::cuda {
namespace {

constexpr int kG = kKvCodeBlock;  // group size the GPU cache supports (32 = lanes of a warp)
constexpr int kQuantWarps = 4;


__device__ __forceinline__ unsigned short f2h_bits(float x) { return __half_as_ushort(__float2half_rn(x)); }
__device__ __forceinline__ float h2f_bits(unsigned short h) { return __half2float(__ushort_as_half(h)); }

// kv_fit_range of kv_codec.cpp, operation for operation. The CPU build
// (-march=native, GNU C++: -ffp-contract=fast) compiles the coverage test
// z + f * levels to one FMA, so it is an explicit fmaf here; the other steps
// are single IEEE operations in both.
__device__ void fit_range(float mn, float mx, int bits, bool sym, unsigned short* scale, unsigned short* zero) {
  if (sym) {
    const float amax = fmaxf(fabsf(mn), fabsf(mx));
    const int top = (1 << (bits - 1)) - 1;
    unsigned short s = 0;
    if (amax > 0) {
      s = f2h_bits(__fdiv_rn(amax, static_cast<float>(top)));
      for (int i = 0; i < 4 && !(__fmul_rn(h2f_bits(s), static_cast<float>(top)) >= amax) && s < 0x7bffu; ++i) ++s;
    }
    *scale = s;
    *zero = f2h_bits(__fmul_rn(-static_cast<float>(1 << (bits - 1)), h2f_bits(s)));
    return;
  }
  const int levels = (1 << bits) - 1;
  const unsigned short zb = f2h_bits(mn);
  const float z = h2f_bits(zb);
  const float span = __fsub_rn(mx, z);
  unsigned short s = 0;
  if (span > 0) {
    s = f2h_bits(__fdiv_rn(span, static_cast<float>(levels)));
    for (int i = 0; i < 4 && !(__fmaf_rn(h2f_bits(s), static_cast<float>(levels), z) >= mx) && s < 0x7bffu; ++i) ++s;
  }
  *scale = s;
  *zero = zb;
}

// kv_encode: clamp(floor((x - z) / s + 0.5), 0, 2^b - 1), 0 for s = 0.
__device__ __forceinline__ uint32_t encode(float x, float s, float z, int bits) {
  if (!(s > 0)) return 0;
  const float v = floorf(__fadd_rn(__fdiv_rn(__fsub_rn(x, z), s), 0.5f));
  const float top = static_cast<float>((1 << bits) - 1);
  return static_cast<uint32_t>(v < 0 ? 0.0f : (v > top ? top : v));
}

struct QuantGeom {
  int n_kv = 0, D = 0, kbits = 0, vbits = 0;
  int max_groups = 0, sink_cap = 0, exact_cap = 0;
  size_t krec = 0, vrec = 0, kscale = 0, kzero = 0, vscale = 0, vzero = 0;
  bool sym = false;
};

// Source of position p while appending: the old window's f16 slot (p <
// old_total; slot sink_cap + p - old_ws) or the input row p - old_total
// rounded to f16 (what the window would have stored).
__device__ __forceinline__ float src_value(const __half* exact, const float* __restrict__ in, const QuantGeom& g, int h, int c,
                                           int p, int old_total, int old_ws) {
  if (p < old_total)
    return __half2float(exact[(static_cast<size_t>(h) * g.exact_cap + g.sink_cap + (p - old_ws)) * g.D + c]);
  return __half2float(__float2half_rn(in[static_cast<size_t>(p - old_total) * g.n_kv * g.D + h * g.D + c]));
}

// One block (128 threads) per (new group, KV head): keys then values of the
// group quantized from the 32 x D tile in shared memory.
__global__ void __launch_bounds__(128)
    quantize_groups_kernel(uint8_t* __restrict__ kcodes, uint8_t* __restrict__ vcodes,
                           const __half* __restrict__ ek, const __half* __restrict__ ev, const float* __restrict__ kin,
                           const float* __restrict__ vin, QuantGeom g, int grp0, int pos0, int old_total, int old_ws) {
  __shared__ float x[kG][128 + 1];
  __shared__ unsigned short sc[128], zr[128];
  const int grp = grp0 + blockIdx.x, h = blockIdx.y, D = g.D, tid = threadIdx.x;
  const int p0 = pos0 + blockIdx.x * kG;  // position of token 0 of the group
  for (int which = 0; which < 2; ++which) {
    const bool keys = which == 0;
    const int bits = keys ? g.kbits : g.vbits, n = 32 / bits;
    uint8_t* rec = (keys ? kcodes : vcodes) + (static_cast<size_t>(h) * g.max_groups + grp) * (keys ? g.krec : g.vrec);
    for (int i = tid; i < kG * D; i += blockDim.x) {
      const int t = i / D, c = i % D;
      x[t][c] = src_value(keys ? ek : ev, keys ? kin : vin, g, h, c, p0 + t, old_total, old_ws);
    }
    __syncthreads();
    if (keys) {
      for (int c = tid; c < D; c += blockDim.x) {  // per channel over the G tokens
        float mn = x[0][c], mx = x[0][c];
        for (int t = 1; t < kG; ++t) {
          mn = x[t][c] < mn ? x[t][c] : mn;
          mx = x[t][c] > mx ? x[t][c] : mx;
        }
        fit_range(mn, mx, bits, g.sym, &sc[c], &zr[c]);
      }
    } else {
      for (int i = tid; i < D; i += blockDim.x) {  // per token over G channels: i = group * G + token
        const int t = i % kG, c0 = (i / kG) * kG;
        float mn = x[t][c0], mx = x[t][c0];
        for (int c = c0 + 1; c < c0 + kG; ++c) {
          mn = x[t][c] < mn ? x[t][c] : mn;
          mx = x[t][c] > mx ? x[t][c] : mx;
        }
        fit_range(mn, mx, bits, g.sym, &sc[i], &zr[i]);
      }
    }
    __syncthreads();
    unsigned short* rs = reinterpret_cast<unsigned short*>(rec + (keys ? g.kscale : g.vscale));
    unsigned short* rz = reinterpret_cast<unsigned short*>(rec + (keys ? g.kzero : g.vzero));
    for (int i = tid; i < D; i += blockDim.x) {
      rs[i] = sc[i];
      rz[i] = zr[i];
    }
    uint32_t* words = reinterpret_cast<uint32_t*>(rec);
    if (keys) {  // word (j, t): channels n*j .. n*j+n-1 of token t
      for (int i = tid; i < (D / n) * kG; i += blockDim.x) {
        const int j = i / kG, t = i % kG;
        uint32_t w = 0;
        for (int k = 0; k < n; ++k) {
          const int c = n * j + k;
          w |= encode(x[t][c], h2f_bits(sc[c]), h2f_bits(zr[c]), bits) << (bits * k);
        }
        words[i] = w;
      }
    } else {  // word (j, c): tokens n*j .. n*j+n-1 of channel c
      for (int i = tid; i < (kG / n) * D; i += blockDim.x) {
        const int j = i / D, c = i % D;
        uint32_t w = 0;
        for (int k = 0; k < n; ++k) {
          const int t = n * j + k, si = (c / kG) * kG + t;
          w |= encode(x[t][c], h2f_bits(sc[si]), h2f_bits(zr[si]), bits) << (bits * k);
        }
        words[i] = w;
      }
    }
    __syncthreads();
  }
}

// Writes positions p0 .. p0 + count - 1 (from src_value) to slots slot0 ..
// of dst (head stride dst_cap slots), keys and values.
// dst may be the exact buffer itself (then only input rows are read).
__global__ void place_tokens_kernel(__half* dk, __half* dv, int dst_cap, int slot0, const __half* ek, const __half* ev,
                                    const float* __restrict__ kin, const float* __restrict__ vin, QuantGeom g, int p0,
                                    int count, int old_total, int old_ws) {
  const size_t total = static_cast<size_t>(count) * g.n_kv * g.D;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % g.D);
    const int h = static_cast<int>((i / g.D) % g.n_kv);
    const int t = static_cast<int>(i / (static_cast<size_t>(g.D) * g.n_kv));
    const size_t dst = (static_cast<size_t>(h) * dst_cap + slot0 + t) * g.D + c;
    dk[dst] = __float2half_rn(src_value(ek, kin, g, h, c, p0 + t, old_total, old_ws));
    dv[dst] = __float2half_rn(src_value(ev, vin, g, h, c, p0 + t, old_total, old_ws));
  }
}

// Decode from the codes. One warp per (KV head, split of groups); GP >= g
// query heads (padded with zero queries), D = head_dim, KB/VB code bits.
template <int D, int GP, int KB, int VB>
__global__ void __launch_bounds__(kQuantWarps * 32)
    quant_decode_kernel(const uint8_t* __restrict__ kcodes, const uint8_t* __restrict__ vcodes, QuantGeom geo,
                        int group_q, int n_groups, int gps, int n_splits, const float* __restrict__ q, float scale,
                        float* __restrict__ part_o, float* __restrict__ part_ml, int stride) {
  constexpr int kNK = 32 / KB, kNV = 32 / VB;  // codes per word
  constexpr int kKW = D / kNK;                 // key words per lane (token)
  constexpr int kCh = D / 32;                  // channels per lane = value channel groups
  static_assert(GP % 4 == 0, "query heads are read as float4");
  __shared__ __align__(16) float qsh_all[kQuantWarps][D][GP];      // q * scale
  __shared__ __align__(16) float qs_all[kQuantWarps][D][GP];       // q * scale * key scale
  __shared__ __align__(16) float ps_all[kQuantWarps][kCh][32][GP]; // p * value scale
  const int lane = threadIdx.x % 32, wi = threadIdx.x / 32;
  const int gw = blockIdx.x * kQuantWarps + wi;
  const int hk = gw / n_splits, split = gw % n_splits;
  if (hk >= geo.n_kv) return;
  float(*qsh)[GP] = qsh_all[wi];
  float(*qs)[GP] = qs_all[wi];
  float(*ps)[32][GP] = ps_all[wi];
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
    // Every load of the group first: key words of token `lane`, value words
    // of channels lane + 32 i, the scales/zeros this lane needs.
    uint32_t kw[kKW], vw[kCh][VB];
#pragma unroll
    for (int j = 0; j < kKW; ++j) kw[j] = __ldg(reinterpret_cast<const uint32_t*>(kr) + j * 32 + lane);
#pragma unroll
    for (int i = 0; i < kCh; ++i)
#pragma unroll
      for (int j = 0; j < VB; ++j) vw[i][j] = __ldg(reinterpret_cast<const uint32_t*>(vr) + j * D + i * 32 + lane);
    const __half* ksc = reinterpret_cast<const __half*>(kr + geo.kscale);
    const __half* kzr = reinterpret_cast<const __half*>(kr + geo.kzero);
    const __half* vsc = reinterpret_cast<const __half*>(vr + geo.vscale);
    const __half* vzr = reinterpret_cast<const __half*>(vr + geo.vzero);
    float ks[kCh], kz[kCh], vs[kCh], vz[kCh];
#pragma unroll
    for (int i = 0; i < kCh; ++i) {
      ks[i] = __half2float(ksc[i * 32 + lane]);
      kz[i] = __half2float(kzr[i * 32 + lane]);
      vs[i] = __half2float(vsc[i * 32 + lane]);  // channel group i, token lane
      vz[i] = __half2float(vzr[i * 32 + lane]);
    }
    __syncwarp();  // the previous group's readers of qs/ps are done
    float qz[GP];
#pragma unroll
    for (int h = 0; h < GP; ++h) qz[h] = 0;
#pragma unroll
    for (int i = 0; i < kCh; ++i) {
      const int c = i * 32 + lane;
#pragma unroll
      for (int h = 0; h < GP; ++h) {
        qs[c][h] = qsh[c][h] * ks[i];
        qz[h] = fmaf(qsh[c][h], kz[i], qz[h]);
      }
    }
#pragma unroll
    for (int h = 0; h < GP; ++h) qz[h] = warp_sum(qz[h]);
    __syncwarp();
    // Scores of token `lane`.
    float sc[GP];
#pragma unroll
    for (int h = 0; h < GP; ++h) sc[h] = qz[h];
#pragma unroll
    for (int j = 0; j < kKW; ++j) {
#pragma unroll
      for (int k = 0; k < kNK; ++k) {
        const float code = static_cast<float>((kw[j] >> (KB * k)) & ((1u << KB) - 1));
        const float4* qv = reinterpret_cast<const float4*>(qs[j * kNK + k]);
#pragma unroll
        for (int h4 = 0; h4 < GP / 4; ++h4) {
          const float4 a = qv[h4];
          sc[4 * h4] = fmaf(a.x, code, sc[4 * h4]);
          sc[4 * h4 + 1] = fmaf(a.y, code, sc[4 * h4 + 1]);
          sc[4 * h4 + 2] = fmaf(a.z, code, sc[4 * h4 + 2]);
          sc[4 * h4 + 3] = fmaf(a.w, code, sc[4 * h4 + 3]);
        }
      }
    }
    // Online softmax; m is warp-uniform, l and the accumulators per lane.
#pragma unroll
    for (int h = 0; h < GP; ++h) {
      const float mn = fmaxf(m[h], warp_max(sc[h]));
      const float corr = __expf(m[h] - mn);
      m[h] = mn;
      const float p = __expf(sc[h] - mn);
      l[h] = fmaf(l[h], corr, p);
#pragma unroll
      for (int i = 0; i < kCh; ++i) {
        acc[h][i] *= corr;
        pz[h][i] = fmaf(p, vz[i], pz[h][i] * corr);
        ps[i][lane][h] = p * vs[i];
      }
    }
    __syncwarp();
    // Values: channel lane + 32 i (channel group i), tokens from the words.
#pragma unroll
    for (int i = 0; i < kCh; ++i) {
#pragma unroll
      for (int j = 0; j < VB; ++j) {
#pragma unroll
        for (int k = 0; k < kNV; ++k) {
          const float code = static_cast<float>((vw[i][j] >> (VB * k)) & ((1u << VB) - 1));
          const float4* pv = reinterpret_cast<const float4*>(ps[i][j * kNV + k]);
#pragma unroll
          for (int h4 = 0; h4 < GP / 4; ++h4) {
            const float4 a = pv[h4];
            acc[4 * h4][i] = fmaf(a.x, code, acc[4 * h4][i]);
            acc[4 * h4 + 1][i] = fmaf(a.y, code, acc[4 * h4 + 1][i]);
            acc[4 * h4 + 2][i] = fmaf(a.z, code, acc[4 * h4 + 2][i]);
            acc[4 * h4 + 3][i] = fmaf(a.w, code, acc[4 * h4 + 3][i]);
          }
        }
      }
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
      const float z = warp_sum(pz[h][i]);  // sum_t p_t z_t of channel group i
      part_o[pi * D + i * 32 + lane] = (acc[h][i] + z) * inv;
    }
    if (lane == 0) {
      part_ml[pi * 2] = m[h];
      part_ml[pi * 2 + 1] = lsum;
    }
  }
}

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

__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint2 b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.x), "r"(b.y));
}

// f16x2 (1 + field f / 2^B, 1 + field f + 16/B / 2^B) of a word of B-bit
// fields: the two fields are 16 bits apart, so one shift puts both at the top
// of their halves' mantissas (f is a compile-time constant after unrolling).
template <int B>
__device__ __forceinline__ uint32_t code_pair(uint32_t x, int f) {
  constexpr uint32_t kM = ((1u << B) - 1) << (10 - B);
  const int sh = (10 - B) - B * f;
  const uint32_t y = sh >= 0 ? x << sh : x >> (-sh);
  return (y & (kM | (kM << 16))) | 0x3C003C00u;
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

// hi = f16(a), f16(b); lo = f16 of what hi missed.
__device__ __forceinline__ void split_hi_lo(float a, float b, uint32_t* hi, uint32_t* lo) {
  const __half2 h = __floats2half2_rn(a, b);
  const float2 f = __half22float2(h);
  *hi = h2_bits(h);
  *lo = h2_bits(__floats2half2_rn(a - f.x, b - f.y));
}

template <int D, int GP>
struct MmaSmem {
  static constexpr int kNT = GP / 4;
  uint2 bk[kNT][D / 16][32];      // key B fragments per lane: (b0, b1) of each k-step
  uint2 bv[D / 32][kNT][2][32];   // value B fragments per channel group, k-step
  float sc[32][GP];               // scores [token][head]
};

template <int D, int GP, int KB, int VB>
__global__ void __launch_bounds__(kQuantWarps * 32)
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
  static_assert(kWK >= 1 && kWK * kPK == D / 8, "a thread's key words hold its D/8 channel pairs");
  __shared__ MmaSmem<D, GP> sm_all[kQuantWarps];
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
    const uint32_t* kw32 = reinterpret_cast<const uint32_t*>(kr);
    const uint32_t* vw32 = reinterpret_cast<const uint32_t*>(vr);
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
          if (tig < 2) sm.sc[16 * mt + gid + 8 * (e >> 1)][4 * nt + 2 * tig + (e & 1)] = v;
        }
    __syncwarp();

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
        const int c = 16 * mt + gid + 8 * (e >> 1);
        const size_t pi = static_cast<size_t>(hk * group_q + hh) * stride + split;
        part_o[pi * D + c] = lsum > 0 ? (v + z) / lsum : 0.0f;
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

// Dequantizes group records into dst f16 [n_kv][N][D] at token tok0 + grp * G.
__global__ void dequantize_groups_kernel(const uint8_t* __restrict__ kcodes, const uint8_t* __restrict__ vcodes,
                                         QuantGeom g, int tok0, int N, __half* __restrict__ dk,
                                         __half* __restrict__ dv) {
  const int grp = blockIdx.x, h = blockIdx.y, D = g.D;
  const size_t rid = static_cast<size_t>(h) * g.max_groups + grp;
  const uint8_t* kr = kcodes + rid * g.krec;
  const uint8_t* vr = vcodes + rid * g.vrec;
  const int nk = 32 / g.kbits, nv = 32 / g.vbits;
  for (int i = threadIdx.x; i < kG * D; i += blockDim.x) {
    const int t = i / D, c = i % D;
    const uint32_t kw = reinterpret_cast<const uint32_t*>(kr)[(c / nk) * kG + t];
    const uint32_t vw = reinterpret_cast<const uint32_t*>(vr)[(t / nv) * D + c];
    const float kq = static_cast<float>((kw >> (g.kbits * (c % nk))) & ((1u << g.kbits) - 1));
    const float vq = static_cast<float>((vw >> (g.vbits * (t % nv))) & ((1u << g.vbits) - 1));
    const float ks = __half2float(reinterpret_cast<const __half*>(kr + g.kscale)[c]);
    const float kz = __half2float(reinterpret_cast<const __half*>(kr + g.kzero)[c]);
    const int si = (c / kG) * kG + t;
    const float vs = __half2float(reinterpret_cast<const __half*>(vr + g.vscale)[si]);
    const float vz = __half2float(reinterpret_cast<const __half*>(vr + g.vzero)[si]);
    const size_t dst = (static_cast<size_t>(h) * N + tok0 + grp * kG + t) * D + c;
    dk[dst] = __float2half_rn(fmaf(ks, kq, kz));
    dv[dst] = __float2half_rn(fmaf(vs, vq, vz));
  }
}

// Copies `count` slots (from slot s0 of src, head stride src_cap) to tokens
// t0.. of dst [n_kv][N][D].
__global__ void copy_slots_kernel(const __half* __restrict__ sk, const __half* __restrict__ sv, int src_cap, int s0,
                                  int count, int n_kv, int D, int N, int t0, __half* __restrict__ dk,
                                  __half* __restrict__ dv) {
  const size_t total = static_cast<size_t>(count) * n_kv * D;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % D);
    const int t = static_cast<int>((i / D) % count);
    const int h = static_cast<int>(i / (static_cast<size_t>(D) * count));
    const size_t src = (static_cast<size_t>(h) * src_cap + s0 + t) * D + c;
    const size_t dst = (static_cast<size_t>(h) * N + t0 + t) * D + c;
    dk[dst] = sk[src];
    dv[dst] = sv[src];
  }
}

// Normal(0, 1) floats from a counter hash (Box-Muller), for synthetic contexts.
__global__ void random_normal_kernel(float* __restrict__ x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u1 = (static_cast<float>(z >> 40) + 1.0f) * (1.0f / 16777216.0f);
    const float u2 = static_cast<float>((z >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
    x[i] = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

int grid_1d(size_t n) { return static_cast<int>(std::min<size_t>((n + 255) / 256, 132 * 32)); }

template <int D, int GP, int KB, int VB>
void launch_decode(bool mma, dim3 grid, const uint8_t* kc, const uint8_t* vc, const QuantGeom& geo, int g, int ng,
                   int gps, int ns, const float* q, float scale, float* po, float* pml, int stride, cudaStream_t s,
                   int* warps) {
  if (warps) {  // only how many warps stay resident (cached per kernel)
    static const int w_mma = resident_warps(quant_decode_mma_kernel<D, GP, KB, VB>, kQuantWarps * 32);
    static const int w_fma = resident_warps(quant_decode_kernel<D, GP, KB, VB>, kQuantWarps * 32);
    *warps = mma ? w_mma : w_fma;
    return;
  }
  if (mma)
    quant_decode_mma_kernel<D, GP, KB, VB><<<grid, kQuantWarps * 32, 0, s>>>(kc, vc, geo, g, ng, gps, ns, q, scale, po,
                                                                             pml, stride);
  else
    quant_decode_kernel<D, GP, KB, VB><<<grid, kQuantWarps * 32, 0, s>>>(kc, vc, geo, g, ng, gps, ns, q, scale, po, pml,
                                                                         stride);
}
template <int D, int GP, int KB>
void launch_decode_vb(int vb, bool mma, dim3 grid, const uint8_t* kc, const uint8_t* vc, const QuantGeom& geo, int g,
                      int ng, int gps, int ns, const float* q, float scale, float* po, float* pml, int stride,
                      cudaStream_t s, int* warps) {
  switch (vb) {
    case 8: launch_decode<D, GP, KB, 8>(mma, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    case 4: launch_decode<D, GP, KB, 4>(mma, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    case 2: launch_decode<D, GP, KB, 2>(mma, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    default: fail("CUDA quantized KV: %d-bit values are not supported", vb);
  }
}
template <int D, int GP>
void launch_decode_kb(int kb, int vb, bool mma, dim3 grid, const uint8_t* kc, const uint8_t* vc, const QuantGeom& geo,
                      int g, int ng, int gps, int ns, const float* q, float scale, float* po, float* pml, int stride,
                      cudaStream_t s, int* warps) {
  switch (kb) {
    case 8: launch_decode_vb<D, GP, 8>(vb, mma, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    case 4: launch_decode_vb<D, GP, 4>(vb, mma, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    case 2: launch_decode_vb<D, GP, 2>(vb, mma, grid, kc, vc, geo, g, ng, gps, ns, q, scale, po, pml, stride, s, warps); break;
    default: fail("CUDA quantized KV: %d-bit keys are not supported", kb);
  }
}

class QuantGpuCache final : public GpuKvCache {
 public:
  QuantGpuCache(const KvMode& mode, const KvShape& s) : GpuKvCache(s), mode_(mode) {
    const std::string name = mode.to_string();
    LONGKV_CHECK(s.max_tokens > 0, "GPU KV cache needs a positive capacity");
    LONGKV_CHECK(!(mode.outlier_pct > 0),
                 "KV mode '%s' is not available on the CUDA backend yet (outliers ':o' are CPU-only)", name.c_str());
    LONGKV_CHECK(!mode.pre_rope && !mode.rotate,
                 "KV mode '%s' is not available on the CUDA backend yet (GPU quantized modes store post-RoPE, "
                 "unrotated keys)",
                 name.c_str());
    LONGKV_CHECK((mode.k_bits == 8 || mode.k_bits == 4 || mode.k_bits == 2) &&
                     (mode.v_bits == 8 || mode.v_bits == 4 || mode.v_bits == 2),
                 "KV mode '%s' is not available on the CUDA backend yet (GPU code widths: 8, 4, 2 bits)",
                 name.c_str());
    LONGKV_CHECK(mode.group == kG, "KV mode '%s' is not available on the CUDA backend yet (GPU group size: g32)",
                 name.c_str());
    LONGKV_CHECK(s.head_dim == 64 || s.head_dim == 128,
                 "KV mode '%s' on the CUDA backend needs head_dim 64 or 128 (model has %d)", name.c_str(), s.head_dim);
    LONGKV_CHECK(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0 && s.group() <= 8,
                 "KV mode '%s' on the CUDA backend supports up to 8 query heads per KV head (model has %d/%d)",
                 name.c_str(), s.n_heads, s.n_kv_heads);
    const int D = s.head_dim;
    const KvGroupLayout kl = kv_group_layout(kG, D, mode.k_bits), vl = kv_group_layout(kG, D, mode.v_bits);
    geo_.n_kv = s.n_kv_heads;
    geo_.D = D;
    geo_.kbits = mode.k_bits;
    geo_.vbits = mode.v_bits;
    geo_.sym = mode.symmetric;
    geo_.krec = kl.bytes;
    geo_.vrec = vl.bytes;
    geo_.kscale = kl.scale_offset;
    geo_.kzero = kl.zero_offset;
    geo_.vscale = vl.scale_offset;
    geo_.vzero = vl.zero_offset;
    // Same capacities as QuantKvCache.
    sink_cap_ = std::min(mode.sinks, s.max_tokens);
    win_cap_ = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(mode.residual) + kG, s.max_tokens));
    geo_.sink_cap = sink_cap_;
    geo_.exact_cap = sink_cap_ + win_cap_;
    geo_.max_groups = static_cast<int>(
        std::max<int64_t>(0, (static_cast<int64_t>(s.max_tokens) - mode.sinks - mode.residual) / kG));
    const size_t n_kv = s.n_kv_heads;
    k_codes_.resize(std::max<size_t>(1, n_kv * geo_.max_groups * kl.bytes));
    v_codes_.resize(std::max<size_t>(1, n_kv * geo_.max_groups * vl.bytes));
    const size_t exact = n_kv * geo_.exact_cap * D * sizeof(__half);
    exact_k_.resize(exact);
    exact_v_.resize(exact);
    tmp_.resize(2 * n_kv * win_cap_ * D * sizeof(__half));
  }

  void append(const float* k, const float* v, int n, cudaStream_t s) override {
    LONGKV_CHECK(n >= 0 && static_cast<int64_t>(n_tokens_) + n <= shape_.max_tokens,
                 "KV cache full: %d + %d tokens exceed the capacity of %d", n_tokens_, n, shape_.max_tokens);
    if (n == 0) return;
    const int R = mode_.residual, D = geo_.D, n_kv = geo_.n_kv;
    // The CPU cache's per-token rules, summed over the n tokens.
    const int ns_add = (n_sinks_ < sink_cap_ && n_tokens_ == n_sinks_) ? std::min(sink_cap_ - n_sinks_, n) : 0;
    const int m = n - ns_add;
    const int w = n_window_ + m;
    const int e = (m > 0 && w >= R + kG) ? (w - (R + kG)) / kG + 1 : 0;
    const int old_total = n_tokens_, sinks = n_sinks_ + ns_add;
    const int old_ws = sinks + n_groups_ * kG;  // position of old window slot 0
    LONGKV_ASSERT(n_groups_ + e <= geo_.max_groups);
    __half* ek = exact_k_.as<__half>();
    __half* ev = exact_v_.as<__half>();
    if (e > 0) {
      quantize_groups_kernel<<<dim3(e, n_kv), 128, 0, s>>>(k_codes_.as<uint8_t>(), v_codes_.as<uint8_t>(), ek, ev, k,
                                                           v, geo_, n_groups_, old_ws, old_total, old_ws);
      LONGKV_CUDA_LAUNCHED();
    }
    const int nw = w - e * kG, new_ws = old_ws + e * kG, new_total = old_total + n;
    if (ns_add > 0) {
      place_tokens_kernel<<<grid_1d(static_cast<size_t>(ns_add) * n_kv * D), 256, 0, s>>>(
          ek, ev, geo_.exact_cap, old_total, ek, ev, k, v, geo_, old_total, ns_add, old_total, old_ws);
      LONGKV_CUDA_LAUNCHED();
    }
    if (e == 0 && m > 0) {  // the window only grows: new tokens to their slots
      place_tokens_kernel<<<grid_1d(static_cast<size_t>(m) * n_kv * D), 256, 0, s>>>(
          ek, ev, geo_.exact_cap, sink_cap_ + (old_total + ns_add - old_ws), ek, ev, k, v, geo_, old_total + ns_add,
          m, old_total, old_ws);
      LONGKV_CUDA_LAUNCHED();
    } else if (e > 0 && nw > 0) {  // the window shifts: rebuild it in scratch, copy back
      __half* tk = tmp_.as<__half>();
      __half* tv = tk + static_cast<size_t>(n_kv) * win_cap_ * D;
      place_tokens_kernel<<<grid_1d(static_cast<size_t>(nw) * n_kv * D), 256, 0, s>>>(
          tk, tv, win_cap_, 0, ek, ev, k, v, geo_, new_ws, nw, old_total, old_ws);
      LONGKV_CUDA_LAUNCHED();
      const size_t dpitch = static_cast<size_t>(geo_.exact_cap) * D * sizeof(__half);
      const size_t spitch = static_cast<size_t>(win_cap_) * D * sizeof(__half);
      const size_t width = static_cast<size_t>(nw) * D * sizeof(__half);
      LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(ek + static_cast<size_t>(sink_cap_) * D, dpitch, tk, spitch, width, n_kv,
                                          cudaMemcpyDeviceToDevice, s));
      LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(ev + static_cast<size_t>(sink_cap_) * D, dpitch, tv, spitch, width, n_kv,
                                          cudaMemcpyDeviceToDevice, s));
    }
    LONGKV_ASSERT(new_ws + nw == new_total);
    n_sinks_ = sinks;
    n_groups_ += e;
    n_window_ = nw;
    n_tokens_ = new_total;
  }

  void attend(const float* q, int n_q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) override {
    LONGKV_CHECK(n_q >= 1 && n_q <= n_tokens_, "attend: %d query rows but %d tokens held", n_q, n_tokens_);
    if (n_q == 1) return decode(q, out, ws, s);
    prefill(q, n_q, out, ws, s);
  }

  void fill_random(int n, uint64_t seed, cudaStream_t s) override {
    LONGKV_CHECK(n_tokens_ + static_cast<int64_t>(n) <= shape_.max_tokens,
                 "KV cache full: %d + %d tokens exceed the capacity of %d", n_tokens_, n, shape_.max_tokens);
    constexpr int kChunk = 4096;
    const size_t row = shape_.kv_dim();
    DeviceBuffer buf(2 * sizeof(float) * std::min(n, kChunk) * row + 1);
    for (int p = 0; p < n; p += kChunk) {
      const int c = std::min(kChunk, n - p);
      float* kb = buf.as<float>();
      float* vb = kb + static_cast<size_t>(c) * row;
      random_normal_kernel<<<grid_1d(2 * c * row), 256, 0, s>>>(kb, 2 * c * row, seed * 1000003 + p);
      LONGKV_CUDA_LAUNCHED();
      append(kb, vb, c, s);
    }
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s));  // buf is freed on return
  }

  KvFootprint footprint() const override {
    KvFootprint f;
    const size_t n_kv = shape_.n_kv_heads, kvd = shape_.kv_dim();
    const size_t exact_tok = static_cast<size_t>(n_sinks_) + n_window_;
    const size_t kb = n_kv * n_groups_ * geo_.krec + exact_tok * kvd * sizeof(__half);
    const size_t vb = n_kv * n_groups_ * geo_.vrec + exact_tok * kvd * sizeof(__half);
    f.tokens = n_tokens_;
    f.gpu_bytes = kb + vb;
    f.capacity_bytes = k_codes_.bytes() + v_codes_.bytes() + exact_k_.bytes() + exact_v_.bytes() + tmp_.bytes();
    if (n_tokens_ > 0) {
      f.k_bits = 8.0 * kb / (static_cast<double>(n_tokens_) * kvd);
      f.v_bits = 8.0 * vb / (static_cast<double>(n_tokens_) * kvd);
    } else {
      f.k_bits = 8.0 * geo_.krec / (static_cast<double>(kG) * geo_.D);
      f.v_bits = 8.0 * geo_.vrec / (static_cast<double>(kG) * geo_.D);
    }
    return f;
  }
  int size() const override { return n_tokens_; }
  void clear() override { n_tokens_ = n_sinks_ = n_groups_ = n_window_ = 0; }
  std::string mode() const override { return mode_.to_string(); }

  void dump_codes(CudaKvDump* d) const override {
    LONGKV_CUDA_CHECK(cudaDeviceSynchronize());
    d->k_rec = geo_.krec;
    d->v_rec = geo_.vrec;
    d->n_groups = n_groups_;
    d->max_groups = geo_.max_groups;
    d->n_sinks = n_sinks_;
    d->n_window = n_window_;
    const size_t nk = static_cast<size_t>(geo_.n_kv) * geo_.max_groups;
    d->k_codes.resize(nk * geo_.krec);
    d->v_codes.resize(nk * geo_.vrec);
    if (nk == 0) return;
    LONGKV_CUDA_CHECK(cudaMemcpy(d->k_codes.data(), k_codes_.as(), d->k_codes.size(), cudaMemcpyDeviceToHost));
    LONGKV_CUDA_CHECK(cudaMemcpy(d->v_codes.data(), v_codes_.as(), d->v_codes.size(), cudaMemcpyDeviceToHost));
  }

 private:
  // fp16 part (sinks + window) as a dense view: a contiguous slot prefix.
  DenseKvView exact_view() const {
    DenseKvView kv;
    kv.k = exact_k_.as<__half>();
    kv.v = exact_v_.as<__half>();
    kv.n_kv_heads = geo_.n_kv;
    kv.group = shape_.group();
    kv.head_dim = geo_.D;
    kv.max_tokens = geo_.exact_cap;
    kv.n_tokens = n_sinks_ + n_window_;
    return kv;
  }

  // The quantized split kernel for this cache's shape: launched, or with
  // `warps` set only asked how many warps stay resident.
  void launch_quant(dim3 grid, int gps, int qsplits, const float* q, float* po, float* pml, int stride, cudaStream_t s,
                    int* warps) {
    const int D = geo_.D, g = shape_.group(), kb = geo_.kbits, vb = geo_.vbits;
    const float scale = 1.0f / sqrtf(static_cast<float>(D));
    const uint8_t* kc = k_codes_.as<uint8_t>();
    const uint8_t* vc = v_codes_.as<uint8_t>();
    const bool mma = cuda_tuning().quant_decode_mma;
    if (D == 128 && g <= 4)
      launch_decode_kb<128, 4>(kb, vb, mma, grid, kc, vc, geo_, g, n_groups_, gps, qsplits, q, scale, po, pml, stride, s,
                               warps);
    else if (D == 128)
      launch_decode_kb<128, 8>(kb, vb, mma, grid, kc, vc, geo_, g, n_groups_, gps, qsplits, q, scale, po, pml, stride, s,
                               warps);
    else if (g <= 4)
      launch_decode_kb<64, 4>(kb, vb, mma, grid, kc, vc, geo_, g, n_groups_, gps, qsplits, q, scale, po, pml, stride, s,
                              warps);
    else
      launch_decode_kb<64, 8>(kb, vb, mma, grid, kc, vc, geo_, g, n_groups_, gps, qsplits, q, scale, po, pml, stride, s,
                              warps);
  }

  void decode(const float* q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) {
    const int D = geo_.D, n_heads = shape_.n_heads, n_kv = geo_.n_kv;
    const DenseKvView ex = exact_view();
    const int dense_splits = decode_splits_for(n_kv, ex.n_tokens, nullptr, D, shape_.group());
    // Quantized splits: one wave of the kernel's resident warps over all KV
    // heads, at least 4 groups (128 tokens) each so the merge stays small.
    int gps = 0, qsplits = 0;
    if (n_groups_ > 0) {
      int warps = 132 * 16;
      launch_quant(dim3(1), 0, 0, nullptr, nullptr, nullptr, 0, s, &warps);
      const int target = std::max(1, warps / n_kv);
      gps = std::max(4, (n_groups_ + target - 1) / target);
      qsplits = (n_groups_ + gps - 1) / gps;
    }
    const int stride = qsplits + dense_splits;
    ws.a.reserve(static_cast<size_t>(n_heads) * stride * D * sizeof(float));
    ws.b.reserve(static_cast<size_t>(n_heads) * stride * 2 * sizeof(float));
    float* po = ws.a.as<float>();
    float* pml = ws.b.as<float>();
    if (qsplits > 0) {
      const dim3 grid((n_kv * qsplits + kQuantWarps - 1) / kQuantWarps);
      launch_quant(grid, gps, qsplits, q, po, pml, stride, s, nullptr);
      LONGKV_CUDA_LAUNCHED();
    }
    if (dense_splits > 0) attend_decode_dense_parts(ex, q, po, pml, qsplits, stride, s);
    merge_decode_parts(po, pml, n_heads, stride, D, out, s);
  }

  void prefill(const float* q, int n_q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) {
    const int D = geo_.D, n_kv = geo_.n_kv, N = n_tokens_;
    const size_t per = static_cast<size_t>(n_kv) * N * D;
    ws.kv.reserve(2 * per * sizeof(__half));
    __half* dk = ws.kv.as<__half>();
    __half* dv = dk + per;
    if (n_sinks_ > 0) {
      copy_slots_kernel<<<grid_1d(static_cast<size_t>(n_sinks_) * n_kv * D), 256, 0, s>>>(
          exact_k_.as<__half>(), exact_v_.as<__half>(), geo_.exact_cap, 0, n_sinks_, n_kv, D, N, 0, dk, dv);
      LONGKV_CUDA_LAUNCHED();
    }
    if (n_groups_ > 0) {
      dequantize_groups_kernel<<<dim3(n_groups_, n_kv), 256, 0, s>>>(k_codes_.as<uint8_t>(), v_codes_.as<uint8_t>(),
                                                                      geo_, n_sinks_, N, dk, dv);
      LONGKV_CUDA_LAUNCHED();
    }
    if (n_window_ > 0) {
      copy_slots_kernel<<<grid_1d(static_cast<size_t>(n_window_) * n_kv * D), 256, 0, s>>>(
          exact_k_.as<__half>(), exact_v_.as<__half>(), geo_.exact_cap, sink_cap_, n_window_, n_kv, D, N,
          n_sinks_ + n_groups_ * kG, dk, dv);
      LONGKV_CUDA_LAUNCHED();
    }
    DenseKvView kv;
    kv.k = dk;
    kv.v = dv;
    kv.n_kv_heads = n_kv;
    kv.group = shape_.group();
    kv.head_dim = D;
    kv.max_tokens = N;
    kv.n_tokens = N;
    attend_prefill_dense(kv, q, n_q, out, ws, s);
  }

  KvMode mode_;
  QuantGeom geo_;
  int sink_cap_ = 0, win_cap_ = 0;
  DeviceBuffer k_codes_, v_codes_, exact_k_, exact_v_, tmp_;
  int n_tokens_ = 0, n_sinks_ = 0, n_groups_ = 0, n_window_ = 0;
};

}  // namespace

std::unique_ptr<GpuKvCache> make_quant_gpu_kv_cache(const KvMode& mode, const KvShape& s) {
  return std::make_unique<QuantGpuCache>(mode, s);
}

double gpu_kv_bytes_per_token(const std::string& mode_str, const KvShape& s) {
  const KvMode mode = parse_kv_mode(mode_str);
  if (mode.kind == KvKind::f16) return static_cast<double>(s.kv_dim()) * 2 * sizeof(__half);
  LONGKV_CHECK(mode.kind == KvKind::quant, "KV mode '%s' is not available on the CUDA backend yet (GPU modes: f16, "
               "k<B>v<B> with B in 8, 4, 2)", mode_str.c_str());
  const KvGroupLayout k = kv_group_layout(mode.group, s.head_dim, mode.k_bits);
  const KvGroupLayout v = kv_group_layout(mode.group, s.head_dim, mode.v_bits);
  return static_cast<double>(s.n_kv_heads) * static_cast<double>(k.bytes + v.bytes) / mode.group;
}

}  // namespace longkv::cuda

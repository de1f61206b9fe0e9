// Device-side decoding of the weight formats as they lie on the GPU, per
// element (dequantize, embedding rows) and per 16-byte "unit" (the GEMV).
//
// GPU row layout (upload_weight): F32/F16/BF16 and Q4_K (144-byte blocks)
// as stored, Q5_K's 176-byte blocks with their fifth bits repacked per unit
// (Slab<Q5_K>); the formats whose blocks cannot be read with aligned 16-byte
// loads in place are split per row into the blocks' 16-byte-aligned bodies
// followed by the blocks' tails:
//   Q4_0   qs[16]               | d          (18 bytes a block)
//   Q8_0   qs[32]               | d          (34)
//   Q6_K   ql|qh|scales, 208    | d          (210)   qh, scales repacked per
//                                                   unit, see Slab<Q6_K>
//   Q2_K   codes|scales, 80     | d, dmin    (84)   repacked per unit,
//   Q3_K   codes|hbits, 96      | scales|d, 16 (112) see LowBitUnit
// and Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS as weight_decode_q32.cuh describes.
// Same bits; only the order within a row changes, and Q3_K's tail is laid
// out in 16 bytes instead of 14 (gpu_block_extra: its d twice).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "formats/weight_types.h"

namespace longkv::cuda {

__device__ __forceinline__ float ld_f16(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const uint16_t*>(p)));
}
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

// Body bytes per block of the split layouts (0: stored as is).
__host__ __device__ constexpr int split_body_bytes(WeightType t) {
  return t == WeightType::Q4_0 || t == WeightType::Q4_1 || t == WeightType::Q5_0 || t == WeightType::Q5_1 ||
                 t == WeightType::IQ4_NL
             ? 16
         : t == WeightType::Q8_0   ? 32
         : t == WeightType::Q6_K   ? 208
         : t == WeightType::Q5_K   ? 176  // the whole block, repacked (no tail)
         : t == WeightType::Q2_K   ? 80
         : t == WeightType::Q3_K   ? 96
         : t == WeightType::IQ4_XS ? 128
                                   : 0;
}
// Where a split block's body starts in the stored block (the tail is the
// rest: before the body for the 32-element formats and IQ4_XS, after it for
// the K-quants).
__host__ __device__ constexpr int split_body_offset(WeightType t) {
  return t == WeightType::Q4_0 || t == WeightType::Q8_0 || t == WeightType::IQ4_NL ? 2
         : t == WeightType::Q4_1                                                    ? 4
         : t == WeightType::Q5_0                                                    ? 6
         : t == WeightType::Q5_1 || t == WeightType::IQ4_XS                         ? 8
                                                                                    : 0;
}

// Elements per block (1 for the plain float formats).
__host__ __device__ constexpr int weight_traits_block(WeightType t) {
  return t == WeightType::Q2_K || t == WeightType::Q3_K || t == WeightType::Q4_K || t == WeightType::Q5_K ||
                 t == WeightType::Q6_K || t == WeightType::IQ4_XS
             ? kQKK
         : t == WeightType::Q4_0 || t == WeightType::Q8_0 || t == WeightType::Q4_1 || t == WeightType::Q5_0 ||
                 t == WeightType::Q5_1 || t == WeightType::IQ4_NL
             ? kQK
             : 1;
}

// The formats of weight_decode_q32.cuh (included at the end of this header).
__host__ __device__ constexpr bool weight_q32(WeightType t) {
  return t == WeightType::Q4_1 || t == WeightType::Q5_0 || t == WeightType::Q5_1 || t == WeightType::IQ4_NL ||
         t == WeightType::IQ4_XS;
}
template <WeightType T>
__device__ __forceinline__ float decode_elem_q32(const uint8_t* row, int64_t i, int64_t nb);

// Q2_K and Q3_K on the GPU: a block's 256 elements are 8 units of 32, unit
// i = 4h + 2lh + p (h = i / 4, lh = i / 2 % 2, p = i % 2) holding quarters
// j = p and p + 2 (elements 128h + 32j + 16lh + t, t < 16) of the stored
// block, whose sub-blocks are 8h + 2j + lh. upload_weight repacks each
// block so that a unit's bits lie together (loaded whole, none wasted):
//   body  +8i      2 words, quarter p then p + 2: code t at bit pos2(t)
//   body  +64 + 4i (Q3_K) one word, the third bits: quarter p's at bit
//                  pos1(t), quarter p + 2's at pos1(t) + 4
//   body  +64 + 2i (Q2_K) the two sub-blocks' scale|min bytes, p's first
//   tail  (Q2_K) d, dmin; (Q3_K, 16 bytes) units 4h' .. 4h' + 3 in the
//         8 bytes at +8h' (h' = i / 4), two words: units 4h' + 2k and
//         4h' + 2k + 1 in word k, bits 0-11 and 12-23, each the two 6-bit
//         scales (p's in the low 6 bits); bits 24-31 of the words: d's low
//         and high byte (in both halves, so that a unit's scales and d are
//         one 8-byte load; milestone 65, before: 14 bytes, 3 loads).
// pos2 and pos1 put code t in byte t % 4, so a shift by 2 (t / 4) and a mask
// give four byte-wide codes at once, the form __dp4a takes.
struct LowBitUnit {
  int b, i, h, lh, p;
  __host__ __device__ explicit LowBitUnit(int u) : b(u / 8), i(u % 8), h(u % 8 / 4), lh(u % 8 / 2 % 2), p(u % 2) {}
  __host__ __device__ int first_elem() const { return 256 * b + 128 * h + 32 * p + 16 * lh; }
  __host__ __device__ int sub(int second) const { return 8 * h + 2 * (p + 2 * second) + lh; }
  __host__ __device__ static constexpr int pos2(int t) { return 8 * (t % 4) + 2 * (t / 4); }
  __host__ __device__ static constexpr int pos1(int t) { return 8 * (t % 4) + t / 4; }
};

// Sub-block j (0..7) scale and min of a Q4_K block (same bit layout as
// q4_k_scale_min in formats/weight_types.cpp).
__device__ __forceinline__ void q4k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Element i of a GPU row of `nb` blocks.
template <WeightType T>
__device__ __forceinline__ float decode_elem(const uint8_t* row, int64_t i, int64_t nb) {
  if constexpr (T == WeightType::F32) {
    return reinterpret_cast<const float*>(row)[i];
  } else if constexpr (T == WeightType::F16) {
    return __half2float(reinterpret_cast<const __half*>(row)[i]);
  } else if constexpr (T == WeightType::BF16) {
    return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  } else if constexpr (T == WeightType::Q8_0) {
    const int64_t b = i / kQK;
    return ld_f16(row + 32 * nb + 2 * b) * static_cast<float>(static_cast<int8_t>(row[32 * b + i % kQK]));
  } else if constexpr (T == WeightType::Q4_0) {
    const int64_t b = i / kQK;
    const uint8_t* qs = row + 16 * b;
    const int j = static_cast<int>(i % kQK);
    const int q = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
    return ld_f16(row + 16 * nb + 2 * b) * static_cast<float>(q - 8);
  } else if constexpr (weight_q32(T)) {
    return decode_elem_q32<T>(row, i, nb);
  } else if constexpr (T == WeightType::Q4_K || T == WeightType::Q5_K) {
    constexpr bool kFive = T == WeightType::Q5_K;  // qs at 16 as Q4_K's, the fifth bits after (Slab<Q5_K>)
    const uint8_t* b = row + (i / kQKK) * (kFive ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K));
    const int e = static_cast<int>(i % kQKK), c = e / 64, w = e % 64, l = w % 32;
    const uint8_t* qs = b + 16 + 32 * c;
    int sc, m;
    q4k_scale_min(b + 4, 2 * c + (w >= 32), &sc, &m);
    int q = w < 32 ? (qs[l] & 0xF) : (qs[l] >> 4);
    if constexpr (kFive) {
      const uint32_t h5 = *reinterpret_cast<const uint32_t*>(b + 144 + 4 * (2 * c + l / 16));
      q += 16 * static_cast<int>((h5 >> (LowBitUnit::pos1(l % 16) + 4 * (w >= 32))) & 1);
    }
    return ld_f16(b) * sc * q - ld_f16(b + 2) * m;
  } else if constexpr (T == WeightType::Q2_K || T == WeightType::Q3_K) {
    constexpr bool kQ3 = T == WeightType::Q3_K;
    constexpr int kBody = split_body_bytes(T), kTail = kQ3 ? 16 : 4;
    const int64_t blk = i / kQKK;
    const uint8_t* b = row + kBody * blk;
    const uint8_t* tail = row + kBody * nb + kTail * blk;
    const int e = static_cast<int>(i % kQKK), j = e % 128 / 32, second = j / 2, t = e % 16;
    const LowBitUnit n(4 * (e / 128) + 2 * (e % 32 / 16) + j % 2);
    const auto word = [](const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); };
    const int q = (word(b + 8 * n.i + 4 * second) >> LowBitUnit::pos2(t)) & 3;
    if constexpr (kQ3) {
      const int code = q + 4 * ((word(b + 64 + 4 * n.i) >> (LowBitUnit::pos1(t) + 4 * second)) & 1) - 4;
      const uint8_t* half = tail + 8 * (n.i / 4);
      const int sc = (word(half + 4 * (n.i % 4 / 2)) >> (12 * (n.i % 2) + 6 * second)) & 0x3F;
      const uint16_t db = static_cast<uint16_t>(half[3] | half[7] << 8);
      return __half2float(__ushort_as_half(db)) * static_cast<float>(sc - 32) * static_cast<float>(code);
    } else {
      const int sm = b[64 + 2 * n.i + second];
      return ld_f16(tail) * (sm & 0xF) * static_cast<float>(q) - ld_f16(tail + 2) * (sm >> 4);
    }
  } else {  // Q6_K (its repacked qh and scales: Slab<Q6_K>)
    const int64_t blk = i / kQKK;
    const uint8_t* b = row + 208 * blk;
    const int e = static_cast<int>(i % kQKK), h = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
    const LowBitUnit n(4 * h + 2 * (l / 16) + quarter % 2);
    const int second = quarter / 2, t = l % 16;
    const int lo = b[64 * h + 32 * (quarter % 2) + l];
    const uint32_t hw = *reinterpret_cast<const uint32_t*>(b + 128 + 8 * n.i + 4 * second);
    const int q = ((second ? lo >> 4 : lo & 0xF) | static_cast<int>((hw >> LowBitUnit::pos2(t)) & 3) << 4) - 32;
    const int8_t sc = static_cast<int8_t>(b[192 + 2 * n.i + second]);
    return ld_f16(row + 208 * nb + 2 * blk) * sc * static_cast<float>(q);
  }
}

// 8388608 + byte k of w, exactly, as a float (a PRMT instead of a slow
// integer-to-float conversion); subtracting 8388608 + offset is exact too.
template <int K>
__device__ __forceinline__ float biased_byte(uint32_t w) {
  return __int_as_float(static_cast<int>(__byte_perm(w, 0x4B000000u, 0x7440 + K)));
}
__device__ __forceinline__ uint4 ldg16(const uint8_t* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
// Plain (generic) loads: x may lie in global or shared memory.
__device__ __forceinline__ void ldx(const float* x, float* dst, int n) {
#pragma unroll
  for (int i = 0; i < n; i += 4) {
    const float4 t = *reinterpret_cast<const float4*>(x + i);
    dst[i] = t.x; dst[i + 1] = t.y; dst[i + 2] = t.z; dst[i + 3] = t.w;
  }
}
// A warp's 32-float units of x, unit u0 + lane to lane `lane` (milestone 21,
// the int8 Q4_0 GEMV's coalesced load). The warp loads its 32 units (4 KB) as
// 8 instructions of 512 contiguous bytes and hands each lane its unit through
// shared memory (sx: 256 float4 of this warp; chunk c of unit j at
// 8 j + (c ^ (j & 7)), so the stores and the per-lane reads are free of bank
// conflicts); lanes at or past n get zeros. ldx of a lane's own 128 bytes
// touches 32 lines with every one of its 8 loads, 256 L1 wavefronts a warp:
// bench/cuda_barrier_probe.cu measured it at ~1.3 µs of a 4096-column link's
// critical path, this load at ~0.3. kCg: through L2 only (ld.global.cg), for
// a reader whose producer is still running beside it (a flag handoff instead
// of a kernel boundary: this SM's L1 may hold older lines of x).
struct XSrc {
  float4* sx = nullptr;
  int u0 = 0;  // the warp's first unit
  int n = 0;   // valid units in the warp
};
// The two halves of ldx_warp_units: the warp's 8 coalesced loads into t,
// then t handed to the lanes through sx.
template <bool kCg = false>
__device__ __forceinline__ void ldx_warp_chunks(const float* p, const XSrc& xs, float4 (&t)[8]) {
  const int lane = threadIdx.x % 32;
  const float4* src = reinterpret_cast<const float4*>(p + 32 * xs.u0);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int k = 32 * i + lane;
    t[i] = (k >> 3) < xs.n ? (kCg ? __ldcg(src + k) : src[k]) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
}
__device__ __forceinline__ void ldx_warp_transpose(const XSrc& xs, const float4 (&t)[8], float (&v)[32]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int k = 32 * i + lane, j = k >> 3;
    xs.sx[8 * j + ((k & 7) ^ (j & 7))] = t[i];
  }
  __syncwarp();
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float4 f = xs.sx[8 * lane + (i ^ (lane & 7))];
    v[4 * i] = f.x;
    v[4 * i + 1] = f.y;
    v[4 * i + 2] = f.z;
    v[4 * i + 3] = f.w;
  }
  __syncwarp();  // sx is rewritten by the next call
}
template <bool kCg = false>
__device__ __forceinline__ void ldx_warp_units(const float* p, const XSrc& xs, float (&v)[32]) {
  float4 t[8];
  ldx_warp_chunks<kCg>(p, xs, t);
  ldx_warp_transpose(xs, t, v);
}
// Two vectors of the same units (x and RMSNorm's weight, or the gate and
// up): both sets of loads in flight before the first hand-off, so the
// second is not one more L2 round trip after the first (milestone 37).
__device__ __forceinline__ void ldx_warp_units_pair(const float* p, const float* q, const XSrc& xs, float (&v)[32],
                                                    float (&w)[32]) {
  float4 t[8], r[8];
  ldx_warp_chunks(p, xs, t);
  ldx_warp_chunks(q, xs, r);
  ldx_warp_transpose(xs, t, v);
  ldx_warp_transpose(xs, r, w);
}
// s += sum_k (byte k of w - off) * x[k], k < 4, for 4 consecutive x.
template <int Off>
__device__ __forceinline__ float dot4(uint32_t w, const float* x, float s) {
  constexpr float kBias = 8388608.0f + Off;
  s = fmaf(biased_byte<0>(w) - kBias, x[0], s);
  s = fmaf(biased_byte<1>(w) - kBias, x[1], s);
  s = fmaf(biased_byte<2>(w) - kBias, x[2], s);
  s = fmaf(biased_byte<3>(w) - kBias, x[3], s);
  return s;
}

// GEMV units: a lane owns one unit of a row (32 elements), holds that
// unit's activations in registers for every row it visits, and per row
// loads the unit's 16 bytes of quants (Q6_K: 24, Q8_0: 32) plus its scales.
//   kUnitsPerBlock, kXElems (activations per unit), load_x(), Unit, load(), dot().
template <WeightType T>
struct Slab;

// sum (n - Off) v over a 32-element block in Q4_0's nibble order (16 bytes:
// low nibbles elements 0..15, high 16..31), f32 products (Q4_0, Q4_1).
template <int Off>
__device__ __forceinline__ float nibble_dot(const uint4& w, const float* v) {
  const uint32_t q[4] = {w.x, w.y, w.z, w.w};
  float s = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    s = dot4<Off>(q[j] & 0x0F0F0F0Fu, v + 4 * j, s);
    s = dot4<Off>((q[j] >> 4) & 0x0F0F0F0Fu, v + 16 + 4 * j, s);
  }
  return s;
}

template <>
struct Slab<WeightType::Q4_0> {  // unit = block
  static constexpr int kUnitsPerBlock = 1, kXElems = 32, kRB = 8;
  struct Unit { uint4 q; float d; };
  struct X { float v[32]; };
  __device__ static void load_x(const float* x, int u, X& xr) { ldx(x + 32 * u, xr.v, 32); }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    return {ldg16(row + 16 * u), ld_f16(row + 16 * nb + 2 * u)};
  }
  __device__ static float dot(const Unit& w, const X& xr, int) { return w.d * nibble_dot<8>(w.q, xr.v); }
};

// Int8 activations for the Q4_0 slab GEMV (CudaTuning::gemv_i8x). The f32
// dot above costs ~3 instructions per weight (PRMT, FADD, FFMA), which keeps
// the kernel issue-bound near 2.4 TB/s on an H200 (docs/cuda-notes.md,
// milestone 13); with int8 activations a unit is 8 __dp4a. A lane's 32
// activations v (after the op made in its load) become
//   amax = max |v|, dx = amax / 127, q_i = rn(v_i * (127 / amax))  (q = 0 if amax = 0)
// (IEEE division and one rounded product: the tests' host reference makes the
// same bits), and the unit's product is d * dx * sum_i (n_i - 8) q_i with the
// integer sum exact. Error: about half a step of 127 per activation, ~0.5% of
// a row's value, the same order as the int8 activations of llama.cpp's MMVQ.
struct XI8 {
  int q[8];  // packed int8: q[j] = elements 4j..4j+3 (j < 4), 16 + 4(j-4).. (j >= 4)
  float dx;  // scale of the unit's activations
  int off;   // 8 * sum of q (Q4_0's offset of 8, folded once)
  int s_lo, s_hi;  // sums of q over elements 0..15 and 16..31 (the K-quants' mins)
};

// Full-rate instructions only (milestone 33; the same bits as milestone 13's
// form, which converted with __float2int_rn): the maximum in 4 chains (max
// is exact, so any order gives the same amax), and each q_i = rn(p) of the
// rounded product p = v_i * inv taken as the low byte of p + 1.5 * 2^23 -- a
// float in [2^23, 2^24) has a step of 1, so the add rounds p to the nearest
// integer, ties to even, as cvt.rni does, for |p| <= 127 -- instead of 32
// F2I conversions (a quarter-rate pipe, ~1,000 cycles an SM at the start of
// every GEMV block). Bytes packed by PRMT; the offset sum by __dp4a with ones.
__device__ __forceinline__ void quantize_x_i8(const float (&v)[32], XI8& r) {
  float m[4] = {0, 0, 0, 0};
#pragma unroll
  for (int i = 0; i < 32; ++i) m[i % 4] = fmaxf(m[i % 4], fabsf(v[i]));
  const float amax = fmaxf(fmaxf(m[0], m[1]), fmaxf(m[2], m[3]));
  r.dx = amax / 127.0f;
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  int s[2] = {0, 0};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int e0 = j < 4 ? 4 * j : 16 + 4 * (j - 4);
    uint32_t b[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) b[k] = __float_as_uint(__fadd_rn(__fmul_rn(v[e0 + k], inv), kRound));
    const uint32_t w = __byte_perm(__byte_perm(b[0], b[1], 0x0040), __byte_perm(b[2], b[3], 0x0040), 0x5410);
    r.q[j] = static_cast<int>(w);
    s[j / 4] = __dp4a(static_cast<int>(w), 0x01010101, s[j / 4]);
  }
  r.s_lo = s[0];
  r.s_hi = s[1];
  r.off = 8 * (s[0] + s[1]);
}

// Q4_0 unit (byte k: low nibble = element k, high = element 16 + k) . XI8.
// The high nibbles stay in place (milestone 33): q & 0xF0 is 16 n as an
// unsigned byte, so its dp4a (unsigned x signed) sums 16 times their
// products, exactly, and one shift of the total replaces a shift a word --
// the same integer sum, so the same bits, with 3 instructions fewer a unit.
__device__ __forceinline__ int dp4a_u8s8(uint32_t a, int b, int c) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
// A unit's two integer sums: s over the low nibbles (codes 0..15) against
// xq[0..3], s16 over the high nibbles in place (16 x codes) against xq[4..7].
__device__ __forceinline__ void dot_q4_0_nibbles(const uint4& qs, const int (&xq)[8], int& s, int& s16) {
  const uint32_t q[4] = {qs.x, qs.y, qs.z, qs.w};
  s = 0, s16 = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    s = __dp4a(static_cast<int>(q[j] & 0x0F0F0F0Fu), xq[j], s);
    s16 = dp4a_u8s8(q[j] & 0xF0F0F0F0u, xq[4 + j], s16);
  }
}
__device__ __forceinline__ float dot_q4_0_i8(const uint4& qs, float d, const XI8& x) {
  int s, s16;
  dot_q4_0_nibbles(qs, x.q, s, s16);
  return d * x.dx * static_cast<float>(s + (s16 >> 4) - x.off);
}

// Int8 x between GEMVs (milestone 36, CudaTuning::gemv_x8; GemvAct::X8). The
// GEMV that writes a residual row (wo, down) also writes the next RMSNorm
// GEMV's input in int8, 16 elements a scale: for each 16 outputs v (one
// 16-row batch of the producer), w_i = v_i * norm_i, dx = max|w| / 127,
// q_i = rn(w_i * (127 / max|w|)) (quantize_x_i8's rule over 16 elements), and
// ss = sum v_i^2. The RMSNorm GEMV reads q (a lane's 32 bytes: its Q4_0
// unit's two halves), both scales and every ss, and multiplies its row totals
// by 1/rms = rsqrt(sum ss / cols + eps): RMSNorm's factor is one scalar, so
// it leaves the dots for the store. Its start loses the loads of x and the
// norm, the sum of squares and the quantization (bench/cuda_barrier_probe.cu
// `x`: ~0.6 us a link), and its x takes 12 registers instead of x's and the
// norm's 64, so all of its first batch's rows go before the PDL wait. Half as
// many elements a scale as XI8: the same or smaller rounding error.
struct XI8x16 {
  int q[8];     // elements 4j..4j+3 (XI8's order: j < 4 the unit's first half)
  float dx[2];  // scales of elements 0..15 and 16..31
  int off[2];   // 8 * sum of q over each half (Q4_0's offset of 8)
};
__device__ __forceinline__ void load_x8(const int8_t* q, const float* dx, int u, XI8x16& r) {
  const uint4 a = reinterpret_cast<const uint4*>(q)[2 * u], b = reinterpret_cast<const uint4*>(q)[2 * u + 1];
  const int w[8] = {int(a.x), int(a.y), int(a.z), int(a.w), int(b.x), int(b.y), int(b.z), int(b.w)};
  int s0 = 0, s1 = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    r.q[j] = w[j];
    r.q[4 + j] = w[4 + j];
    s0 = __dp4a(w[j], 0x01010101, s0);
    s1 = __dp4a(w[4 + j], 0x01010101, s1);
  }
  const float2 d = reinterpret_cast<const float2*>(dx)[u];
  r.dx[0] = d.x;
  r.dx[1] = d.y;
  r.off[0] = 8 * s0;
  r.off[1] = 8 * s1;
}
// dot_q4_0_i8 with a scale a half: the low nibbles are the unit's first 16
// elements, the high ones its last 16, already two sums there.
__device__ __forceinline__ float dot_q4_0_i8x16(const uint4& qs, float d, const XI8x16& x) {
  int s, s16;
  dot_q4_0_nibbles(qs, x.q, s, s16);
  return d * fmaf(x.dx[0], static_cast<float>(s - x.off[0]), x.dx[1] * static_cast<float>((s16 >> 4) - x.off[1]));
}

// Q8_0: a unit is a block (a half block before milestone 64), so that its
// 32 activations are XI8's and the int8 product is 8 __dp4a:
// d * dx * sum q_w q_x, the integer sum exact (|s| <= 32 * 128 * 127 < 2^24).
// 9 registers a unit: 8-row batches (slab_wide).
template <>
struct Slab<WeightType::Q8_0> {
  static constexpr int kUnitsPerBlock = 1, kXElems = 32, kRB = 8;
  struct Unit { uint4 a, b; float d; };
  struct X { float v[32]; };
  __device__ static void load_x(const float* x, int u, X& xr) { ldx(x + 32 * u, xr.v, 32); }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    return {ldg16(row + 32 * u), ldg16(row + 32 * u + 16), ld_f16(row + 32 * nb + 2 * u)};
  }
  __device__ static float dot(const Unit& w, const X& xr, int) {
    const uint32_t q[8] = {w.a.x, w.a.y, w.a.z, w.a.w, w.b.x, w.b.y, w.b.z, w.b.w};
    float s = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) s = dot4<128>(q[j] ^ 0x80808080u, xr.v + 4 * j, s);  // int8 -> +128 unsigned
    return w.d * s;
  }
  __device__ static float dot_i8(const Unit& w, const XI8& x, int) {
    const uint32_t q[8] = {w.a.x, w.a.y, w.a.z, w.a.w, w.b.x, w.b.y, w.b.z, w.b.w};
    int s = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) s = __dp4a(static_cast<int>(q[j]), x.q[j], s);
    return w.d * x.dx * static_cast<float>(s);
  }
};

template <>
struct Slab<WeightType::Q4_K> {  // unit = 16 quant bytes: 16 low + 16 high nibbles
  static constexpr int kUnitsPerBlock = 8, kXElems = 32, kRB = 8;
  struct Unit { uint4 q; uint4 h; };
  struct X { float v[32]; float sum_lo, sum_hi; };
  __device__ static int first_elem(int u) { return 256 * (u / 8) + 64 * ((u % 8) / 2) + 16 * (u % 2); }
  __device__ static void load_x(const float* x, int u, X& xr) {
    const int e = first_elem(u);
    ldx(x + e, xr.v, 16);
    ldx(x + e + 32, xr.v + 16, 16);
    xr.sum_lo = xr.sum_hi = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      xr.sum_lo += xr.v[i];
      xr.sum_hi += xr.v[16 + i];
    }
  }
  __device__ static Unit load(const uint8_t* row, int u, int) {
    const uint8_t* b = row + 144 * (u / 8);
    return {ldg16(b + 16 + 16 * (u % 8)), ldg16(b)};
  }
  // The unit's codes, a byte each: lo sub-block 2c's 16 (the low nibbles),
  // hi sub-block 2c + 1's (the high ones).
  __device__ static void codes(const Unit& w, uint32_t (&lo)[4], uint32_t (&hi)[4]) {
    const uint32_t q[4] = {w.q.x, w.q.y, w.q.z, w.q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      lo[j] = q[j] & 0x0F0F0F0Fu;
      hi[j] = (q[j] >> 4) & 0x0F0F0F0Fu;
    }
  }
  __device__ static float dot(const Unit& w, const X& xr, int u) {
    uint32_t lo[4], hi[4];
    codes(w, lo, hi);
    return dot_codes(w.h, lo, hi, xr, u);
  }
  // The high nibbles stay in place, as Q4_0's (dot_q4_0_nibbles: s16 is 16
  // times their sum, exactly), and the two sums go to dp2a as int16 halves
  // (|s| <= 16 * 15 * 127 < 2^15).
  __device__ static float dot_i8(const Unit& w, const XI8& x, int u) {
    int s0, s16;
    dot_q4_0_nibbles(w.q, x.q, s0, s16);
    return dot_sums_i8<true>(w.h, s0, s16 >> 4, x, u);
  }
  // Sub-blocks 2c and 2c + 1's 6-bit scales and mins (c = (u % 8) / 2) as
  // the bytes sc0 | sc1 << 8 | m0 << 16 | m1 << 24, from the header h's
  // scale words y, z, w (q4k_scale_min's layout): for c < 2 the low 6 bits of
  // bytes 2c, 2c + 1 of y (scales) and of z (mins); for c >= 2 the low
  // (scales) and high (mins) nibbles of w's bytes 2c - 4, 2c - 3 under the
  // top 2 bits of those bytes of y and z. Two PRMT with per-lane selectors
  // (u is a lane's for the whole kernel) instead of ~25 shifts, masks and
  // selects a row.
  __device__ static uint32_t scale_min_bytes(const uint4& h, int u) {
    const int c = (u % 8) / 2, p = 2 * (c % 2);
    const uint32_t top = __byte_perm(h.y, h.z, p | (p + 1) << 4 | (p + 4) << 8 | (p + 5) << 12);
    const uint32_t nib = __byte_perm(h.w, 0u, p | (p + 1) << 4 | 4 << 8 | 4 << 12);  // w's 2 bytes, 0, 0
    const uint32_t low = (nib & 0x0F0Fu) | ((nib << 12) & 0x0F0F0000u);  // high nibbles to bytes 2, 3
    return c < 2 ? top & 0x3F3F3F3Fu : ((top >> 2) & 0x30303030u) | low;
  }
  __device__ static float d_of(const uint4& h) { return __half2float(__ushort_as_half(static_cast<uint16_t>(h.x & 0xFFFF))); }
  __device__ static float dmin_of(const uint4& h) { return __half2float(__ushort_as_half(static_cast<uint16_t>(h.x >> 16))); }
  // The codes (Q5_K's reach 31) against f32 x, with the header's scales and mins.
  __device__ static float dot_codes(const uint4& h, const uint32_t (&lo4)[4], const uint32_t (&hi4)[4], const X& xr,
                                    int u) {
    const uint32_t sm = scale_min_bytes(h, u);
    float lo = 0, hi = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      lo = dot4<0>(lo4[j], xr.v + 4 * j, lo);
      hi = dot4<0>(hi4[j], xr.v + 16 + 4 * j, hi);
    }
    const auto byte = [&](int k) { return static_cast<int>((sm >> (8 * k)) & 0xFF); };
    return d_of(h) * (byte(0) * lo + byte(1) * hi) - dmin_of(h) * (byte(2) * xr.sum_lo + byte(3) * xr.sum_hi);
  }
  // The unit's total against int8 x (quantize_x_i8 of the unit's 32
  // activations in X's order: q[0..3] the low codes' elements, q[4..7] the
  // high ones'), from s0, s1, the low and the high codes' dp4a sums:
  //   dx * (d * (sc0 s0 + sc1 s1) - dmin * (m0 S0 + m1 S1)),
  // S the halves' sums of q. Both brackets are exact integers below 2^24
  // (63 * 2 * 16 * 31 * 127 < 2^23), so exact in float too: the error is the
  // activations' rounding, as the Q4_0 int8 GEMV's. The mins' bracket is one
  // dp2a (|S| <= 16 * 127); so is the codes' where the sums fit int16
  // (kSums16: Q4_K's; Q5_K's codes reach 31).
  template <bool kSums16>
  __device__ static float dot_sums_i8(const uint4& h, int s0, int s1, const XI8& x, int u) {
    const uint32_t sm = scale_min_bytes(h, u);
    const int codes = kSums16 ? __dp2a_lo(static_cast<int>(__byte_perm(s0, s1, 0x5410)), static_cast<int>(sm), 0)
                              : static_cast<int>(sm & 0xFF) * s0 + static_cast<int>((sm >> 8) & 0xFF) * s1;
    const int mins = __dp2a_hi(static_cast<int>(__byte_perm(x.s_lo, x.s_hi, 0x5410)), static_cast<int>(sm), 0);
    return x.dx * (d_of(h) * static_cast<float>(codes) - dmin_of(h) * static_cast<float>(mins));
  }
};

// Q5_K on the GPU: Q4_K's header and qs (at 16, unit i's 16 bytes at
// 16 + 16i), then unit i's 32 fifth bits in one word at 144 + 4i -- the
// low codes' bit of code t at LowBitUnit::pos1(t), the high codes' 4 above
// -- repacked at upload from qh (bit 2c / 2c + 1 of qh[l]) so that a unit
// loads 4 bytes of them instead of 16 of which it used a quarter.
template <>
struct Slab<WeightType::Q5_K> {
  using K4 = Slab<WeightType::Q4_K>;
  // 9 registers a unit: 8 rows a batch (Q4_K's 8 of 8 registers; 4 when a
  // unit held 12 and 8 spilled, milestone 61)
  static constexpr int kUnitsPerBlock = 8, kXElems = 32, kRB = 8;
  struct Unit { uint4 q; uint4 h; uint32_t qh; };
  using X = K4::X;
  __device__ static void load_x(const float* x, int u, X& xr) { K4::load_x(x, u, xr); }
  __device__ static Unit load(const uint8_t* row, int u, int) {
    const uint8_t* b = row + 176 * (u / 8);
    return {ldg16(b + 16 + 16 * (u % 8)), ldg16(b), __ldg(reinterpret_cast<const uint32_t*>(b + 144 + 4 * (u % 8)))};
  }
  // Q4_K's nibbles with the fifth bits or-ed in as 16.
  __device__ static void codes(const Unit& w, int, uint32_t (&lo)[4], uint32_t (&hi)[4]) {
    const uint32_t q[4] = {w.q.x, w.q.y, w.q.z, w.q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      lo[j] = (q[j] & 0x0F0F0F0Fu) | ((w.qh << (4 - j)) & 0x10101010u);
      hi[j] = ((q[j] >> 4) & 0x0F0F0F0Fu) | ((w.qh >> j) & 0x10101010u);
    }
  }
  __device__ static float dot(const Unit& w, const X& xr, int u) {
    uint32_t lo[4], hi[4];
    codes(w, u, lo, hi);
    return K4::dot_codes(w.h, lo, hi, xr, u);
  }
  __device__ static float dot_i8(const Unit& w, const XI8& x, int u) {
    uint32_t lo[4], hi[4];
    codes(w, u, lo, hi);
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s0 = dp4a_u8s8(lo[j], x.q[j], s0);
      s1 = dp4a_u8s8(hi[j], x.q[4 + j], s1);
    }
    return K4::dot_sums_i8<false>(w.h, s0, s1, x, u);
  }
};

// A unit's 32 activations in Q6_K's, Q2_K's and Q3_K's geometry
// (LowBitUnit): quarter p's 16 then quarter p + 2's.
__device__ __forceinline__ void load_quarter_pair_x(const float* x, int u, float (&v)[32]) {
  const int e = LowBitUnit(u).first_elem();
  ldx(x + e, v, 16);
  ldx(x + e + 64, v + 16, 16);
}

// Q6_K on the GPU (upload_weight repacks each block's qh and scales; ql and
// d stay where the split row has them): unit i (LowBitUnit's geometry: half
// h, positions 16lh.., quarters p and p + 2) finds
//   body  +64h + 32p + 16lh  16 bytes of ql as stored (quarter p's codes in
//                            the low nibbles, p + 2's in the high ones)
//   body  +128 + 8i          2 words, quarter p's then p + 2's high 2 bits:
//                            code t at bit pos2(t)
//   body  +192 + 2i          the two quarters' int8 scales, p's first
//   tail  d
// so a unit loads 24 bytes of codes and 2 of scales (before: 16 of qh of
// which it used half, and each scale byte on its own).
template <>
struct Slab<WeightType::Q6_K> {
  static constexpr int kUnitsPerBlock = 8, kXElems = 32, kRB = 8;
  struct Unit { uint4 ql; uint2 qh; uint32_t sc, d; };  // sc: the two scale bytes; d: f16 bits
  struct X { float v[32]; };
  __device__ static void load_x(const float* x, int u, X& xr) { load_quarter_pair_x(x, u, xr.v); }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    const LowBitUnit n(u);
    const uint8_t* body = row + 208 * n.b;
    return {ldg16(body + 64 * n.h + 32 * n.p + 16 * n.lh), __ldg(reinterpret_cast<const uint2*>(body + 128 + 8 * n.i)),
            __ldg(reinterpret_cast<const uint16_t*>(body + 192 + 2 * n.i)),
            __ldg(reinterpret_cast<const uint16_t*>(row + 208 * nb + 2 * n.b))};
  }
  // The two quarters' d * scale.
  __device__ static void scales(const Unit& w, float& da, float& db) {
    const float d = __half2float(__ushort_as_half(static_cast<uint16_t>(w.d)));
    da = d * static_cast<float>(static_cast<int8_t>(w.sc & 0xFF));
    db = d * static_cast<float>(static_cast<int8_t>(w.sc >> 8));
  }
  // The unsigned 6-bit codes (the value is code - 32), a byte each: a the
  // first quarter's (ql's low nibbles), b the second's (high nibbles), each
  // with its high 2 bits moved from pos2 to bits 4-5 of the byte.
  __device__ static void codes(const Unit& w, int, uint32_t (&a)[4], uint32_t (&b)[4]) {
    const uint32_t ql[4] = {w.ql.x, w.ql.y, w.ql.z, w.ql.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const auto at4 = [j](uint32_t h) { return (j < 2 ? h << (4 - 2 * j) : h >> (2 * j - 4)) & 0x30303030u; };
      a[j] = (ql[j] & 0x0F0F0F0Fu) | at4(w.qh.x);
      b[j] = ((ql[j] >> 4) & 0x0F0F0F0Fu) | at4(w.qh.y);
    }
  }
  __device__ static float dot(const Unit& w, const X& xr, int u) {
    uint32_t a4[4], b4[4];
    codes(w, u, a4, b4);
    float a = 0, b = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      a = dot4<32>(a4[j], xr.v + 4 * j, a);
      b = dot4<32>(b4[j], xr.v + 16 + 4 * j, b);
    }
    float da, db;
    scales(w, da, db);
    return da * a + db * b;
  }
  // Int8 x (milestone 61; XI8's halves are the two quarters'):
  // dx * (da * (s0 - 32 S0) + db * (s1 - 32 S1)), s the unsigned codes'
  // dp4a sums and S the halves' sums of q; both brackets exact integers.
  __device__ static float dot_i8(const Unit& w, const XI8& x, int u) {
    uint32_t a4[4], b4[4];
    codes(w, u, a4, b4);
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s0 = dp4a_u8s8(a4[j], x.q[j], s0);
      s1 = dp4a_u8s8(b4[j], x.q[4 + j], s1);
    }
    float da, db;
    scales(w, da, db);
    return x.dx * (da * static_cast<float>(s0 - 32 * x.s_lo) + db * static_cast<float>(s1 - 32 * x.s_hi));
  }
};

// Q2_K and Q3_K units (LowBitUnit's layout): a unit's 2-bit codes are two
// words; shifting a word by 2k and masking gives codes 4k..4k+3 as bytes.
__device__ __forceinline__ void low2_codes(const uint2& q, uint32_t (&a)[4], uint32_t (&b)[4]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    a[k] = (q.x >> (2 * k)) & 0x03030303u;
    b[k] = (q.y >> (2 * k)) & 0x03030303u;
  }
}

// Q2_K: x = d sc q - dmin m per sub-block (4-bit sc and m). 4 registers a
// unit in flight, so 16 rows a batch.
template <>
struct Slab<WeightType::Q2_K> {
  static constexpr int kUnitsPerBlock = 8, kXElems = 32, kRB = 16;
  struct Unit { uint2 q; uint32_t sm, dd; };  // sm: the two scale|min bytes; dd: d | dmin << 16
  using X = Slab<WeightType::Q4_K>::X;        // with the halves' sums, for the mins
  __device__ static void load_x(const float* x, int u, X& xr) {
    load_quarter_pair_x(x, u, xr.v);
    xr.sum_lo = xr.sum_hi = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      xr.sum_lo += xr.v[i];
      xr.sum_hi += xr.v[16 + i];
    }
  }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    const LowBitUnit n(u);
    const uint8_t* body = row + 80 * n.b;
    return {__ldg(reinterpret_cast<const uint2*>(body + 8 * n.i)),
            __ldg(reinterpret_cast<const uint16_t*>(body + 64 + 2 * n.i)),
            __ldg(reinterpret_cast<const uint32_t*>(row + 80 * nb + 4 * n.b))};
  }
  __device__ static float d_of(uint32_t dd) { return __half2float(__ushort_as_half(static_cast<uint16_t>(dd & 0xFFFF))); }
  __device__ static float dmin_of(uint32_t dd) { return __half2float(__ushort_as_half(static_cast<uint16_t>(dd >> 16))); }
  __device__ static float dot(const Unit& w, const X& xr, int) {
    uint32_t a4[4], b4[4];
    low2_codes(w.q, a4, b4);
    float a = 0, b = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      a = dot4<0>(a4[k], xr.v + 4 * k, a);
      b = dot4<0>(b4[k], xr.v + 16 + 4 * k, b);
    }
    const uint32_t sa = w.sm & 0xFF, sb = (w.sm >> 8) & 0xFF;
    return d_of(w.dd) * (static_cast<float>(sa & 0xF) * a + static_cast<float>(sb & 0xF) * b) -
           dmin_of(w.dd) * (static_cast<float>(sa >> 4) * xr.sum_lo + static_cast<float>(sb >> 4) * xr.sum_hi);
  }
  // dx * (d * (sa s0 + sb s1) - dmin * (ma S0 + mb S1)), as Q4_K's
  // dot_sums_i8: both brackets exact integers (15 * 2 * 16 * 3 * 127 < 2^24).
  __device__ static float dot_i8(const Unit& w, const XI8& x, int) {
    uint32_t a4[4], b4[4];
    low2_codes(w.q, a4, b4);
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      s0 = __dp4a(static_cast<int>(a4[k]), x.q[k], s0);
      s1 = __dp4a(static_cast<int>(b4[k]), x.q[4 + k], s1);
    }
    const int sa = static_cast<int>(w.sm & 0xFF), sb = static_cast<int>((w.sm >> 8) & 0xFF);
    const float codes = static_cast<float>((sa & 0xF) * s0 + (sb & 0xF) * s1);
    const float mins = static_cast<float>((sa >> 4) * x.s_lo + (sb >> 4) * x.s_hi);
    return x.dx * (d_of(w.dd) * codes - dmin_of(w.dd) * mins);
  }
};

// Q3_K: Q2_K's codes with the third bits (one word a unit), and the two
// signed scales and d from the tail's 8 bytes of the unit's half-block
// (LowBitUnit). 5 registers a unit in flight, 3 loads: 8 rows a batch.
template <>
struct Slab<WeightType::Q3_K> {
  static constexpr int kUnitsPerBlock = 8, kXElems = 32, kRB = 8;
  struct Unit { uint2 q; uint32_t hb; uint2 t; };  // t: the unit's half of the tail
  using X = Slab<WeightType::Q6_K>::X;
  __device__ static void load_x(const float* x, int u, X& xr) { load_quarter_pair_x(x, u, xr.v); }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    const LowBitUnit n(u);
    const uint8_t* body = row + 96 * n.b;
    return {__ldg(reinterpret_cast<const uint2*>(body + 8 * n.i)),
            __ldg(reinterpret_cast<const uint32_t*>(body + 64 + 4 * n.i)),
            __ldg(reinterpret_cast<const uint2*>(row + 96 * nb + 16 * n.b + 8 * (n.i / 4)))};
  }
  // The two sub-blocks' signed scales, scale - 32: 12 bits of word (u % 4) / 2.
  __device__ static void scale_ints(const Unit& w, int u, int& sa, int& sb) {
    const uint32_t s = (u % 4 < 2 ? w.t.x : w.t.y) >> (12 * (u % 2));
    sa = static_cast<int>(s & 0x3F) - 32;
    sb = static_cast<int>((s >> 6) & 0x3F) - 32;
  }
  __device__ static float d_of(const Unit& w) {
    return __half2float(__ushort_as_half(static_cast<uint16_t>(__byte_perm(w.t.x, w.t.y, 0x0073))));
  }
  // The two sub-blocks' d * (scale - 32).
  __device__ static void scales(const Unit& w, int u, float& da, float& db) {
    int sa, sb;
    scale_ints(w, u, sa, sb);
    const float d = d_of(w);
    da = d * static_cast<float>(sa);
    db = d * static_cast<float>(sb);
  }
  // Codes 0..7 (the value is code - 4): Q2_K's bits with the third or-ed in as 4.
  __device__ static void codes(const Unit& w, uint32_t (&a)[4], uint32_t (&b)[4]) {
    low2_codes(w.q, a, b);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      a[k] |= ((w.hb >> k) & 0x01010101u) << 2;
      b[k] |= ((w.hb >> (k + 4)) & 0x01010101u) << 2;
    }
  }
  __device__ static float dot(const Unit& w, const X& xr, int u) {
    uint32_t a4[4], b4[4];
    codes(w, a4, b4);
    float a = 0, b = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      a = dot4<4>(a4[k], xr.v + 4 * k, a);
      b = dot4<4>(b4[k], xr.v + 16 + 4 * k, b);
    }
    float da, db;
    scales(w, u, da, db);
    return da * a + db * b;
  }
  // dx d ((sa - 32) (s0 - 4 S0) + (sb - 32) (s1 - 4 S1)), the bracket one
  // exact integer (|code - 4| <= 4, |scale - 32| <= 32: 2 * 16 * 4 * 32 * 127
  // < 2^24; milestone 65 -- before, each bracket a float times its
  // d (scale - 32), 4 instructions more).
  __device__ static float dot_i8(const Unit& w, const XI8& x, int u) {
    uint32_t a4[4], b4[4];
    codes(w, a4, b4);
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      s0 = __dp4a(static_cast<int>(a4[k]), x.q[k], s0);
      s1 = __dp4a(static_cast<int>(b4[k]), x.q[4 + k], s1);
    }
    int sa, sb;
    scale_ints(w, u, sa, sb);
    return x.dx * d_of(w) * static_cast<float>(sa * (s0 - 4 * x.s_lo) + sb * (s1 - 4 * x.s_hi));
  }
};

// A unit's product with int8 activations (the slab kernel's I8 form).
template <WeightType T>
__device__ __forceinline__ float dot_unit_i8(const typename Slab<T>::Unit& w, const XI8& x, int u) {
  if constexpr (T == WeightType::Q4_0) return dot_q4_0_i8(w.q, w.d, x);
  else return Slab<T>::dot_i8(w, x, u);
}

// The K-quants' slab kernels: their kRB rows a batch (their 16- to 36-byte
// units), pipelined with int8 x only (launch_slab).
__host__ __device__ constexpr bool slab_kquant(WeightType t) {
  return t == WeightType::Q2_K || t == WeightType::Q3_K || t == WeightType::Q4_K || t == WeightType::Q5_K ||
         t == WeightType::Q6_K;
}
// Formats whose units hold 6 registers or more in flight (24 bytes: Q5_0,
// Q5_1, IQ4_XS; Q8_0's 36): 8-row batches only, half requested before the activation (as the
// K-quants; gemv.cu), 16-row batches or all 8 early spill (ptxas -v).
__host__ __device__ constexpr bool slab_wide(WeightType t) {
  return t == WeightType::Q5_0 || t == WeightType::Q5_1 || t == WeightType::IQ4_XS || t == WeightType::Q8_0;
}
// Formats the slab kernel takes int8 activations for (CudaTuning::gemv_i8x).
__host__ __device__ constexpr bool slab_int8(WeightType t) {
  return t == WeightType::Q4_0 || t == WeightType::Q8_0 || slab_kquant(t) || weight_q32(t);
}
// Formats whose unit u's activations are x[32u .. 32u + 31], Q4_0's: their
// int8 kernels take Q4_0's 8- and 16-row batches and its coalesced x
// (CudaTuning::gemv_x_coalesced, ldx_warp_units).
__host__ __device__ constexpr bool slab_xc(WeightType t) {
  return t == WeightType::Q4_0 || t == WeightType::Q8_0 || weight_q32(t);
}

}  // namespace longkv::cuda

#include "backend/cuda/weight_decode_q32.cuh"


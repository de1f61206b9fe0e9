#include "backend/cpu/weight_kernels.h"

#include <cstddef>
#include <algorithm>
#include <cstring>
#include <iterator>
#include <type_traits>

#include "backend/cpu/weight_kernels_q32.h"
#include "backend/cpu/weight_simd.h"
#include "core/error.h"


namespace longkv {
namespace {

using namespace cpu_simd;
using namespace cpu_q32;

// Byte offsets inside the blocks (the structs in weight_types.h).
constexpr int kQ8Bytes = sizeof(BlockQ8_0), kQ4Bytes = sizeof(BlockQ4_0);
constexpr int kQ6KBytes = sizeof(BlockQ6_K);
static_assert(offsetof(BlockQ8_0, qs) == 2 && offsetof(BlockQ4_0, qs) == 2);
static_assert(offsetof(BlockQ4_K, scales) == 4 && offsetof(BlockQ4_K, qs) == 16);
static_assert(offsetof(BlockQ5_K, scales) == 4 && offsetof(BlockQ5_K, qh) == 16 && offsetof(BlockQ5_K, qs) == 48);
static_assert(offsetof(BlockQ6_K, qh) == 128 && offsetof(BlockQ6_K, scales) == 192 &&
              offsetof(BlockQ6_K, d) == 208);

#if defined(LONGKV_KERNELS_AVX512) || defined(LONGKV_KERNELS_AVX2)

// Q4_K / Q5_K: per-sub-block multipliers d*sc[j] and offsets dmin*m[j] (bit layout
// in FORMATS.md; q4_k_scale_min in weight_types.cpp is the scalar twin). The
// 12 packed bytes are three little-endian words, and every field of the
// upper four sub-blocks sits at the same bit position in each byte of its
// word, so four sub-blocks decode at once with word masks and shifts.
inline void q4_k_factors(const uint8_t* s, float d, float dmin, float dsc[8], float dm[8]) {
  uint32_t a, b, c;
  std::memcpy(&a, s, 4);
  std::memcpy(&b, s + 4, 4);
  std::memcpy(&c, s + 8, 4);
  const uint32_t sc_lo = a & 0x3F3F3F3Fu, m_lo = b & 0x3F3F3F3Fu;
  const uint32_t sc_hi = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
  const uint32_t m_hi = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
  const auto widen = [](uint32_t lo, uint32_t hi) {  // 8 bytes -> 8 floats
    const __m128i v = _mm_set_epi32(0, 0, static_cast<int>(hi), static_cast<int>(lo));
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
  };
  const __m256 scf = widen(sc_lo, sc_hi), mf = widen(m_lo, m_hi);
  _mm256_storeu_ps(dsc, _mm256_mul_ps(scf, _mm256_set1_ps(d)));
  _mm256_storeu_ps(dm, _mm256_mul_ps(mf, _mm256_set1_ps(dmin)));
}

// The dot kernels decode the factors of a run of super-blocks into a small
// stack array before using them: broadcasting a factor right after its
// vector store stalls on store-to-load forwarding, which cost more than the
// nibble work.
constexpr int kQ4KRun = 16;  // super-blocks per factor pass: 1 KiB of factors
template <typename Block>
inline int k_factor_run(const uint8_t* p, int64_t i0, int64_t nb, float dsc[][8], float dm[][8]) {
  const int run = static_cast<int>(std::min<int64_t>(kQ4KRun, nb - i0));
  for (int r = 0; r < run; ++r) {
    const uint8_t* b = p + (i0 + r) * static_cast<int64_t>(sizeof(Block));
    q4_k_factors(b + 4, load_f16(b), load_f16(b + 2), dsc[r], dm[r]);
  }
  return run;
}
template <typename Block>
constexpr bool kFifthBit = std::is_same_v<Block, BlockQ5_K>;

// Q4_0 codes of one block as two vectors of signed int8 (low nibbles are
// elements 0..15, high nibbles 16..31), already offset by -8.
[[maybe_unused]] inline void q4_0_codes(const uint8_t* qs, __m128i* lo, __m128i* hi) {
  const __m128i m4 = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  const __m128i q = load16(qs);
  *lo = _mm_sub_epi8(_mm_and_si128(q, m4), eight);
  *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m4), eight);
}

// Q6_K: 64 codes (4 vectors of 16, each one sub-block) from 16 bytes of the
// low-bit array at ql, 16 at ql + 32 and 16 of qh; centred to -32..31.
// Element l + 32k takes the qh bits 2k..2k+1; shifting them to bits 4..5 of
// each byte lets one mask (0x30) do the work for all four.
inline void q6_k_codes(const uint8_t* ql, const uint8_t* qh, __m128i q[4]) {
  const __m128i m4 = _mm_set1_epi8(0x0F), m30 = _mm_set1_epi8(0x30), c32 = _mm_set1_epi8(32);
  const __m128i a = load16(ql), b = load16(ql + 32), h = load16(qh);
  q[0] = _mm_or_si128(_mm_and_si128(a, m4), _mm_and_si128(_mm_slli_epi16(h, 4), m30));
  q[1] = _mm_or_si128(_mm_and_si128(b, m4), _mm_and_si128(_mm_slli_epi16(h, 2), m30));
  q[2] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m4), _mm_and_si128(h, m30));
  q[3] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(b, 4), m4), _mm_and_si128(_mm_srli_epi16(h, 2), m30));
  for (int k = 0; k < 4; ++k) q[k] = _mm_sub_epi8(q[k], c32);
}

// Q6_K: the 16 sub-block multipliers d*scale[s], converted with vector ops
// once per super-block rather than one scalar int->float per sub-block.
inline void q6_k_factors(const uint8_t* b, float dsc[16]) {
  const __m128i sc = load16(b + 192);
  const __m128 d = _mm_set1_ps(load_f16(b + 208));
  _mm_storeu_ps(dsc, _mm_mul_ps(d, _mm_cvtepi32_ps(_mm_cvtepi8_epi32(sc))));
  _mm_storeu_ps(dsc + 4, _mm_mul_ps(d, _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_srli_si128(sc, 4)))));
  _mm_storeu_ps(dsc + 8, _mm_mul_ps(d, _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
  _mm_storeu_ps(dsc + 12, _mm_mul_ps(d, _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_srli_si128(sc, 12)))));
}

// ---------------------------------------------------------------------------
// Dot products. Each keeps several independent accumulators so consecutive
// FMAs do not wait on each other.

float dot_f32(const void* row, const float* x, int64_t n) {
  const float* w = static_cast<const float*>(row);
  vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  int64_t i = 0;
  for (; i + 4 * kW <= n; i += 4 * kW) {
    a0 = vfma(vload(w + i), vload(x + i), a0);
    a1 = vfma(vload(w + i + kW), vload(x + i + kW), a1);
    a2 = vfma(vload(w + i + 2 * kW), vload(x + i + 2 * kW), a2);
    a3 = vfma(vload(w + i + 3 * kW), vload(x + i + 3 * kW), a3);
  }
  for (; i + kW <= n; i += kW) a0 = vfma(vload(w + i), vload(x + i), a0);
  float s = vsum(vadd(vadd(a0, a1), vadd(a2, a3)));
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

template <vf (*Load)(const uint8_t*), float (*Load1)(const uint8_t*)>
float dot_half(const void* row, const float* x, int64_t n) {
  const auto* w = static_cast<const uint8_t*>(row);
  vf a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
  int64_t i = 0;
  for (; i + 4 * kW <= n; i += 4 * kW) {
    a0 = vfma(Load(w + 2 * i), vload(x + i), a0);
    a1 = vfma(Load(w + 2 * (i + kW)), vload(x + i + kW), a1);
    a2 = vfma(Load(w + 2 * (i + 2 * kW)), vload(x + i + 2 * kW), a2);
    a3 = vfma(Load(w + 2 * (i + 3 * kW)), vload(x + i + 3 * kW), a3);
  }
  for (; i + kW <= n; i += kW) a0 = vfma(Load(w + 2 * i), vload(x + i), a0);
  float s = vsum(vadd(vadd(a0, a1), vadd(a2, a3)));
  for (; i < n; ++i) s += Load1(w + 2 * i) * x[i];
  return s;
}

// One Q8_0 block: sum q*x over its 32 elements, as a vector.
inline vf q8_0_block_dot(const uint8_t* b, const float* x) {
  return fma_i8x16(load16(b + 18), x + 16, fma_i8x16(load16(b + 2), x, vzero()));
}

float dot_q8_0(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  const int64_t nb = n / kQK;
  vf acc0 = vzero(), acc1 = vzero();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const uint8_t* b = p + i * kQ8Bytes;
    prefetch(b);
    prefetch(b + 64);
    acc0 = vfma(vset1(load_f16(b)), q8_0_block_dot(b, x + i * kQK), acc0);
    acc1 = vfma(vset1(load_f16(b + kQ8Bytes)), q8_0_block_dot(b + kQ8Bytes, x + (i + 1) * kQK), acc1);
  }
  if (i < nb) {
    const uint8_t* b = p + i * kQ8Bytes;
    acc0 = vfma(vset1(load_f16(b)), q8_0_block_dot(b, x + i * kQK), acc0);
  }
  return vsum(vadd(acc0, acc1));
}

#if !defined(LONGKV_KERNELS_AVX512)
inline vf q4_0_block_dot(const uint8_t* b, const float* x) {
  __m128i lo, hi;
  q4_0_codes(b + 2, &lo, &hi);
  return fma_i8x16(hi, x + 16, fma_i8x16(lo, x, vzero()));
}

float dot_q4_0(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  const int64_t nb = n / kQK;
  vf acc0 = vzero(), acc1 = vzero();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const uint8_t* b = p + i * kQ4Bytes;
    prefetch(b);
    acc0 = vfma(vset1(load_f16(b)), q4_0_block_dot(b, x + i * kQK), acc0);
    acc1 = vfma(vset1(load_f16(b + kQ4Bytes)), q4_0_block_dot(b + kQ4Bytes, x + (i + 1) * kQK), acc1);
  }
  if (i < nb) {
    const uint8_t* b = p + i * kQ4Bytes;
    acc0 = vfma(vset1(load_f16(b)), q4_0_block_dot(b, x + i * kQK), acc0);
  }
  return vsum(vadd(acc0, acc1));
}

// Codes of Q4_K / Q5_K chunk c at positions 16p..16p+15: `lo` sub-block
// 2c's (low nibbles), `hi` 2c+1's. Q5_K's fifth bit (bit 2c / 2c+1 of qh)
// becomes 16 through a compare, one mask for every byte.
template <typename Block>
inline void k_chunk_codes(const uint8_t* b, int c, int p, __m128i* lo, __m128i* hi) {
  const __m128i m4 = _mm_set1_epi8(0x0F);
  const __m128i q = load16(b + offsetof(Block, qs) + 32 * c + 16 * p);
  *lo = _mm_and_si128(q, m4);
  *hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
  if constexpr (kFifthBit<Block>) {
    const __m128i h = load16(b + offsetof(BlockQ5_K, qh) + 16 * p), b16 = _mm_set1_epi8(16);
    const __m128i bl = _mm_set1_epi8(static_cast<char>(1 << (2 * c)));
    const __m128i bh = _mm_set1_epi8(static_cast<char>(2 << (2 * c)));
    *lo = _mm_or_si128(*lo, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h, bl), bl), b16));
    *hi = _mm_or_si128(*hi, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h, bh), bh), b16));
  }
}

// sum_j d*sc_j * (q.x)_j - dmin*m_j * (sum x)_j over the 8 sub-blocks; the
// two sums are accumulated apart and subtracted once at the end.
template <typename Block>
float dot_k_affine(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  vf acc0 = vzero(), acc1 = vzero(), accm0 = vzero(), accm1 = vzero();
  const int64_t nb = n / kQKK;
  alignas(64) float dsc[kQ4KRun][8], dm[kQ4KRun][8];
  for (int64_t i0 = 0; i0 < nb; i0 += kQ4KRun) {
    const int run = k_factor_run<Block>(p, i0, nb, dsc, dm);
    for (int r = 0; r < run; ++r) {
      const uint8_t* b = p + (i0 + r) * static_cast<int64_t>(sizeof(Block));
      const float* xb = x + (i0 + r) * kQKK;
      for (int c = 0; c < 4; ++c) {
        prefetch(b + offsetof(Block, qs) + 32 * c);
        __m128i la, ha, lb, hb;
        k_chunk_codes<Block>(b, c, 0, &la, &ha);
        k_chunk_codes<Block>(b, c, 1, &lb, &hb);
        const float* x0 = xb + 64 * c;
        const float* x1 = x0 + 32;
        const vf t0 = fma_i8x16(lb, x0 + 16, fma_i8x16(la, x0, vzero()));
        const vf t1 = fma_i8x16(hb, x1 + 16, fma_i8x16(ha, x1, vzero()));
        acc0 = vfma(vset1(dsc[r][2 * c]), t0, acc0);
        acc1 = vfma(vset1(dsc[r][2 * c + 1]), t1, acc1);
        accm0 = vfma(vset1(dm[r][2 * c]), vadd(load_sum16(x0), load_sum16(x0 + 16)), accm0);
        accm1 = vfma(vset1(dm[r][2 * c + 1]), vadd(load_sum16(x1), load_sum16(x1 + 16)), accm1);
      }
    }
  }
  return vsum(vsub(vadd(acc0, acc1), vadd(accm0, accm1)));
}

#endif  // !LONGKV_KERNELS_AVX512

#if !defined(LONGKV_KERNELS_AVX512)
// Each vector of 16 codes from q6_k_codes() is exactly one sub-block, so its
// partial dot is scaled by that sub-block's d*scale.
float dot_q6_k(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  vf acc[4] = {vzero(), vzero(), vzero(), vzero()};
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* b = p + i * kQ6KBytes;
    float dsc[16];
    q6_k_factors(b, dsc);
    for (int h = 0; h < 2; ++h) {
      for (int l0 = 0; l0 < 32; l0 += 16) {
        prefetch(b + 64 * h + 2 * l0);
        __m128i q[4];
        q6_k_codes(b + 64 * h + l0, b + 128 + 32 * h + l0, q);
        const int s = 8 * h + l0 / 16;
        const float* xb = x + i * kQKK + 128 * h + l0;
        for (int k = 0; k < 4; ++k)
          acc[k] = vfma(vset1(dsc[s + 2 * k]), fma_i8x16(q[k], xb + 32 * k, vzero()), acc[k]);
      }
    }
  }
  return vsum(vadd(vadd(acc[0], acc[1]), vadd(acc[2], acc[3])));
}
#endif  // !LONGKV_KERNELS_AVX512

// ---------------------------------------------------------------------------
// Row decoding.

void dequant_f32(const void* row, float* dst, int64_t n) {
  std::memcpy(dst, row, static_cast<size_t>(n) * sizeof(float));
}

template <vf (*Load)(const uint8_t*), float (*Load1)(const uint8_t*)>
void dequant_half(const void* row, float* dst, int64_t n) {
  const auto* w = static_cast<const uint8_t*>(row);
  int64_t i = 0;
  for (; i + kW <= n; i += kW) vstore(dst + i, Load(w + 2 * i));
  for (; i < n; ++i) dst[i] = Load1(w + 2 * i);
}

void dequant_q8_0(const void* row, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  const vf zero = vzero();
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint8_t* b = p + i * kQ8Bytes;
    const vf d = vset1(load_f16(b));
    store_i8x16(load16(b + 2), d, zero, dst + i * kQK);
    store_i8x16(load16(b + 18), d, zero, dst + i * kQK + 16);
  }
}

#if !defined(LONGKV_KERNELS_AVX512)
void dequant_q4_0(const void* row, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  const vf zero = vzero();
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint8_t* b = p + i * kQ4Bytes;
    __m128i lo, hi;
    q4_0_codes(b + 2, &lo, &hi);
    const vf d = vset1(load_f16(b));
    store_i8x16(lo, d, zero, dst + i * kQK);
    store_i8x16(hi, d, zero, dst + i * kQK + 16);
  }
}

template <typename Block>
void dequant_k_affine(const void* row, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* b = p + i * static_cast<int64_t>(sizeof(Block));
    float dsc[8], dm[8];
    q4_k_factors(b + 4, load_f16(b), load_f16(b + 2), dsc, dm);
    float* y = dst + i * kQKK;
    for (int c = 0; c < 4; ++c) {
      __m128i la, ha, lb, hb;
      k_chunk_codes<Block>(b, c, 0, &la, &ha);
      k_chunk_codes<Block>(b, c, 1, &lb, &hb);
      const vf s0 = vset1(dsc[2 * c]), o0 = vset1(-dm[2 * c]);
      const vf s1 = vset1(dsc[2 * c + 1]), o1 = vset1(-dm[2 * c + 1]);
      store_i8x16(la, s0, o0, y + 64 * c);
      store_i8x16(lb, s0, o0, y + 64 * c + 16);
      store_i8x16(ha, s1, o1, y + 64 * c + 32);
      store_i8x16(hb, s1, o1, y + 64 * c + 48);
    }
  }
}

#endif  // !LONGKV_KERNELS_AVX512

void dequant_q6_k(const void* row, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  const vf zero = vzero();
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* b = p + i * kQ6KBytes;
    float dsc[16];
    q6_k_factors(b, dsc);
    for (int h = 0; h < 2; ++h) {
      for (int l0 = 0; l0 < 32; l0 += 16) {
        __m128i q[4];
        q6_k_codes(b + 64 * h + l0, b + 128 + 32 * h + l0, q);
        const int s = 8 * h + l0 / 16;
        float* y = dst + i * kQKK + 128 * h + l0;
        for (int k = 0; k < 4; ++k) store_i8x16(q[k], vset1(dsc[s + 2 * k]), zero, y + 32 * k);
      }
    }
  }
}

#if defined(LONGKV_KERNELS_AVX512)

// Q6_K codes for AVX-512: 32 bytes of ql, 32 of ql + 32 and 32 of qh give
// 128 codes as four vectors of 32 int8, vector k covering elements
// 32k..32k+31 of the half block (sub-blocks 2k and 2k + 1), centred to
// -32..31. Same bit moves as q6_k_codes(), on twice the lanes per op.
inline void q6_k_codes32(const uint8_t* ql, const uint8_t* qh, __m256i q[4]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30), c32 = _mm256_set1_epi8(32);
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
  q[0] = _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
  q[1] = _mm256_or_si256(_mm256_and_si256(b, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(a, 4), m4), _mm256_and_si256(h, m30));
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m4),
                         _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
  for (int k = 0; k < 4; ++k) q[k] = _mm256_sub_epi8(q[k], c32);
}

// The sub-block scale is applied in integers: vpmaddwd multiplies the low
// 16 bits of each code (its sign-extended value) by the scale and the high
// 16 bits by 0, giving the exact product sc*q as int32. So each element
// costs one conversion and one FMA with x, and d multiplies each
// super-block's sum once: d*(sc*q)*x is the reference's (d*sc)*q*x with the
// products associated differently.
// sc*q for 16 codes as floats; `sc` holds the scale in its low int16 only.
inline __m512 q6_k_scaled(__m128i q, int32_t sc) {
  return _mm512_cvtepi32_ps(_mm512_madd_epi16(_mm512_cvtepi8_epi32(q), _mm512_set1_epi32(sc)));
}

constexpr int kQ6KRun = 16;  // super-blocks per scale pass: 1 KiB of scales
float dot_q6_k(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  vf acc0 = vzero(), acc1 = vzero();
  const int64_t nb = n / kQKK;
  // Scales of a run of super-blocks are widened ahead of their use, as in
  // dot_k_affine: a broadcast right after the store would stall on forwarding.
  // Each lane holds the scale in its low int16 and 0 in its high one.
  alignas(64) int32_t sc[kQ6KRun][16];
  for (int64_t i0 = 0; i0 < nb; i0 += kQ6KRun) {
    const int run = static_cast<int>(std::min<int64_t>(kQ6KRun, nb - i0));
    for (int r = 0; r < run; ++r) {
      const __m512i w = _mm512_cvtepi8_epi32(load16(p + (i0 + r) * kQ6KBytes + 192));
      _mm512_store_si512(sc[r], _mm512_and_si512(w, _mm512_set1_epi32(0xFFFF)));
    }
    for (int r = 0; r < run; ++r) {
      const uint8_t* b = p + (i0 + r) * kQ6KBytes;
      vf s0 = vzero(), s1 = vzero(), s2 = vzero(), s3 = vzero();
      for (int h = 0; h < 2; ++h) {
        __m256i q[4];
        q6_k_codes32(b + 64 * h, b + 128 + 32 * h, q);
        const float* xb = x + (i0 + r) * kQKK + 128 * h;
        const int32_t* sh = sc[r] + 8 * h;
        for (int k = 0; k < 4; k += 2) {
          prefetch(b + 64 * h + 32 * k);
          const float* xk = xb + 32 * k;
          s0 = vfma(q6_k_scaled(_mm256_castsi256_si128(q[k]), sh[2 * k]), vload(xk), s0);
          s1 = vfma(q6_k_scaled(_mm256_extracti128_si256(q[k], 1), sh[2 * k + 1]), vload(xk + 16), s1);
          s2 = vfma(q6_k_scaled(_mm256_castsi256_si128(q[k + 1]), sh[2 * k + 2]), vload(xk + 32), s2);
          s3 = vfma(q6_k_scaled(_mm256_extracti128_si256(q[k + 1], 1), sh[2 * k + 3]), vload(xk + 48), s3);
        }
      }
      const vf d = vset1(load_f16(b + 208));
      acc0 = vfma(d, vadd(s0, s1), acc0);
      acc1 = vfma(d, vadd(s2, s3), acc1);
    }
  }
  return vsum(vadd(acc0, acc1));
}

// 4-bit codes on AVX-512: a 16-entry table of the block's (or sub-block's)
// 16 possible weight values sits in one register, and vpermps looks each
// code up directly. It uses only the low 4 bits of each 32-bit index, so the
// zero-extended byte selects the low nibble as is and the byte shifted
// right by 4 the high one. This replaces int8 -> int32 -> float conversions
// plus a scale per element with one lookup, and the values are the same
// products d*(q-8) (Q4_0) the reference computes.
inline __m512i nibble_bytes(const uint8_t* p) { return _mm512_cvtepu8_epi32(load16(p)); }
inline __m512 lookup(__m512i idx, __m512 table) { return _mm512_permutexvar_ps(idx, table); }
inline __m512 code_ramp() { return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }

float dot_q4_0(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  const __m512 centred = _mm512_sub_ps(code_ramp(), vset1(8.0f));
  const int64_t nb = n / kQK;
  vf acc[4] = {vzero(), vzero(), vzero(), vzero()};
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    prefetch(p + i * kQ4Bytes);
    for (int k = 0; k < 2; ++k) {
      const uint8_t* b = p + (i + k) * kQ4Bytes;
      const float* xb = x + (i + k) * kQK;
      const __m512 table = _mm512_mul_ps(centred, vset1(load_f16(b)));
      const __m512i v = nibble_bytes(b + 2);
      acc[2 * k] = vfma(lookup(v, table), vload(xb), acc[2 * k]);
      acc[2 * k + 1] = vfma(lookup(_mm512_srli_epi32(v, 4), table), vload(xb + 16), acc[2 * k + 1]);
    }
  }
  if (i < nb) {
    const uint8_t* b = p + i * kQ4Bytes;
    const __m512 table = _mm512_mul_ps(centred, vset1(load_f16(b)));
    const __m512i v = nibble_bytes(b + 2);
    acc[0] = vfma(lookup(v, table), vload(x + i * kQK), acc[0]);
    acc[1] = vfma(lookup(_mm512_srli_epi32(v, 4), table), vload(x + i * kQK + 16), acc[1]);
  }
  return vsum(vadd(vadd(acc[0], acc[1]), vadd(acc[2], acc[3])));
}

// Q4_K / Q5_K chunk c as four vectors of 16 values (elements 64c.. in
// order): one table per sub-block, d*sc*q - dmin*m for q = 0..15. Q5_K's
// codes reach 31, so its lookups take two tables (q < 16 and q >= 16) with
// vpermt2ps, which selects by the low 5 bits of each index: the nibble plus
// the qh bit moved to bit 4.
template <typename Block>
inline void k_chunk_values(const uint8_t* b, int c, const float* dsc, const float* dm, __m512 v[4]) {
  const __m512 ramp = code_ramp();
  const __m512 t0 = vfma(ramp, vset1(dsc[2 * c]), vset1(-dm[2 * c]));
  const __m512 t1 = vfma(ramp, vset1(dsc[2 * c + 1]), vset1(-dm[2 * c + 1]));
  const uint8_t* qs = b + offsetof(Block, qs) + 32 * c;
  const __m512i va = nibble_bytes(qs), vb = nibble_bytes(qs + 16);
  if constexpr (!kFifthBit<Block>) {
    v[0] = lookup(va, t0);
    v[1] = lookup(vb, t0);
    v[2] = lookup(_mm512_srli_epi32(va, 4), t1);
    v[3] = lookup(_mm512_srli_epi32(vb, 4), t1);
  } else {
    const __m512 ramp16 = vadd(ramp, vset1(16.0f));
    const __m512 u0 = vfma(ramp16, vset1(dsc[2 * c]), vset1(-dm[2 * c]));
    const __m512 u1 = vfma(ramp16, vset1(dsc[2 * c + 1]), vset1(-dm[2 * c + 1]));
    const __m128i shift = _mm_cvtsi32_si128(2 * c);  // qh bit 2c to bit 0
    const __m512i ha = _mm512_srl_epi32(nibble_bytes(b + 16), shift);
    const __m512i hb = _mm512_srl_epi32(nibble_bytes(b + 32), shift);
    const __m512i m4 = _mm512_set1_epi32(0xF), b16 = _mm512_set1_epi32(16);
    const auto low = [&](__m512i q, __m512i h) {  // low nibble | bit 0 of h as 16
      return _mm512_or_si512(_mm512_and_si512(q, m4), _mm512_and_si512(_mm512_slli_epi32(h, 4), b16));
    };
    const auto high = [&](__m512i q, __m512i h) {  // high nibble | bit 1 of h as 16
      return _mm512_or_si512(_mm512_srli_epi32(q, 4), _mm512_and_si512(_mm512_slli_epi32(h, 3), b16));
    };
    v[0] = _mm512_permutex2var_ps(t0, low(va, ha), u0);
    v[1] = _mm512_permutex2var_ps(t0, low(vb, hb), u0);
    v[2] = _mm512_permutex2var_ps(t1, high(va, ha), u1);
    v[3] = _mm512_permutex2var_ps(t1, high(vb, hb), u1);
  }
}

template <typename Block>
float dot_k_affine(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  vf acc[4] = {vzero(), vzero(), vzero(), vzero()};
  const int64_t nb = n / kQKK;
  alignas(64) float dsc[kQ4KRun][8], dm[kQ4KRun][8];
  for (int64_t i0 = 0; i0 < nb; i0 += kQ4KRun) {
    const int run = k_factor_run<Block>(p, i0, nb, dsc, dm);
    for (int r = 0; r < run; ++r) {
      const uint8_t* b = p + (i0 + r) * static_cast<int64_t>(sizeof(Block));
      const float* xb = x + (i0 + r) * kQKK;
      for (int c = 0; c < 4; ++c) {
        prefetch(b + offsetof(Block, qs) + 32 * c);
        __m512 v[4];
        k_chunk_values<Block>(b, c, dsc[r], dm[r], v);
        for (int k = 0; k < 4; ++k) acc[k] = vfma(v[k], vload(xb + 64 * c + 16 * k), acc[k]);
      }
    }
  }
  return vsum(vadd(vadd(acc[0], acc[1]), vadd(acc[2], acc[3])));
}

void dequant_q4_0(const void* row, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  const __m512 centred = _mm512_sub_ps(code_ramp(), vset1(8.0f));
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint8_t* b = p + i * kQ4Bytes;
    const __m512 table = _mm512_mul_ps(centred, vset1(load_f16(b)));
    const __m512i v = nibble_bytes(b + 2);
    vstore(dst + i * kQK, lookup(v, table));
    vstore(dst + i * kQK + 16, lookup(_mm512_srli_epi32(v, 4), table));
  }
}

template <typename Block>
void dequant_k_affine(const void* row, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* b = p + i * static_cast<int64_t>(sizeof(Block));
    float dsc[8], dm[8];
    q4_k_factors(b + 4, load_f16(b), load_f16(b + 2), dsc, dm);
    for (int c = 0; c < 4; ++c) {
      __m512 v[4];
      k_chunk_values<Block>(b, c, dsc, dm, v);
      for (int k = 0; k < 4; ++k) vstore(dst + i * kQKK + 64 * c + 16 * k, v[k]);
    }
  }
}
#endif  // LONGKV_KERNELS_AVX512


// ---------------------------------------------------------------------------
// Q2_K and Q3_K (both widths): 16 bytes of qs at 32h + 16lh hold the codes
// of four sub-blocks, 8h + 2j + lh for j = 0..3 at bits 2j (elements
// 128h + 32j + 16lh ..); each vector of 16 codes is one sub-block, scaled by
// its factor as Q6_K's. Q3_K's third bit (bit 4h + j of hmask[16lh ..])
// shifted to bit 2 of each byte, then the codes centred to -4..3.
template <typename Block>
constexpr bool kThirdBit = std::is_same_v<Block, BlockQ3_K>;
static_assert(offsetof(BlockQ2_K, qs) == 16 && offsetof(BlockQ2_K, d) == 80 && offsetof(BlockQ2_K, dmin) == 82);
static_assert(offsetof(BlockQ3_K, qs) == 32 && offsetof(BlockQ3_K, scales) == 96 && offsetof(BlockQ3_K, d) == 108);

template <typename Block>
inline __m128i low_bit_codes(__m128i q, __m128i hm, int h, int j) {
  const __m128i c = _mm_and_si128(_mm_srl_epi16(q, _mm_cvtsi32_si128(2 * j)), _mm_set1_epi8(3));
  if constexpr (!kThirdBit<Block>) {
    return c;
  } else {
    const __m128i third = _mm_slli_epi16(_mm_srl_epi16(hm, _mm_cvtsi32_si128(4 * h + j)), 2);
    return _mm_sub_epi8(_mm_or_si128(c, _mm_and_si128(third, _mm_set1_epi8(4))), _mm_set1_epi8(4));
  }
}

// Per-sub-block multipliers (and Q2_K's offsets) of a block, 16 of each,
// made with vector instructions (16 scalar extractions and conversions were
// about a third of a block's work):
//   Q2_K  byte s of scales: sc in its low nibble, m in its high one
//   Q3_K  the low nibble of sc[s % 8] (s < 8) or its high one (s >= 8),
//         under bits 2 (s / 4).. of sc[8 + s % 4]; the value is v - 32.
// A factor read right after its vector store may wait on store-to-load
// forwarding, so Q2_K's dots make a run of blocks' factors first (kLowBitRun).
inline void store_16_floats(__m128i bytes, bool is_signed, float mul, float* dst) {
  const __m128i hi8 = _mm_srli_si128(bytes, 8);
  const __m256i a = is_signed ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes);
  const __m256i b = is_signed ? _mm256_cvtepi8_epi32(hi8) : _mm256_cvtepu8_epi32(hi8);
  const __m256 m = _mm256_set1_ps(mul);
  _mm256_storeu_ps(dst, _mm256_mul_ps(m, _mm256_cvtepi32_ps(a)));
  _mm256_storeu_ps(dst + 8, _mm256_mul_ps(m, _mm256_cvtepi32_ps(b)));
}
template <typename Block>
inline void low_bit_factors(const uint8_t* b, float dsc[16], float dm[16]) {
  const __m128i m4 = _mm_set1_epi8(0x0F);
  if constexpr (!kThirdBit<Block>) {
    const __m128i sc = load16(b + offsetof(BlockQ2_K, scales));
    store_16_floats(_mm_and_si128(sc, m4), false, load_f16(b + offsetof(BlockQ2_K, d)), dsc);
    store_16_floats(_mm_and_si128(_mm_srli_epi16(sc, 4), m4), false, load_f16(b + offsetof(BlockQ2_K, dmin)), dm);
  } else {
    const uint8_t* sc = b + offsetof(BlockQ3_K, scales);
    uint64_t lo8;
    uint32_t w;
    std::memcpy(&lo8, sc, 8);
    std::memcpy(&w, sc + 8, 4);
    const __m128i l = _mm_cvtsi64_si128(static_cast<long long>(lo8));
    const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(l, m4), _mm_and_si128(_mm_srli_epi16(l, 4), m4));
    const __m128i top = _mm_and_si128(_mm_setr_epi32(static_cast<int>(w), static_cast<int>(w >> 2),
                                                     static_cast<int>(w >> 4), static_cast<int>(w >> 6)),
                                      _mm_set1_epi8(3));
    const __m128i v = _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(top, 4)), _mm_set1_epi8(32));
    store_16_floats(v, true, load_f16(b + offsetof(BlockQ3_K, d)), dsc);
    std::memset(dm, 0, 16 * sizeof(float));
  }
}
// Blocks per factor pass (2 KiB of factors at 16): Q2_K's 7.4 ms for a
// 4096 x 14336 matvec against 7.7 per block, but Q3_K's 8.2 against 8.0
// (one thread, bench_matmul, three rounds each).
template <typename Block>
constexpr int kLowBitRun = kThirdBit<Block> ? 1 : 16;

// Calls f(codes, sub-block, element offset) for the 16 sub-blocks of block b.
template <typename Block, typename F>
inline void for_low_bit_subs(const uint8_t* b, F&& f) {
  const uint8_t* qs = b + offsetof(Block, qs);
  __m128i hm[2] = {_mm_setzero_si128(), _mm_setzero_si128()};
  if constexpr (kThirdBit<Block>) {
    hm[0] = load16(b);
    hm[1] = load16(b + 16);
  }
  for (int h = 0; h < 2; ++h) {
    prefetch(qs + 32 * h);
    for (int lh = 0; lh < 2; ++lh) {
      const __m128i q = load16(qs + 32 * h + 16 * lh);
      for (int j = 0; j < 4; ++j) f(low_bit_codes<Block>(q, hm[lh], h, j), 8 * h + 2 * j + lh, 128 * h + 32 * j + 16 * lh);
    }
  }
}

// f(i, codes, dsc, dm, sub-block, element offset) for every sub-block of
// the row's nb blocks, the factors of a run of blocks made first.
template <typename Block, typename F>
inline void for_low_bit_row(const uint8_t* p, int64_t nb, F&& f) {
  constexpr int kRun = kLowBitRun<Block>;
  float dsc[kRun][16], dm[kRun][16];
  for (int64_t i0 = 0; i0 < nb; i0 += kRun) {
    const int run = static_cast<int>(std::min<int64_t>(kRun, nb - i0));
    for (int r = 0; r < run; ++r)
      low_bit_factors<Block>(p + (i0 + r) * static_cast<int64_t>(sizeof(Block)), dsc[r], dm[r]);
    for (int r = 0; r < run; ++r) {
      const int64_t i = i0 + r;
      for_low_bit_subs<Block>(p + i * static_cast<int64_t>(sizeof(Block)),
                              [&](__m128i c, int s, int e) { f(i, c, dsc[r][s], dm[r][s], s, e); });
    }
  }
}

template <typename Block>
float dot_low_bit(const void* row, const float* x, int64_t n) {
  vf acc[4] = {vzero(), vzero(), vzero(), vzero()};
  for_low_bit_row<Block>(static_cast<const uint8_t*>(row), n / kQKK,
                         [&](int64_t i, __m128i c, float dsc, float dm, int s, int e) {
                           const float* xb = x + i * kQKK;
                           if constexpr (kThirdBit<Block>) {
                             acc[s % 4] = vfma(vset1(dsc), fma_i8x16(c, xb + e, vzero()), acc[s % 4]);
                           } else {  // the weights made first (d sc q - dmin m): no separate sums of x for the mins
                             acc[s % 4] = fma_affine_i8x16(c, vset1(dsc), vset1(-dm), xb + e, acc[s % 4]);
                           }
                         });
  return vsum(vadd(vadd(acc[0], acc[1]), vadd(acc[2], acc[3])));
}

template <typename Block>
void dequant_low_bit(const void* row, float* dst, int64_t n) {
  for_low_bit_row<Block>(static_cast<const uint8_t*>(row), n / kQKK,
                         [&](int64_t i, __m128i c, float dsc, float dm, int, int e) {
                           store_i8x16(c, vset1(dsc), vset1(-dm), dst + i * kQKK + e);
                         });
}

constexpr CpuWeightKernels kKernels[] = {
    {.type = WeightType::F32, .dot = dot_f32, .dequantize = dequant_f32},
    {.type = WeightType::F16, .dot = dot_half<vload_f16, load_f16>,
     .dequantize = dequant_half<vload_f16, load_f16>},
    {.type = WeightType::BF16, .dot = dot_half<vload_bf16, load_bf16>,
     .dequantize = dequant_half<vload_bf16, load_bf16>},
    {.type = WeightType::Q8_0, .dot = dot_q8_0, .dequantize = dequant_q8_0},
    {.type = WeightType::Q4_0, .dot = dot_q4_0, .dequantize = dequant_q4_0},
    {.type = WeightType::Q4_1, .dot = dot_q4_1, .dequantize = dequant_q4_1},
    {.type = WeightType::Q5_0, .dot = dot_q5_0, .dequantize = dequant_q5_0},
    {.type = WeightType::Q5_1, .dot = dot_q5_1, .dequantize = dequant_q5_1},
    {.type = WeightType::IQ4_NL, .dot = dot_iq4_nl, .dequantize = dequant_iq4_nl},
    {.type = WeightType::Q2_K, .dot = dot_low_bit<BlockQ2_K>, .dequantize = dequant_low_bit<BlockQ2_K>},
    {.type = WeightType::Q3_K, .dot = dot_low_bit<BlockQ3_K>, .dequantize = dequant_low_bit<BlockQ3_K>},
    {.type = WeightType::Q4_K, .dot = dot_k_affine<BlockQ4_K>, .dequantize = dequant_k_affine<BlockQ4_K>},
    {.type = WeightType::Q5_K, .dot = dot_k_affine<BlockQ5_K>, .dequantize = dequant_k_affine<BlockQ5_K>},
    {.type = WeightType::Q6_K, .dot = dot_q6_k, .dequantize = dequant_q6_k},
    {.type = WeightType::IQ4_XS, .dot = dot_iq4_xs, .dequantize = dequant_iq4_xs},
};

#else  // no SIMD: decode each chunk with the reference and dot in float

constexpr const char* kIsa = "scalar";

template <WeightType T>
void dequant_scalar(const void* row, float* dst, int64_t n) {
  weight_traits(T).to_float_ref(row, dst, n);
}

template <WeightType T>
float dot_scalar(const void* row, const float* x, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  float buf[kQKK];
  float s = 0.0f;
  for (int64_t i = 0; i < n; i += kQKK) {
    const int64_t m = n - i < kQKK ? n - i : kQKK;
    weight_traits(T).to_float_ref(p + row_bytes(T, i), buf, m);
    for (int64_t j = 0; j < m; ++j) s += buf[j] * x[i + j];
  }
  return s;
}

#define LONGKV_SCALAR_ENTRY(T) \
  {.type = WeightType::T, .dot = dot_scalar<WeightType::T>, .dequantize = dequant_scalar<WeightType::T>}
constexpr CpuWeightKernels kKernels[] = {
    LONGKV_SCALAR_ENTRY(F32),    LONGKV_SCALAR_ENTRY(F16),  LONGKV_SCALAR_ENTRY(BF16),
    LONGKV_SCALAR_ENTRY(Q8_0),   LONGKV_SCALAR_ENTRY(Q4_0), LONGKV_SCALAR_ENTRY(Q4_1),
    LONGKV_SCALAR_ENTRY(Q5_0),   LONGKV_SCALAR_ENTRY(Q5_1), LONGKV_SCALAR_ENTRY(IQ4_NL),
    LONGKV_SCALAR_ENTRY(Q2_K),   LONGKV_SCALAR_ENTRY(Q3_K), LONGKV_SCALAR_ENTRY(Q4_K),
    LONGKV_SCALAR_ENTRY(Q5_K),   LONGKV_SCALAR_ENTRY(Q6_K), LONGKV_SCALAR_ENTRY(IQ4_XS),
};
#undef LONGKV_SCALAR_ENTRY

#endif

constexpr bool kernels_table_consistent() {
  for (int i = 0; i < static_cast<int>(std::size(kKernels)); ++i)
    if (weight_type_index(kKernels[i].type) != i) return false;
  return true;
}
static_assert(kernels_table_consistent(), "kKernels order must be weight_type_index()'s");

}  // namespace

const CpuWeightKernels& cpu_weight_kernels(WeightType t) {
  const int i = weight_type_index(t);
  LONGKV_ASSERT(i >= 0);
  return kKernels[i];
}

const char* cpu_weight_kernels_isa() { return kIsa; }

}  // namespace longkv

// CPU kernels of Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS on the vector layer of
// weight_simd.h, one form for AVX2 and AVX-512. Each block's 32 codes
// become two vectors of 16 int8 values (elements 0..15 and 16..31, the low
// and high nibbles) with one scale and, for Q4_1 / Q5_1, one offset: the
// fifth bits of Q5_0 / Q5_1 are spread to bit 4 of each byte by a compare,
// and IQ4's table lookup is one byte shuffle (all 16 values fit int8).
// Without SIMD the scalar entries of weight_kernels.cpp decode through the
// references instead.
#include "backend/cpu/weight_kernels_q32.h"

#include <algorithm>

#include "backend/cpu/weight_simd.h"
#include "formats/weight_types.h"

#if defined(LONGKV_KERNELS_AVX512) || defined(LONGKV_KERNELS_AVX2)

namespace longkv::cpu_q32 {
namespace {

using namespace cpu_simd;

// A block's codes as int8 (lo: elements 0..15, hi: 16..31) and the affine
// map x = scale * code + bias (bias 0 but for Format<T>::kAffine).
struct Codes32 {
  __m128i lo, hi;
  float scale, bias;
};

// 16 bits (bit j: element j) as 0x10 in byte j.
inline __m128i fifth_bits(uint32_t bits) {
  const __m128i spread =
      _mm_shuffle_epi8(_mm_cvtsi32_si128(static_cast<int>(bits)), _mm_set_epi64x(0x0101010101010101LL, 0));
  const __m128i bit = _mm_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(spread, bit), bit), _mm_set1_epi8(0x10));
}

inline void nibbles(const uint8_t* qs, __m128i* lo, __m128i* hi) {
  const __m128i m4 = _mm_set1_epi8(0x0F), q = load16(qs);
  *lo = _mm_and_si128(q, m4);
  *hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
}

inline __m128i iq4_table() { return load16(reinterpret_cast<const uint8_t*>(kIq4Values)); }

template <WeightType T>
struct Format;

template <>
struct Format<WeightType::Q4_1> {
  static constexpr int kBytes = sizeof(BlockQ4_1);
  static constexpr bool kAffine = true;
  static Codes32 codes(const uint8_t* b) {
    Codes32 c{};
    nibbles(b + offsetof(BlockQ4_1, qs), &c.lo, &c.hi);
    c.scale = load_f16(b);
    c.bias = load_f16(b + offsetof(BlockQ4_1, m));
    return c;
  }
};

inline void five_bit_codes(const uint8_t* b, int qh_at, int qs_at, Codes32& c) {
  uint32_t qh;
  std::memcpy(&qh, b + qh_at, 4);
  nibbles(b + qs_at, &c.lo, &c.hi);
  c.lo = _mm_or_si128(c.lo, fifth_bits(qh & 0xFFFF));
  c.hi = _mm_or_si128(c.hi, fifth_bits(qh >> 16));
}

template <>
struct Format<WeightType::Q5_0> {
  static constexpr int kBytes = sizeof(BlockQ5_0);
  static constexpr bool kAffine = false;
  static Codes32 codes(const uint8_t* b) {
    Codes32 c{};
    five_bit_codes(b, offsetof(BlockQ5_0, qh), offsetof(BlockQ5_0, qs), c);
    const __m128i sixteen = _mm_set1_epi8(16);
    c.lo = _mm_sub_epi8(c.lo, sixteen);
    c.hi = _mm_sub_epi8(c.hi, sixteen);
    c.scale = load_f16(b);
    return c;
  }
};

template <>
struct Format<WeightType::Q5_1> {
  static constexpr int kBytes = sizeof(BlockQ5_1);
  static constexpr bool kAffine = true;
  static Codes32 codes(const uint8_t* b) {
    Codes32 c{};
    five_bit_codes(b, offsetof(BlockQ5_1, qh), offsetof(BlockQ5_1, qs), c);
    c.scale = load_f16(b);
    c.bias = load_f16(b + offsetof(BlockQ5_1, m));
    return c;
  }
};

// IQ4 codes of 16 bytes of qs: the table values, with the given step.
inline Codes32 iq4_codes(const uint8_t* qs, float step) {
  Codes32 c{};
  nibbles(qs, &c.lo, &c.hi);
  const __m128i table = iq4_table();
  c.lo = _mm_shuffle_epi8(table, c.lo);
  c.hi = _mm_shuffle_epi8(table, c.hi);
  c.scale = step;
  return c;
}

template <>
struct Format<WeightType::IQ4_NL> {
  static constexpr int kBytes = sizeof(BlockIQ4_NL);
  static constexpr bool kAffine = false;
  static Codes32 codes(const uint8_t* b) { return iq4_codes(b + offsetof(BlockIQ4_NL, qs), load_f16(b)); }
};

// sum over a block of (scale * code + bias) * x, into acc.
template <bool Affine>
inline vf block_dot(const Codes32& c, const float* x, vf acc) {
  if constexpr (!Affine) {
    const vf t = fma_i8x16(c.hi, x + 16, fma_i8x16(c.lo, x, vzero()));
    return vfma(vset1(c.scale), t, acc);
  } else {
    const vf s = vset1(c.scale), o = vset1(c.bias);
    return fma_affine_i8x16(c.hi, s, o, x + 16, fma_affine_i8x16(c.lo, s, o, x, acc));
  }
}

inline void block_store(const Codes32& c, float* dst) {
  const vf s = vset1(c.scale), o = vset1(c.bias);
  store_i8x16(c.lo, s, o, dst);
  store_i8x16(c.hi, s, o, dst + 16);
}

template <WeightType T>
float dot32(const void* row, const float* x, int64_t n) {
  using F = Format<T>;
  const auto* p = static_cast<const uint8_t*>(row);
  const int64_t nb = n / kQK;
  vf acc0 = vzero(), acc1 = vzero();
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    const uint8_t* b = p + i * F::kBytes;
    prefetch(b);
    acc0 = block_dot<F::kAffine>(F::codes(b), x + i * kQK, acc0);
    acc1 = block_dot<F::kAffine>(F::codes(b + F::kBytes), x + (i + 1) * kQK, acc1);
  }
  if (i < nb) acc0 = block_dot<F::kAffine>(F::codes(p + i * F::kBytes), x + i * kQK, acc0);
  return vsum(vadd(acc0, acc1));
}

template <WeightType T>
void dequant32(const void* row, float* dst, int64_t n) {
  using F = Format<T>;
  const auto* p = static_cast<const uint8_t*>(row);
  for (int64_t i = 0; i < n / kQK; ++i) block_store(F::codes(p + i * F::kBytes), dst + i * kQK);
}

// IQ4_XS: the 8 sub-blocks' steps d * (ls - 32) of a block, made once and
// all at once: sub-block ib's 6-bit ls is bits 4ib.. of scales_l (4 bits)
// under bits 2ib.. of scales_h (2 bits), so one variable shift a lane of 8
// 32-bit lanes takes each. (Eight scalar extractions cost about a third of
// the block's instructions: IQ4_XS ran at ~65% of IQ4_NL's rate.)
inline void iq4_xs_steps(const uint8_t* b, float (&step)[8]) {
  uint16_t sh;
  uint32_t sl;
  std::memcpy(&sh, b + offsetof(BlockIQ4_XS, scales_h), 2);
  std::memcpy(&sl, b + offsetof(BlockIQ4_XS, scales_l), 4);
  const __m256i lo = _mm256_and_si256(
      _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(sl)), _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
      _mm256_set1_epi32(0xF));
  const __m256i hi = _mm256_and_si256(
      _mm256_srlv_epi32(_mm256_set1_epi32(sh), _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)), _mm256_set1_epi32(3));
  const __m256i ls = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), _mm256_set1_epi32(32));
  _mm256_storeu_ps(step, _mm256_mul_ps(_mm256_set1_ps(load_f16(b)), _mm256_cvtepi32_ps(ls)));
}

}  // namespace

float dot_q4_1(const void* row, const float* x, int64_t n) { return dot32<WeightType::Q4_1>(row, x, n); }
void dequant_q4_1(const void* row, float* dst, int64_t n) { dequant32<WeightType::Q4_1>(row, dst, n); }
float dot_q5_0(const void* row, const float* x, int64_t n) { return dot32<WeightType::Q5_0>(row, x, n); }
void dequant_q5_0(const void* row, float* dst, int64_t n) { dequant32<WeightType::Q5_0>(row, dst, n); }
float dot_q5_1(const void* row, const float* x, int64_t n) { return dot32<WeightType::Q5_1>(row, x, n); }
void dequant_q5_1(const void* row, float* dst, int64_t n) { dequant32<WeightType::Q5_1>(row, dst, n); }
float dot_iq4_nl(const void* row, const float* x, int64_t n) { return dot32<WeightType::IQ4_NL>(row, x, n); }
void dequant_iq4_nl(const void* row, float* dst, int64_t n) { dequant32<WeightType::IQ4_NL>(row, dst, n); }

// The steps of a run of blocks are made before the run's dots: a step read
// right after its vector store would wait on store-to-load forwarding (as
// the K-quants' factors, weight_kernels.cpp).
float dot_iq4_xs(const void* row, const float* x, int64_t n) {
  constexpr int kRun = 16;
  const auto* p = static_cast<const uint8_t*>(row);
  const int64_t nb = n / kQKK;
  vf acc0 = vzero(), acc1 = vzero();
  float step[kRun][8];
  for (int64_t i0 = 0; i0 < nb; i0 += kRun) {
    const int run = static_cast<int>(std::min<int64_t>(kRun, nb - i0));
    for (int r = 0; r < run; ++r) iq4_xs_steps(p + (i0 + r) * static_cast<int64_t>(sizeof(BlockIQ4_XS)), step[r]);
    for (int r = 0; r < run; ++r) {
      const int64_t i = i0 + r;
      const uint8_t* b = p + i * static_cast<int64_t>(sizeof(BlockIQ4_XS));
      const uint8_t* qs = b + offsetof(BlockIQ4_XS, qs);
      prefetch(b);
      prefetch(b + 64);
      for (int ib = 0; ib < 8; ib += 2) {
        acc0 = block_dot<false>(iq4_codes(qs + 16 * ib, step[r][ib]), x + i * kQKK + kQK * ib, acc0);
        acc1 = block_dot<false>(iq4_codes(qs + 16 * (ib + 1), step[r][ib + 1]), x + i * kQKK + kQK * (ib + 1), acc1);
      }
    }
  }
  return vsum(vadd(acc0, acc1));
}

void dequant_iq4_xs(const void* row, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(row);
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const uint8_t* b = p + i * static_cast<int64_t>(sizeof(BlockIQ4_XS));
    float step[8];
    iq4_xs_steps(b, step);
    for (int ib = 0; ib < 8; ++ib)
      block_store(iq4_codes(b + offsetof(BlockIQ4_XS, qs) + 16 * ib, step[ib]), dst + i * kQKK + kQK * ib);
  }
}

}  // namespace longkv::cpu_q32

#endif  // LONGKV_KERNELS_AVX512 || LONGKV_KERNELS_AVX2

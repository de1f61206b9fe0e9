// Key scores of 2-bit key codes by AVX512-VNNI byte dot products, for the
// fused decode loop (kv_codec_simd.cpp, kv_attend_groups). The float loop
// does one FMA per code, query head and token: 268 M of them for a 32K-token
// Llama-3-8B step, the floor that kept k2v2 near 2.8x f16 on a Zen 4 core
// (docs/benchmarks.md). VPDPBUSD takes four codes a lane per instruction at
// the FMA's rate; with the multiplier in three byte limbs that is 3
// instructions where the float loop needs 4.
//
// Exactness: the multipliers a[c] = q[c] * scale[c] of one query vector and
// group are put in block floating point, A[c] = round(a[c] 2^(21 - E)) with
// 2^E <= max |a| < 2^(E+1), so |A| <= 2^22 and each a[c] is off by at most
// 2^-23 max |a| (a float product is off by 2^-24 of itself); the integer
// sums are exact, and the three limb sums meet in two float roundings. The
// fused loop's test against attention in double over the dequantized records
// (KvCodec.FusedAttendGroupsMatchesDequantized) holds the float bound.
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define LONGKV_KEY_VNNI 1
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace longkv::vnni {

constexpr int kLimbs = 3;

// 2^e for -126 <= e <= 127.
inline float pow2(int e) {
  const uint32_t b = static_cast<uint32_t>(e + 127) << 23;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// 2^(2 (c % 16)) for c % 16 < 15, else 1: undoes the field weights that the
// float loop folds into its multipliers (kv_codec_simd.cpp, field()), so
// qk[c] * unweight[c] is q * scale exactly.
inline void key_unweights(int d, float* w) {
  for (int c = 0; c < d; ++c) w[c] = c % 16 == 15 ? 1.0f : std::ldexp(1.0f, 2 * (c % 16));
}

// nv vectors qk[v][d] (d % 16 == 0, the float loop's multipliers) as limbs
// [v][limb][d / 16][4] of packed signed bytes: A = L0 + 2^8 L1 + 2^16 L2,
// L0 and L1 in [-128, 127], |L2| <= 64; dword k of word j holds channels
// 16 j + k + 4 i in byte i, the order (w >> 2k) & 0x03030303 puts the codes
// in. inv[v] = 2^(E - 21) (0 when every multiplier is 0).
inline void key_limbs(const float* qk, int nv, int d, const float* unweight, uint32_t* limbs, float* inv) {
  const __m128i order = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const int nj = d / 16;
  for (int v = 0; v < nv; ++v) {
    const float* a = qk + static_cast<size_t>(v) * d;
    __m512 mx = _mm512_setzero_ps();
    for (int c = 0; c < d; c += 16)
      mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_mul_ps(_mm512_loadu_ps(a + c), _mm512_loadu_ps(unweight + c))));
    // E from the exponent bits; multipliers all below 2^-100 count as 0
    // (their products are far below the float rounding of any score).
    const float amax = _mm512_reduce_max_ps(mx);
    uint32_t bits;
    std::memcpy(&bits, &amax, 4);
    const int e = static_cast<int>(bits >> 23) - 127;
    const bool live = e >= -100;
    inv[v] = live ? pow2(e - 21) : 0.0f;
    const __m512 scale = _mm512_set1_ps(live ? pow2(21 - e) : 0.0f);
    for (int j = 0; j < nj; ++j) {
      const __m512 x = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(a + 16 * j), _mm512_loadu_ps(unweight + 16 * j)),
                                     scale);
      const __m512i big = _mm512_cvtps_epi32(x);  // round to nearest even: the product is exact
      const __m512i l0 = _mm512_srai_epi32(_mm512_slli_epi32(big, 24), 24);
      const __m512i r1 = _mm512_srai_epi32(_mm512_sub_epi32(big, l0), 8);
      const __m512i l1 = _mm512_srai_epi32(_mm512_slli_epi32(r1, 24), 24);
      const __m512i l2 = _mm512_srai_epi32(_mm512_sub_epi32(r1, l1), 8);
      const __m512i ls[kLimbs] = {l0, l1, l2};
      for (int l = 0; l < kLimbs; ++l) {
        const __m128i bytes = _mm_shuffle_epi8(_mm512_cvtepi32_epi8(ls[l]), order);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(limbs + ((static_cast<size_t>(v) * kLimbs + l) * nj + j) * 4),
                         bytes);
      }
    }
  }
}

// scores[h][t] = inv[h] * sum_c A[h][c] code[c][t] + qz[h] for the G tokens
// of one group; words: the 2-bit key plane [d / 16][G] (kv_codec.h). One
// vector of 16 tokens at a time: H * 3 accumulators stay in registers.
template <int H>
void key_scores_2bit(const uint32_t* words, int group, int d, const uint32_t* limbs, const float* inv,
                     const float* qz, float* scores, int lds) {
  const int nj = d / 16;
  const __m512i m2 = _mm512_set1_epi32(0x03030303);
  for (int t0 = 0; t0 < group; t0 += 16) {
    __m512i acc[H][kLimbs];
    for (int h = 0; h < H; ++h)
      for (int l = 0; l < kLimbs; ++l) acc[h][l] = _mm512_setzero_si512();
    for (int j = 0; j < nj; ++j) {
      const __m512i w = _mm512_loadu_si512(words + static_cast<size_t>(j) * group + t0);
      const uint32_t* lj = limbs + static_cast<size_t>(j) * 4;
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const __m512i x = _mm512_and_si512(_mm512_srli_epi32(w, 2 * k), m2);
#pragma GCC unroll 4
        for (int h = 0; h < H; ++h)
#pragma GCC unroll 3
          for (int l = 0; l < kLimbs; ++l)
            acc[h][l] = _mm512_dpbusd_epi32(
                acc[h][l], x, _mm512_set1_epi32(static_cast<int>(lj[static_cast<size_t>(h * kLimbs + l) * nj * 4 + k])));
      }
    }
    for (int h = 0; h < H; ++h) {
      const __m512 hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[h][2]), _mm512_set1_ps(65536.0f),
                                        _mm512_mul_ps(_mm512_cvtepi32_ps(acc[h][1]), _mm512_set1_ps(256.0f)));
      const __m512 sum = _mm512_add_ps(hi, _mm512_cvtepi32_ps(acc[h][0]));
      _mm512_storeu_ps(scores + static_cast<size_t>(h) * lds + t0,
                       _mm512_fmadd_ps(sum, _mm512_set1_ps(inv[h]), _mm512_set1_ps(qz[h])));
    }
  }
}

inline void key_scores_2bit_any(int h, const uint32_t* words, int group, int d, const uint32_t* limbs,
                                const float* inv, const float* qz, float* scores, int lds) {
  switch (h) {
    case 1: key_scores_2bit<1>(words, group, d, limbs, inv, qz, scores, lds); break;
    case 2: key_scores_2bit<2>(words, group, d, limbs, inv, qz, scores, lds); break;
    case 3: key_scores_2bit<3>(words, group, d, limbs, inv, qz, scores, lds); break;
    default: key_scores_2bit<4>(words, group, d, limbs, inv, qz, scores, lds); break;
  }
}

}  // namespace longkv::vnni

#endif

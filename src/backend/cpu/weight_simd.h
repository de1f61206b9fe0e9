// The CPU weight kernels' vector layer (internal to src/backend/cpu): the
// instruction set chosen at compile time, unaligned scalar loads, and thin
// wrappers so each kernel is written once for AVX2 and AVX-512. Included by
// weight_kernels.cpp and weight_kernels_q32.cpp.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/fp16.h"

#if defined(__AVX512F__) && defined(__F16C__)
#define LONGKV_KERNELS_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LONGKV_KERNELS_AVX2 1
#endif

#if defined(LONGKV_KERNELS_AVX512) || defined(LONGKV_KERNELS_AVX2)
// GCC 12 reports the deliberately undefined pass-through operand inside the
// AVX-512 intrinsics as (maybe) uninitialized: a false positive.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#endif

namespace longkv::cpu_simd {

// All loads below are unaligned: GGUF tensors are only 32-byte aligned and
// Q8_0/Q4_0/Q6_K blocks are 34/18/210 bytes, so block fields land anywhere.
inline float load_f16(const uint8_t* p) {
  f16_t h;
  std::memcpy(&h, p, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return f16_to_f32(h);
#endif
}

inline float load_bf16(const uint8_t* p) {
  bf16_t h;
  std::memcpy(&h, p, 2);
  return bf16_to_f32(h);
}

#if defined(LONGKV_KERNELS_AVX512) || defined(LONGKV_KERNELS_AVX2)

// ---------------------------------------------------------------------------
// A thin vector layer so each kernel is written once for both widths.

#if defined(LONGKV_KERNELS_AVX512)
constexpr int kW = 16;
using vf = __m512;
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline vf vset1(float f) { return _mm512_set1_ps(f); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
[[maybe_unused]] inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(vf v) { return _mm512_reduce_add_ps(v); }
inline vf vload_f16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline vf vload_bf16(const uint8_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline vf i8x16_to_f(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)); }
// acc + q[0..16) * x[0..16), as a vector of partial sums.
inline vf fma_i8x16(__m128i q, const float* x, vf acc) { return vfma(i8x16_to_f(q), vload(x), acc); }
// dst[0..16) = q * scale + bias.
inline void store_i8x16(__m128i q, vf scale, vf bias, float* dst) {
  vstore(dst, vfma(i8x16_to_f(q), scale, bias));
}
// A vector whose lanes sum to x[0] + ... + x[15].
[[maybe_unused]] inline vf load_sum16(const float* x) { return vload(x); }
// acc + (q * scale + bias) . x over 16 elements.
inline vf fma_affine_i8x16(__m128i q, vf scale, vf bias, const float* x, vf acc) {
  return vfma(vfma(i8x16_to_f(q), scale, bias), vload(x), acc);
}
constexpr const char* kIsa = "avx512";
#else
constexpr int kW = 8;
using vf = __m256;
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline vf vset1(float f) { return _mm256_set1_ps(f); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
[[maybe_unused]] inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(vf v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline vf vload_f16(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline vf vload_bf16(const uint8_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline vf i8x8_to_f(__m128i q) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)); }
inline vf fma_i8x16(__m128i q, const float* x, vf acc) {
  acc = vfma(i8x8_to_f(q), vload(x), acc);
  return vfma(i8x8_to_f(_mm_unpackhi_epi64(q, q)), vload(x + 8), acc);
}
inline void store_i8x16(__m128i q, vf scale, vf bias, float* dst) {
  vstore(dst, vfma(i8x8_to_f(q), scale, bias));
  vstore(dst + 8, vfma(i8x8_to_f(_mm_unpackhi_epi64(q, q)), scale, bias));
}
[[maybe_unused]] inline vf load_sum16(const float* x) { return vadd(vload(x), vload(x + 8)); }
inline vf fma_affine_i8x16(__m128i q, vf scale, vf bias, const float* x, vf acc) {
  acc = vfma(vfma(i8x8_to_f(q), scale, bias), vload(x), acc);
  return vfma(vfma(i8x8_to_f(_mm_unpackhi_epi64(q, q)), scale, bias), vload(x + 8), acc);
}
constexpr const char* kIsa = "avx2";
#endif

inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// Software prefetch this many bytes ahead of the weights being decoded. The
// quantized kernels spend several cycles per cache line, so on their own
// they keep too few misses in flight for one core to stream DRAM at full
// rate; a fixed distance of a few KiB (the L1 holds 48) covers the latency
// at the rates we decode. Rows are contiguous in a matrix, so running past
// the end of a row warms the next one; a prefetch never faults.
constexpr int kPrefetchBytes = 2048;
inline void prefetch(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
}


#endif  // LONGKV_KERNELS_AVX512 || LONGKV_KERNELS_AVX2

}  // namespace longkv::cpu_simd

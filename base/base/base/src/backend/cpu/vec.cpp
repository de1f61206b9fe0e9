#include "backend/cpu/vec.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LONGKV_VEC_AVX2 1
#endif

namespace longkv {

float vec_dot_f32_ref(const float* a, const float* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

float vec_dot_f16_ref(const float* a, const f16_t* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * f16_to_f32(b[i]);
  return static_cast<float>(s);
}

void vec_axpy_f32_ref(float* y, const float* x, float alpha, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void vec_axpy_f16_ref(float* y, const f16_t* x, float alpha, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * f16_to_f32(x[i]);
}

#if LONGKV_VEC_AVX2
static inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
#endif

float vec_dot_f32(const float* a, const float* b, int n) {
  int i = 0;
  float s = 0;
#if LONGKV_VEC_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  s = hsum256(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

float vec_dot_f16(const float* a, const f16_t* b, int n) {
  int i = 0;
  float s = 0;
#if LONGKV_VEC_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    __m256 b1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i + 8)));
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), b0, acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), b1, acc1);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 b0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), b0, acc0);
  }
  s = hsum256(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) s += a[i] * f16_to_f32(b[i]);
  return s;
}

void vec_axpy_f32(float* y, const float* x, float alpha, int n) {
  int i = 0;
#if LONGKV_VEC_AVX2
  const __m256 va = _mm256_set1_ps(alpha);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; ++i) y[i] += alpha * x[i];
}

void vec_axpy_f16(float* y, const f16_t* x, float alpha, int n) {
  int i = 0;
#if LONGKV_VEC_AVX2
  const __m256 va = _mm256_set1_ps(alpha);
  for (; i + 8 <= n; i += 8) {
    __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, xv, _mm256_loadu_ps(y + i)));
  }
#endif
  for (; i < n; ++i) y[i] += alpha * f16_to_f32(x[i]);
}

}  // namespace longkv

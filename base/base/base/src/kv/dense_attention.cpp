#include "kv/dense_attention.h"

#include <cmath>
#include <vector>

#include "backend/cpu/vec.h"

namespace longkv {

static inline float dot_any(const float* a, const float* b, int n) { return vec_dot_f32(a, b, n); }
static inline float dot_any(const float* a, const f16_t* b, int n) { return vec_dot_f16(a, b, n); }
static inline void axpy_any(float* y, const float* x, float w, int n) { vec_axpy_f32(y, x, w, n); }
static inline void axpy_any(float* y, const f16_t* x, float w, int n) { vec_axpy_f16(y, x, w, n); }
static inline double to_double(float x) { return x; }
static inline double to_double(f16_t x) { return f16_to_f32(x); }

template <typename T>
void attend_block(const float* q, int g, int d, const T* keys, const T* values, int n, float scale, float* out,
                  AttnState* states, float* scores) {
  for (int h = 0; h < g; ++h) {
    states[h] = AttnState{};
    for (int i = 0; i < d; ++i) out[h * d + i] = 0.0f;
  }
  if (n <= 0) return;
  // Scores for all heads of the group: each key row is loaded once per head
  // but stays in L1 across the g heads.
  for (int j = 0; j < n; ++j) {
    const T* kj = keys + static_cast<size_t>(j) * d;
    for (int h = 0; h < g; ++h) scores[static_cast<size_t>(h) * n + j] = dot_any(q + h * d, kj, d) * scale;
  }
  for (int h = 0; h < g; ++h) {
    float* s = scores + static_cast<size_t>(h) * n;
    float m = s[0];
    for (int j = 1; j < n; ++j) m = s[j] > m ? s[j] : m;
    float l = 0;
    for (int j = 0; j < n; ++j) {
      s[j] = std::exp(s[j] - m);
      l += s[j];
    }
    states[h].m = m;
    states[h].l = l;
  }
  for (int j = 0; j < n; ++j) {
    const T* vj = values + static_cast<size_t>(j) * d;
    for (int h = 0; h < g; ++h) axpy_any(out + h * d, vj, scores[static_cast<size_t>(h) * n + j], d);
  }
  for (int h = 0; h < g; ++h) {
    const float inv = 1.0f / states[h].l;
    for (int i = 0; i < d; ++i) out[h * d + i] *= inv;
  }
}

template <typename T>
void attend_reference(const float* q, int d, const T* keys, const T* values, int n, float scale, float* out,
                      double* lse) {
  std::vector<double> s(n);
  double m = -INFINITY;
  for (int j = 0; j < n; ++j) {
    double acc = 0;
    for (int i = 0; i < d; ++i) acc += static_cast<double>(q[i]) * to_double(keys[static_cast<size_t>(j) * d + i]);
    s[j] = acc * scale;
    m = s[j] > m ? s[j] : m;
  }
  double l = 0;
  std::vector<double> o(d, 0.0);
  for (int j = 0; j < n; ++j) {
    const double w = std::exp(s[j] - m);
    l += w;
    for (int i = 0; i < d; ++i) o[i] += w * to_double(values[static_cast<size_t>(j) * d + i]);
  }
  for (int i = 0; i < d; ++i) out[i] = static_cast<float>(n > 0 ? o[i] / l : 0.0);
  if (lse) *lse = n > 0 ? m + std::log(l) : -INFINITY;
}

template void attend_block<float>(const float*, int, int, const float*, const float*, int, float, float*,
                                  AttnState*, float*);
template void attend_block<f16_t>(const float*, int, int, const f16_t*, const f16_t*, int, float, float*,
                                  AttnState*, float*);
template void attend_reference<float>(const float*, int, const float*, const float*, int, float, float*, double*);
template void attend_reference<f16_t>(const float*, int, const f16_t*, const f16_t*, int, float, float*, double*);

}  // namespace longkv

#include <cblas.h>

namespace longkv {

void attend_tile_gemm(const float* q, int n_rows, int g, int d, int p0, const float* keys, const float* values,
                      float scale, float* out, float* lse, float* scores) {
  const int m = n_rows * g, len = p0 + n_rows;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, len, d, scale, q, d, keys, d, 0.0f, scores, len);
  for (int i = 0; i < m; ++i) {
    float* s = scores + static_cast<size_t>(i) * len;
    const int valid = p0 + i / g + 1;
    float mx = s[0];
    for (int j = 1; j < valid; ++j) mx = s[j] > mx ? s[j] : mx;
    float l = 0;
    for (int j = 0; j < valid; ++j) {
      s[j] = std::exp(s[j] - mx);
      l += s[j];
    }
    const float inv = 1.0f / l;
    for (int j = 0; j < valid; ++j) s[j] *= inv;
    for (int j = valid; j < len; ++j) s[j] = 0.0f;
    if (lse) lse[i] = mx + std::log(l);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, d, len, 1.0f, scores, len, values, d, 0.0f, out, d);
}

}  // namespace longkv

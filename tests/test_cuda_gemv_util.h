// Shared by the CUDA GEMV tests (test_cuda.cpp, test_cuda_gemv.cpp): random
// stored weights, the host's rule of the Q4_0 GEMV with int8 activations,
// the activation made in a GEMV's load, and the tolerances against them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "core/fp16.h"
#include "formats/weight_types.h"
#include "test_util.h"

namespace longkv::cuda_gemv_test {

// Random stored rows of type t (through the reference quantizer).
inline std::vector<uint8_t> random_weight(WeightType t, int rows, int cols, uint32_t seed) {
  const size_t rb = row_bytes(t, cols);
  std::vector<uint8_t> data(rb * rows);
  const auto f = test::random_floats(static_cast<size_t>(rows) * cols, seed);
  if (t == WeightType::F32) {
    std::memcpy(data.data(), f.data(), data.size());
  } else {
    for (int r = 0; r < rows; ++r)
      weight_traits(t).from_float_ref(&f[static_cast<size_t>(r) * cols], data.data() + rb * r, cols);
  }
  return data;
}

// The Q4_0 GEMV with int8 activations (CudaTuning::gemv_i8x), written from
// its documented rule (weight_decode.cuh): per 32 activations amax, dx =
// amax / 127, q = round-half-even(x * (127 / amax)), and the block's product
// d * dx * sum (n - 8) q with the integer sum exact; summed in double.
inline double dot_q4_0_i8x_ref(const void* row, const float* x, int cols) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  double s = 0;
  for (int k = 0; k < cols / kQK; ++k) {
    const float* xb = x + kQK * k;
    float amax = 0;
    for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float dx = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
    int64_t dot = 0;
    for (int i = 0; i < kQK; ++i) {
      const int n = i < 16 ? (b[k].qs[i] & 0xF) : (b[k].qs[i - 16] >> 4);
      dot += static_cast<int64_t>(n - 8) * static_cast<int>(std::nearbyint(xb[i] * inv));
    }
    s += static_cast<double>(f16_to_f32(b[k].d) * dx) * static_cast<double>(dot);
  }
  return s;
}

// What the single-token GEMV should give for row r: the exact product of the
// dequantized weights (dot_row_ref), or for Q4_0 through the slab kernel with
// int8 activations the rule above.
inline float gemv_ref(const WeightView& w, int r, const float* x, bool i8x) {
  return i8x && w.type == WeightType::Q4_0 ? static_cast<float>(dot_q4_0_i8x_ref(w.row(r), x, static_cast<int>(w.cols)))
                                            : dot_row_ref(w.type, w.row(r), x, w.cols);
}

// Tolerance of a GEMV against gemv_ref: float rounding, or with int8
// activations made from an activation the GPU computed itself (RMSNorm,
// SwiGLU: last-bit differences from the host's) one int8 value off now and
// then, each moving every row by ~1e-4 relative (exact vs int8: ~3e-5).
inline double gemv_tol(WeightType t, bool i8x, int act) { return i8x && t == WeightType::Q4_0 && act != 0 ? 1e-6 : 1e-10; }

// The GEMV's activation on the host: 0 = x, 1 = RMSNorm(x) * norm,
// 2 = SwiGLU (silu(x) * up), as the fused kernels make it in their load.
inline std::vector<float> host_act(int act, const std::vector<float>& x, const std::vector<float>& norm,
                            const std::vector<float>& up, float eps) {
  const int n = static_cast<int>(x.size());
  std::vector<float> xa(n);
  if (act == 1) {
    rmsnorm(xa.data(), x.data(), norm.data(), n, eps);
  } else {
    for (int i = 0; i < n; ++i) xa[i] = act == 2 ? x[i] / (1.0f + std::exp(-x[i])) * up[i] : x[i];
  }
  return xa;
}

}  // namespace longkv::cuda_gemv_test

// What the standalone CUDA probes (bench/cuda_*_probe.cu) share: the error
// check, the device's copy bandwidth (the bound the engine's tables use), and
// random Q4_0 rows in the GPU's split layout (weight_upload.cu: a row's 16-byte
// quant bodies, then its f16 scales). Launches go through pdl.cuh's
// launch_maybe_pdl, so a probe links src/core/error.cpp.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)

// Device-to-device copy bandwidth, read + write bytes (GB/s), printed as a line.
inline double probe_copy_bandwidth(cudaStream_t s) {
  const size_t n = size_t(2) << 30;
  void *a, *b;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemsetAsync(a, 1, n, s));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
  CK(cudaEventRecord(e0, s));
  for (int i = 0; i < 10; ++i) CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
  CK(cudaEventRecord(e1, s));
  CK(cudaEventSynchronize(e1));
  float ms;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  const double gbs = 2.0 * n * 10 / (ms * 1e-3) / 1e9;
  std::printf("copy bandwidth: %.1f GB/s (2 x bytes / time)\n\n", gbs);
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaFree(a));
  CK(cudaFree(b));
  return gbs;
}

// `rows` random Q4_0 rows of nb blocks into dst (row stride 18 nb bytes):
// random nibbles, scales uniform in [d_min, d_min + 0.002).
inline void random_q4_0_rows(std::mt19937& rng, uint8_t* dst, int rows, int nb, float d_min) {
  const size_t ld = size_t(nb) * 18;
  for (int r = 0; r < rows; ++r) {
    uint8_t* row = dst + r * ld;
    for (int i = 0; i < 16 * nb; ++i) row[i] = static_cast<uint8_t>(rng());
    for (int b = 0; b < nb; ++b) {
      const __half d = __float2half(d_min + 0.002f * (rng() % 1000) / 1000.0f);
      std::memcpy(row + 16 * nb + 2 * b, &d, 2);
    }
  }
}

// Relative RMS of a against ref: sqrt(sum (a - ref)^2 / sum ref^2).
inline double rel_rms(const std::vector<float>& a, const std::vector<float>& ref) {
  double e = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    n += double(ref[i]) * ref[i];
  }
  return std::sqrt(e / n);
}

// Microseconds an iteration of launch(0) .. launch(iters - 1) on stream s,
// timed with events around all of them.
template <typename F>
float time_us(cudaStream_t s, int iters, F&& launch) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a, s));
  for (int i = 0; i < iters; ++i) launch(i);
  CK(cudaEventRecord(b, s));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return 1000.0f * ms / iters;
}

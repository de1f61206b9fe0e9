// The device queries of the CUDA backend's seam (cuda_backend.h): whether a
// usable GPU is present and why not, its name and memory, and the copy
// bandwidth the decode roofline is measured against. (Moved from
// cuda_model.cu in milestone 50, which brought that file to its size limit.)
#include <cstdio>
#include <string>

#include "backend/cuda/cuda_common.cuh"

namespace longkv {

bool cuda_available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    if (why) *why = std::string("no CUDA device: ") + (e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    return false;
  }
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, 0) == cudaSuccess && p.major < 9) {
    if (why)
      *why = "CUDA device " + std::string(p.name) + " has compute capability " + std::to_string(p.major) + "." +
             std::to_string(p.minor) + "; longkv is built for sm_90";
    return false;
  }
  return true;
}

std::string cuda_device_description() {
  std::string why;
  LONGKV_CHECK(cuda_available(&why), "%s", why.c_str());
  cudaDeviceProp p;
  LONGKV_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", p.totalGlobalMem / 1073741824.0);
  return std::string(p.name) + ", " + std::to_string(p.multiProcessorCount) + " SMs, " + mem;
}

void cuda_memory_info(size_t* free_bytes, size_t* total_bytes) {
  size_t f = 0, t = 0;
  LONGKV_CUDA_CHECK(cudaMemGetInfo(&f, &t));
  if (free_bytes) *free_bytes = f;
  if (total_bytes) *total_bytes = t;
}

double cuda_copy_bandwidth_gbs(size_t bytes) {
  using namespace cuda;
  DeviceBuffer a(bytes), b(bytes);
  LONGKV_CUDA_CHECK(cudaMemset(a.as(), 1, bytes));
  LONGKV_CUDA_CHECK(cudaMemset(b.as(), 2, bytes));
  cudaEvent_t e0, e1;
  LONGKV_CUDA_CHECK(cudaEventCreate(&e0));
  LONGKV_CUDA_CHECK(cudaEventCreate(&e1));
  float best = 1e30f;
  for (int i = 0; i < 8; ++i) {
    LONGKV_CUDA_CHECK(cudaEventRecord(e0));
    LONGKV_CUDA_CHECK(cudaMemcpy(b.as(), a.as(), bytes, cudaMemcpyDeviceToDevice));
    LONGKV_CUDA_CHECK(cudaEventRecord(e1));
    LONGKV_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    LONGKV_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (i > 0) best = std::min(best, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 2.0 * bytes / (best * 1e-3) / 1e9;
}

}  // namespace longkv

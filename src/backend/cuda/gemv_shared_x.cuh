// The Q4_0 int8 GEMV with its activation made once a block for several row
// groups (gemv_shared_x.cu, milestone 34; CudaTuning::gemv_shared_x).
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/cuda_common.cuh"

namespace longkv::cuda {

// Whether the shared-x kernel takes this GEMV: Q4_0 rows of 32 k units
// (k <= 8), the plain or RMSNorm activation, no RoPE in the store, even rows
// for SwiGLU in the store.
bool gemv_shared_x_takes(const GpuWeight& w, const GemvAct& a);
// Launches it if CudaTuning::gemv_shared_x is on and it takes the GEMV;
// false (nothing launched) otherwise.
bool launch_gemv_shared_x(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s);

}  // namespace longkv::cuda

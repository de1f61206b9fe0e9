// Programmatic dependent launch (PDL, sm_90): a kernel launched with
// launch_maybe_pdl(true, ...) may start while the kernel before it in the
// stream is still running, once every block of that one has called
// pdl_trigger() (or exited). Until it calls pdl_wait() it must not read
// anything an earlier kernel writes, nor write anything: only constant data
// (weights) may be touched before the wait, which returns once the previous
// grid has completed and its memory is visible. Since that grid had itself
// passed its own wait, every earlier kernel in the stream is complete too.
//
// Both hooks are no-ops in a kernel launched without the attribute, so a
// kernel can carry them and be launched either way (CudaTuning::pdl). The
// attribute is kept inside CUDA graph capture (programmatic edges).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_common.cuh"

namespace longkv::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, s>>>(args...), with programmatic stream
// serialization allowed when `pdl`.
template <typename... KArgs, typename... Args>
void launch_maybe_pdl(bool pdl, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                      Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  LONGKV_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace longkv::cuda

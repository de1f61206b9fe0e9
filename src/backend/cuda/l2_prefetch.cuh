// L2 prefetch of a later launch's weights (milestone 20, CudaTuning::l2_next).
//
// A single-token step is a chain of kernels, and most links leave DRAM idle
// for part of their time: the small GEMVs (q|k|v, wo) are bound by their
// dependency chain, not their bytes (cuda-notes milestone 17: 3-4x their
// bytes' time in the pipeline), the attention at depth 0 reads almost
// nothing, and the quantized v3 kernel at 131K runs at ~40% of DRAM
// bandwidth for ~57 us a layer. A kernel given an L2Range asks for those
// bytes with prefetch instructions: no registers, no shared memory, nothing
// waits for them, and the kernel that reads the bytes later finds them in L2
// (50 MB on H100/H200) instead of DRAM. Weights never change during a step,
// so the request is safe at any time, also before a PDL wait.
#pragma once

#include <cstddef>
#include <cstdint>

namespace longkv::cuda {

// Bytes [p, p + bytes) of device memory that a later launch reads.
struct L2Range {
  const uint8_t* p = nullptr;
  size_t bytes = 0;
  bool evict_last = false;  // L2 eviction priority of the prefetched lines (CudaTuning::l2_evict_last)
};

#if defined(__CUDACC__)
// Part `part` of `parts` of r (whole 128-byte lines, consecutive parts
// adjacent) requested into L2, one line per thread and step over the
// `n_threads` threads that call this with their index `tid`.
__device__ __forceinline__ void l2_prefetch_part(const L2Range& r, int part, int parts, int tid, int n_threads) {
  if (r.bytes == 0 || parts <= 0) return;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(r.p) & ~uintptr_t(127);
  const size_t lines = (reinterpret_cast<uintptr_t>(r.p) + r.bytes - a0 + 127) / 128;
  const size_t per = (lines + parts - 1) / parts;
  const size_t l0 = per * part, l1 = l0 + per < lines ? l0 + per : lines;
  for (size_t i = l0 + tid; i < l1; i += n_threads) {
    const uintptr_t a = a0 + 128 * i;
    if (r.evict_last) asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(a));
    else asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
  }
}
#endif

}  // namespace longkv::cuda

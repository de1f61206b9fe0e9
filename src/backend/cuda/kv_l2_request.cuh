// L2 requests for the record runs a quantized cache's attention will read
// first (KvL2Runs, cuda_common.cuh; CudaTuning::kv_l2_groups, milestone 44).
// A GEMV issues them before its PDL wait: the q|k|v GEMV of a long-context
// step moves ~14 MB of weights in ~8 us, where DRAM could move ~35 MB, and
// the v3 launch two kernels later streams the cache at well below the copy
// bandwidth. Requests only: nothing waits for them and no result depends on
// them (a line not in L2 when v3 copies it comes from DRAM as before).
#pragma once

#include <cstdint>

#include "backend/cuda/cuda_common.cuh"

namespace longkv::cuda {

// Run i's first byte and length (0: the split starts past the groups).
__device__ __forceinline__ const uint8_t* kv_l2_run(const KvL2Runs& r, int i, int* bytes) {
  const int a = i & 1, w = i >> 1;
  const int head = w / r.n_splits, g0 = (w % r.n_splits) * r.gps;
  const int n = min(r.groups, r.n_groups - g0);
  *bytes = n > 0 ? n * r.rec[a] : 0;
  return r.base[a] + head * r.head_bytes[a] + static_cast<int64_t>(g0) * r.rec[a];
}

// Called by every thread of the grid (thread t of T): one bulk request a
// run for t < runs, or (mode & 1) the runs' 128-byte lines strided over T.
__device__ __forceinline__ void request_kv_l2(const KvL2Runs& r, int t, int T) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const bool last = r.mode & 2;
  if (!(r.mode & 1)) {
    if (t >= r.runs()) return;
    int bytes = 0;
    const uint8_t* p = kv_l2_run(r, t, &bytes);
    if (bytes == 0) return;
    if (last) {
      uint64_t pol;
      asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
      asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(p), "r"(bytes), "l"(pol)
                   : "memory");
    } else {
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
    }
    return;
  }
  const int lines = r.groups * max(r.rec[0], r.rec[1]) / 128;  // a run's line slots
  for (int j = t; j < r.runs() * lines; j += T) {
    int bytes = 0;
    const uint8_t* p = kv_l2_run(r, j / lines, &bytes);
    const int off = (j % lines) * 128;
    if (off >= bytes) continue;
    if (last) asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(p + off));
    else asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
  }
#endif
}

}  // namespace longkv::cuda

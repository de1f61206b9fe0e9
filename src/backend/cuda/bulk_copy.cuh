// Bulk (TMA) copies from global into shared memory that complete on an
// mbarrier (sm_90): one thread hands a whole contiguous piece to the copy
// engine with one instruction, and the bytes do not wait in the SM's
// per-thread load slots. Used by bench/cuda_barrier_probe.cu (milestone 21);
// milestone 31 measured them for the down GEMV's second row batch (slower,
// not kept); bench/cuda_stream_probe.cu's kernels (milestone 45) with plain
// arrivals (mbar_arrive) for the stages' release and bounded waits (mbar_try).
//
// Protocol: one thread inits the barrier (count 1) and fences the init; the
// block syncs; one thread announces the bytes (mbar_arrive_expect) and then
// copies are issued (16-byte aligned addresses, sizes multiples of 16, the
// total < 2^20); every reader waits for the phase (mbar_wait, parity 0 the
// first time) before it reads the bytes.
#pragma once

#include <cstdint>

#include "backend/cuda/kv_quant_mma.cuh"

namespace longkv::cuda {

__device__ __forceinline__ void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Orders the block's earlier shared-memory reads (after a barrier) before this
// thread's later bulk copies (the async proxy).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void bulk_copy(void* smem, const void* gmem, unsigned bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_u32(smem)),
               "l"(gmem), "r"(bytes), "r"(smem_u32(bar))
               : "memory");
}
// A plain arrival (no bytes announced): a consumer releasing a stage.
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// One test of the phase (mbar_wait without the loop): for a caller that
// bounds or interleaves its waiting.
__device__ __forceinline__ bool mbar_try(uint64_t* bar, unsigned parity) {
  unsigned ok;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(ok)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
  return ok != 0;
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT_%=;\n}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

}  // namespace longkv::cuda

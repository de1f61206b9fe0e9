// L2 residency of the weights after a quantized attention (cuda-notes
// milestone 23; CudaTuning::l2_weights_mib, kv_evict_first).
//
// At depth the quantized step's v3 kernel runs for ~57 us a layer at ~40% of
// DRAM bandwidth (k2v2, 131K tokens on H200): it is bound by its instructions,
// not its bytes, and DRAM has room for ~100 MB more in that time. The GEMVs
// after it (wo, then gate|up) are bound by their bytes and their dependency
// chain. So v3 can request the first MiB of those weights into L2 while it
// runs, and the GEMVs then find them there.
//
// Milestone 20 tried this without a cache policy on the KV stream and gained
// nothing: a v3 launch streams ~100 MB of codes through the 50 MB L2, which
// evicts the early requests before wo reads them. Here the code records can
// be copied with L2 priority evict_first, so the stream replaces itself and
// leaves lines of normal priority (the requested weights) in place.
#pragma once

#include <cstddef>
#include <cstdint>

namespace longkv::cuda {

// Up to two byte ranges of device memory that later launches read, taken in
// order as one sequence (wo's bytes, then the first part of gate|up's), in
// 16-byte granules; share = granules a requester takes (set by the launch).
struct L2Ranges {
  const uint8_t* p[2] = {nullptr, nullptr};
  uint32_t n16[2] = {0, 0};
  uint32_t share = 0;
  bool evict_last = false;  // the requested lines with priority evict_last (else normal)
  __host__ __device__ uint32_t total16() const { return n16[0] + n16[1]; }
  // share for `parts` requesters
  void split(uint32_t parts) { share = parts ? (total16() + parts - 1) / parts : 0; }
};

#if defined(__CUDACC__)
// Share `part` of r (consecutive shares adjacent) requested into L2 by the
// calling thread: one bulk prefetch (cp.async.bulk.prefetch.L2, sm_90: the
// copy engine walks the range) per range the share touches, so at most two
// instructions. Ranges start 16-byte aligned (weights are); nothing waits
// for the bytes. 32-bit arithmetic: < 64 GiB.
__device__ __forceinline__ void l2_request_share(const L2Ranges& r, uint32_t part) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint32_t t = r.total16(), u0 = r.share * part, u1 = min(u0 + r.share, t);
  if (u0 >= u1) return;
  uint64_t pol = 0;
  if (r.evict_last) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
  // [u0, u1) split at the end of range 0
  const uint32_t a0 = u0, a1 = min(u1, r.n16[0]), b0 = max(u0, r.n16[0]), b1 = u1;
  const uint8_t* ps[2] = {r.p[0] + 16 * static_cast<size_t>(a0), r.p[1] + 16 * static_cast<size_t>(b0 - r.n16[0])};
  const uint32_t ns[2] = {a1 > a0 ? 16 * (a1 - a0) : 0u, b1 > b0 ? 16 * (b1 - b0) : 0u};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (ns[i] == 0) continue;
    if (r.evict_last)
      asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(ps[i]), "r"(ns[i]), "l"(pol)
                   : "memory");
    else
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(ps[i]), "r"(ns[i]) : "memory");
  }
#endif
}

// The L2 policy of a streamed read: evict_first (read once, leave the rest of
// L2 alone) or evict_normal (the priority a plain copy gets).
__device__ __forceinline__ uint64_t l2_stream_policy(bool evict_first) {
  uint64_t pol;
  if (evict_first) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  else asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}

// cp_async16 (kv_quant_mma.cuh) with an L2 policy from l2_stream_policy.
__device__ __forceinline__ void cp_async16_policy(void* smem, const void* gmem, uint64_t pol) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "l"(pol)
               : "memory");
}
#endif

}  // namespace longkv::cuda

// A row's top-k candidates on the device (milestone 30), for sampling with
// a top-k cut: the host then draws from k candidates (Sampler::sample_top)
// instead of copying and sorting the whole row of logits -- for llama3's
// 128,256 logits a 501 KiB copy and ~0.1 ms of host sorting a step, with
// the GPU idle meanwhile.
//
// Order: logit_key (cuda_common.cuh), i.e. larger logits first and equal
// logits by the lower id, as candidate_before (sampler.h); NaN lowest.
//
// Two launches. top_k_slices_kernel: block b sorts the keys of logits
// [b kSlice, (b + 1) kSlice) in shared memory (a bitonic network) and keeps
// its first k. top_k_merge_kernel: one block sorts the blocks' k-lists the
// same way and keeps the first k. The top k of the row are among the
// blocks' top k, so the result is exact; keys are unique (the id is in the
// key), so it does not depend on the order of equal logits in memory.
#include <algorithm>

#include "backend/cuda/cuda_common.cuh"

namespace longkv::cuda {
namespace {

constexpr int kSlice = 2048;          // logits a block of the first launch
constexpr int kSliceThreads = 256;
constexpr int kMergeThreads = 1024;
constexpr int kMaxMergeKeys = 16384;  // 128 KiB of keys in the second launch

// Sorts keys[0, n) (n a power of two) in descending order; all of the
// block's threads call it, and it ends with the block synchronized.
__device__ void bitonic_sort_desc(unsigned long long* keys, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
        const int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
        // Runs with bit `size` of their start clear end descending, the
        // others ascending, so the last merge (size == n) is descending.
        const bool desc = (lo & size) == 0;
        const unsigned long long a = keys[lo], b = keys[hi];
        if ((a < b) == desc) {
          keys[lo] = b;
          keys[hi] = a;
        }
      }
      __syncthreads();
    }
  }
}

__global__ void __launch_bounds__(kSliceThreads) top_k_slices_kernel(const float* __restrict__ x, int n, int k,
                                                                     unsigned long long* __restrict__ part) {
  __shared__ unsigned long long keys[kSlice];
  const int base = blockIdx.x * kSlice;
  for (int j = threadIdx.x; j < kSlice; j += kSliceThreads)
    keys[j] = base + j < n ? logit_key(x[base + j], base + j) : 0ull;  // 0: below every logit, NaN too
  __syncthreads();
  bitonic_sort_desc(keys, kSlice);
  for (int j = threadIdx.x; j < k; j += kSliceThreads) part[static_cast<size_t>(blockIdx.x) * k + j] = keys[j];
}

__global__ void __launch_bounds__(kMergeThreads) top_k_merge_kernel(const unsigned long long* __restrict__ part,
                                                                    int n_part, int n_pow2, int k,
                                                                    unsigned long long* __restrict__ out) {
  extern __shared__ unsigned long long mkeys[];
  for (int j = threadIdx.x; j < n_pow2; j += kMergeThreads) mkeys[j] = j < n_part ? part[j] : 0ull;
  __syncthreads();
  bitonic_sort_desc(mkeys, n_pow2);
  for (int j = threadIdx.x; j < k; j += kMergeThreads) out[j] = mkeys[j];
}

int slices(int n) { return (n + kSlice - 1) / kSlice; }

}  // namespace

size_t top_k_scratch_keys(int n, int k) { return static_cast<size_t>(slices(n)) * k; }

void top_k_keys(const float* x, int n, int k, unsigned long long* part, unsigned long long* out, cudaStream_t s) {
  const int b = slices(n);
  int n_pow2 = 1;
  while (n_pow2 < b * k) n_pow2 <<= 1;
  LONGKV_CHECK(k >= 1 && k <= kMaxDeviceTopK && k <= n && n_pow2 <= kMaxMergeKeys,
               "top_k_keys: k = %d of %d logits (1 <= k <= min(%d, n), at most %d blocks' lists)", k, n,
               kMaxDeviceTopK, kMaxMergeKeys / std::max(k, 1));
  top_k_slices_kernel<<<b, kSliceThreads, 0, s>>>(x, n, k, part);
  LONGKV_CUDA_CHECK(cudaGetLastError());
  const size_t smem = sizeof(unsigned long long) * n_pow2;
  static const bool opted_in = [] {
    LONGKV_CUDA_CHECK(cudaFuncSetAttribute(top_k_merge_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(sizeof(unsigned long long) * kMaxMergeKeys)));
    return true;
  }();
  (void)opted_in;
  top_k_merge_kernel<<<1, kMergeThreads, smem, s>>>(part, b * k, n_pow2, k, out);
  LONGKV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace longkv::cuda

// What CPU code (tests) may call of the FlashAttention prefill kernel
// (flash_prefill.cu) without CUDA headers: a one-layer speed comparison with
// the cuBLAS path. Only in builds with -DLONGKV_CUDA=ON (LONGKV_HAVE_CUDA);
// the kernel itself is reached through the KV caches' attend().
#pragma once

#include "kv/kv_cache.h"

namespace longkv {

// Causal attention of the last n_q of n_ctx tokens for one layer of shape s
// (keys/values normal(0, 1) in the dense f16 layout, queries uniform in
// [-1, 1)), once through the cuBLAS path (S materialized) and once through
// the flash kernel, on the same inputs. Times are medians of `reps` calls
// (device events); flops = 4 * head_dim * n_heads * sum over rows of the
// keys each sees; nmse = ||flash - cublas||^2 / ||cublas||^2.
struct CudaPrefillSpeed {
  double cublas_ms = 0, flash_ms = 0;
  double flops = 0;
  double nmse = 0;
};
CudaPrefillSpeed cuda_bench_prefill_attention(const KvShape& s, int n_ctx, int n_q, int reps);

}  // namespace longkv

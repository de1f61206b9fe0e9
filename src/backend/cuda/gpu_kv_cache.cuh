// The KV-cache contract on the GPU (mirrors kv/kv_cache.h with device
// pointers and a stream): one cache holds one sequence's keys and values for
// one layer in device memory. The model calls append() and attend() per
// layer and never sees the storage, so quantized GPU caches slot in behind
// make_gpu_kv_cache() without touching the model.
#pragma once

#include <memory>
#include <string>

#include "backend/cuda/cuda_common.cuh"
#include "kv/kv_cache.h"

namespace longkv::cuda {

// Scratch shared by the caches of a model (they run one after the other).
struct GpuAttnWorkspace {
  cublasHandle_t cublas = nullptr;
  CudaGemm gemm = CudaGemm::f16;
  DeviceBuffer a, b, c, d, e;
};

class GpuKvCache {
 public:
  virtual ~GpuKvCache() = default;
  // k, v: device f32 [n][n_kv_heads][head_dim], keys after RoPE.
  virtual void append(const float* k, const float* v, int n, cudaStream_t s) = 0;
  // Causal attention of the queries of the last n_q appended tokens (device
  // f32 [n_q][n_heads][head_dim]) over everything held -> out, same shape.
  virtual void attend(const float* q, int n_q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) = 0;
  // Appends n tokens of random keys/values (synthetic long contexts).
  virtual void fill_random(int n, uint64_t seed, cudaStream_t s) = 0;
  virtual KvFootprint footprint() const = 0;
  virtual int size() const = 0;
  virtual void clear() = 0;
  virtual std::string mode() const = 0;
  const KvShape& shape() const { return shape_; }

 protected:
  explicit GpuKvCache(const KvShape& s) : shape_(s) {}
  KvShape shape_;
};

// GPU KV modes: "f16" (dense). Throws Error naming the supported modes.
std::unique_ptr<GpuKvCache> make_gpu_kv_cache(const std::string& mode, const KvShape& s);

// --- dense f16 attention kernels (attention.cu) ------------------------------
// Dense layout: K and V each [n_kv_heads][max_tokens][head_dim] f16, so one KV
// head's tokens are contiguous (head stride max_tokens * head_dim elements).
struct DenseKvView {
  const __half* k = nullptr;
  const __half* v = nullptr;
  int n_kv_heads = 0, group = 0, head_dim = 0;
  int max_tokens = 0;  // head stride in tokens
  int n_tokens = 0;    // tokens held (including the queries' own)
};

// One query row (n_q == 1): split-K flash-decoding with a merge of splits.
void attend_decode_dense(const DenseKvView& kv, const float* q, float* out, GpuAttnWorkspace& ws, cudaStream_t s);
// Splits the decode kernel uses for n_tokens (and tokens per split).
int decode_splits_for(int n_kv_heads, int n_tokens, int* tps);
// n_q rows at positions n_tokens - n_q ..: S = Q K^T and O = P V through
// cuBLAS with a causal softmax in between.
void attend_prefill_dense(const DenseKvView& kv, const float* q, int n_q, float* out, GpuAttnWorkspace& ws,
                          cudaStream_t s);
// Writes n tokens of f32 k/v [n][n_kv_heads][head_dim] at token `pos`.
void append_dense(__half* k_cache, __half* v_cache, int n_kv_heads, int head_dim, int max_tokens, int pos,
                  const float* k, const float* v, int n, cudaStream_t s);

}  // namespace longkv::cuda

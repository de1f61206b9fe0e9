// The decode block's launch arguments (attention_block_kernel.cuh): the
// f16 cache's one-launch step and a quantized cache's fp16 part. Apart from
// the kernel header so that the host code that fills them (a batched step's
// one launch, kv_quant_gpu.cu) need not include the kernels.
#pragma once

#include "backend/cuda/gpu_kv_cache.cuh"

namespace longkv::cuda::attn_block {

struct DecodeBlockArgs {
  __half* kc = nullptr;
  __half* vc = nullptr;
  int n_kv = 0, max_tokens = 0;
  const int* dpos = nullptr;  // the new token's position (= tokens before it)
  // Slot of the new token = *dpos + tok_add (its RoPE angle stays *dpos):
  // 0 for the f16 cache; minus the tokens held as codes for a quantized
  // cache's fp16 part (milestone 15).
  int tok_add = 0;
  // Milestone 15: ext > 0 = the fp16 part of a quantized cache, launched
  // just before the quantized kernel (PDL), which writes its block partials
  // at indices [0, ext) of each head's ext + 1 and merges them with this
  // launch's own (one block per KV head) at index ext. 0: the f16 step.
  int ext = 0;
  int n_splits = 0;           // per KV head, a multiple of kBlkWarps
  const float* q = nullptr;   // [n_kv * G][D], before RoPE
  const float* k = nullptr;   // [n_kv][D], before RoPE
  const float* v = nullptr;   // [n_kv][D]
  DecodeRope rope;
  float scale = 1;
  float* part_o = nullptr;    // [n_heads][n_splits / kBlkWarps][D], unnormalized
  float* part_ml = nullptr;   // [n_heads][n_splits / kBlkWarps][2]
  int* tickets = nullptr;     // [n_kv], 0 between launches
  float* out = nullptr;       // [n_heads][D]
};

}  // namespace longkv::cuda::attn_block

namespace longkv::cuda {

// The arguments of decode_block_dense's first launch of a quantized step
// (ext_parts > 0, one block per KV head; checked as there), not launched.
attn_block::DecodeBlockArgs decode_block_ext_args(__half* k_cache, __half* v_cache, const DenseKvView& kv,
                                                  const float* q, const float* k, const float* v,
                                                  const DecodeRope& rope, float* out, GpuAttnWorkspace& ws,
                                                  int ext_parts);
// A batched step's such launches in one (milestone 55): sequence i's from
// a[i] as blockIdx.y = i, n <= kMaxBatchSeqs, all of one head_dim and
// group; launched with PDL as decode_block_dense's (the v3 launch follows).
void launch_decode_block_batch(const attn_block::DecodeBlockArgs* a, int n, int group, int head_dim,
                               cudaStream_t s);

}  // namespace longkv::cuda

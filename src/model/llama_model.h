// The Llama-family forward pass (Llama 2/3, Mistral, Qwen2), written once
// against the CPU ops and the KvCache contract.
//
// f32 activations; weights in their stored formats. A forward call
// processes a chunk of consecutive tokens: matrices go through the GEMM path
// (matmul) for chunks and the GEMV path (matvec) for single tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/rope.h"
#include "core/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/model_weights.h"

namespace longkv {

// Where the time of forward calls went (accumulated).
struct ForwardTimings {
  double attention_s = 0;  // inside KvCache::append + attend
  double total_s = 0;
};

class LlamaModel {
 public:
  // `weights` must outlive the model.
  LlamaModel(const ModelWeights& weights, ThreadPool& pool);

  const ModelConfig& config() const { return w_.cfg; }
  const ModelWeights& weights() const { return w_; }
  KvShape kv_shape(int max_tokens) const;

  // One cache per layer built from a mode string.
  std::vector<std::unique_ptr<KvCache>> make_caches(const std::string& kv_mode, int max_tokens) const;

  // Runs tokens[0..n) at positions pos..pos+n-1; every cache must hold
  // exactly `pos` tokens. logits: [n][n_vocab] if all_logits, else
  // [n_vocab] for the last token; may be null (prefill without output).
  void forward(const int32_t* tokens, int n, int pos, std::vector<std::unique_ptr<KvCache>>& caches,
               float* logits, bool all_logits);
  // Batched decode: token i of sequence i (its caches seqs[i], each at its
  // own position, the tokens they hold) for n sequences at once, so that
  // each matrix is read once for all n tokens (the GEMM path); each token
  // attends over its own sequence's caches. logits: [n][n_vocab].
  void forward_batch(const int32_t* tokens, int n, std::vector<std::unique_ptr<KvCache>>* const* seqs,
                     float* logits);

  ForwardTimings& timings() { return timings_; }

 private:
  // Consecutive token rows of one sequence: its caches, the position of the
  // first row, the rows.
  struct Segment {
    std::vector<std::unique_ptr<KvCache>>* caches;
    int pos, n;
  };
  // The forward pass over the rows of every segment (n in all): the matrices
  // once for all rows, RoPE, append and attention segment by segment.
  void run_segments(const int32_t* tokens, int n, const std::vector<Segment>& segs, float* logits, bool all_logits);
  void ensure_scratch(int n);

  const ModelWeights& w_;
  ThreadPool& pool_;
  RopeTable rope_;
  ForwardTimings timings_;
  int scratch_n_ = 0;
  std::vector<float> x_, xb_, q_, k_, v_, att_, tmp_, gate_, up_;
};

}  // namespace longkv

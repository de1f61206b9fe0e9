// The KV-cache contract (../shared/DESIGN.md): how the model talks to any
// way of keeping keys and values. The model never knows the storage; the
// cache never knows the model.
//
// One KvCache holds one sequence's keys and values for one layer.
// Threading: calls come from one thread; implementations may use the
// ThreadPool they were built with inside a call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rope.h"
#include "core/thread_pool.h"

namespace longkv {

struct KvShape {
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads (n_heads % n_kv_heads == 0)
  int head_dim = 0;
  int max_tokens = 0;  // capacity; append beyond it is an error
  // The model's RoPE (non-owning), for caches that store pre-RoPE keys and
  // rotate them at attention time; null when the model did not provide it.
  const RopeTable* rope = nullptr;

  int group() const { return n_heads / n_kv_heads; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int q_dim() const { return n_heads * head_dim; }
};

// Memory actually held by a cache, by tier, and what it means per element.
struct KvFootprint {
  size_t gpu_bytes = 0;
  size_t cpu_bytes = 0;      // bytes allocated for the tokens held (plus fixed overheads)
  size_t capacity_bytes = 0; // bytes reserved for max_tokens
  int64_t tokens = 0;
  double k_bits = 0;         // bits per key element, everything counted
  double v_bits = 0;         // bits per value element, everything counted

  size_t bytes() const { return gpu_bytes + cpu_bytes; }

  // Adds one layer's footprint: bytes add up; tokens and bits per element
  // are the layer's (every layer of a model uses the same mode).
  void add_layer(const KvFootprint& layer) {
    gpu_bytes += layer.gpu_bytes;
    cpu_bytes += layer.cpu_bytes;
    capacity_bytes += layer.capacity_bytes;
    tokens = layer.tokens;
    k_bits = layer.k_bits;
    v_bits = layer.v_bits;
  }
};

// Optional per-call outputs of attend().
struct AttendStats {
  // [n_q][n_heads] natural-log sum of exp(scaled scores) per query row and
  // head (the "l" of the merge state after folding in "m"), if non-null.
  float* lse = nullptr;
  // [n_kv_heads][n_tokens] attention mass per cached token summed over the
  // query rows and the heads of each KV group, if non-null (anchor scores).
  float* token_mass = nullptr;
};

class KvCache {
 public:
  virtual ~KvCache() = default;

  // Appends n tokens at positions size() .. size() + n - 1: k and v are
  // [n][n_kv_heads][head_dim]; keys after RoPE unless wants_pre_rope_keys().
  virtual void append(const float* k, const float* v, int n) = 0;

  // True if append() expects keys before RoPE (the cache rotates them with
  // shape().rope when it attends: KVQuant-style pre-RoPE quantization).
  virtual bool wants_pre_rope_keys() const { return false; }

  // Causal attention of n_q query rows q [n_q][n_heads][head_dim] (the
  // queries of the LAST n_q appended tokens, in order) against all tokens
  // held; out is [n_q][n_heads][head_dim]. Scores are scaled by 1/sqrt(d).
  virtual void attend(const float* q, int n_q, float* out, AttendStats* stats) = 0;

  virtual KvFootprint footprint() const = 0;
  virtual int size() const = 0;  // tokens held
  virtual void clear() = 0;
  // The mode string this cache was built from, fully spelled out.
  virtual std::string mode() const = 0;
  const KvShape& shape() const { return shape_; }

 protected:
  explicit KvCache(const KvShape& shape) : shape_(shape) {}
  KvShape shape_;
};

// Footprint of a model's caches (one per layer) added up (KvFootprint::add_layer).
KvFootprint total_footprint(const std::vector<std::unique_ptr<KvCache>>& caches);

// Parses a mode string ("f32", "f16") and builds a cache; throws Error with
// the accepted grammar on an unknown mode.
std::unique_ptr<KvCache> make_kv_cache(const std::string& mode, const KvShape& shape, ThreadPool& pool);

// Bytes per token a mode would use (without allocating), for inspect/bench.
double kv_mode_bytes_per_token(const std::string& mode, const KvShape& shape);

}  // namespace longkv

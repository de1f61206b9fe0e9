// Dense KV caches (f32, f16): the uncompressed baseline every other mode is
// measured against, and the numerics reference for attention.
//
// Layout: keys and values each [n_kv_heads][max_tokens][head_dim] so one
// head's tokens are contiguous for the attention scan. Memory is reserved
// for max_tokens up front (virtual memory; pages are touched as tokens come).
#pragma once

#include <memory>

#include "core/fp16.h"
#include "core/huge_array.h"
#include "kv/kv_cache.h"

namespace longkv {

template <typename T>  // float or f16_t
class DenseKvCache final : public KvCache {
 public:
  DenseKvCache(const KvShape& shape, ThreadPool& pool);

  void append(const float* k, const float* v, int n) override;
  void attend(const float* q, int n_q, float* out, AttendStats* stats) override;
  KvFootprint footprint() const override;
  int size() const override { return n_tokens_; }
  void clear() override { n_tokens_ = 0; }
  std::string mode() const override;

  // Read back one stored key/value as f32 (tests, conversions).
  void get_k(int kv_head, int token, float* dst) const;
  void get_v(int kv_head, int token, float* dst) const;

 private:
  size_t offset(int kv_head, int token) const {
    return (static_cast<size_t>(kv_head) * shape_.max_tokens + token) * shape_.head_dim;
  }
  ThreadPool& pool_;
  HugeArray<T> k_, v_;
  int n_tokens_ = 0;
};

using DenseKvCacheF32 = DenseKvCache<float>;
using DenseKvCacheF16 = DenseKvCache<f16_t>;

}  // namespace longkv

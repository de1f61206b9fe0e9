// A KV cache seen through an orthonormal Hadamard rotation of every head:
// keys and values are stored as H k and H v, queries are rotated the same
// way and outputs rotated back (H is symmetric and H H = I, so q.k =
// (Hq).(Hk) and sum_j p_j v_j = H sum_j p_j (H v_j)). Attention is
// unchanged except for how the stored form is quantized: the rotation
// spreads each vector's outlier channels over all channels, so 2-bit codes
// lose much less (QuaRot / SpinQuant make the same observation for LLM
// activations). Mode field ":rot"; needs keys after RoPE and a power-of-two
// head dimension.
#pragma once

#include <memory>
#include <vector>

#include "kv/kv_cache.h"

namespace longkv {

// In-place normalized fast Walsh-Hadamard transform of x[d], d a power of
// two (its own inverse).
void hadamard_rotate(float* x, int d);

class RotatedKvCache final : public KvCache {
 public:
  // Wraps `inner` (which stores the rotated vectors).
  explicit RotatedKvCache(std::unique_ptr<KvCache> inner);

  void append(const float* k, const float* v, int n) override;
  void attend(const float* q, int n_q, float* out, AttendStats* stats) override;
  KvFootprint footprint() const override { return inner_->footprint(); }
  int size() const override { return inner_->size(); }
  void clear() override { inner_->clear(); }
  std::string mode() const override;
  const KvCache& inner() const { return *inner_; }

 private:
  std::unique_ptr<KvCache> inner_;
  std::vector<float> kbuf_, vbuf_, qbuf_;
};

}  // namespace longkv

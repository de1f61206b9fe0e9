// Attention fidelity (../shared/DESIGN.md, evaluation protocol): the relative
// error of a KV mode's attention outputs against dense attention, per layer.
//
// A ShadowCache is one layer's reference cache (dense: f32 or f16) that hands
// every append and every query to other caches ("shadows") as well, and
// measures their outputs against its own. The model only ever sees the
// reference's outputs, so every layer's inputs are those of the reference
// run: a shadow's error at layer l is what its own compression does to that
// layer's attention, not an error carried up from the layers below (which
// is what perplexity measures). The shadows see exactly the calls a model
// run with their mode would make (the same chunks, the same queries), so
// their fp16 windows, sinks and group cuts behave as in such a run.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kv/kv_cache.h"

namespace longkv {

// Sums over every query row and head a shadow attended: squared output
// error and squared reference output.
struct AttnError {
  double err2 = 0;  // sum |o_shadow - o_ref|^2
  double ref2 = 0;  // sum |o_ref|^2
  int64_t rows = 0; // query rows (each with every head)

  // sqrt(err2 / ref2): the relative RMS error of the outputs; 0 when nothing
  // was measured.
  double relative() const;
  void add(const AttnError& o) {
    err2 += o.err2;
    ref2 += o.ref2;
    rows += o.rows;
  }
};

class ShadowCache final : public KvCache {
 public:
  // Every cache must have the reference's shape. A shadow that wants keys
  // before RoPE gets them; the others get them rotated (shape().rope must be
  // set then).
  ShadowCache(std::unique_ptr<KvCache> reference, std::vector<std::unique_ptr<KvCache>> shadows);

  void append(const float* k, const float* v, int n) override;
  bool wants_pre_rope_keys() const override { return any_pre_rope_; }
  // The reference's attention goes to out (and stats); each shadow's is
  // compared with it.
  void attend(const float* q, int n_q, float* out, AttendStats* stats) override;
  KvFootprint footprint() const override { return reference_->footprint(); }
  int size() const override { return reference_->size(); }
  void clear() override;
  std::string mode() const override { return reference_->mode(); }

  const std::vector<AttnError>& errors() const { return errors_; }  // one per shadow
  const KvCache& shadow(size_t i) const { return *shadows_[i]; }

 private:
  std::unique_ptr<KvCache> reference_;
  std::vector<std::unique_ptr<KvCache>> shadows_;
  std::vector<AttnError> errors_;
  bool any_pre_rope_ = false;
  std::vector<float> k_rot_, out_;
};

}  // namespace longkv

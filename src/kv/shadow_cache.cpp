#include "kv/shadow_cache.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/rope.h"

namespace longkv {

double AttnError::relative() const { return ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0; }

namespace {
bool same_shape(const KvShape& a, const KvShape& b) {
  return a.n_heads == b.n_heads && a.n_kv_heads == b.n_kv_heads && a.head_dim == b.head_dim &&
         a.max_tokens == b.max_tokens;
}
}  // namespace

ShadowCache::ShadowCache(std::unique_ptr<KvCache> reference, std::vector<std::unique_ptr<KvCache>> shadows)
    : KvCache(reference->shape()), reference_(std::move(reference)), shadows_(std::move(shadows)),
      errors_(shadows_.size()) {
  any_pre_rope_ = reference_->wants_pre_rope_keys();
  for (const auto& s : shadows_) {
    LONGKV_CHECK(same_shape(s->shape(), shape_), "shadow cache %s: shape differs from the reference's",
                 s->mode().c_str());
    any_pre_rope_ = any_pre_rope_ || s->wants_pre_rope_keys();
  }
  LONGKV_CHECK(!any_pre_rope_ || shape_.rope != nullptr,
               "a cache wants keys before RoPE, but the shape carries no RoPE table");
}

void ShadowCache::append(const float* k, const float* v, int n) {
  // Keys arrive before RoPE if any cache wants them so; the others get a
  // copy rotated to positions size() .. size() + n - 1, as the model would.
  const float* k_post = k;
  if (any_pre_rope_) {
    const size_t kvd = static_cast<size_t>(shape_.kv_dim());
    k_rot_.assign(k, k + static_cast<size_t>(n) * kvd);
    const int pos0 = size();
    for (int t = 0; t < n; ++t) rope_apply(*shape_.rope, &k_rot_[t * kvd], shape_.n_kv_heads, pos0 + t);
    k_post = k_rot_.data();
  }
  reference_->append(reference_->wants_pre_rope_keys() ? k : k_post, v, n);
  for (auto& s : shadows_) s->append(s->wants_pre_rope_keys() ? k : k_post, v, n);
}

void ShadowCache::attend(const float* q, int n_q, float* out, AttendStats* stats) {
  reference_->attend(q, n_q, out, stats);
  const size_t n = static_cast<size_t>(n_q) * shape_.q_dim();
  out_.resize(n);
  double ref2 = 0;
  for (size_t i = 0; i < n; ++i) ref2 += static_cast<double>(out[i]) * out[i];
  for (size_t s = 0; s < shadows_.size(); ++s) {
    shadows_[s]->attend(q, n_q, out_.data(), nullptr);
    double err2 = 0;
    for (size_t i = 0; i < n; ++i) {
      const double d = static_cast<double>(out_[i]) - out[i];
      err2 += d * d;
    }
    errors_[s].add({err2, ref2, n_q});
  }
}

void ShadowCache::clear() {
  reference_->clear();
  for (auto& s : shadows_) s->clear();
}

}  // namespace longkv

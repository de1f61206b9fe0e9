#include "kv/rotated_cache.h"

#include <cmath>

#include "core/error.h"
#include "kv/kv_mode.h"

namespace longkv {

void hadamard_rotate(float* x, int d) {
  for (int len = 1; len < d; len <<= 1)
    for (int i = 0; i < d; i += 2 * len)
      for (int j = i; j < i + len; ++j) {
        const float a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
  const float s = 1.0f / std::sqrt(static_cast<float>(d));
  for (int i = 0; i < d; ++i) x[i] *= s;
}

static void rotate_rows(float* x, size_t n_vectors, int d) {
  for (size_t i = 0; i < n_vectors; ++i) hadamard_rotate(x + i * d, d);
}

RotatedKvCache::RotatedKvCache(std::unique_ptr<KvCache> inner) : KvCache(inner->shape()), inner_(std::move(inner)) {
  const int d = shape_.head_dim;
  LONGKV_CHECK(d > 0 && (d & (d - 1)) == 0, "KV mode ':rot' needs a power-of-two head dimension (got %d)", d);
  LONGKV_CHECK(!inner_->wants_pre_rope_keys(),
               "KV mode ':rot' cannot be combined with rope=pre (the rotation does not commute with RoPE)");
}

std::string RotatedKvCache::mode() const {
  // Spelled as the grammar's canonical string (":rot" before ":o<P>").
  KvMode m = parse_kv_mode(inner_->mode());
  m.rotate = true;
  return m.to_string();
}

void RotatedKvCache::append(const float* k, const float* v, int n) {
  const size_t count = static_cast<size_t>(n) * shape_.kv_dim();
  kbuf_.assign(k, k + count);
  vbuf_.assign(v, v + count);
  rotate_rows(kbuf_.data(), count / shape_.head_dim, shape_.head_dim);
  rotate_rows(vbuf_.data(), count / shape_.head_dim, shape_.head_dim);
  inner_->append(kbuf_.data(), vbuf_.data(), n);
}

void RotatedKvCache::attend(const float* q, int n_q, float* out, AttendStats* stats) {
  const size_t count = static_cast<size_t>(n_q) * shape_.q_dim();
  qbuf_.assign(q, q + count);
  rotate_rows(qbuf_.data(), count / shape_.head_dim, shape_.head_dim);
  inner_->attend(qbuf_.data(), n_q, out, stats);
  rotate_rows(out, count / shape_.head_dim, shape_.head_dim);
}

}  // namespace longkv

#include "kv/dense_cache.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/blas.h"
#include "backend/cpu/vec.h"
#include "core/error.h"
#include "kv/dense_attention.h"

namespace longkv {

// Query rows from which prefill attention goes through sgemm, and the rows
// per sgemm tile (x group heads = the M of the first product).
constexpr int kGemmMinRows = 8;
constexpr int kGemmTileRows = 32;

template <typename T>
DenseKvCache<T>::DenseKvCache(const KvShape& shape, ThreadPool& pool) : KvCache(shape), pool_(pool) {
  LONGKV_ASSERT(shape.n_kv_heads > 0 && shape.n_heads % shape.n_kv_heads == 0 && shape.head_dim > 0);
  blas_use_single_thread();
  const size_t n = static_cast<size_t>(shape.n_kv_heads) * shape.max_tokens * shape.head_dim;
  // Default-initialized: pages are committed only as tokens are written.
  k_ = make_huge_array<T>(n);
  v_ = make_huge_array<T>(n);
}

template <typename T>
std::string DenseKvCache<T>::mode() const {
  return std::is_same_v<T, float> ? "f32" : "f16";
}

static inline void store(float* dst, const float* src, int n) { std::copy(src, src + n, dst); }
static inline void store(f16_t* dst, const float* src, int n) { f32_to_f16_n(src, dst, n); }
static inline void load(float* dst, const float* src, int n) { std::copy(src, src + n, dst); }
static inline void load(float* dst, const f16_t* src, int n) { f16_to_f32_n(src, dst, n); }

template <typename T>
void DenseKvCache<T>::append(const float* k, const float* v, int n) {
  LONGKV_CHECK(n_tokens_ + n <= shape_.max_tokens, "KV cache full: %d + %d tokens exceed the capacity of %d",
               n_tokens_, n, shape_.max_tokens);
  const int d = shape_.head_dim, kvd = shape_.kv_dim();
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      store(&k_[offset(h, n_tokens_ + t)], k + static_cast<size_t>(t) * kvd + h * d, d);
      store(&v_[offset(h, n_tokens_ + t)], v + static_cast<size_t>(t) * kvd + h * d, d);
    }
  n_tokens_ += n;
}

template <typename T>
void DenseKvCache<T>::get_k(int kv_head, int token, float* dst) const {
  load(dst, &k_[offset(kv_head, token)], shape_.head_dim);
}

template <typename T>
void DenseKvCache<T>::get_v(int kv_head, int token, float* dst) const {
  load(dst, &v_[offset(kv_head, token)], shape_.head_dim);
}

template <typename T>
void DenseKvCache<T>::attend(const float* q, int n_q, float* out, AttendStats* stats) {
  LONGKV_ASSERT(n_q <= n_tokens_);
  const int d = shape_.head_dim, g = shape_.group(), n_kv = shape_.n_kv_heads, qd = shape_.q_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int first_pos = n_tokens_ - n_q;

  // Prefill: tiles of query rows through sgemm (see attend_tile_gemm).
  if (n_q >= kGemmMinRows && !(stats && stats->token_mass)) {
    const int n_tiles = (n_q + kGemmTileRows - 1) / kGemmTileRows;
    pool_.parallel_for(static_cast<int64_t>(n_kv) * n_tiles, [&](int64_t b, int64_t e, int) {
      thread_local std::vector<float> qt, ot, lt, sc, kf, vf;
      for (int64_t it = b; it < e; ++it) {
        const int kvh = static_cast<int>(it % n_kv), tile = static_cast<int>(it / n_kv);
        const int r0 = tile * kGemmTileRows, rows = std::min(kGemmTileRows, n_q - r0);
        const int p0 = first_pos + r0, len = p0 + rows;
        const size_t m = static_cast<size_t>(rows) * g;
        qt.resize(m * d);
        ot.resize(m * d);
        lt.resize(m);
        sc.resize(m * len);
        for (int r = 0; r < rows; ++r)
          std::copy_n(q + static_cast<size_t>(r0 + r) * qd + static_cast<size_t>(kvh) * g * d, g * d,
                      &qt[static_cast<size_t>(r) * g * d]);
        const float* kp;
        const float* vp;
        if constexpr (std::is_same_v<T, float>) {
          kp = &k_[offset(kvh, 0)];
          vp = &v_[offset(kvh, 0)];
        } else {
          kf.resize(static_cast<size_t>(len) * d);
          vf.resize(kf.size());
          load(kf.data(), &k_[offset(kvh, 0)], len * d);
          load(vf.data(), &v_[offset(kvh, 0)], len * d);
          kp = kf.data();
          vp = vf.data();
        }
        attend_tile_gemm(qt.data(), rows, g, d, p0, kp, vp, scale, ot.data(), lt.data(), sc.data());
        for (int r = 0; r < rows; ++r) {
          std::copy_n(&ot[static_cast<size_t>(r) * g * d], g * d,
                      out + static_cast<size_t>(r0 + r) * qd + static_cast<size_t>(kvh) * g * d);
          if (stats && stats->lse)
            for (int h = 0; h < g; ++h)
              stats->lse[static_cast<size_t>(r0 + r) * shape_.n_heads + kvh * g + h] = lt[static_cast<size_t>(r) * g + h];
        }
      }
    });
    return;
  }

  // Work items: (kv head, query row, key split). Split the keys only when
  // there are too few (head, row) pairs to keep every thread busy (decode).
  const int64_t base_items = static_cast<int64_t>(n_kv) * n_q;
  int splits = 1;
  if (base_items < 4 * pool_.size()) {
    const int want = static_cast<int>((4 * pool_.size() + base_items - 1) / base_items);
    splits = std::max(1, std::min(want, n_tokens_ / 512));
  }
  const int64_t n_items = base_items * splits;
  std::vector<float> part_out(splits > 1 ? static_cast<size_t>(n_items) * g * d : 0);
  std::vector<AttnState> part_state(static_cast<size_t>(n_items) * g);

  pool_.parallel_for(n_items, [&](int64_t b, int64_t e, int) {
    thread_local std::vector<float> scores, qbuf;
    for (int64_t it = b; it < e; ++it) {
      const int split = static_cast<int>(it % splits);
      const int64_t rh = it / splits;
      const int row = static_cast<int>(rh / n_kv), kvh = static_cast<int>(rh % n_kv);
      const int len = first_pos + row + 1;  // causal: keys 0..pos
      const int j0 = static_cast<int>(static_cast<int64_t>(len) * split / splits);
      const int j1 = static_cast<int>(static_cast<int64_t>(len) * (split + 1) / splits);
      const float* qrow = q + static_cast<size_t>(row) * qd + static_cast<size_t>(kvh) * g * d;
      float* dst = splits > 1 ? &part_out[static_cast<size_t>(it) * g * d]
                              : out + static_cast<size_t>(row) * qd + static_cast<size_t>(kvh) * g * d;
      if (scores.size() < static_cast<size_t>(g) * (j1 - j0)) scores.resize(static_cast<size_t>(g) * (j1 - j0));
      attend_block(qrow, g, d, &k_[offset(kvh, j0)], &v_[offset(kvh, j0)], j1 - j0, scale, dst,
                   &part_state[static_cast<size_t>(it) * g], scores.data());
    }
  });

  if (splits > 1) {
    for (int64_t rh = 0; rh < base_items; ++rh) {
      const int row = static_cast<int>(rh / n_kv), kvh = static_cast<int>(rh % n_kv);
      float* dst = out + static_cast<size_t>(row) * qd + static_cast<size_t>(kvh) * g * d;
      for (int h = 0; h < g; ++h) {
        AttnState acc{};
        for (int s = 0; s < splits; ++s) {
          const int64_t it = rh * splits + s;
          attn_state_merge(dst + h * d, acc, &part_out[(static_cast<size_t>(it) * g + h) * d],
                           part_state[static_cast<size_t>(it) * g + h], d);
        }
        part_state[static_cast<size_t>(rh * splits) * g + h] = acc;
      }
    }
  }

  if (!stats) return;
  auto final_state = [&](int row, int kvh, int h) -> const AttnState& {
    return part_state[(static_cast<size_t>(row) * n_kv + kvh) * splits * g + h];
  };
  if (stats->lse)
    for (int row = 0; row < n_q; ++row)
      for (int kvh = 0; kvh < n_kv; ++kvh)
        for (int h = 0; h < g; ++h) stats->lse[static_cast<size_t>(row) * shape_.n_heads + kvh * g + h] =
            final_state(row, kvh, h).lse();
  if (stats->token_mass) {
    // Second pass over the keys with the final log-sum-exp: the probability
    // each query row and head puts on each token, summed per KV head.
    pool_.parallel_for(n_kv, [&](int64_t b, int64_t e, int) {
      std::vector<float> kbuf(d);
      for (int64_t kvh = b; kvh < e; ++kvh) {
        float* mass = stats->token_mass + static_cast<size_t>(kvh) * n_tokens_;
        for (int row = 0; row < n_q; ++row) {
          const int len = first_pos + row + 1;
          for (int h = 0; h < g; ++h) {
            const float lse = final_state(row, static_cast<int>(kvh), h).lse();
            const float* qh = q + static_cast<size_t>(row) * qd + (kvh * g + h) * d;
            for (int j = 0; j < len; ++j) {
              load(kbuf.data(), &k_[offset(static_cast<int>(kvh), j)], d);
              mass[j] += std::exp(vec_dot_f32(qh, kbuf.data(), d) * scale - lse);
            }
          }
        }
      }
    });
  }
}

template <typename T>
KvFootprint DenseKvCache<T>::footprint() const {
  KvFootprint f;
  const size_t per_token = 2 * sizeof(T) * static_cast<size_t>(shape_.kv_dim());
  f.tokens = n_tokens_;
  f.cpu_bytes = per_token * n_tokens_;
  f.capacity_bytes = per_token * shape_.max_tokens;
  f.k_bits = f.v_bits = 8.0 * sizeof(T);
  return f;
}

template class DenseKvCache<float>;
template class DenseKvCache<f16_t>;

}  // namespace longkv

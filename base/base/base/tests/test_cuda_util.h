// Shared by the CUDA test files: skip (with the reason the backend gives)
// when no usable GPU is present, so ctest reports the test as skipped.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "core/fp16.h"
#include "kv/dense_attention.h"
#include "kv/kv_cache.h"

#define LONGKV_REQUIRE_CUDA()                                   \
  do {                                                          \
    std::string why_;                                           \
    if (!::longkv::cuda_available(&why_)) GTEST_SKIP() << why_; \
  } while (0)

namespace longkv::test {

// The CPU reference of one token's attention: query heads q [n_heads][d]
// over the first n_keys tokens of kh / vh (f16, [token][n_kv_heads][d]),
// in double precision (attend_reference) -> out [n_heads][d].
inline void attend_heads_reference(const KvShape& s, const float* q, const f16_t* kh, const f16_t* vh, int n_keys,
                                   float* out) {
  const int d = s.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<f16_t> kk(static_cast<size_t>(n_keys) * d), vv(kk.size());
  for (int h = 0; h < s.n_heads; ++h) {
    const int hk = h / s.group();
    for (int t = 0; t < n_keys; ++t)
      for (int i = 0; i < d; ++i) {
        kk[static_cast<size_t>(t) * d + i] = kh[(static_cast<size_t>(t) * s.n_kv_heads + hk) * d + i];
        vv[static_cast<size_t>(t) * d + i] = vh[(static_cast<size_t>(t) * s.n_kv_heads + hk) * d + i];
      }
    double lse;
    attend_reference<f16_t>(q + static_cast<size_t>(h) * d, d, kk.data(), vv.data(), n_keys, scale,
                            out + static_cast<size_t>(h) * d, &lse);
  }
}

}  // namespace longkv::test

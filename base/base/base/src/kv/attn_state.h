// The attention merge state (o, m, l): partial attentions over disjoint sets
// of keys combine exactly (FlashAttention / FlashInfer state merge).
//
// For one query row and head: m = max score, l = sum_j exp(s_j - m),
// o = sum_j exp(s_j - m) v_j / l. Merging rescales both sides by
// exp(m_x - max(m_a, m_b)). An empty state has m = -inf, l = 0.
#pragma once

#include <cmath>
#include <limits>

namespace longkv {

struct AttnState {
  float m = -std::numeric_limits<float>::infinity();
  float l = 0.0f;

  float lse() const { return l > 0 ? m + std::log(l) : -std::numeric_limits<float>::infinity(); }
};

// Merge (ob, b) into (oa, a) in place; o vectors of length d are normalized
// outputs of their own parts.
inline void attn_state_merge(float* oa, AttnState& a, const float* ob, const AttnState& b, int d) {
  if (b.l <= 0) return;
  if (a.l <= 0) {
    for (int i = 0; i < d; ++i) oa[i] = ob[i];
    a = b;
    return;
  }
  const float m = a.m > b.m ? a.m : b.m;
  const float wa = a.l * std::exp(a.m - m), wb = b.l * std::exp(b.m - m);
  const float inv = 1.0f / (wa + wb);
  for (int i = 0; i < d; ++i) oa[i] = (oa[i] * wa + ob[i] * wb) * inv;
  a.m = m;
  a.l = wa + wb;
}

}  // namespace longkv

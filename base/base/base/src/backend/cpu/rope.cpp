#include <cmath>

#include "core/error.h"
#include "core/rope.h"

namespace longkv {

const char* rope_style_name(RopeStyle s) {
  switch (s) {
    case RopeStyle::interleaved: return "interleaved";
    case RopeStyle::neox: return "neox";
  }
  return "unknown";
}

RopeTable::RopeTable(int head_dim_, int rope_dim_, float base, RopeStyle style_)
    : head_dim(head_dim_), rope_dim(rope_dim_), style(style_) {
  LONGKV_CHECK(rope_dim > 0 && rope_dim % 2 == 0 && rope_dim <= head_dim && rope_dim <= 1024,
               "unsupported RoPE dimension %d for head dimension %d", rope_dim, head_dim);
  for (int i = 0; i < rope_dim / 2; ++i)
    inv_freq[i] = static_cast<float>(std::pow(static_cast<double>(base), -2.0 * i / rope_dim));
}

void rope_apply(const RopeTable& t, float* x, int n_heads, int64_t pos) {
  const int half = t.rope_dim / 2;
  float cs[512], sn[512];
  for (int i = 0; i < half; ++i) {
    // Angle in double: at 1M positions a float product loses ~0.1 rad.
    const double a = static_cast<double>(pos) * t.inv_freq[i];
    cs[i] = static_cast<float>(std::cos(a));
    sn[i] = static_cast<float>(std::sin(a));
  }
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<size_t>(h) * t.head_dim;
    if (t.style == RopeStyle::interleaved) {
      for (int i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * cs[i] - b * sn[i];
        v[2 * i + 1] = a * sn[i] + b * cs[i];
      }
    } else {
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = a * sn[i] + b * cs[i];
      }
    }
  }
}

}  // namespace longkv

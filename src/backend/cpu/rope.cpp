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

RopeTable::RopeTable(int head_dim_, int rope_dim_, float base, RopeStyle style_,
                     const std::vector<float>& freq_factors)
    : head_dim(head_dim_), rope_dim(rope_dim_), style(style_) {
  LONGKV_CHECK(rope_dim > 0 && rope_dim % 2 == 0 && rope_dim <= head_dim && rope_dim <= 1024,
               "unsupported RoPE dimension %d for head dimension %d", rope_dim, head_dim);
  LONGKV_CHECK(freq_factors.empty() || freq_factors.size() == static_cast<size_t>(rope_dim / 2),
               "RoPE frequency factors: %zu given, %d expected (rope_dim / 2)", freq_factors.size(), rope_dim / 2);
  for (int i = 0; i < rope_dim / 2; ++i) {
    double f = std::pow(static_cast<double>(base), -2.0 * i / rope_dim);
    if (!freq_factors.empty()) {
      const float d = freq_factors[static_cast<size_t>(i)];
      LONGKV_CHECK(std::isfinite(d) && d > 0, "RoPE frequency factor %d is %g (must be finite and > 0)", i, d);
      f /= d;
    }
    inv_freq[i] = static_cast<float>(f);
  }
}

std::vector<float> llama3_rope_factors(int rope_dim, float base, double factor, double low_freq_factor,
                                       double high_freq_factor, double original_ctx) {
  LONGKV_CHECK(rope_dim > 0 && rope_dim % 2 == 0, "llama3 RoPE scaling: rope_dim %d must be even and positive",
               rope_dim);
  LONGKV_CHECK(factor > 0 && low_freq_factor > 0 && high_freq_factor > low_freq_factor && original_ctx > 0,
               "llama3 RoPE scaling: needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
               "original_max_position_embeddings > 0 (got %g, %g, %g, %g)",
               factor, low_freq_factor, high_freq_factor, original_ctx);
  constexpr double kPi = 3.14159265358979323846;
  const double low_wavelen = original_ctx / low_freq_factor, high_wavelen = original_ctx / high_freq_factor;
  std::vector<float> out(static_cast<size_t>(rope_dim / 2));
  for (int i = 0; i < rope_dim / 2; ++i) {
    const double wavelen = 2 * kPi / std::pow(static_cast<double>(base), -2.0 * i / rope_dim);
    double d = 1;
    if (wavelen > low_wavelen) {
      d = factor;
    } else if (wavelen >= high_wavelen) {  // the band between: 1/d moves from 1/factor to 1
      const double smooth = (original_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      d = 1 / ((1 - smooth) / factor + smooth);
    }
    out[static_cast<size_t>(i)] = static_cast<float>(d);
  }
  return out;
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

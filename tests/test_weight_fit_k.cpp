// The K-quant encoders' searched fits (formats/weight_fit_k.h), through the
// traits table: on gaussian, uniform and outlier data each format loses less
// (squared error) than the min/max fit its encoder used before (kept below
// as a reference); every code is the nearest for the values its block
// stores, read back from the bytes here; and no element is off by more than
// two of a min/max fit's steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "formats/weight_types.h"
#include "test_util.h"

namespace longkv {
namespace {

constexpr WeightType kKTypes[] = {WeightType::Q2_K, WeightType::Q3_K, WeightType::Q4_K, WeightType::Q5_K,
                                  WeightType::Q6_K};

std::vector<float> roundtrip(WeightType t, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(row_bytes(t, n));
  weight_traits(t).from_float_ref(x.data(), q.data(), n);
  std::vector<float> y(x.size());
  weight_traits(t).to_float_ref(q.data(), y.data(), n);
  return y;
}

// ---------------------------------------------------------------------------
// The min/max fits of the encoders before the search (decoded values of one
// super-block). Scales and the fp16 d were rounded up so that the code range
// covered the data: every element within half a step, nothing clipped.

float f16_up(float v) {
  f16_t h = f32_to_f16(v);
  if (f16_to_f32(h) < v && (h & 0x7fffu) < 0x7c00u) ++h;
  return f16_to_f32(h);
}

// Q2_K (16 x 16, codes 0..3, 4-bit scales), Q4_K / Q5_K (8 x 32, 0..15 /
// 0..31, 6-bit): each sub-block's range [min(x, 0), max(x)] covered.
void minmax_affine(const float* x, int subs, int len, int top, int smax, float* y) {
  float lo[16], hi[16], neg = 0;
  for (int j = 0; j < subs; ++j) {
    lo[j] = 0;
    hi[j] = x[len * j];
    for (int l = 0; l < len; ++l) {
      lo[j] = std::min(lo[j], x[len * j + l]);
      hi[j] = std::max(hi[j], x[len * j + l]);
    }
    neg = std::max(neg, -lo[j]);
  }
  const float dmin = f16_up(neg / smax);
  float off[16], big = 0;
  for (int j = 0; j < subs; ++j) {
    off[j] = dmin * std::clamp(dmin > 0 ? std::ceil(-lo[j] / dmin) : 0.0f, 0.0f, float(smax));
    big = std::max(big, (hi[j] + off[j]) / top);
  }
  const float d = f16_up(big / smax);
  for (int j = 0; j < subs; ++j) {
    const float s = d * std::clamp(d > 0 ? std::ceil((hi[j] + off[j]) / (top * d)) : 0.0f, 0.0f, float(smax));
    for (int l = 0; l < len; ++l) {
      const float q = std::clamp(std::nearbyint((x[len * j + l] + off[j]) * (s > 0 ? 1 / s : 0)), 0.0f, float(top));
      y[len * j + l] = s * q - off[j];
    }
  }
}

// Q3_K: the largest magnitude at code -4 (the step longer if the other side
// would pass 3.5), steps rounded away from 0 to multiples -31..31 of d.
void minmax_q3_k(const float* x, float* y) {
  float need[16], big = 0;
  for (int s = 0; s < 16; ++s) {
    float mx = 0, pos = 0, neg = 0;
    for (int l = 0; l < 16; ++l) {
      const float v = x[16 * s + l];
      if (std::fabs(v) > std::fabs(mx)) mx = v;
      pos = std::max(pos, v);
      neg = std::max(neg, -v);
    }
    const float mag = std::max(std::fabs(mx) / 4, (mx > 0 ? neg : pos) / 3.5f);
    need[s] = mx > 0 ? -mag : mag;
    big = std::max(big, mag);
  }
  const float d = f16_up(big / 31);
  for (int s = 0; s < 16; ++s) {
    const float k = std::min(d > 0 ? std::ceil(std::fabs(need[s]) / d) : 0.0f, 31.0f) * (need[s] < 0 ? -1 : 1);
    const float step = d * k;
    for (int l = 0; l < 16; ++l)
      y[16 * s + l] = step * std::clamp(std::nearbyint(x[16 * s + l] * (step != 0 ? 1 / step : 0)), -4.0f, 3.0f);
  }
}

// Q6_K: step >= amax / 31 per sub-block, scales 0..127.
void minmax_q6_k(const float* x, float* y) {
  float need[16], big = 0;
  for (int s = 0; s < 16; ++s) {
    float amax = 0;
    for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * s + l]));
    need[s] = amax / 31;
    big = std::max(big, need[s]);
  }
  const float d = f16_up(big / 127);
  for (int s = 0; s < 16; ++s) {
    const float step = d * std::clamp(d > 0 ? std::ceil(need[s] / d) : 0.0f, 0.0f, 127.0f);
    for (int l = 0; l < 16; ++l)
      y[16 * s + l] = step * std::clamp(std::nearbyint(x[16 * s + l] * (step > 0 ? 1 / step : 0)), -32.0f, 31.0f);
  }
}

std::vector<float> minmax_roundtrip(WeightType t, const std::vector<float>& x) {
  std::vector<float> y(x.size());
  for (size_t b = 0; b < x.size() / 256; ++b) {
    const float* xb = x.data() + 256 * b;
    float* yb = y.data() + 256 * b;
    switch (t) {
      case WeightType::Q2_K: minmax_affine(xb, 16, 16, 3, 15, yb); break;
      case WeightType::Q3_K: minmax_q3_k(xb, yb); break;
      case WeightType::Q4_K: minmax_affine(xb, 8, 32, 15, 63, yb); break;
      case WeightType::Q5_K: minmax_affine(xb, 8, 32, 31, 63, yb); break;
      default: minmax_q6_k(xb, yb); break;
    }
  }
  return y;
}

// ---------------------------------------------------------------------------
// A sub-block's representable values step * q - offset, q = qmin..qmax, read
// from a block's bytes (weight_types.h's layouts, decoded independently).

struct Grid {
  float step, offset;
  int qmin, qmax;
};

float f16_at(const uint8_t* p) {
  f16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

int sub_len(WeightType t) { return t == WeightType::Q4_K || t == WeightType::Q5_K ? 32 : 16; }

Grid grid(WeightType t, const uint8_t* b, int s) {
  switch (t) {
    case WeightType::Q2_K:
      return {f16_at(b + 80) * static_cast<float>(b[s] & 0xF), f16_at(b + 82) * static_cast<float>(b[s] >> 4), 0, 3};
    case WeightType::Q3_K: {
      const int sc = ((b[96 + s % 8] >> (4 * (s / 8))) & 0xF) | (((b[104 + s % 4] >> (2 * (s / 4))) & 3) << 4);
      return {f16_at(b + 108) * static_cast<float>(sc - 32), 0.0f, -4, 3};
    }
    case WeightType::Q4_K:
    case WeightType::Q5_K: {
      const uint8_t* p = b + 4;
      const int sc = s < 4 ? p[s] & 63 : (p[s + 4] & 0xF) | ((p[s - 4] >> 6) << 4);
      const int m = s < 4 ? p[s + 4] & 63 : (p[s + 4] >> 4) | ((p[s] >> 6) << 4);
      return {f16_at(b) * static_cast<float>(sc), f16_at(b + 2) * static_cast<float>(m), 0,
              t == WeightType::Q4_K ? 15 : 31};
    }
    default:
      return {f16_at(b + 208) * static_cast<float>(static_cast<int8_t>(b[192 + s])), 0.0f, -32, 31};
  }
}

// ---------------------------------------------------------------------------

enum class Dist { gaussian, uniform, outliers };

// Unit-scale data; outliers: gaussian with one element in 64 twelve times larger.
std::vector<float> sample(Dist dist, size_t n, uint32_t seed) {
  if (dist == Dist::uniform) return test::random_floats(n, seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) {
    v = g(rng);
    if (dist == Dist::outliers && rng() % 64 == 0) v *= 12.0f;
  }
  return x;
}

double squared_error(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e += static_cast<double>(a[i] - b[i]) * (a[i] - b[i]);
  return e;
}

// The squared error stays below a fraction of the min/max fit's. Measured
// when written (new / old on gaussian, uniform, outlier data): Q2_K 0.56,
// 0.54, 0.34; Q3_K 0.87, 0.84, 0.93; Q4_K 0.78, 0.77, 0.81; Q5_K 0.80, 0.77,
// 0.84; Q6_K 0.78, 0.76, 0.91.
TEST(WeightFitK, LosesLessThanTheMinMaxFit) {
  const size_t n = 256 * 64;
  const double max_ratio[] = {0.7, 0.95, 0.9, 0.9, 0.95};
  for (Dist dist : {Dist::gaussian, Dist::uniform, Dist::outliers}) {
    const auto x = sample(dist, n, 40 + static_cast<uint32_t>(dist));
    for (int i = 0; i < 5; ++i) {
      const WeightType t = kKTypes[i];
      const double err = squared_error(roundtrip(t, x), x), old = squared_error(minmax_roundtrip(t, x), x);
      EXPECT_LT(err, max_ratio[i] * old) << weight_traits(t).name << " on data " << static_cast<int>(dist);
      EXPECT_GT(err, 0.0);
    }
  }
}

// Every element is decoded to the representable value of its sub-block
// nearest to it (the codes were rounded against the stored scales, not the
// fit's floats), and within two min/max steps (the sub-block's span over its
// number of codes), on data whose magnitude varies by 10^6 between blocks,
// with an all-positive, an all-negative and an all-zero block.
TEST(WeightFitK, CodesAreNearestForTheStoredValues) {
  const int64_t n = 256 * 40;
  auto x = sample(Dist::outliers, n, 50);
  const auto mag = test::random_floats(n / 256, 51, -3.0f, 3.0f);
  for (int64_t i = 0; i < n; ++i) x[i] *= std::pow(10.0f, mag[i / 256]);
  for (int i = 0; i < 256; ++i) {
    x[i] = 0.0f;
    x[256 + i] = std::fabs(x[256 + i]) + 3.0f;
    x[512 + i] = -std::fabs(x[512 + i]) - 3.0f;
  }
  for (WeightType t : kKTypes) {
    SCOPED_TRACE(weight_traits(t).name);
    std::vector<uint8_t> q(row_bytes(t, n));
    weight_traits(t).from_float_ref(x.data(), q.data(), n);
    std::vector<float> y(n);
    weight_traits(t).to_float_ref(q.data(), y.data(), n);
    const int len = sub_len(t);
    for (int64_t b = 0; b < n / 256; ++b) {
      for (int s = 0; s < 256 / len; ++s) {
        const Grid g = grid(t, q.data() + b * weight_traits(t).block_bytes, s);
        const float* xs = x.data() + 256 * b + len * s;
        const float* ys = y.data() + 256 * b + len * s;
        float lo = 0, hi = 0;
        for (int l = 0; l < len; ++l) {
          lo = std::min(lo, xs[l]);
          hi = std::max(hi, xs[l]);
        }
        const float two_steps = 2.0f * (hi - lo) / static_cast<float>(g.qmax - g.qmin + 1);
        for (int l = 0; l < len; ++l) {
          float nearest = INFINITY;
          for (int c = g.qmin; c <= g.qmax; ++c)
            nearest = std::min(nearest, std::fabs(g.step * static_cast<float>(c) - g.offset - xs[l]));
          const float err = std::fabs(ys[l] - xs[l]);
          const float tol = 1e-5f * (std::fabs(xs[l]) + std::fabs(g.offset) + std::fabs(g.step));
          ASSERT_LE(err, nearest + tol) << "block " << b << " sub-block " << s << " element " << l;
          ASSERT_LE(err, two_steps + tol) << "block " << b << " sub-block " << s << " element " << l;
        }
      }
    }
    for (int j = 0; j < 256; ++j) ASSERT_EQ(y[j], 0.0f) << j;
  }
}

}  // namespace
}  // namespace longkv

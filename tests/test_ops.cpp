// Vector kernels vs their references on odd sizes; RoPE conventions;
// RMSNorm; sampling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "backend/cpu/ops.h"
#include "core/error.h"
#include "core/rope.h"
#include "backend/cpu/vec.h"
#include "runtime/sampler.h"
#include "test_util.h"

namespace longkv {
namespace {

TEST(Vec, DotAndAxpyMatchReferenceOnOddSizes) {
  for (int n : {1, 7, 17, 64, 97, 1000, 1001}) {
    auto a = test::random_floats(n, 1), b = test::random_floats(n, 2);
    std::vector<f16_t> bh(n);
    f32_to_f16_n(b.data(), bh.data(), n);
    double mag = 0;
    for (int i = 0; i < n; ++i) mag += std::fabs(a[i] * b[i]);
    EXPECT_NEAR(vec_dot_f32(a.data(), b.data(), n), vec_dot_f32_ref(a.data(), b.data(), n), 1e-6 * mag) << n;
    EXPECT_NEAR(vec_dot_f16(a.data(), bh.data(), n), vec_dot_f16_ref(a.data(), bh.data(), n), 1e-6 * mag) << n;
    std::vector<float> y1 = a, y2 = a, y3 = a, y4 = a;
    vec_axpy_f32(y1.data(), b.data(), 0.37f, n);
    vec_axpy_f32_ref(y2.data(), b.data(), 0.37f, n);
    vec_axpy_f16(y3.data(), bh.data(), -1.5f, n);
    vec_axpy_f16_ref(y4.data(), bh.data(), -1.5f, n);
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(y1[i], y2[i], 1e-6f);
      EXPECT_NEAR(y3[i], y4[i], 1e-6f);
    }
  }
}

TEST(Ops, RopeInterleavedAndNeoxAreTheSameRotationOnPermutedDims) {
  // Rotating interleaved pairs (2i, 2i+1) equals rotating (i, i+d/2) after
  // the permutation that GGUF converters apply to q/k rows.
  const int d = 16;
  RopeTable inter(d, d, 10000.0f, RopeStyle::interleaved), neox(d, d, 10000.0f, RopeStyle::neox);
  auto x = test::random_floats(d, 3);
  std::vector<float> xn(d);  // neox layout: first halves then second halves
  for (int i = 0; i < d / 2; ++i) {
    xn[i] = x[2 * i];
    xn[i + d / 2] = x[2 * i + 1];
  }
  rope_apply(inter, x.data(), 1, 1234);
  rope_apply(neox, xn.data(), 1, 1234);
  for (int i = 0; i < d / 2; ++i) {
    EXPECT_NEAR(x[2 * i], xn[i], 1e-5f);
    EXPECT_NEAR(x[2 * i + 1], xn[i + d / 2], 1e-5f);
  }
}

TEST(Ops, RopePositionZeroIsIdentityAndNormPreserving) {
  RopeTable t(64, 64, 500000.0f, RopeStyle::interleaved);
  auto x = test::random_floats(128, 4);
  auto y = x;
  rope_apply(t, y.data(), 2, 0);
  EXPECT_EQ(x, y);
  rope_apply(t, y.data(), 2, 1000000);
  double nx = 0, ny = 0;
  for (int i = 0; i < 64; ++i) {
    nx += x[i] * x[i];
    ny += y[i] * y[i];
  }
  EXPECT_NEAR(nx, ny, 1e-4 * nx);
}

// The text of the Error fn throws ("" if none).
template <class F>
std::string error_text(F fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Ops, RopeFrequencyFactorsDivideTheFrequencies) {
  const int d = 64;
  const RopeTable plain(d, d, 500000.0f, RopeStyle::interleaved);
  std::vector<float> f(d / 2);
  for (int i = 0; i < d / 2; ++i) f[i] = 1.0f + 0.25f * static_cast<float>(i);
  const RopeTable scaled(d, d, 500000.0f, RopeStyle::interleaved, f);
  for (int i = 0; i < d / 2; ++i) EXPECT_NEAR(scaled.inv_freq[i], plain.inv_freq[i] / f[i], 1e-7 * plain.inv_freq[i]);
  // Linear scaling by 4: position 4,000 scaled is position 1,000 unscaled.
  const RopeTable linear(d, d, 500000.0f, RopeStyle::neox, std::vector<float>(d / 2, 4.0f));
  auto x = test::random_floats(2 * d, 5);
  auto y = x;
  rope_apply(linear, x.data(), 2, 4000);
  rope_apply(RopeTable(d, d, 500000.0f, RopeStyle::neox), y.data(), 2, 1000);
  for (int i = 0; i < 2 * d; ++i) EXPECT_NEAR(x[i], y[i], 1e-5f) << i;
  EXPECT_NE(error_text([&] { RopeTable(d, d, 500000.0f, RopeStyle::neox, std::vector<float>(d / 2 - 1, 1.0f)); })
                .find("31 given, 32 expected"),
            std::string::npos);
  f[3] = 0;
  EXPECT_NE(error_text([&] { RopeTable(d, d, 500000.0f, RopeStyle::neox, f); }).find("RoPE frequency factor 3 is 0"),
            std::string::npos);
}

// Llama 3.1 8B's scaling (rope_theta 500000, head_dim 128, factor 8, low 1,
// high 4, original context 8192) against transformers' formulation, written
// out here independently: it scales the float inverse frequencies themselves
// (inv / factor beyond the low-frequency wavelength, then the smooth blend of
// inv / factor and inv where the wavelength lies between the two bounds).
TEST(Ops, RopeLlama3FactorsFollowTransformersFormula) {
  const int d = 128;
  const float base = 500000.0f;
  const double factor = 8, low = 1, high = 4, orig = 8192;
  const std::vector<float> f = llama3_rope_factors(d, base, factor, low, high, orig);
  ASSERT_EQ(f.size(), 64u);
  const RopeTable t(d, d, base, RopeStyle::neox, f);
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < d / 2; ++i) {
    const float inv = 1.0f / std::pow(base, static_cast<float>(2 * i) / d);
    const double wavelen = 2 * M_PI / inv;
    double want = inv;
    if (wavelen > orig / low) {
      want = inv / factor;
      ++divided;
    } else if (!(wavelen < orig / high)) {
      const double smooth = (orig / wavelen - low) / (high - low);
      want = (1 - smooth) * inv / factor + smooth * inv;
      ++blended;
    } else {
      ++kept;
    }
    EXPECT_NEAR(t.inv_freq[i], want, 2e-6 * want) << i;
  }
  // The three bands all occur for this model, and the ends are as published.
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
  EXPECT_FLOAT_EQ(f.front(), 1.0f);
  EXPECT_FLOAT_EQ(f.back(), 8.0f);
  EXPECT_NE(error_text([&] { llama3_rope_factors(d, base, 8, 4, 1, orig); }).find("0 < low_freq_factor"),
            std::string::npos);
}

TEST(Ops, RmsNorm) {
  std::vector<float> x{3, 4}, w{1, 2}, y(2);
  rmsnorm(y.data(), x.data(), w.data(), 2, 0.0f);
  const float r = std::sqrt(12.5f);
  EXPECT_FLOAT_EQ(y[0], 3 / r);
  EXPECT_FLOAT_EQ(y[1], 8 / r);
}

TEST(Sampler, GreedyIsArgmax) {
  SamplerParams p;
  p.temperature = 0;
  Sampler s(p);
  std::vector<float> l{0.1f, 3.0f, -1.0f, 2.9f};
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
}

TEST(Sampler, SeededAndReproducible) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0;
  p.seed = 99;
  auto draw = [&] {
    Sampler s(p);
    std::vector<int> out;
    for (int i = 0; i < 50; ++i) {
      std::vector<float> l{0.0f, 0.5f, 1.0f, 1.5f};
      out.push_back(s.sample(l.data(), 4, {}));
    }
    return out;
  };
  EXPECT_EQ(draw(), draw());
}

TEST(Sampler, FrequenciesFollowSoftmaxWithTemperature) {
  SamplerParams p;
  p.temperature = 0.5f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0;
  p.seed = 1;
  Sampler s(p);
  std::map<int, int> count;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    std::vector<float> l{0.0f, 0.5f};
    ++count[s.sample(l.data(), 2, {})];
  }
  const double p1 = 1.0 / (1.0 + std::exp(-1.0));  // softmax([0, 1]) at T=0.5
  EXPECT_NEAR(count[1] / static_cast<double>(n), p1, 0.015);
}

TEST(Sampler, TopKTopPMinPRestrictCandidates) {
  std::vector<float> base{5.0f, 4.0f, 0.0f, -5.0f, 4.5f};
  SamplerParams p;
  p.temperature = 1.0f;
  p.seed = 3;
  for (int mode = 0; mode < 3; ++mode) {
    p.top_k = mode == 0 ? 2 : 0;
    p.top_p = mode == 1 ? 0.5f : 1.0f;
    p.min_p = mode == 2 ? 0.5f : 0.0f;
    Sampler s(p);
    for (int i = 0; i < 500; ++i) {
      auto l = base;
      const int t = s.sample(l.data(), 5, {});
      if (mode == 0) {
        EXPECT_TRUE(t == 0 || t == 4);  // the two largest
      } else if (mode == 1) {
        EXPECT_EQ(t, 0);  // p(0) = 0.505 alone reaches 0.5
      } else {
        EXPECT_TRUE(t == 0 || t == 4);  // p >= p_max/2: e^-0.5 kept, e^-1 not
      }
    }
  }
}

// The top-k path (the GPU selects the candidates, milestone 30): given a
// row's top_k candidates, larger logits first and equal logits by the
// lower id, sample_top draws what sample() draws from the whole row, draw
// after draw from the same seed. The top-k here is a full sort, written
// apart from the sampler's partial sort; the rows have many ties.
TEST(Sampler, TopOnlyDrawsWhatTheWholeRowDraws) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  SamplerParams p;  // the defaults: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05
  p.seed = 5;
  Sampler whole(p), top(p);
  const int n = 3001;
  ASSERT_EQ(whole.top_only(n, 64), 40);
  for (int step = 0; step < 300; ++step) {
    std::vector<float> row(n);
    for (float& v : row) v = std::round(nd(rng) * 4.0f) / 4.0f;  // quarters: ties everywhere
    if (step % 3 == 0) std::fill(row.begin() + 100, row.begin() + 200, 3.5f);  // a tie across the cut
    std::vector<Candidate> all;
    for (int i = 0; i < n; ++i) all.emplace_back(row[i], i);
    std::sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    all.resize(40);
    const int32_t t_top = top.sample_top(all);
    EXPECT_EQ(whole.sample(row.data(), n, {}), t_top) << "step " << step;
  }
  // When the whole row is needed.
  SamplerParams q = p;
  q.temperature = 0;
  EXPECT_EQ(Sampler(q).top_only(n, 64), 0);  // greedy: argmax
  q = p;
  q.top_k = 0;
  EXPECT_EQ(Sampler(q).top_only(n, 64), 0);  // softmax over every token
  q = p;
  q.top_k = 65;
  EXPECT_EQ(Sampler(q).top_only(n, 64), 0);  // more than the selection takes
  q = p;
  q.repeat_penalty = 1.1f;
  EXPECT_EQ(Sampler(q).top_only(n, 64), 0);  // the penalty needs every logit
  q = p;
  q.top_k = n;
  EXPECT_EQ(Sampler(q).top_only(n, 64), 0);  // top-k of the whole row is no cut
  EXPECT_EQ(Sampler(p).top_only(40, 64), 0);
}

TEST(Sampler, RepetitionPenaltyDemotesSeenTokens) {
  SamplerParams p;
  p.temperature = 0;
  p.repeat_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> l{2.0f, 1.5f};
  std::vector<int32_t> hist{0};
  EXPECT_EQ(s.sample(l.data(), 2, hist), 1);  // 2.0 / 2 = 1.0 < 1.5
}

}  // namespace
}  // namespace longkv

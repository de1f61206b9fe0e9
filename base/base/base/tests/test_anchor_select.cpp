// Anchor selection by key deviation (mode ":a<P>", default score
// "anchor=kdev"; kv/anchor_score.h): the score against a double reference,
// the threshold's quantile, a burst of distinctive keys in one head kept
// whole even when the other head's keys are ten times larger, and the
// ":anchor=" grammar with its error messages.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kv/anchor_score.h"
#include "kv/kv_cache.h"
#include "kv/kv_mode.h"
#include "kv/quant_cache.h"
#include "test_util.h"

namespace longkv {
namespace {

TEST(AnchorSelect, ScoreIsDistanceFromTheMeanKeyInSpreadsPerHead) {
  const int n_kv = 2, d = 64, n = 97;
  KeyDeviationScore sc(n_kv, d, 0.02);
  auto k = test::random_floats(static_cast<size_t>(n) * n_kv * d, 31, -2, 3);
  sc.add_keys(k.data(), 60);
  sc.add_keys(k.data() + static_cast<size_t>(60) * n_kv * d, n - 60);
  std::vector<f16_t> kh(static_cast<size_t>(n) * d);
  std::vector<float> got(n);
  for (int h = 0; h < n_kv; ++h) {
    std::vector<double> mean(d, 0.0);
    for (int t = 0; t < n; ++t)
      for (int c = 0; c < d; ++c) mean[c] += k[(static_cast<size_t>(t) * n_kv + h) * d + c] / n;
    double var = 0;  // E||k - mean||^2 over the f32 keys added
    for (int t = 0; t < n; ++t)
      for (int c = 0; c < d; ++c) {
        const double x = k[(static_cast<size_t>(t) * n_kv + h) * d + c] - mean[c];
        var += x * x / n;
      }
    for (int t = 0; t < n; ++t)
      for (int c = 0; c < d; ++c) kh[static_cast<size_t>(t) * d + c] = f32_to_f16(k[(static_cast<size_t>(t) * n_kv + h) * d + c]);
    sc.score(h, kh.data(), n, got.data());
    for (int t = 0; t < n; ++t) {
      double e = 0;
      for (int c = 0; c < d; ++c) {
        const double x = f16_to_f32(kh[static_cast<size_t>(t) * d + c]) - mean[c];
        e += x * x;
      }
      const double want = std::sqrt(e / var);
      ASSERT_NEAR(got[t], want, 1e-5 * want) << "head " << h << " token " << t;
    }
  }
}

TEST(AnchorSelect, ThresholdIsTheQuantileOfTheRecordedScores) {
  const double share = 0.04, p = share / kAnchorThresholdDivisor;  // top 1% pass
  KeyDeviationScore sc(1, 8, share);
  // Warmup: the quantile of the candidates given.
  std::vector<float> cand(200);
  for (int i = 0; i < 200; ++i) cand[i] = static_cast<float>(i + 1);
  EXPECT_EQ(sc.threshold(0, cand.data(), 200), 199.0f);  // index floor(0.99 * 200) of 1..200
  // Log-uniform scores over 8 octaves: each 1/64-octave bucket holds 1/512.
  const int n = 51200;
  std::vector<float> rec(n);
  for (int i = 0; i < n; ++i) rec[i] = std::exp2(-4.0f + 8.0f * (static_cast<float>(i) + 0.5f) / n);
  for (float x : rec) sc.record(0, x);
  ASSERT_EQ(sc.recorded(), n);
  const float th = sc.threshold(0, nullptr, 0);
  const double pass = static_cast<double>(std::count_if(rec.begin(), rec.end(), [&](float x) { return x >= th; })) / n;
  EXPECT_GE(pass, p);
  EXPECT_LE(pass, p + 1.0 / 512 + 1e-9);
  sc.clear();
  EXPECT_EQ(sc.recorded(), 0);
}

// Eight consecutive tokens (a "needle") whose KV head 1 keys lie far from
// head 1's other keys, at position 300 of 1200: under a 1% budget the rate
// cap alone would allow 3 anchors by then, the burst reserve keeps all 8.
// KV head 0's keys are ten times larger everywhere, so an unnormalized score
// shared by the heads would never rank the needle first: the thresholds are
// per head. A query retrieving one needle token later then reads its exact
// key and value, and gets nearly the f16 cache's output.
TEST(AnchorSelect, DistinctiveKeysOfOneHeadAreKeptWhole) {
  ThreadPool pool(2);
  const int d = 64, total = 1200, kvd = 2 * d, needle = 300, needle_len = 8;
  const KvShape s = test::kv_shape(4, 2, d, total);
  const KvMode mode = parse_kv_mode("k2v2:g32:r32:s4:a1");
  ASSERT_EQ(mode.anchor_score, KvAnchorScore::kdev);
  QuantKvCache anchored(mode, s, pool);
  QuantKvCache plain(parse_kv_mode("k2v2:g32:r32:s4"), s, pool);
  auto f16 = make_kv_cache("f16", s, pool);
  auto k = test::random_floats(static_cast<size_t>(total) * kvd, 41, -0.5f, 0.5f);
  auto big = test::random_floats(static_cast<size_t>(total) * d, 42, -5.0f, 5.0f);
  auto far = test::random_floats(static_cast<size_t>(needle_len) * d, 43, -3.0f, 3.0f);
  for (int t = 0; t < total; ++t)
    for (int c = 0; c < d; ++c) k[static_cast<size_t>(t) * kvd + c] = big[static_cast<size_t>(t) * d + c];  // head 0
  for (int i = 0; i < needle_len; ++i)
    for (int c = 0; c < d; ++c) k[static_cast<size_t>(needle + i) * kvd + d + c] = far[static_cast<size_t>(i) * d + c];
  auto v = test::random_floats(k.size(), 44, -1, 1);
  auto q = test::random_floats(static_cast<size_t>(total) * s.q_dim(), 45, -0.3f, 0.3f);
  const int last = total - 1;
  // The last row's query heads of KV head 1 (heads 2, 3) retrieve needle token 3.
  for (int h = 2; h < 4; ++h)
    for (int c = 0; c < d; ++c) q[static_cast<size_t>(last) * s.q_dim() + h * d + c] = 2.0f * far[3 * d + c];
  std::vector<float> o_anchor(s.q_dim()), o_plain(s.q_dim()), o_f16(s.q_dim());
  std::vector<float> out(static_cast<size_t>(100) * s.q_dim());
  for (int t = 0; t < total;) {
    const int n = std::min(t < 1000 ? 100 : 1, total - t);
    for (KvCache* c : {static_cast<KvCache*>(&anchored), static_cast<KvCache*>(&plain), f16.get()}) {
      c->append(&k[static_cast<size_t>(t) * kvd], &v[static_cast<size_t>(t) * kvd], n);
      float* o = out.data();
      if (t + n == total) o = c == &anchored ? o_anchor.data() : c == &plain ? o_plain.data() : o_f16.data();
      c->attend(&q[static_cast<size_t>(t) * s.q_dim()], n, o, nullptr);
    }
    t += n;
  }
  ASSERT_GT(anchored.n_quantized(), needle + needle_len);  // the needle has left the window
  for (int i = 0; i < needle_len; ++i) {
    EXPECT_TRUE(anchored.is_exact(needle + i)) << "needle token " << i;
    EXPECT_FALSE(plain.is_exact(needle + i));
  }
  EXPECT_LE(anchored.n_anchors(), anchored.anchor_capacity());
  EXPECT_EQ(anchored.anchor_capacity(), 12 + 32);  // ceil(1% of 1200) + the burst reserve of one group
  // Anchors are stored for every KV head, exactly.
  std::vector<float> got(d);
  for (int h = 0; h < 2; ++h) {
    anchored.get_k(h, needle + 3, got.data());
    for (int c = 0; c < d; ++c) ASSERT_EQ(got[c], f16_to_f32(f32_to_f16(k[static_cast<size_t>(needle + 3) * kvd + h * d + c])));
  }
  // Heads 2, 3 of the last row (KV head 1) retrieve the needle.
  const double e_anchor = test::nmse(o_anchor.data() + 2 * d, o_f16.data() + 2 * d, 2 * d);
  const double e_plain = test::nmse(o_plain.data() + 2 * d, o_f16.data() + 2 * d, 2 * d);
  EXPECT_LT(e_anchor, 0.1 * e_plain) << "anchored " << e_anchor << " plain " << e_plain;
}

TEST(AnchorSelect, ModeGrammar) {
  EXPECT_EQ(parse_kv_mode("k2v2:a3").anchor_score, KvAnchorScore::kdev);
  EXPECT_EQ(parse_kv_mode("k2v2:a3:anchor=kdev").to_string(), "k2v2:g32:r128:s4:rope=post:a3");
  EXPECT_EQ(parse_kv_mode("k2v2:anchor=attn:a1").to_string(), "k2v2:g32:r128:s4:rope=post:a1:anchor=attn");
  EXPECT_EQ(parse_kv_mode("k2v2:rot:o2:a3").to_string(), "k2v2:g32:r128:s4:rope=post:rot:o2:a3");
  const KvMode m = parse_kv_mode(parse_kv_mode("k4v2:a1.5:anchor=attn:r64").to_string());
  EXPECT_EQ(m.anchor_score, KvAnchorScore::attn);
  EXPECT_EQ(m.to_string(), "k4v2:g32:r64:s4:rope=post:a1.5:anchor=attn");
  for (const auto& [mode, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"k2v2:anchor=kdev", "':anchor=' chooses how anchor tokens are picked and needs ':a<P>'"},
           {"k2v2:o2:anchor=attn", "':anchor=' chooses how anchor tokens are picked and needs ':a<P>'"},
           {"k2v2:a1:anchor=foo", "unknown field 'anchor=foo'"},
           {"k2v2:a1:anchor=", "unknown field 'anchor='"},
           {"k2v2:a1:anchor=KDEV", "unknown field 'anchor=KDEV'"},
           {"k2v2:a1:anchor=attn:anchor=kdev", "field 'anchor=kdev' given twice"},
           {"f16:anchor=kdev", "dense mode f16 takes no options"}}) {
    try {
      parse_kv_mode(mode);
      ADD_FAILURE() << "no error for " << mode;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(fragment), std::string::npos) << mode << ": " << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << mode << ": one line";
    }
  }
}

}  // namespace
}  // namespace longkv

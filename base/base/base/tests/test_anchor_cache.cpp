// Anchor tokens of the quantized cache (mode field ":a<P>", quant_cache.h),
// both scores (default kdev, anchor=attn; test_anchor_select.cpp has the
// kdev-specific ones): a token that attention singles out while it is in
// the window stays fp16 (anchor=attn);
// attention equals attention over what the cache stores; the stored layout
// (sinks, anchors, groups of the remaining tokens in order, window) matches
// an independent oracle; footprint counts anchors as fp16 tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kv/dense_attention.h"
#include "kv/kv_codec.h"
#include "kv/quant_cache.h"
#include "test_util.h"

namespace longkv {
namespace {

float f16r(float x) { return f16_to_f32(f32_to_f16(x)); }

// Attention of the last n_q rows over the tokens as the cache stores them
// (read back with get_k / get_v before the call: attend() cuts groups at its
// end), against the cache's own attend().
void check_attend_equals_stored(QuantKvCache& cache, const float* q, int n_q) {
  const KvShape& s = cache.shape();
  const int d = s.head_dim, g = s.group(), n = cache.size();
  std::vector<float> ks(static_cast<size_t>(s.n_kv_heads) * n * d), vs(ks.size());
  for (int h = 0; h < s.n_kv_heads; ++h)
    for (int j = 0; j < n; ++j) {
      cache.get_k(h, j, &ks[(static_cast<size_t>(h) * n + j) * d]);
      cache.get_v(h, j, &vs[(static_cast<size_t>(h) * n + j) * d]);
    }
  std::vector<float> out(static_cast<size_t>(n_q) * s.q_dim()), lse(static_cast<size_t>(n_q) * s.n_heads), want(d);
  AttendStats st;
  st.lse = lse.data();
  cache.attend(q, n_q, out.data(), &st);
  for (int r = 0; r < n_q; ++r)
    for (int h = 0; h < s.n_heads; ++h) {
      const int pos = n - n_q + r, kvh = h / g;
      const float* kk = &ks[static_cast<size_t>(kvh) * n * d];
      const float* vv = &vs[static_cast<size_t>(kvh) * n * d];
      double want_lse;
      const size_t hi = static_cast<size_t>(r) * s.n_heads + h;
      attend_reference(q + hi * d, d, kk, vv, pos + 1, 1.0f / std::sqrt(static_cast<float>(d)), want.data(),
                       &want_lse);
      double vmax = 0, e = 0;
      for (size_t i = 0; i < static_cast<size_t>(pos + 1) * d; ++i) vmax = std::fmax(vmax, std::fabs(vv[i]));
      for (int c = 0; c < d; ++c) e = std::fmax(e, std::fabs(out[hi * d + c] - want[c]) / vmax);
      ASSERT_LT(e, 8 * 6e-8 * std::sqrt(pos + 1.0)) << "row " << r << " head " << h << " of " << n_q;
      ASSERT_NEAR(lse[hi], want_lse, 1e-4 + 1e-5 * std::fabs(want_lse));
    }
}

// The storage against an oracle built from the inputs and the cache's
// anchor set only: sinks, anchors and window read back as f16 of the input;
// the other tokens between sinks and window, taken G at a time in position
// order, read back as the reference codec of their f16 inputs.
void check_layout(const QuantKvCache& cache, const KvMode& m, const std::vector<float>& k, const std::vector<float>& v) {
  const KvShape& s = cache.shape();
  const int d = s.head_dim, G = m.group, n = cache.size(), kvd = s.kv_dim();
  ASSERT_EQ(cache.n_sinks() + cache.n_quantized() + cache.n_anchors() + cache.n_window(), n);
  ASSERT_LE(cache.n_anchors(), cache.anchor_capacity());
  ASSERT_EQ(cache.n_quantized() % G, 0);
  const int w0 = n - cache.n_window();
  std::vector<int> coded;
  int n_exact = 0;
  for (int j = 0; j < n; ++j) {
    const bool exact = cache.is_exact(j);
    n_exact += exact;
    if (j < cache.n_sinks() || j >= w0) {
      ASSERT_TRUE(exact) << j;
    } else if (!exact) {
      coded.push_back(j);
    }
  }
  ASSERT_EQ(n_exact, cache.n_sinks() + cache.n_anchors() + cache.n_window());
  ASSERT_EQ(static_cast<int>(coded.size()), cache.n_quantized());
  std::vector<float> got(d), kin(static_cast<size_t>(G) * d), vin(kin.size()), kq(kin.size()), vq(kin.size());
  const KvGroupLayout kl = kv_group_layout(G, d, m.k_bits, 0), vl = kv_group_layout(G, d, m.v_bits, 0);
  std::vector<uint8_t> krec(kl.bytes), vrec(vl.bytes);
  for (int h = 0; h < s.n_kv_heads; ++h) {
    for (int j = 0; j < n; ++j) {
      if (!cache.is_exact(j)) continue;
      cache.get_k(h, j, got.data());
      for (int c = 0; c < d; ++c) ASSERT_EQ(got[c], f16r(k[static_cast<size_t>(j) * kvd + h * d + c])) << j;
      cache.get_v(h, j, got.data());
      for (int c = 0; c < d; ++c) ASSERT_EQ(got[c], f16r(v[static_cast<size_t>(j) * kvd + h * d + c])) << j;
    }
    for (size_t g0 = 0; g0 < coded.size(); g0 += G) {
      for (int t = 0; t < G; ++t)
        for (int c = 0; c < d; ++c) {
          kin[static_cast<size_t>(t) * d + c] = f16r(k[static_cast<size_t>(coded[g0 + t]) * kvd + h * d + c]);
          vin[static_cast<size_t>(t) * d + c] = f16r(v[static_cast<size_t>(coded[g0 + t]) * kvd + h * d + c]);
        }
      kv_quantize_keys(kin.data(), d, G, d, m.k_bits, m.symmetric, krec.data(), 0, m.fit_mse);
      kv_dequantize_keys(krec.data(), G, d, m.k_bits, kq.data(), d, 0);
      kv_quantize_values(vin.data(), d, G, d, m.v_bits, m.symmetric, vrec.data(), 0, m.fit_mse);
      kv_dequantize_values(vrec.data(), G, d, m.v_bits, vq.data(), d, 0);
      for (int t = 0; t < G; ++t) {
        cache.get_k(h, coded[g0 + t], got.data());
        for (int c = 0; c < d; ++c) ASSERT_EQ(got[c], kq[static_cast<size_t>(t) * d + c]) << coded[g0 + t];
        cache.get_v(h, coded[g0 + t], got.data());
        for (int c = 0; c < d; ++c) ASSERT_EQ(got[c], vq[static_cast<size_t>(t) * d + c]) << coded[g0 + t];
      }
    }
  }
  // Footprint: codes of the groups plus fp16 K and V of every exact token.
  const KvFootprint f = cache.footprint();
  const size_t groups = cache.n_quantized() / G;
  EXPECT_EQ(f.cpu_bytes, s.n_kv_heads * groups * (kl.bytes + vl.bytes) + 2 * sizeof(f16_t) * n_exact * kvd);
  EXPECT_EQ(f.tokens, n);
}

// Prefill chunks and decode steps, attending after each append as a model
// does; R = 0 and R = 128.
void run_stream(const std::string& mode, const std::vector<int>& pieces, int threads) {
  SCOPED_TRACE(mode);
  ThreadPool pool(threads);
  int total = 0;
  for (int p : pieces) total += p;
  const KvShape s = test::kv_shape(8, 2, 64, total);
  const KvMode m = parse_kv_mode(mode);
  QuantKvCache cache(m, s, pool);
  const int kvd = s.kv_dim();
  auto k = test::random_floats(static_cast<size_t>(total) * kvd, 11, -2, 2);
  auto v = test::random_floats(k.size(), 12);
  auto q = test::random_floats(static_cast<size_t>(total) * s.q_dim(), 13, -3, 3);
  int n = 0, max_anchors = 0;
  for (int p : pieces) {
    cache.append(&k[static_cast<size_t>(n) * kvd], &v[static_cast<size_t>(n) * kvd], p);
    n += p;
    check_attend_equals_stored(cache, &q[static_cast<size_t>(n - p) * s.q_dim()], p);
    if (testing::Test::HasFatalFailure()) return;
    check_layout(cache, m, k, v);
    if (testing::Test::HasFatalFailure()) return;
    // The deferred cut keeps at least R and fewer than R + G + (anchors
    // skipped by the last walk) window tokens once it can cut.
    if (n - cache.n_sinks() >= m.residual + m.group) {
      ASSERT_GE(cache.n_window(), m.residual);
    }
    ASSERT_GE(cache.n_anchors(), max_anchors);  // anchors are never dropped
    max_anchors = cache.n_anchors();
  }
  EXPECT_GT(cache.n_quantized(), 0);
  EXPECT_GT(cache.n_anchors(), 0);
  EXPECT_LE(cache.n_anchors(), cache.anchor_capacity());
  // anchor=kdev adds a burst reserve of one group to the P% budget.
  const int burst = m.anchor_score == KvAnchorScore::kdev ? m.group : 0;
  EXPECT_EQ(cache.anchor_capacity(), std::min(total, static_cast<int>(std::ceil(m.anchor_pct / 100.0 * total - 1e-9)) + burst));
  cache.clear();
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.n_anchors(), 0);
  EXPECT_EQ(cache.footprint().cpu_bytes, 0u);
}

TEST(AnchorCache, AttentionEqualsStoredTokensR0) {
  // Prefill of 97 and 300 rows, then decode steps: several cuts per call.
  std::vector<int> pieces = {97, 300};
  for (int i = 0; i < 40; ++i) pieces.push_back(1);
  pieces.push_back(17);
  run_stream("k2v2:g32:r0:s4:a3", pieces, 2);
  run_stream("k2v2:g32:r0:s4:a3:anchor=attn", pieces, 2);
  run_stream("k4v2:g32:r0:s0:a10", {1, 64, 33, 1, 1, 200, 1}, 3);
  run_stream("k4v2:g32:r0:s0:a10:anchor=attn", {1, 64, 33, 1, 1, 200, 1}, 3);
}

TEST(AnchorCache, AttentionEqualsStoredTokensR128) {
  std::vector<int> pieces = {300, 257};
  for (int i = 0; i < 70; ++i) pieces.push_back(1);
  pieces.push_back(129);
  run_stream("k2v2:g32:r128:s4:a5", pieces, 2);
  run_stream("k2v2:g32:r128:s4:a5:anchor=attn", pieces, 2);
  run_stream("k3v2:g64:r128:s4:a2.5", {700, 1, 1, 90}, 1);
  run_stream("k3v2:g64:r128:s4:a2.5:anchor=attn", {700, 1, 1, 90}, 1);
}

// Score anchor=attn: one token's key matches later queries strongly. While
// it is in the window a few queries retrieve it, so it must leave the window
// as an anchor (exact), and a much later query that retrieves it must then
// get nearly the f16 cache's output, while plain k2v2 returns its 2-bit value.
TEST(AnchorCache, RetrievedTokenBecomesAnAnchor) {
  ThreadPool pool(2);
  const int d = 64, total = 700, planted = 150, kvd = 2 * d;
  const KvShape s = test::kv_shape(4, 2, d, total);
  QuantKvCache anchored(parse_kv_mode("k2v2:g32:r32:s4:a2:anchor=attn"), s, pool);
  QuantKvCache plain(parse_kv_mode("k2v2:g32:r32:s4"), s, pool);
  auto f16 = make_kv_cache("f16", s, pool);
  auto k = test::random_floats(static_cast<size_t>(total) * kvd, 21, -1, 1);
  auto v = test::random_floats(k.size(), 22, -1, 1);
  auto q = test::random_floats(static_cast<size_t>(total) * s.q_dim(), 23, -1, 1);
  // Query heads of KV head h that retrieve the planted token: its key, scaled.
  auto retrieve = [&](float* qrow) {
    for (int h = 0; h < s.n_heads; ++h)
      for (int c = 0; c < d; ++c) qrow[h * d + c] = 6.0f * k[static_cast<size_t>(planted) * kvd + (h / 2) * d + c];
  };
  for (int r = planted + 1; r <= planted + 4; ++r) retrieve(&q[static_cast<size_t>(r) * s.q_dim()]);
  std::vector<float> out(s.q_dim());
  for (int t = 0; t < total - 1; ++t) {
    for (KvCache* c : {static_cast<KvCache*>(&anchored), static_cast<KvCache*>(&plain), f16.get()}) {
      c->append(&k[static_cast<size_t>(t) * kvd], &v[static_cast<size_t>(t) * kvd], 1);
      c->attend(&q[static_cast<size_t>(t) * s.q_dim()], 1, out.data(), nullptr);
    }
  }
  ASSERT_GT(anchored.n_quantized(), planted);  // the planted token has left the window
  EXPECT_TRUE(anchored.is_exact(planted));
  EXPECT_FALSE(plain.is_exact(planted));
  EXPECT_LE(anchored.n_anchors(), anchored.anchor_capacity());
  std::vector<float> got(d);
  for (int h = 0; h < 2; ++h) {
    anchored.get_k(h, planted, got.data());
    for (int c = 0; c < d; ++c) ASSERT_EQ(got[c], f16r(k[static_cast<size_t>(planted) * kvd + h * d + c]));
  }
  // The last query retrieves the planted token, ~550 positions back.
  float* qlast = &q[static_cast<size_t>(total - 1) * s.q_dim()];
  retrieve(qlast);
  std::vector<float> o_f16(s.q_dim()), o_anchor(s.q_dim()), o_plain(s.q_dim());
  const float* klast = &k[static_cast<size_t>(total - 1) * kvd];
  const float* vlast = &v[static_cast<size_t>(total - 1) * kvd];
  f16->append(klast, vlast, 1);
  f16->attend(qlast, 1, o_f16.data(), nullptr);
  anchored.append(klast, vlast, 1);
  anchored.attend(qlast, 1, o_anchor.data(), nullptr);
  plain.append(klast, vlast, 1);
  plain.attend(qlast, 1, o_plain.data(), nullptr);
  const double e_anchor = test::nmse(o_anchor.data(), o_f16.data(), o_f16.size());
  const double e_plain = test::nmse(o_plain.data(), o_f16.data(), o_f16.size());
  EXPECT_LT(e_anchor, 0.1 * e_plain) << "anchored " << e_anchor << " plain " << e_plain;
}

TEST(AnchorCache, BadModesAreClearErrors) {
  ThreadPool pool(1);
  const KvShape s = test::kv_shape(4, 2, 64, 64);
  for (const auto& [mode, fragment] : std::vector<std::pair<std::string, std::string>>{
           {"k2v2:a0", "anchor share 0% must be in (0, 10]"},
           {"k2v2:a11", "anchor share 11% must be in (0, 10]"},
           {"k2v2:a-1", "unknown field 'a-1'"},
           {"k2v2:a1:rope=pre", "anchor tokens ':a' need keys after RoPE"}}) {
    try {
      make_kv_cache(mode, s, pool);
      ADD_FAILURE() << "no error for " << mode;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << mode << ": " << e.what();
    }
  }
  EXPECT_EQ(make_kv_cache("k2v2:rot:o2:a1", s, pool)->mode(), "k2v2:g32:r128:s4:rope=post:rot:o2:a1");
}

}  // namespace
}  // namespace longkv

// Attention fidelity (kv/shadow_cache.h): the shadows' errors are exactly
// those of the same caches run on their own, the model sees the reference's
// outputs unchanged, pre-RoPE modes get their keys as they want them, and
// fewer bits measure as more error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rope.h"
#include "kv/shadow_cache.h"
#include "test_util.h"

namespace longkv {
namespace {

struct Stream {
  KvShape shape;
  std::vector<float> k, v, q;  // [tokens][kv_dim], [tokens][kv_dim], [tokens][q_dim]
  int tokens = 0;
};

Stream make_stream(int tokens, const RopeTable* rope) {
  Stream s;
  s.shape = KvShape{8, 2, 64, tokens, rope};
  s.tokens = tokens;
  s.k = test::random_floats(static_cast<size_t>(tokens) * s.shape.kv_dim(), 11, -2.0f, 2.0f);
  s.v = test::random_floats(static_cast<size_t>(tokens) * s.shape.kv_dim(), 12);
  s.q = test::random_floats(static_cast<size_t>(tokens) * s.shape.q_dim(), 13, -2.0f, 2.0f);
  return s;
}

// Streams the tokens into `c` in chunks as the model does (append, then the
// chunk's queries); keys rotated to their positions unless the cache wants
// them before RoPE. Returns every attention output.
std::vector<float> run(KvCache& c, const Stream& s, int chunk) {
  std::vector<float> out(s.q.size()), k;
  const size_t kvd = s.shape.kv_dim(), qd = s.shape.q_dim();
  for (int p = 0; p < s.tokens; p += chunk) {
    const int n = std::min(chunk, s.tokens - p);
    k.assign(s.k.begin() + p * kvd, s.k.begin() + (p + n) * kvd);
    if (!c.wants_pre_rope_keys() && s.shape.rope)
      for (int t = 0; t < n; ++t) rope_apply(*s.shape.rope, &k[t * kvd], s.shape.n_kv_heads, p + t);
    c.append(k.data(), s.v.data() + p * kvd, n);
    c.attend(s.q.data() + p * qd, n, out.data() + p * qd, nullptr);
  }
  return out;
}

// The error of out against ref, summed per chunk of `chunk` values and then
// over chunks, as the shadow cache sums per attend call.
AttnError error_of(const std::vector<float>& out, const std::vector<float>& ref, size_t chunk) {
  AttnError e;
  for (size_t c = 0; c < ref.size(); c += chunk) {
    AttnError part;
    for (size_t i = c; i < std::min(ref.size(), c + chunk); ++i) {
      const double d = static_cast<double>(out[i]) - ref[i];
      part.err2 += d * d;
      part.ref2 += static_cast<double>(ref[i]) * ref[i];
    }
    e.add(part);
  }
  return e;
}

TEST(ShadowCache, ErrorsAreThoseOfTheCachesRunAlone) {
  ThreadPool pool(2);
  const RopeTable rope(64, 64, 10000.0f, RopeStyle::interleaved);
  for (const bool with_rope : {false, true}) {
    SCOPED_TRACE(with_rope ? "keys rotated by the shadow cache" : "no RoPE table");
    const Stream s = make_stream(300, with_rope ? &rope : nullptr);
    std::vector<std::string> modes = {"f16", "k8v8", "k4v4", "k2v2"};
    if (with_rope) modes.push_back("k4v4:rope=pre");  // gets keys before RoPE, rotates them itself
    std::vector<std::unique_ptr<KvCache>> shadows;
    for (const auto& m : modes) shadows.push_back(make_kv_cache(m, s.shape, pool));
    ShadowCache shadow(make_kv_cache("f32", s.shape, pool), std::move(shadows));
    EXPECT_EQ(shadow.wants_pre_rope_keys(), with_rope);
    EXPECT_EQ(shadow.mode(), "f32");
    const std::vector<float> seen = run(shadow, s, 64);

    auto ref_cache = make_kv_cache("f32", s.shape, pool);
    const std::vector<float> ref = run(*ref_cache, s, 64);
    EXPECT_EQ(seen, ref) << "the model must see the reference's outputs unchanged";
    EXPECT_EQ(shadow.size(), s.tokens);
    ASSERT_EQ(shadow.errors().size(), modes.size());
    double last = 0;
    for (size_t m = 0; m < modes.size(); ++m) {
      SCOPED_TRACE(modes[m]);
      auto alone = make_kv_cache(modes[m], s.shape, pool);
      const AttnError want = error_of(run(*alone, s, 64), ref, 64 * s.shape.q_dim());
      const AttnError& got = shadow.errors()[m];
      EXPECT_EQ(got.rows, s.tokens);
      EXPECT_DOUBLE_EQ(got.err2, want.err2);
      EXPECT_DOUBLE_EQ(got.ref2, want.ref2);
      EXPECT_GT(got.relative(), 0.0);
      if (modes[m] != "k4v4:rope=pre") {  // f16 < k8v8 < k4v4 < k2v2
        EXPECT_GT(got.relative(), last);
        last = got.relative();
      }
    }
    EXPECT_LT(shadow.errors()[0].relative(), 1e-3);  // f16's rounding
    EXPECT_GT(shadow.errors()[3].relative(), 1e-2);  // 2-bit codes
  }
}

TEST(ShadowCache, ClearStartsAWindowAndKeepsTheSums) {
  ThreadPool pool(1);
  const Stream s = make_stream(100, nullptr);
  std::vector<std::unique_ptr<KvCache>> shadows;
  shadows.push_back(make_kv_cache("k2v2", s.shape, pool));
  ShadowCache shadow(make_kv_cache("f16", s.shape, pool), std::move(shadows));
  run(shadow, s, 32);
  const AttnError once = shadow.errors()[0];
  shadow.clear();
  EXPECT_EQ(shadow.size(), 0);
  EXPECT_EQ(shadow.shadow(0).size(), 0);
  run(shadow, s, 32);
  EXPECT_EQ(shadow.errors()[0].rows, 2 * once.rows);
  EXPECT_DOUBLE_EQ(shadow.errors()[0].err2, 2 * once.err2);
  EXPECT_DOUBLE_EQ(shadow.errors()[0].relative(), once.relative());
}

TEST(ShadowCache, RejectsShadowsOfAnotherShape) {
  ThreadPool pool(1);
  const Stream s = make_stream(16, nullptr);
  KvShape other = s.shape;
  other.head_dim = 32;
  std::vector<std::unique_ptr<KvCache>> shadows;
  shadows.push_back(make_kv_cache("k4v4", other, pool));
  EXPECT_THROW(ShadowCache(make_kv_cache("f32", s.shape, pool), std::move(shadows)), Error);
  // A pre-RoPE shadow beside a reference whose shape has no RoPE table: the
  // other caches' keys could not be rotated.
  const RopeTable rope(64, 64, 10000.0f, RopeStyle::interleaved);
  KvShape with_rope = s.shape;
  with_rope.rope = &rope;
  std::vector<std::unique_ptr<KvCache>> pre;
  pre.push_back(make_kv_cache("k4v4:rope=pre", with_rope, pool));
  EXPECT_THROW(ShadowCache(make_kv_cache("f32", s.shape, pool), std::move(pre)), Error);
}

}  // namespace
}  // namespace longkv

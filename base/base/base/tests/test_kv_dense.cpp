// The KV-cache contract on the dense caches: causal attention against a
// double-precision reference, the (o, m, l) merge, GQA mapping, stats, and
// footprint equal to the bytes held.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "kv/attn_state.h"
#include "kv/dense_attention.h"
#include "kv/dense_cache.h"
#include "test_util.h"

namespace longkv {
namespace {

// Reference: attention of query row r (absolute position pos) and head h
// over tokens 0..pos of the given K/V arrays [t][n_kv][d].
void reference_row(const std::vector<float>& k, const std::vector<float>& v, const float* q, const KvShape& s, int pos,
                   int h, float* out, double* lse) {
  const int d = s.head_dim, kvh = h / s.group();
  std::vector<float> kk(static_cast<size_t>(pos + 1) * d), vv(kk.size());
  for (int j = 0; j <= pos; ++j)
    for (int i = 0; i < d; ++i) {
      kk[static_cast<size_t>(j) * d + i] = k[(static_cast<size_t>(j) * s.n_kv_heads + kvh) * d + i];
      vv[static_cast<size_t>(j) * d + i] = v[(static_cast<size_t>(j) * s.n_kv_heads + kvh) * d + i];
    }
  attend_reference(q, d, kk.data(), vv.data(), pos + 1, 1.0f / std::sqrt(static_cast<float>(d)), out, lse);
}

template <typename Cache>
void check_against_reference(int n_heads, int n_kv, int d, int n_prefix, int n_q, int threads, double tol) {
  ThreadPool pool(threads);
  const KvShape s = test::kv_shape(n_heads, n_kv, d, n_prefix + n_q);
  Cache cache(s, pool);
  const int total = n_prefix + n_q;
  auto k = test::random_floats(static_cast<size_t>(total) * s.kv_dim(), 1, -2, 2);
  auto v = test::random_floats(k.size(), 2);
  auto q = test::random_floats(static_cast<size_t>(n_q) * s.q_dim(), 3, -2, 2);
  // Append in uneven pieces to exercise offsets.
  int done = 0;
  for (int piece : {n_prefix / 3, n_prefix - n_prefix / 3}) {
    if (piece > 0) cache.append(&k[static_cast<size_t>(done) * s.kv_dim()], &v[static_cast<size_t>(done) * s.kv_dim()], piece);
    done += piece;
  }
  cache.append(&k[static_cast<size_t>(done) * s.kv_dim()], &v[static_cast<size_t>(done) * s.kv_dim()], n_q);
  ASSERT_EQ(cache.size(), total);
  std::vector<float> out(q.size()), lse(static_cast<size_t>(n_q) * n_heads);
  AttendStats st;
  st.lse = lse.data();
  cache.attend(q.data(), n_q, out.data(), &st);
  std::vector<float> want(d);
  for (int r = 0; r < n_q; ++r)
    for (int h = 0; h < n_heads; ++h) {
      double want_lse;
      reference_row(k, v, &q[(static_cast<size_t>(r) * n_heads + h) * d], s, n_prefix + r, h, want.data(), &want_lse);
      const float* got = &out[(static_cast<size_t>(r) * n_heads + h) * d];
      EXPECT_LT(test::nmse(got, want.data(), d), tol) << "row " << r << " head " << h;
      EXPECT_NEAR(lse[static_cast<size_t>(r) * n_heads + h], want_lse, 1e-3 + std::fabs(want_lse) * 1e-4);
    }
}

TEST(KvDense, F32MatchesReferencePrefill) { check_against_reference<DenseKvCacheF32>(8, 2, 64, 37, 17, 2, 1e-10); }
TEST(KvDense, F32MatchesReferenceDecodeSplitKeys) {
  // One query row over a long prefix: the keys are split across threads
  // and merged through (o, m, l).
  check_against_reference<DenseKvCacheF32>(4, 1, 32, 3001, 1, 3, 1e-10);
}
TEST(KvDense, F32OddHeadDimAndMha) { check_against_reference<DenseKvCacheF32>(3, 3, 17, 97, 5, 1, 1e-10); }
// f16 storage: error of one f16 rounding of each element (2^-11 relative).
TEST(KvDense, F16WithinHalfPrecision) { check_against_reference<DenseKvCacheF16>(8, 2, 64, 200, 9, 2, 1e-6); }

TEST(KvDense, MergeOfPartsEqualsWhole) {
  const int d = 24, n = 101;
  auto k = test::random_floats(static_cast<size_t>(n) * d, 5, -3, 3);
  auto v = test::random_floats(k.size(), 6);
  auto q = test::random_floats(d, 7);
  const float scale = 0.3f;
  std::vector<float> whole(d), scores(n);
  AttnState sw;
  attend_block(q.data(), 1, d, k.data(), v.data(), n, scale, whole.data(), &sw, scores.data());
  for (int cut : {1, 40, 100}) {
    std::vector<float> a(d), b(d);
    AttnState sa, sb;
    attend_block(q.data(), 1, d, k.data(), v.data(), cut, scale, a.data(), &sa, scores.data());
    attend_block(q.data(), 1, d, &k[static_cast<size_t>(cut) * d], &v[static_cast<size_t>(cut) * d], n - cut, scale,
                 b.data(), &sb, scores.data());
    attn_state_merge(a.data(), sa, b.data(), sb, d);
    EXPECT_LT(test::nmse(a.data(), whole.data(), d), 1e-12) << "cut " << cut;
    EXPECT_NEAR(sa.lse(), sw.lse(), 1e-5);
  }
  // Merging an empty state changes nothing.
  std::vector<float> c = whole, empty(d, 123.0f);
  AttnState sc = sw, se;
  attn_state_merge(c.data(), sc, empty.data(), se, d);
  EXPECT_EQ(c, whole);
}

TEST(KvDense, TokenMassSumsToQueryRowsTimesHeads) {
  ThreadPool pool(2);
  const KvShape s = test::kv_shape(4, 2, 16, 50);
  DenseKvCacheF32 cache(s, pool);
  auto k = test::random_floats(50 * static_cast<size_t>(s.kv_dim()), 8);
  auto v = test::random_floats(k.size(), 9);
  auto q = test::random_floats(10 * static_cast<size_t>(s.q_dim()), 10);
  cache.append(k.data(), v.data(), 50);
  std::vector<float> out(q.size()), mass(2 * 50, 0.0f);
  AttendStats st;
  st.token_mass = mass.data();
  cache.attend(q.data(), 10, out.data(), &st);
  for (int kvh = 0; kvh < 2; ++kvh) {
    double total = 0;
    for (int j = 0; j < 50; ++j) total += mass[kvh * 50 + j];
    EXPECT_NEAR(total, 10.0 * s.group(), 1e-4);  // each (row, head) distributes mass 1
  }
}

TEST(KvDense, FootprintEqualsBytesHeld) {
  ThreadPool pool(1);
  const KvShape s = test::kv_shape(8, 2, 64, 100);
  DenseKvCacheF16 c16(s, pool);
  DenseKvCacheF32 c32(s, pool);
  auto k = test::random_floats(30 * static_cast<size_t>(s.kv_dim()), 1);
  c16.append(k.data(), k.data(), 30);
  c32.append(k.data(), k.data(), 30);
  EXPECT_EQ(c16.footprint().bytes(), 30u * 2 * 2 * 64 * 2);
  EXPECT_EQ(c32.footprint().bytes(), 30u * 2 * 2 * 64 * 4);
  EXPECT_EQ(c16.footprint().capacity_bytes, 100u * 2 * 2 * 64 * 2);
  EXPECT_EQ(c16.footprint().k_bits, 16.0);
  EXPECT_EQ(c32.footprint().v_bits, 32.0);
  // Stored values read back exactly (f32) / f16-rounded (f16).
  std::vector<float> back(64);
  c32.get_k(1, 7, back.data());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(back[i], k[(7 * 2 + 1) * 64 + i]);
  c16.get_v(0, 29, back.data());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(back[i], f16_to_f32(f32_to_f16(k[(29 * 2) * 64 + i])));
}

TEST(KvDense, AppendBeyondCapacityIsAnError) {
  ThreadPool pool(1);
  DenseKvCacheF32 c(test::kv_shape(2, 1, 8, 4), pool);
  std::vector<float> k(5 * 8, 0.5f);
  c.append(k.data(), k.data(), 4);
  try {
    c.append(k.data(), k.data(), 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache full"), std::string::npos);
  }
}

TEST(KvDense, UnknownModeListsAcceptedModes) {
  ThreadPool pool(1);
  try {
    make_kv_cache("q8", test::kv_shape(2, 1, 8, 4), pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown KV cache mode 'q8': expected f32, f16 or k<bits>v<bits>"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace longkv

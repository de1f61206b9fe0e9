// The quantized KV cache (quant_cache.h) against an independent model of
// its token lifecycle: which tokens are fp16 (sinks, window) and which are
// quantized, attention equal to attention over the dequantized cache,
// footprint equal to the bytes held, and clear errors.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "kv/dense_attention.h"
#include "kv/kv_codec.h"
#include "kv/quant_cache.h"
#include "test_util.h"

namespace longkv {
namespace {

float f16r(float x) { return f16_to_f32(f32_to_f16(x)); }

// Groups quantized after n tokens: the window is cut when it reaches R + G.
int expected_groups(int n, int S, int R, int G) { return n - S - R >= G ? (n - S - R) / G : 0; }

// The oracle: keys/values [n][n_kv][d] as the cache should hold them after n
// appends (fp16 for sinks and window; quantize(f16 input) for groups),
// rotated to their positions if pre-RoPE. cut_n >= 0: groups only as cut
// after cut_n tokens, the later ones fp16 (cut=attend before the rows of the
// last append have attended).
void oracle_kv(const std::vector<float>& k, const std::vector<float>& v, int n, const KvShape& s, const KvMode& m,
               std::vector<float>& ko, std::vector<float>& vo, int cut_n = -1) {
  const int d = s.head_dim, kvd = s.kv_dim(), G = m.group;
  const int S = std::min(m.sinks, n);
  ko.resize(static_cast<size_t>(n) * kvd);
  vo.resize(ko.size());
  for (size_t i = 0; i < ko.size(); ++i) {
    ko[i] = f16r(k[i]);
    vo[i] = f16r(v[i]);
  }
  const int groups = expected_groups(cut_n >= 0 ? cut_n : n, m.sinks, m.residual, G);
  std::vector<float> kin(static_cast<size_t>(G) * d), vin(kin.size()), kq(kin.size()), vq(kin.size());
  const int no = kv_outlier_count(m.outlier_pct, G, d);
  std::vector<uint8_t> krec(kv_group_layout(G, d, m.k_bits, no).bytes), vrec(kv_group_layout(G, d, m.v_bits, no).bytes);
  for (int gi = 0; gi < groups; ++gi)
    for (int h = 0; h < s.n_kv_heads; ++h) {
      for (int t = 0; t < G; ++t)
        for (int c = 0; c < d; ++c) {
          const size_t src = (static_cast<size_t>(S + gi * G + t) * s.n_kv_heads + h) * d + c;
          kin[t * d + c] = ko[src];
          vin[t * d + c] = vo[src];
        }
      kv_quantize_keys(kin.data(), d, G, d, m.k_bits, m.symmetric, krec.data(), no, m.fit_mse);
      kv_dequantize_keys(krec.data(), G, d, m.k_bits, kq.data(), d, no);
      kv_quantize_values(vin.data(), d, G, d, m.v_bits, m.symmetric, vrec.data(), no, m.fit_mse);
      kv_dequantize_values(vrec.data(), G, d, m.v_bits, vq.data(), d, no);
      for (int t = 0; t < G; ++t)
        for (int c = 0; c < d; ++c) {
          const size_t dst = (static_cast<size_t>(S + gi * G + t) * s.n_kv_heads + h) * d + c;
          ko[dst] = kq[t * d + c];
          vo[dst] = vq[t * d + c];
        }
    }
  if (m.pre_rope)
    for (int t = 0; t < n; ++t) rope_apply(*s.rope, &ko[static_cast<size_t>(t) * kvd], s.n_kv_heads, t);
}

struct AttnCase {
  std::string mode;
  int n_heads, n_kv, d;
  int n_prefix, n_q;
  int threads;
  std::vector<int> chunks;  // append pieces of the prefix (rest in one)
};

void check_attention(const AttnCase& ac) {
  SCOPED_TRACE(ac.mode + " prefix " + std::to_string(ac.n_prefix) + " n_q " + std::to_string(ac.n_q) + " d " +
               std::to_string(ac.d));
  ThreadPool pool(ac.threads);
  RopeTable rope(ac.d, ac.d, 10000.0f, RopeStyle::neox);
  const int total = ac.n_prefix + ac.n_q;
  const KvShape s = test::kv_shape(ac.n_heads, ac.n_kv, ac.d, total + 5, &rope);
  auto cache = make_kv_cache(ac.mode, s, pool);
  const KvMode m = parse_kv_mode(ac.mode);
  ASSERT_EQ(cache->wants_pre_rope_keys(), m.pre_rope);
  const int kvd = s.kv_dim();
  auto k = test::random_floats(static_cast<size_t>(total) * kvd, 1, -2, 2);
  auto v = test::random_floats(k.size(), 2);
  auto q = test::random_floats(static_cast<size_t>(ac.n_q) * s.q_dim(), 3, -2, 2);
  int done = 0;
  for (int piece : ac.chunks) {
    cache->append(&k[static_cast<size_t>(done) * kvd], &v[static_cast<size_t>(done) * kvd], piece);
    done += piece;
  }
  if (ac.n_prefix > done)
    cache->append(&k[static_cast<size_t>(done) * kvd], &v[static_cast<size_t>(done) * kvd], ac.n_prefix - done);
  cache->append(&k[static_cast<size_t>(ac.n_prefix) * kvd], &v[static_cast<size_t>(ac.n_prefix) * kvd], ac.n_q);
  ASSERT_EQ(cache->size(), total);

  // The query rows' own append: cut=append has cut it, cut=attend not yet
  // (anchored modes are not modelled here).
  std::vector<float> ko, vo;
  oracle_kv(k, v, total, s, m, ko, vo, m.defer ? ac.n_prefix : total);
  std::vector<float> out(q.size()), lse(static_cast<size_t>(ac.n_q) * ac.n_heads);
  AttendStats st;
  st.lse = lse.data();
  cache->attend(q.data(), ac.n_q, out.data(), &st);

  const int d = ac.d, g = s.group();
  std::vector<float> kk, vv, want(d);
  double worst = 0;
  for (int r = 0; r < ac.n_q; ++r)
    for (int h = 0; h < ac.n_heads; ++h) {
      const int pos = ac.n_prefix + r, kvh = h / g;
      kk.resize(static_cast<size_t>(pos + 1) * d);
      vv.resize(kk.size());
      for (int j = 0; j <= pos; ++j)
        for (int c = 0; c < d; ++c) {
          kk[static_cast<size_t>(j) * d + c] = ko[(static_cast<size_t>(j) * ac.n_kv + kvh) * d + c];
          vv[static_cast<size_t>(j) * d + c] = vo[(static_cast<size_t>(j) * ac.n_kv + kvh) * d + c];
        }
      double want_lse;
      attend_reference(&q[(static_cast<size_t>(r) * ac.n_heads + h) * d], d, kk.data(), vv.data(), pos + 1,
                       1.0f / std::sqrt(static_cast<float>(d)), want.data(), &want_lse);
      // The output is a weighted mean of values much larger than itself, so
      // its error is measured against the values' scale: float sums over
      // d channels and pos + 1 tokens give a few units of 2^-24 * sqrt(n).
      double vmax = 0, e = 0;
      for (float x : vv) vmax = std::fmax(vmax, std::fabs(x));
      const float* got = &out[(static_cast<size_t>(r) * ac.n_heads + h) * d];
      for (int c = 0; c < d; ++c) e = std::fmax(e, std::fabs(got[c] - want[c]) / vmax);
      worst = std::fmax(worst, e);
      ASSERT_LT(e, 8 * 6e-8 * std::sqrt(pos + 1.0)) << "row " << r << " head " << h;
      ASSERT_NEAR(lse[static_cast<size_t>(r) * ac.n_heads + h], want_lse, 1e-4 + 1e-5 * std::fabs(want_lse));
    }
}

const char* const kBitModes[] = {"k8v8",    "k4v4",          "k3v3",          "k2v2",           "k1v1",
                                 "k4v2",    "k3v2:sym",      "k2v2:o2",       "k4v2:sym:o0.5", "k2v2:fit=mse",
                                 "k1v1:fit=mse", "k4v2:o1:fit=mse"};

TEST(QuantCache, PrefillMatchesDequantizedReference) {
  for (const char* bits : kBitModes)
    for (const char* rope : {":rope=post", ":rope=pre"}) {
      const std::string base = std::string(bits) + rope;
      // Prefill chunk of 17 rows after 97 tokens: with r16-like small windows
      // the chunk's own tokens get quantized while appending.
      check_attention({base + ":g32:r32:s4", 8, 2, 64, 97, 17, 2, {40}});
      check_attention({base + ":g32:r0:s0", 4, 1, 96, 61, 64, 2, {1, 30}});
    }
}

TEST(QuantCache, DecodeMatchesDequantizedReference) {
  for (const char* bits : kBitModes)
    for (const char* rope : {":rope=post", ":rope=pre"}) {
      const std::string base = std::string(bits) + rope;
      // Long prefix, one row: keys split across threads.
      check_attention({base + ":g64:r128:s4", 8, 2, 128, 999, 1, 3, {500}});
      check_attention({base + ":g32:r0:s4", 4, 2, 64, 16, 1, 2, {}});
    }
}

// cut=attend (the default): the rows of a chunk read the chunk's own tokens
// exactly (older tokens as the cache held them before the chunk), and after
// attend() the cache holds the groups cut=append makes, bit for bit.
TEST(QuantCache, DeferredCutReadsTheChunkExactlyThenHoldsTheSameCodes) {
  for (const char* base : {"k2v2:g32:r32:s4", "k3v3:g32:r0:s0", "k4v2:g64:r16:s1:sym"}) {
    SCOPED_TRACE(base);
    ThreadPool pool(2);
    const int d = 64, n_heads = 8, n_kv = 2;
    std::vector<int> chunks = {100, 37, 64};
    chunks.insert(chunks.end(), 70, 1);  // decode steps across a group boundary
    chunks.push_back(50);
    int total = 0;
    for (int c : chunks) total += c;
    const KvShape s = test::kv_shape(n_heads, n_kv, d, total);
    QuantKvCache now(parse_kv_mode(std::string(base) + ":cut=append"), s, pool), later(parse_kv_mode(base), s, pool);
    ASSERT_EQ(now.mode(), later.mode() + ":cut=append");
    const KvMode m = parse_kv_mode(base);
    const int kvd = s.kv_dim(), qd = s.q_dim(), g = s.group();
    const auto k = test::random_floats(static_cast<size_t>(total) * kvd, 11, -2, 2),
               v = test::random_floats(k.size(), 12), q = test::random_floats(static_cast<size_t>(total) * qd, 13, -2, 2);
    int done = 0;
    for (int n : chunks) {
      std::vector<float> ko, vo;
      oracle_kv(k, v, done, s, m, ko, vo);  // before the chunk, as cut=append left it
      for (size_t i = static_cast<size_t>(done) * kvd; i < static_cast<size_t>(done + n) * kvd; ++i) {
        ko.push_back(f16r(k[i]));
        vo.push_back(f16r(v[i]));
      }
      const size_t at = static_cast<size_t>(done) * kvd;
      now.append(&k[at], &v[at], n);
      later.append(&k[at], &v[at], n);
      std::vector<float> out_now(static_cast<size_t>(n) * qd), out(out_now.size());
      now.attend(&q[static_cast<size_t>(done) * qd], n, out_now.data(), nullptr);
      later.attend(&q[static_cast<size_t>(done) * qd], n, out.data(), nullptr);
      std::vector<float> kk, vv, want(d);
      for (int r = 0; r < n; ++r)
        for (int h = 0; h < n_heads; ++h) {
          const int pos = done + r, kvh = h / g;
          kk.resize(static_cast<size_t>(pos + 1) * d);
          vv.resize(kk.size());
          double vmax = 0;
          for (int j = 0; j <= pos; ++j)
            for (int c = 0; c < d; ++c) {
              kk[static_cast<size_t>(j) * d + c] = ko[(static_cast<size_t>(j) * n_kv + kvh) * d + c];
              vv[static_cast<size_t>(j) * d + c] = vo[(static_cast<size_t>(j) * n_kv + kvh) * d + c];
              vmax = std::fmax(vmax, std::fabs(vv[static_cast<size_t>(j) * d + c]));
            }
          attend_reference(&q[(static_cast<size_t>(pos) * n_heads + h) * d], d, kk.data(), vv.data(), pos + 1,
                           1.0f / std::sqrt(static_cast<float>(d)), want.data(), nullptr);
          const float* got = &out[(static_cast<size_t>(r) * n_heads + h) * d];
          double e = 0;
          for (int c = 0; c < d; ++c) e = std::fmax(e, std::fabs(got[c] - want[c]) / vmax);
          ASSERT_LT(e, 8 * 6e-8 * std::sqrt(pos + 1.0)) << "chunk at " << done << " row " << r << " head " << h;
        }
      done += n;
      // After the cut: the same tokens exact, the same codes.
      std::vector<float> a(d), b(d);
      for (int kvh = 0; kvh < n_kv; ++kvh)
        for (int j = 0; j < done; ++j) {
          ASSERT_EQ(now.is_exact(j), later.is_exact(j)) << "token " << j;
          now.get_k(kvh, j, a.data());
          later.get_k(kvh, j, b.data());
          ASSERT_EQ(a, b) << "key of token " << j;
          now.get_v(kvh, j, a.data());
          later.get_v(kvh, j, b.data());
          ASSERT_EQ(a, b) << "value of token " << j;
        }
      EXPECT_EQ(later.footprint().bytes(), now.footprint().bytes());
    }
  }
}

TEST(QuantCache, TokenCountsOneToThousand) {
  for (int n : {1, 17, 97, 1000})
    for (const char* mode : {"k4v2:g32:r16:s4", "k2v2:g32:r0:s0:rope=pre"}) {
      // n tokens in one prefill chunk, then one decode step on top.
      check_attention({mode, 4, 2, 64, 0, n, 2, {}});
      check_attention({mode, 4, 2, 64, n, 1, 2, {}});
    }
}

// Streams tokens one at a time and in chunks; after each append checks,
// for every token, whether it is fp16 (read back == f16 of the input) or
// quantized (== the reference codec applied to the f16 inputs).
// cut=attend with no attend() between the appends: each append first cuts
// what the previous one left, so the newest append is fp16 until then.
void check_lifecycle(int S, int R, int G, const std::vector<int>& pieces, bool cut_on_attend) {
  SCOPED_TRACE("S " + std::to_string(S) + " R " + std::to_string(R) + " G " + std::to_string(G) +
               (cut_on_attend ? " cut=attend" : " cut=append"));
  ThreadPool pool(1);
  const int d = 64, total = S + R + 3 * G + 7;
  const KvShape s = test::kv_shape(2, 2, d, total);
  const std::string mode = "k3v2:g" + std::to_string(G) + ":r" + std::to_string(R) + ":s" + std::to_string(S) +
                           (cut_on_attend ? "" : ":cut=append");
  QuantKvCache cache(parse_kv_mode(mode), s, pool);
  const KvMode m = parse_kv_mode(mode);
  auto k = test::random_floats(static_cast<size_t>(total) * s.kv_dim(), 5, -3, 3);
  auto v = test::random_floats(k.size(), 6);
  std::vector<float> ko, vo, got(d);
  int n = 0;
  size_t piece_i = 0;
  while (n < total) {
    const int step = pieces.empty() ? 1 : std::min(pieces[piece_i++ % pieces.size()], total - n);
    cache.append(&k[static_cast<size_t>(n) * s.kv_dim()], &v[static_cast<size_t>(n) * s.kv_dim()], step);
    n += step;
    const int cut_n = cut_on_attend ? n - step : n;
    const int groups = expected_groups(cut_n, S, R, G);
    ASSERT_EQ(cache.n_sinks(), std::min(S, n)) << "after " << n;
    ASSERT_EQ(cache.n_quantized(), groups * G) << "after " << n;
    ASSERT_EQ(cache.n_window(), n - std::min(S, n) - groups * G) << "after " << n;
    ASSERT_LT(cache.n_window(), R + G + (cut_on_attend ? step : 0));
    if (n > S + R + G) {
      ASSERT_GE(cache.n_window(), R);
    }
    // Full read-back where the state changes: sinks filling, a group being
    // cut (and the steps around it), and the end.
    const int phase = (n - S - R) % G;
    if (!(n <= S + 1 || phase == 0 || phase == 1 || phase == G - 1 || !pieces.empty() || n == total)) continue;
    oracle_kv(k, v, n, s, m, ko, vo, cut_n);
    for (int j = 0; j < n; ++j) {
      const bool exact = j < S || j >= S + groups * G;
      ASSERT_EQ(cache.is_exact(j), exact) << "token " << j << " after " << n;
      for (int h = 0; h < 2; ++h) {
        const size_t off = (static_cast<size_t>(j) * 2 + h) * d;
        cache.get_k(h, j, got.data());
        for (int c = 0; c < d; ++c) ASSERT_EQ(got[c], ko[off + c]) << "key token " << j << " after " << n;
        cache.get_v(h, j, got.data());
        for (int c = 0; c < d; ++c) ASSERT_EQ(got[c], vo[off + c]) << "value token " << j << " after " << n;
        if (exact) {
          ASSERT_EQ(got[3], f16r(v[off + 3]));
        }
      }
    }
  }
}

TEST(QuantCache, WindowAndSinkBoundariesOneByOne) {
  for (int S : {0, 4})
    for (int R : {0, 128})
      for (int G : {32, 64})
        for (bool cut_on_attend : {false, true}) check_lifecycle(S, R, G, {}, cut_on_attend);
}

TEST(QuantCache, WindowAndSinkBoundariesInChunks) {
  for (int S : {0, 4})
    for (int R : {0, 128})
      for (int G : {32, 64})
        for (bool cut_on_attend : {false, true}) check_lifecycle(S, R, G, {3, 37, 1, 64}, cut_on_attend);
}

TEST(QuantCache, FootprintEqualsBytesHeld) {
  ThreadPool pool(1);
  const int n_kv = 2, d = 128, G = 32, R = 64, S = 4, max_tokens = 1000;
  const KvShape s = test::kv_shape(8, n_kv, d, max_tokens);
  // cut=append: every append leaves the window below R + G, so capacity is
  // fixed (cut=attend's window grows with the largest append; the deferred
  // test checks its bytes against these).
  auto cache = make_kv_cache("k4v2:g32:r64:s4:cut=append", s, pool);
  // Independent byte model: codes d*G*b/8, fp16 scale + zero per channel
  // (keys) or per G-channel group of each token (values).
  const size_t krec = d * G * 4 / 8 + 2 * d * 2, vrec = d * G * 2 / 8 + 2 * (G * (d / G)) * 2;
  const size_t exact_tok_bytes = static_cast<size_t>(n_kv) * d * 2;
  auto k = test::random_floats(static_cast<size_t>(max_tokens) * s.kv_dim(), 1);
  int n = 0;
  for (int step : {1, 3, 60, 100, 1, 335, 500}) {
    cache->append(&k[static_cast<size_t>(n) * s.kv_dim()], &k[static_cast<size_t>(n) * s.kv_dim()], step);
    n += step;
    const int groups = expected_groups(n, S, R, G), exact = n - groups * G;
    const KvFootprint f = cache->footprint();
    const size_t kb = static_cast<size_t>(groups) * n_kv * krec + exact * exact_tok_bytes;
    const size_t vb = static_cast<size_t>(groups) * n_kv * vrec + exact * exact_tok_bytes;
    EXPECT_EQ(f.tokens, n);
    EXPECT_EQ(f.cpu_bytes, kb + vb) << "after " << n;
    EXPECT_EQ(f.gpu_bytes, 0u);
    EXPECT_DOUBLE_EQ(f.k_bits, 8.0 * kb / (static_cast<double>(n) * n_kv * d));
    EXPECT_DOUBLE_EQ(f.v_bits, 8.0 * vb / (static_cast<double>(n) * n_kv * d));
    const int max_groups = (max_tokens - S - R) / G;
    EXPECT_EQ(f.capacity_bytes, static_cast<size_t>(max_groups) * n_kv * (krec + vrec) + 2 * (S + R + G) * exact_tok_bytes);
  }
  // 928 quantized tokens at 4 + 32/G = 5 bits, 72 fp16 (sinks + window).
  EXPECT_DOUBLE_EQ(cache->footprint().k_bits, (928 * 5.0 + 72 * 16.0) / 1000);
  EXPECT_DOUBLE_EQ(kv_mode_bytes_per_token("k4v2:g32", s), n_kv * (krec + vrec) / 32.0);
  EXPECT_DOUBLE_EQ(kv_mode_bytes_per_token("k2v2:g64", s), n_kv * 2 * (d * 64 * 2 / 8 + 4.0 * d) / 64.0);
  // Outliers: 2% of the 32 x 128 elements of a record, 4 bytes each.
  EXPECT_DOUBLE_EQ(kv_mode_bytes_per_token("k2v2:o2", s), n_kv * 2 * (d * 32 * 2 / 8 + 4.0 * d + 4.0 * 82) / 32.0);
}

TEST(QuantCache, CloseToDenseAttention) {
  // Not an oracle for the codes, a sanity bound: quantized attention stays
  // near dense attention, closer with more bits.
  ThreadPool pool(2);
  const KvShape s = test::kv_shape(8, 2, 64, 600);
  auto k = test::random_floats(600 * static_cast<size_t>(s.kv_dim()), 1, -2, 2);
  auto v = test::random_floats(k.size(), 2);
  auto q = test::random_floats(static_cast<size_t>(s.q_dim()), 3, -2, 2);
  auto dense = make_kv_cache("f32", s, pool);
  dense->append(k.data(), v.data(), 600);
  std::vector<float> want(q.size()), got(q.size());
  dense->attend(q.data(), 1, want.data(), nullptr);
  double prev = 0;
  for (const char* mode : {"k8v8:r0:s0", "k4v4:r0:s0", "k2v2:r0:s0"}) {
    auto c = make_kv_cache(mode, s, pool);
    c->append(k.data(), v.data(), 599);  // cut when the query's token arrives
    c->append(k.data() + 599 * static_cast<size_t>(s.kv_dim()), v.data() + 599 * static_cast<size_t>(s.kv_dim()), 1);
    c->attend(q.data(), 1, got.data(), nullptr);
    const double e = test::nmse(got.data(), want.data(), got.size());
    EXPECT_GT(e, prev) << mode;
    if (prev == 0) {
      EXPECT_LT(e, 1e-4) << mode;
    }
    prev = e;
  }
  EXPECT_LT(prev, 0.5);
}

TEST(QuantCache, TokenMassSumsToRowsTimesHeads) {
  ThreadPool pool(2);
  RopeTable rope(32, 32, 10000.0f, RopeStyle::interleaved);
  for (const char* mode : {"k4v4:g32:r16:s2", "k2v2:g32:r0:s0:rope=pre"}) {
    const KvShape s = test::kv_shape(4, 2, 32, 200, &rope);
    auto c = make_kv_cache(mode, s, pool);
    auto k = test::random_floats(200 * static_cast<size_t>(s.kv_dim()), 8);
    auto q = test::random_floats(10 * static_cast<size_t>(s.q_dim()), 10);
    c->append(k.data(), k.data(), 200);
    std::vector<float> out(q.size()), mass(2 * 200, 0.0f);
    AttendStats st;
    st.token_mass = mass.data();
    c->attend(q.data(), 10, out.data(), &st);
    for (int kvh = 0; kvh < 2; ++kvh) {
      double total = 0;
      for (int j = 0; j < 200; ++j) total += mass[kvh * 200 + j];
      EXPECT_NEAR(total, 10.0 * s.group(), 1e-3) << mode;
    }
  }
}

void expect_error(const std::string& mode, const KvShape& s, const std::string& fragment) {
  ThreadPool pool(1);
  try {
    make_kv_cache(mode, s, pool);
    FAIL() << "no error for " << mode;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(QuantCache, BadParametersAreClearErrors) {
  expect_error("k4v2:rope=pre", test::kv_shape(8, 2, 64, 100), "(rope=pre) but the model gave the cache no RoPE table");
  expect_error("k4v4:g16", test::kv_shape(8, 2, 64, 100), "group size 16 must be a multiple of 32");
  expect_error("k4v4:g64", test::kv_shape(8, 2, 96, 100), "group size 64 must divide the head dimension 96");
  RopeTable rope(64, 64, 10000.0f, RopeStyle::neox);
  ThreadPool pool(1);
  auto c = make_kv_cache("k4v2:rope=pre", test::kv_shape(8, 2, 64, 100, &rope), pool);
  EXPECT_TRUE(c->wants_pre_rope_keys());
  EXPECT_EQ(c->mode(), "k4v2:g32:r128:s4:rope=pre");
  std::vector<float> k(101 * 128, 0.5f);
  c->append(k.data(), k.data(), 100);
  try {
    c->append(k.data(), k.data(), 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache full"), std::string::npos);
  }
}

}  // namespace
}  // namespace longkv

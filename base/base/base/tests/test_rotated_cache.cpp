// The Hadamard-rotated cache: the transform is orthonormal and its own
// inverse, and attention through it equals attention over the rotated
// vectors rotated back (exactly the same function on a dense cache).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "kv/dense_cache.h"
#include "kv/rotated_cache.h"
#include "kv/kv_mode.h"
#include "test_util.h"

namespace longkv {
namespace {

TEST(RotatedCache, HadamardIsOrthonormalAndSelfInverse) {
  for (int d : {1, 2, 8, 64, 128}) {
    auto x = test::random_floats(d, 11);
    auto y = x;
    hadamard_rotate(y.data(), d);
    double nx = 0, ny = 0;
    for (int i = 0; i < d; ++i) {
      nx += x[i] * x[i];
      ny += y[i] * y[i];
    }
    EXPECT_NEAR(nx, ny, 1e-5 * nx) << d;
    hadamard_rotate(y.data(), d);
    for (int i = 0; i < d; ++i) EXPECT_NEAR(y[i], x[i], 1e-6f) << d;
  }
  // d = 2: [a+b, a-b] / sqrt(2).
  float v[2] = {3.0f, 1.0f};
  hadamard_rotate(v, 2);
  EXPECT_FLOAT_EQ(v[0], 4.0f / std::sqrt(2.0f));
  EXPECT_FLOAT_EQ(v[1], 2.0f / std::sqrt(2.0f));
}

TEST(RotatedCache, DenseThroughRotationEqualsDense) {
  ThreadPool pool(2);
  const KvShape s = test::kv_shape(8, 2, 64, 300);
  DenseKvCacheF32 plain(s, pool);
  RotatedKvCache rot(std::make_unique<DenseKvCacheF32>(s, pool));
  auto k = test::random_floats(300 * static_cast<size_t>(s.kv_dim()), 1);
  auto v = test::random_floats(k.size(), 2);
  auto q = test::random_floats(20 * static_cast<size_t>(s.q_dim()), 3);
  plain.append(k.data(), v.data(), 280);
  rot.append(k.data(), v.data(), 280);
  plain.append(&k[280 * s.kv_dim()], &v[280 * s.kv_dim()], 20);
  rot.append(&k[280 * s.kv_dim()], &v[280 * s.kv_dim()], 20);
  std::vector<float> a(q.size()), b(q.size()), la(20 * 8), lb(20 * 8);
  AttendStats sa, sb;
  sa.lse = la.data();
  sb.lse = lb.data();
  plain.attend(q.data(), 20, a.data(), &sa);
  rot.attend(q.data(), 20, b.data(), &sb);
  EXPECT_LT(test::nmse(b.data(), a.data(), a.size()), 1e-11);
  for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(lb[i], la[i], 1e-4);
  EXPECT_EQ(rot.footprint().bytes(), plain.footprint().bytes());
}

TEST(RotatedCache, QuantizedModeBuildsThroughTheFactory) {
  ThreadPool pool(1);
  KvShape s = test::kv_shape(4, 1, 64, 64);  // head_dim changed below
  auto c = make_kv_cache("k2v2:rot", s, pool);
  EXPECT_EQ(c->mode(), "k2v2:g32:r128:s4:rope=post:rot");
  // With outliers the cache spells the mode as the parser does.
  EXPECT_EQ(make_kv_cache("k2v2:o2:rot", s, pool)->mode(), parse_kv_mode("k2v2:rot:o2").to_string());
  s.head_dim = 96;
  try {
    make_kv_cache("k2v2:g32:rot", s, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("power-of-two head dimension (got 96)"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace longkv

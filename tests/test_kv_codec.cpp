// Scalar KV codes (kv_codec.h): pinned bit layouts, round-trip error within
// half a quantization step, and the fast kernels against their reference
// twins on odd shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/rope.h"
#include "kv/kv_codec.h"
#include "test_util.h"

namespace longkv {
namespace {

constexpr int kAllBits[] = {8, 4, 3, 2, 1};

// Keys/values with per-channel offsets and a few outlier channels, like
// real keys; [n][d].
std::vector<float> kv_like(int n, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n) * d);
  std::vector<float> off(d), amp(d);
  for (int c = 0; c < d; ++c) {
    off[c] = nd(rng) * 0.5f;
    amp[c] = c % 17 == 3 ? 8.0f : 1.0f;
  }
  for (int t = 0; t < n; ++t)
    for (int c = 0; c < d; ++c) x[static_cast<size_t>(t) * d + c] = off[c] + amp[c] * nd(rng);
  return x;
}

TEST(KvCodec, BlockLayoutIsPinned) {
  uint8_t c[32];
  for (int i = 0; i < 32; ++i) c[i] = static_cast<uint8_t>((i * 7 + 3) & 255);
  uint8_t b[32], back[32];
  for (int bits : kAllBits) {
    uint8_t cb[32];
    for (int i = 0; i < 32; ++i) cb[i] = c[i] & ((1 << bits) - 1);
    kv_pack_block(cb, bits, b);
    kv_unpack_block(b, bits, back);
    for (int i = 0; i < 32; ++i) ASSERT_EQ(back[i], cb[i]) << bits << " bits, code " << i;
    // Spot checks of the documented layout.
    if (bits == 4) EXPECT_EQ(b[5], (cb[5] | cb[21] << 4));
    if (bits == 2) EXPECT_EQ(b[3], (cb[3] | cb[11] << 2 | cb[19] << 4 | cb[27] << 6));
    if (bits == 1) EXPECT_EQ((b[2] >> 5) & 1, cb[21]);
    if (bits == 3) {
      EXPECT_EQ(b[1] & 3, cb[1] & 3);
      EXPECT_EQ((b[8 + 30 / 8] >> (30 % 8)) & 1, cb[30] >> 2);
    }
  }
}

struct RangeOf {
  float mn = INFINITY, mx = -INFINITY;
  void add(float x) {
    mn = std::fmin(mn, x);
    mx = std::fmax(mx, x);
  }
};

// |x - x^| <= s/2 + |min - z| (asym) or s/2 (sym), and s itself no larger
// than the ideal step plus fp16 rounding (else the bound says nothing).
void check_element(float x, float xh, float s, float z, const RangeOf& r, int bits, bool sym, const char* what) {
  const double tiny = 1e-6 * (std::fabs(r.mn) + std::fabs(r.mx));
  double bound = 0.5 * s + tiny;
  double ideal;
  if (sym) {
    ideal = std::fmax(std::fabs(r.mn), std::fabs(r.mx)) / ((1 << (bits - 1)) - 1);
  } else {
    bound += std::fabs(r.mn - z);
    ideal = (r.mx - r.mn) / ((1 << bits) - 1);
  }
  ASSERT_LE(std::fabs(x - xh), bound) << what << " bits " << bits << (sym ? " sym" : "") << " x " << x;
  ASSERT_LE(s, ideal * (1 + 2.0 / 1024) + 1e-7) << what << " scale too coarse, bits " << bits;
}

TEST(KvCodec, KeysRoundTripWithinHalfStep) {
  for (int d : {64, 96, 128})
    for (int G : {32, 64})
      for (int bits : kAllBits)
        for (bool sym : {false, true}) {
          if (d % G || (sym && bits == 1)) continue;
          const auto k = kv_like(G, d, 11 + bits + d);
          const KvGroupLayout l = kv_group_layout(G, d, bits);
          std::vector<uint8_t> rec(l.bytes);
          std::vector<float> back(k.size());
          kv_quantize_keys(k.data(), d, G, d, bits, sym, rec.data());
          kv_dequantize_keys(rec.data(), G, d, bits, back.data(), d);
          const f16_t* s = reinterpret_cast<const f16_t*>(&rec[l.scale_offset]);
          const f16_t* z = reinterpret_cast<const f16_t*>(&rec[l.zero_offset]);
          for (int c = 0; c < d; ++c) {
            RangeOf r;
            for (int t = 0; t < G; ++t) r.add(k[t * d + c]);
            for (int t = 0; t < G; ++t)
              check_element(k[t * d + c], back[t * d + c], f16_to_f32(s[c]), f16_to_f32(z[c]), r, bits, sym, "key");
          }
        }
}

TEST(KvCodec, ValuesRoundTripWithinHalfStep) {
  for (int d : {64, 96, 128})
    for (int G : {32, 64})
      for (int bits : kAllBits)
        for (bool sym : {false, true}) {
          if (d % G || (sym && bits == 1)) continue;
          const auto v = kv_like(G, d, 21 + bits + d);
          const KvGroupLayout l = kv_group_layout(G, d, bits);
          std::vector<uint8_t> rec(l.bytes);
          std::vector<float> back(v.size());
          kv_quantize_values(v.data(), d, G, d, bits, sym, rec.data());
          kv_dequantize_values(rec.data(), G, d, bits, back.data(), d);
          const f16_t* s = reinterpret_cast<const f16_t*>(&rec[l.scale_offset]);
          const f16_t* z = reinterpret_cast<const f16_t*>(&rec[l.zero_offset]);
          const int ng = d / G;
          for (int t = 0; t < G; ++t)
            for (int gi = 0; gi < ng; ++gi) {
              RangeOf r;
              for (int i = 0; i < G; ++i) r.add(v[t * d + gi * G + i]);
              for (int i = 0; i < G; ++i) {
                const int c = gi * G + i;
                check_element(v[t * d + c], back[t * d + c], f16_to_f32(s[t * ng + gi]), f16_to_f32(z[t * ng + gi]), r,
                              bits, sym, "value");
              }
            }
        }
}

TEST(KvCodec, ConstantGroupAndSymmetricZero) {
  // All-equal channel: read back no worse than f16(x) (the zero is f16(x);
  // a tiny scale may cover the rounding gap).
  std::vector<float> k(32 * 32, 1.2345f);
  const KvGroupLayout l = kv_group_layout(32, 32, 4);
  std::vector<uint8_t> rec(l.bytes);
  std::vector<float> back(k.size());
  kv_quantize_keys(k.data(), 32, 32, 32, 4, false, rec.data());
  kv_dequantize_keys(rec.data(), 32, 32, 4, back.data(), 32);
  for (float x : back) ASSERT_LE(std::fabs(x - 1.2345f), std::fabs(f16_to_f32(f32_to_f16(1.2345f)) - 1.2345f));
  // Symmetric codes represent 0 exactly.
  auto v = test::random_floats(32 * 32, 3);
  for (int c = 0; c < 32; c += 5) v[c] = 0.0f;
  kv_quantize_values(v.data(), 32, 32, 32, 3, true, rec.data());
  kv_dequantize_values(rec.data(), 32, 32, 3, back.data(), 32);
  for (int c = 0; c < 32; c += 5) EXPECT_EQ(back[c], 0.0f);
}

struct KernelCase {
  int d, G, bits, nv;
};

std::vector<KernelCase> kernel_cases() {
  std::vector<KernelCase> cs;
  for (int d : {64, 96, 128})
    for (int G : {32, 64, 128})
      for (int bits : kAllBits)
        for (int nv : {1, 3, 4, 9}) {
          if (d % G) continue;
          cs.push_back({d, G, bits, nv});
        }
  return cs;
}

TEST(KvCodec, FastKeyScoresMatchReference) {
  for (const auto& kc : kernel_cases()) {
    const auto k = kv_like(kc.G, kc.d, 5 + kc.bits);
    const KvGroupLayout l = kv_group_layout(kc.G, kc.d, kc.bits);
    std::vector<uint8_t> rec(l.bytes);
    kv_quantize_keys(k.data(), kc.d, kc.G, kc.d, kc.bits, kc.bits != 1 && kc.nv == 3, rec.data());
    const auto q = test::random_floats(static_cast<size_t>(kc.nv) * kc.d, 7 + kc.nv);
    std::vector<float> got(static_cast<size_t>(kc.nv) * kc.G), want(got.size());
    kv_key_scores(rec.data(), kc.G, kc.d, kc.bits, q.data(), kc.nv, got.data());
    kv_key_scores_ref(rec.data(), kc.G, kc.d, kc.bits, q.data(), kc.nv, want.data());
    EXPECT_LT(test::nmse(got.data(), want.data(), got.size()), 1e-11)
        << "d " << kc.d << " G " << kc.G << " bits " << kc.bits << " nv " << kc.nv;
  }
}

TEST(KvCodec, FastValueAccumMatchesReference) {
  for (const auto& kc : kernel_cases()) {
    const auto v = kv_like(kc.G, kc.d, 9 + kc.bits);
    const KvGroupLayout l = kv_group_layout(kc.G, kc.d, kc.bits);
    std::vector<uint8_t> rec(l.bytes);
    kv_quantize_values(v.data(), kc.d, kc.G, kc.d, kc.bits, false, rec.data());
    const auto p = test::random_floats(static_cast<size_t>(kc.nv) * kc.G, 13, 0.0f, 1.0f);
    // Accumulates onto existing contents.
    auto got = test::random_floats(static_cast<size_t>(kc.nv) * kc.d, 17);
    auto want = got;
    kv_value_accum(rec.data(), kc.G, kc.d, kc.bits, p.data(), kc.nv, got.data());
    kv_value_accum_ref(rec.data(), kc.G, kc.d, kc.bits, p.data(), kc.nv, want.data());
    // Float sums of G terms against double: ~G * 2^-48 relative.
    EXPECT_LT(test::nmse(got.data(), want.data(), got.size()), 1e-10)
        << "d " << kc.d << " G " << kc.G << " bits " << kc.bits << " nv " << kc.nv;
  }
}

TEST(KvCodec, FastRopeKeyScoresMatchReference) {
  for (RopeStyle style : {RopeStyle::interleaved, RopeStyle::neox})
    for (int d : {64, 96, 128})
      for (int rope_dim : {d, 32})
        for (int64_t pos0 : {int64_t{0}, int64_t{1000}, int64_t{123457}}) {
          const int G = d == 96 ? 32 : 64, bits = pos0 == 1000 ? 3 : 4, nv = rope_dim == 32 ? 5 : 4;
          RopeTable rope(d, rope_dim, 500000.0f, style);
          KvRopeAngles ang;
          ang.init(rope);
          const auto k = kv_like(G, d, 31);
          std::vector<uint8_t> rec(kv_group_layout(G, d, bits).bytes);
          kv_quantize_keys(k.data(), d, G, d, bits, false, rec.data());
          std::vector<double> bc, bs;
          KvRopeWalker w;
          w.start(rope, pos0, kKvCodeBlock);
          for (int j = 0; j < G / kKvCodeBlock; ++j, w.next()) {
            bc.insert(bc.end(), w.cos(), w.cos() + rope_dim / 2);
            bs.insert(bs.end(), w.sin(), w.sin() + rope_dim / 2);
          }
          const auto q = test::random_floats(static_cast<size_t>(nv) * d, 37);
          std::vector<float> got(static_cast<size_t>(nv) * G), want(got.size());
          kv_key_scores_rope(rec.data(), G, d, bits, ang, bc.data(), bs.data(), q.data(), nv, got.data());
          kv_key_scores_rope_ref(rec.data(), G, d, bits, rope, pos0, q.data(), nv, want.data());
          EXPECT_LT(test::nmse(got.data(), want.data(), got.size()), 1e-11)
              << rope_style_name(style) << " d " << d << " rope_dim " << rope_dim << " pos " << pos0;
        }
}

TEST(KvCodec, RopeWalkerStaysExact) {
  RopeTable rope(128, 128, 10000.0f, RopeStyle::neox);
  KvRopeWalker w;
  w.start(rope, 17, 1);
  double worst = 0;
  for (int64_t p = 17; p < 17 + 5000; ++p, w.next())
    for (int i = 0; i < 64; i += 7) {
      worst = std::fmax(worst, std::fabs(w.cos()[i] - std::cos(static_cast<double>(p) * rope.inv_freq[i])));
      worst = std::fmax(worst, std::fabs(w.sin()[i] - std::sin(static_cast<double>(p) * rope.inv_freq[i])));
    }
  EXPECT_LT(worst, 1e-11);
}

TEST(KvCodec, ExpSumMatchesLibm) {
  for (int n : {1, 17, 97, 1000}) {
    auto s = test::random_floats(n, 41 + n, -30.0f, 5.0f);
    auto want = s;
    const float m = 3.0f;
    double want_sum = 0;
    for (auto& x : want) {
      x = static_cast<float>(std::exp(static_cast<double>(x - m)));  // same float argument
      want_sum += x;
    }
    const float got_sum = kv_exp_sum(s.data(), n, m);
    for (int i = 0; i < n; ++i) ASSERT_NEAR(s[i], want[i], 4e-7 * want[i] + 1e-30) << "n " << n << " i " << i;
    EXPECT_NEAR(got_sum, want_sum, 1e-6 * want_sum);
  }
}

}  // namespace
}  // namespace longkv

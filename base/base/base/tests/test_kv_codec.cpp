// Scalar KV codes (kv_codec.h): pinned bit layouts, round-trip error within
// half a quantization step, and the fast kernels against their reference
// twins on odd shapes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

// The documented word layout, checked on the raw words of a record.
uint32_t word_at(const std::vector<uint8_t>& rec, size_t byte_offset, size_t index) {
  uint32_t w;
  std::memcpy(&w, &rec[byte_offset + 4 * index], 4);
  return w;
}

TEST(KvCodec, WordLayoutIsPinned) {
  const int G = 64, d = 96;
  for (int bits : kAllBits) {
    const int top = (1 << bits) - 1;
    auto code = [&](int t, int c) { return (t * 7 + c * 13 + 3) % (top + 1); };
    const KvGroupLayout l = kv_group_layout(G, d, bits);
    std::vector<uint8_t> krec(l.bytes, 0xa5), vrec(l.bytes, 0x5a);
    std::memset(krec.data(), 0, l.codes_bytes);
    std::memset(vrec.data(), 0, l.codes_bytes);
    for (int t = 0; t < G; ++t)
      for (int c = 0; c < d; ++c) {
        kv_set_key_code(krec.data(), G, d, bits, t, c, code(t, c));
        kv_set_value_code(vrec.data(), G, d, bits, t, c, code(t, c));
      }
    for (int t = 0; t < G; ++t)
      for (int c = 0; c < d; ++c) {
        ASSERT_EQ(kv_key_code(krec.data(), G, d, bits, t, c), code(t, c)) << bits << " bits t " << t << " c " << c;
        ASSERT_EQ(kv_value_code(vrec.data(), G, d, bits, t, c), code(t, c)) << bits << " bits t " << t << " c " << c;
      }
    // Keys: plane words [d/n][G], field k = channel n*j + k; values: words
    // [G/n][d], field k = token n*j + k. b = 3: 2-bit plane, then 1-bit.
    const int pb = bits == 3 ? 2 : bits, n = 32 / pb, pm = (1 << pb) - 1;
    const int t = 37, c = 70;
    EXPECT_EQ((word_at(krec, 0, static_cast<size_t>(c / n) * G + t) >> (pb * (c % n))) & pm, code(t, c) & pm) << bits;
    EXPECT_EQ((word_at(vrec, 0, static_cast<size_t>(t / n) * d + c) >> (pb * (t % n))) & pm, code(t, c) & pm) << bits;
    if (bits == 3) {
      const size_t hi = static_cast<size_t>(G) * d / 4;
      EXPECT_EQ((word_at(krec, hi, static_cast<size_t>(c / 32) * G + t) >> (c % 32)) & 1, code(t, c) >> 2);
      EXPECT_EQ((word_at(vrec, hi, static_cast<size_t>(t / 32) * d + c) >> (t % 32)) & 1, code(t, c) >> 2);
    }
    if (bits == 4) {
      uint32_t w = 0;
      for (int k = 0; k < 8; ++k) w |= static_cast<uint32_t>(code(5, 16 + k)) << (4 * k);
      EXPECT_EQ(word_at(krec, 0, 2 * G + 5), w);
    }
    // The setters touch the codes only.
    EXPECT_EQ(krec[l.codes_bytes], 0xa5);
    EXPECT_EQ(vrec[l.bytes - 1], 0x5a);
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

// fit=mse (kv_codec.h, Numbers): per group, the squared error is never
// above the min/max fit's (a refit is kept only if it lowers it) and, at 2
// bits, clearly below it; every element inside the final range is within
// half a step, every element outside it saturates at code 0 or 2^b - 1.
// Keys (per channel over 32 tokens) of kv_like data and of Gaussian data;
// the mean ratios are printed (docs/quality.md quotes them).
TEST(KvCodec, MseFitLowersGroupErrorAndKeepsTheRule) {
  std::mt19937 rng(5);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  for (const char* data : {"kv_like", "gaussian"})
    for (int bits : kAllBits) {
      const int G = 32, d = 128, top = (1 << bits) - 1;
      double sum_ratio = 0;
      int groups = 0;
      for (int rep = 0; rep < 8; ++rep) {
        std::vector<float> k = kv_like(G, d, 100 + rep);
        if (data[0] == 'g')
          for (float& x : k) x = gauss(rng);
        const KvGroupLayout l = kv_group_layout(G, d, bits);
        std::vector<uint8_t> rec0(l.bytes), rec1(l.bytes);
        std::vector<float> b0(k.size()), b1(k.size());
        kv_quantize_keys(k.data(), d, G, d, bits, false, rec0.data());
        kv_quantize_keys(k.data(), d, G, d, bits, false, rec1.data(), 0, true);
        kv_dequantize_keys(rec0.data(), G, d, bits, b0.data(), d);
        kv_dequantize_keys(rec1.data(), G, d, bits, b1.data(), d);
        const f16_t* s1 = reinterpret_cast<const f16_t*>(&rec1[l.scale_offset]);
        const f16_t* z1 = reinterpret_cast<const f16_t*>(&rec1[l.zero_offset]);
        for (int c = 0; c < d; ++c) {
          double e0 = 0, e1 = 0;
          const double s = f16_to_f32(s1[c]), z = f16_to_f32(z1[c]);
          for (int t = 0; t < G; ++t) {
            const double x = k[t * d + c];
            e0 += (b0[t * d + c] - x) * (b0[t * d + c] - x);
            e1 += (b1[t * d + c] - x) * (b1[t * d + c] - x);
            const int q = kv_key_code(rec1.data(), G, d, bits, t, c);
            if (x < z - 0.5 * s) {
              EXPECT_EQ(q, 0) << data << " bits " << bits << " c " << c << " t " << t;
            } else if (x > z + (top + 0.5) * s) {
              EXPECT_EQ(q, top) << data << " bits " << bits << " c " << c << " t " << t;
            } else {
              EXPECT_LE(std::fabs(b1[t * d + c] - x), 0.5 * s + 1e-6 * (std::fabs(x) + s)) << data << " bits " << bits;
            }
          }
          EXPECT_LE(e1, e0 * (1 + 1e-6) + 1e-12) << data << " bits " << bits << " channel " << c;
          if (e0 > 0) {
            sum_ratio += e1 / e0;
            ++groups;
          }
        }
      }
      const double mean = sum_ratio / groups;
      if (bits == 2) {
        EXPECT_LT(mean, 0.8) << data;
      }
      std::printf("fit=mse, %s keys, %d bits: mean squared error / min-max fit's = %.3f over %d groups of 32\n",
                  data, bits, mean, groups);
    }
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
                check_element(v[t * d + c], back[t * d + c], f16_to_f32(s[gi * G + t]), f16_to_f32(z[gi * G + t]), r,
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

// Dense-and-sparse outliers: planted spikes are all listed and read back
// to the f16 rounding of their delta; every other element is within half a
// step of a range fitted without the outliers; the entries are sorted,
// distinct, and unused ones are zero; the error drops against no outliers.
TEST(KvCodec, OutliersCarryTheSpikes) {
  for (bool keys : {true, false})
    for (int bits : {2, 4})
      for (int d : {64, 128}) {
        const int G = 32, n_out = kv_outlier_count(2.0, G, d);
        ASSERT_EQ(n_out, static_cast<int>(std::lround(0.02 * G * d)));
        auto x = kv_like(G, d, 77 + d + bits);
        std::vector<int> spikes;
        for (int i = 0; i < n_out / 2; ++i) {
          const int idx = (i * 7919 + 13) % (G * d);
          if (std::find(spikes.begin(), spikes.end(), idx) != spikes.end()) continue;
          spikes.push_back(idx);
          x[idx] = (i % 2 ? -40.0f : 40.0f) + 0.1f * i;
        }
        const KvGroupLayout l = kv_group_layout(G, d, bits, n_out), l0 = kv_group_layout(G, d, bits);
        ASSERT_EQ(l.bytes, l0.bytes + 4u * n_out);
        std::vector<uint8_t> rec(l.bytes), rec0(l0.bytes);
        std::vector<float> back(x.size()), back0(x.size());
        if (keys) {
          kv_quantize_keys(x.data(), d, G, d, bits, false, rec.data(), n_out);
          kv_dequantize_keys(rec.data(), G, d, bits, back.data(), d, n_out);
          kv_quantize_keys(x.data(), d, G, d, bits, false, rec0.data());
          kv_dequantize_keys(rec0.data(), G, d, bits, back0.data(), d);
        } else {
          kv_quantize_values(x.data(), d, G, d, bits, false, rec.data(), n_out);
          kv_dequantize_values(rec.data(), G, d, bits, back.data(), d, n_out);
          kv_quantize_values(x.data(), d, G, d, bits, false, rec0.data());
          kv_dequantize_values(rec0.data(), G, d, bits, back0.data(), d);
        }
        const std::string what = std::string(keys ? "keys" : "values") + " bits " + std::to_string(bits) +
                                 " d " + std::to_string(d);
        std::vector<int> listed;
        const uint32_t* e = kv_outliers(rec.data(), l);
        for (int i = 0; i < n_out; ++i) {
          if (e[i] == 0 && i > 0) continue;  // unused
          const KvOutlier o = kv_outlier_entry(e[i]);
          listed.push_back(o.t * d + o.c);
        }
        ASSERT_TRUE(std::is_sorted(listed.begin(), listed.end())) << what;
        ASSERT_TRUE(std::adjacent_find(listed.begin(), listed.end()) == listed.end()) << what;
        for (int idx : spikes) {
          ASSERT_TRUE(std::binary_search(listed.begin(), listed.end(), idx)) << what << " spike " << idx;
          EXPECT_LE(std::fabs(back[idx] - x[idx]), 0.05f) << what << " spike " << idx;
        }
        // Non-outliers: within half a step (+ the zero's f16 rounding).
        const f16_t* sc = reinterpret_cast<const f16_t*>(&rec[l.scale_offset]);
        const f16_t* zr = reinterpret_cast<const f16_t*>(&rec[l.zero_offset]);
        double err = 0, err0 = 0;
        for (int t = 0; t < G; ++t)
          for (int c = 0; c < d; ++c) {
            const int idx = t * d + c;
            err += std::pow(back[idx] - x[idx], 2);
            err0 += std::pow(back0[idx] - x[idx], 2);
            if (std::binary_search(listed.begin(), listed.end(), idx)) continue;
            const int si = keys ? c : (c / G) * G + t;
            const float s = f16_to_f32(sc[si]), z = f16_to_f32(zr[si]);
            ASSERT_LE(std::fabs(back[idx] - x[idx]), 0.5f * s + 1e-3f * std::fabs(z) + 1e-6f) << what << " t " << t << " c " << c;
          }
        EXPECT_LT(err, 0.2 * err0) << what;  // measured 0.05 .. 0.14
      }
}

struct KernelCase {
  int d, G, bits, nv;
  int outliers = 0;
};

std::vector<KernelCase> kernel_cases() {
  std::vector<KernelCase> cs;
  for (int d : {64, 96, 128})
    for (int G : {32, 64, 128})
      for (int bits : kAllBits)
        for (int nv : {1, 3, 4, 9}) {
          if (d % G) continue;
          cs.push_back({d, G, bits, nv});
          if (nv != 9 && G != 128) cs.push_back({d, G, bits, nv, 1 + (d * G) / 97});
        }
  return cs;
}

TEST(KvCodec, FastKeyScoresMatchReference) {
  for (const auto& kc : kernel_cases()) {
    const auto k = kv_like(kc.G, kc.d, 5 + kc.bits);
    const KvGroupLayout l = kv_group_layout(kc.G, kc.d, kc.bits, kc.outliers);
    std::vector<uint8_t> rec(l.bytes);
    kv_quantize_keys(k.data(), kc.d, kc.G, kc.d, kc.bits, kc.bits != 1 && kc.nv == 3, rec.data(), kc.outliers);
    const auto q = test::random_floats(static_cast<size_t>(kc.nv) * kc.d, 7 + kc.nv);
    std::vector<float> got(static_cast<size_t>(kc.nv) * kc.G), want(got.size());
    kv_key_scores(rec.data(), kc.G, kc.d, kc.bits, q.data(), kc.nv, got.data(), kc.outliers);
    kv_key_scores_ref(rec.data(), kc.G, kc.d, kc.bits, q.data(), kc.nv, want.data(), kc.outliers);
    EXPECT_LT(test::nmse(got.data(), want.data(), got.size()), 1e-11)
        << "d " << kc.d << " G " << kc.G << " bits " << kc.bits << " nv " << kc.nv << " outliers " << kc.outliers;
  }
}

TEST(KvCodec, FastValueAccumMatchesReference) {
  for (const auto& kc : kernel_cases()) {
    const auto v = kv_like(kc.G, kc.d, 9 + kc.bits);
    const KvGroupLayout l = kv_group_layout(kc.G, kc.d, kc.bits, kc.outliers);
    std::vector<uint8_t> rec(l.bytes);
    kv_quantize_values(v.data(), kc.d, kc.G, kc.d, kc.bits, false, rec.data(), kc.outliers);
    const auto p = test::random_floats(static_cast<size_t>(kc.nv) * kc.G, 13, 0.0f, 1.0f);
    // Accumulates onto existing contents.
    auto got = test::random_floats(static_cast<size_t>(kc.nv) * kc.d, 17);
    auto want = got;
    kv_value_accum(rec.data(), kc.G, kc.d, kc.bits, p.data(), kc.nv, got.data(), kc.outliers);
    kv_value_accum_ref(rec.data(), kc.G, kc.d, kc.bits, p.data(), kc.nv, want.data(), kc.outliers);
    // Float sums of G terms against double: ~G * 2^-48 relative.
    EXPECT_LT(test::nmse(got.data(), want.data(), got.size()), 1e-10)
        << "d " << kc.d << " G " << kc.G << " bits " << kc.bits << " nv " << kc.nv << " outliers " << kc.outliers;
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
          const int n_out = rope_dim == 32 ? 0 : G * d / 50;
          std::vector<uint8_t> rec(kv_group_layout(G, d, bits, n_out).bytes);
          kv_quantize_keys(k.data(), d, G, d, bits, false, rec.data(), n_out);
          std::vector<double> bc, bs;
          KvRopeWalker w;
          w.start(rope, pos0, kKvCodeBlock);
          for (int j = 0; j < G / kKvCodeBlock; ++j, w.next()) {
            bc.insert(bc.end(), w.cos(), w.cos() + rope_dim / 2);
            bs.insert(bs.end(), w.sin(), w.sin() + rope_dim / 2);
          }
          const auto q = test::random_floats(static_cast<size_t>(nv) * d, 37);
          std::vector<float> got(static_cast<size_t>(nv) * G), want(got.size());
          kv_key_scores_rope(rec.data(), G, d, bits, ang, bc.data(), bs.data(), q.data(), nv, got.data(), n_out);
          kv_key_scores_rope_ref(rec.data(), G, d, bits, rope, pos0, q.data(), nv, want.data(), n_out);
          EXPECT_LT(test::nmse(got.data(), want.data(), got.size()), 1e-11)
              << rope_style_name(style) << " d " << d << " rope_dim " << rope_dim << " pos " << pos0;
        }
}

// The fused decode loop against softmax attention in double over the
// dequantized records, on odd group counts and every head count it takes.
TEST(KvCodec, FusedAttendGroupsMatchesDequantized) {
  for (int d : {64, 96, 128})
    for (int G : {32, 64, 128})
      for (int bits : kAllBits)
        for (int n_groups : {1, 3, 17}) {
          if (d % G) continue;
          const int nv = 1 + (bits + n_groups + G / 32) % 4, vbits = bits == 1 ? 3 : (bits == 8 ? 2 : bits);
          // Outliers on some cases (different counts for K and V).
          const int ko = n_groups == 3 ? G * d / 60 : 0, vo = n_groups == 3 ? G * d / 45 : 0;
          const KvGroupLayout kl = kv_group_layout(G, d, bits, ko), vl = kv_group_layout(G, d, vbits, vo);
          const size_t kstride = kl.bytes + 64, vstride = vl.bytes + 128;  // records need not be adjacent
          std::vector<uint8_t> kr(kstride * n_groups), vr(vstride * n_groups);
          std::vector<float> kd(static_cast<size_t>(n_groups) * G * d), vd(kd.size());
          for (int g = 0; g < n_groups; ++g) {
            const auto k = kv_like(G, d, 100 + g), v = kv_like(G, d, 200 + g);
            kv_quantize_keys(k.data(), d, G, d, bits, false, &kr[g * kstride], ko);
            kv_quantize_values(v.data(), d, G, d, vbits, g % 2 == 1 && vbits > 1, &vr[g * vstride], vo);
            kv_dequantize_keys(&kr[g * kstride], G, d, bits, &kd[static_cast<size_t>(g) * G * d], d, ko);
            kv_dequantize_values(&vr[g * vstride], G, d, vbits, &vd[static_cast<size_t>(g) * G * d], d, vo);
          }
          const auto q = test::random_floats(static_cast<size_t>(nv) * d, 5 + nv, -0.3f, 0.3f);
          std::vector<float> out(static_cast<size_t>(nv) * d), m(nv), l(nv);
          kv_attend_groups(kr.data(), kstride, vr.data(), vstride, n_groups, G, d, bits, vbits, q.data(), nv, out.data(),
                           m.data(), l.data(), ko, vo);
          const int n = n_groups * G;
          std::vector<float> want(out.size());
          for (int v = 0; v < nv; ++v) {
            std::vector<double> s(n);
            double mx = -INFINITY;
            for (int t = 0; t < n; ++t) {
              double acc = 0;
              for (int c = 0; c < d; ++c) acc += static_cast<double>(q[v * d + c]) * kd[static_cast<size_t>(t) * d + c];
              s[t] = acc;
              mx = std::fmax(mx, acc);
            }
            double sum = 0;
            std::vector<double> o(d, 0.0);
            for (int t = 0; t < n; ++t) {
              const double e = std::exp(s[t] - mx);
              sum += e;
              for (int c = 0; c < d; ++c) o[c] += e * vd[static_cast<size_t>(t) * d + c];
            }
            for (int c = 0; c < d; ++c) want[v * d + c] = static_cast<float>(o[c] / sum);
            EXPECT_NEAR(m[v] + std::log(l[v]), mx + std::log(sum), 1e-5 * (1 + std::fabs(mx)))
                << "d " << d << " G " << G << " bits " << bits << " groups " << n_groups;
          }
          // The output is a weighted mean of values much larger than itself,
          // so its error is measured against the values' scale: float sums of
          // n terms (scores over d channels, outputs over n tokens) give a few
          // units of 2^-24 * sqrt(n) relative to max |v|.
          double vmax = 0, worst = 0;
          for (float x : vd) vmax = std::fmax(vmax, std::fabs(x));
          for (size_t i = 0; i < out.size(); ++i) worst = std::fmax(worst, std::fabs(out[i] - want[i]));
          EXPECT_LT(worst / vmax, 8 * 6e-8 * std::sqrt(static_cast<double>(n)))
              << "d " << d << " G " << G << " bits " << bits << "/" << vbits << " groups " << n_groups << " nv " << nv;
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

// Weight block formats: traits, ggml id tables, fp16/bf16 conversions, and
// the reference quantizers/decoders checked against bytes produced by ggml's
// own Python reference (gguf-py 0.19 `gguf.quants`), hand-built K-quant
// blocks, and round-trip error bounds derived from each format's step (the
// K-quants' searched fits: test_weight_fit_k.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "backend/cpu/matmul.h"
#include "formats/weight_types.h"
#include "test_util.h"

namespace longkv {
namespace {

std::vector<uint8_t> quantize(WeightType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(row_bytes(t, static_cast<int64_t>(x.size())));
  weight_traits(t).from_float_ref(x.data(), q.data(), static_cast<int64_t>(x.size()));
  return q;
}

std::vector<float> dequantize_ref(WeightType t, const std::vector<uint8_t>& q, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  weight_traits(t).to_float_ref(q.data(), y.data(), n);
  return y;
}

// Random data with a different magnitude per 256 elements, so block scales
// span several orders of magnitude, plus an all-zero stretch.
std::vector<float> varied_floats(size_t n, uint32_t seed) {
  std::vector<float> x = test::random_floats(n, seed);
  const std::vector<float> mag = test::random_floats(n / 256 + 1, seed + 1, -3.0f, 3.0f);
  for (size_t i = 0; i < n; ++i) x[i] *= std::pow(10.0f, mag[i / 256]);
  for (size_t i = 0; i < std::min<size_t>(n, 64); ++i) x[i] = 0.0f;
  return x;
}

float f16_at(const uint8_t* p) {
  f16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

uint16_t u16(std::initializer_list<int> bytes) {
  auto it = bytes.begin();
  return static_cast<uint16_t>(it[0] | (it[1] << 8));
}

// --------------------------------------------------------------------------

TEST(WeightTypesTraits, SupportedTypes) {
  struct Expect {
    uint32_t id;
    const char* name;
    int block, bytes;
  };
  const Expect expect[] = {{0, "F32", 1, 4},      {1, "F16", 1, 2},       {30, "BF16", 1, 2},
                           {8, "Q8_0", 32, 34},   {2, "Q4_0", 32, 18},    {10, "Q2_K", 256, 84},
                           {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
                           {14, "Q6_K", 256, 210}, {3, "Q4_1", 32, 20},    {6, "Q5_0", 32, 22},
                           {7, "Q5_1", 32, 24},   {20, "IQ4_NL", 32, 18}, {23, "IQ4_XS", 256, 136}};
  for (const auto& e : expect) {
    const WeightTypeTraits* t = weight_type_traits(e.id);
    ASSERT_NE(t, nullptr) << e.name;
    EXPECT_EQ(static_cast<uint32_t>(t->type), e.id);
    EXPECT_STREQ(t->name, e.name);
    EXPECT_EQ(t->block_size, e.block);
    EXPECT_EQ(t->block_bytes, e.bytes);
    EXPECT_NE(t->to_float_ref, nullptr);
    EXPECT_NE(t->from_float_ref, nullptr);
    EXPECT_EQ(&weight_traits(t->type), t);
    int bs = 0, bb = 0;
    ASSERT_TRUE(ggml_type_block(e.id, &bs, &bb));
    EXPECT_EQ(bs, e.block);
    EXPECT_EQ(bb, e.bytes);
  }
  EXPECT_EQ(weight_type_traits(9), nullptr);   // Q8_1: known, unsupported
  EXPECT_EQ(weight_type_traits(16), nullptr);  // IQ2_XXS
  EXPECT_EQ(weight_type_traits(34), nullptr);  // TQ1_0
  EXPECT_EQ(weight_type_traits(4), nullptr);   // removed id
  EXPECT_EQ(weight_type_traits(12345), nullptr);
}

TEST(WeightTypesTraits, GgmlNames) {
  EXPECT_STREQ(ggml_type_name(0), "F32");
  EXPECT_STREQ(ggml_type_name(13), "Q5_K");
  EXPECT_STREQ(ggml_type_name(16), "IQ2_XXS");
  EXPECT_STREQ(ggml_type_name(29), "IQ1_M");
  EXPECT_STREQ(ggml_type_name(30), "BF16");
  EXPECT_STREQ(ggml_type_name(35), "TQ2_0");
  EXPECT_STREQ(ggml_type_name(39), "MXFP4");
  EXPECT_STREQ(ggml_type_name(40), "NVFP4");
  EXPECT_STREQ(ggml_type_name(41), "Q1_0");
  EXPECT_STREQ(ggml_type_name(42), "Q2_0");
  EXPECT_EQ(std::string(ggml_type_name(4)), "type#4");
  EXPECT_EQ(std::string(ggml_type_name(33)), "type#33");
  EXPECT_EQ(std::string(ggml_type_name(4000000000u)), "type#4000000000");
}

TEST(WeightTypesTraits, GgmlBlockGeometry) {
  const int table[][3] = {
      {3, 32, 20},    {6, 32, 22},    {7, 32, 24},    {9, 32, 36},    {10, 256, 84},
      {11, 256, 110}, {13, 256, 176}, {15, 256, 292}, {16, 256, 66},  {17, 256, 74},
      {18, 256, 98},  {19, 256, 50},  {20, 32, 18},   {21, 256, 110}, {22, 256, 82},
      {23, 256, 136}, {24, 1, 1},     {25, 1, 2},     {26, 1, 4},     {27, 1, 8},
      {28, 1, 8},     {29, 256, 56},  {34, 256, 54},  {35, 256, 66},  {39, 32, 17},
      {40, 64, 36},   {41, 128, 18},
  };
  for (const auto& row : table) {
    int bs = -1, bb = -1;
    ASSERT_TRUE(ggml_type_block(static_cast<uint32_t>(row[0]), &bs, &bb)) << row[0];
    EXPECT_EQ(bs, row[1]) << ggml_type_name(static_cast<uint32_t>(row[0]));
    EXPECT_EQ(bb, row[2]) << ggml_type_name(static_cast<uint32_t>(row[0]));
  }
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 43u, 1000u}) {
    int bs = -1, bb = -1;
    EXPECT_FALSE(ggml_type_block(removed, &bs, &bb)) << removed;
  }
}

TEST(WeightTypesTraits, ParseAndRowBytes) {
  WeightType t = WeightType::F32;
  EXPECT_TRUE(parse_weight_type("q8_0", &t));
  EXPECT_EQ(t, WeightType::Q8_0);
  EXPECT_TRUE(parse_weight_type("Q4_k", &t));
  EXPECT_EQ(t, WeightType::Q4_K);
  EXPECT_TRUE(parse_weight_type("bf16", &t));
  EXPECT_EQ(t, WeightType::BF16);
  EXPECT_TRUE(parse_weight_type("F16", &t));
  EXPECT_EQ(t, WeightType::F16);
  t = WeightType::F16;
  EXPECT_TRUE(parse_weight_type("q5_K", &t));
  EXPECT_EQ(t, WeightType::Q5_K);
  t = WeightType::F16;
  EXPECT_TRUE(parse_weight_type("q3_k", &t));
  EXPECT_EQ(t, WeightType::Q3_K);
  t = WeightType::F16;
  EXPECT_TRUE(parse_weight_type("iq4_xs", &t));
  EXPECT_EQ(t, WeightType::IQ4_XS);
  t = WeightType::F16;
  EXPECT_FALSE(parse_weight_type("iq2_xxs", &t));  // a ggml type we cannot compute with
  EXPECT_FALSE(parse_weight_type("q8", &t));
  EXPECT_FALSE(parse_weight_type("", &t));
  EXPECT_FALSE(parse_weight_type("q8_0 ", &t));
  EXPECT_EQ(t, WeightType::F16);  // untouched on failure

  EXPECT_EQ(row_bytes(WeightType::F32, 17), 68u);
  EXPECT_EQ(row_bytes(WeightType::F16, 17), 34u);
  EXPECT_EQ(row_bytes(WeightType::BF16, 1001), 2002u);
  EXPECT_EQ(row_bytes(WeightType::Q8_0, 96), 102u);
  EXPECT_EQ(row_bytes(WeightType::Q4_0, 4096), 2304u);
  EXPECT_EQ(row_bytes(WeightType::Q2_K, 512), 168u);
  EXPECT_EQ(row_bytes(WeightType::Q3_K, 768), 330u);
  EXPECT_EQ(row_bytes(WeightType::Q4_K, 768), 432u);
  EXPECT_EQ(row_bytes(WeightType::Q5_K, 512), 352u);
  EXPECT_EQ(row_bytes(WeightType::Q6_K, 256), 210u);
  EXPECT_EQ(row_bytes(WeightType::Q4_1, 64), 40u);
  EXPECT_EQ(row_bytes(WeightType::Q5_0, 64), 44u);
  EXPECT_EQ(row_bytes(WeightType::Q5_1, 64), 48u);
  EXPECT_EQ(row_bytes(WeightType::IQ4_NL, 64), 36u);
  EXPECT_EQ(row_bytes(WeightType::IQ4_XS, 512), 272u);

  const std::vector<uint8_t> storage(340);
  WeightView v{WeightType::Q8_0, 5, 64, storage.data()};
  EXPECT_EQ(v.row_stride(), 68u);
  EXPECT_EQ(v.nbytes(), 340u);
  EXPECT_EQ(v.row(2), storage.data() + 136);
}

// --------------------------------------------------------------------------
// fp16 / bf16

TEST(WeightTypesFp16, DecodeKnownPatterns) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));        // smallest normal
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));        // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x83ff), -std::ldexp(1023.0f, -24));    // largest subnormal
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));
  const float negzero = f16_to_f32(0x8000);
  EXPECT_EQ(negzero, 0.0f);
  EXPECT_TRUE(std::signbit(negzero));
}

TEST(WeightTypesFp16, EncodeRoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  // 1 + 2^-11 is halfway between 1 and the next half (1 + 2^-10): ties to even.
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)), 0x3c01);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // halfway to 65536 rounds to even: inf
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  const f16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  // subnormals: multiples of 2^-24, ties to even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);          // tie -> 0
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);          // 1.5 ulp tie -> 2
  EXPECT_EQ(f32_to_f16(std::ldexp(1.25f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1023.0f, -24)), 0x83ff);
  EXPECT_EQ(f32_to_f16(std::ldexp(1023.5f, -24)), 0x0400);       // rounds up into the normals
  EXPECT_EQ(f32_to_f16(1e-10f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
}

TEST(WeightTypesFp16, EveryHalfRoundTripsAndBulkMatchesScalar) {
  std::vector<f16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<f16_t>(h);
  std::vector<float> bulk(65536);
  f16_to_f32_n(all.data(), bulk.data(), 65536);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<f16_t>(h));
    const bool is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    if (is_nan) {
      ASSERT_TRUE(std::isnan(f) && std::isnan(bulk[h])) << h;
      continue;
    }
    ASSERT_EQ(f32_to_bits(bulk[h]), f32_to_bits(f)) << h;
    ASSERT_EQ(f32_to_f16(f), h) << h;
  }
  // bulk encode (F16C when available) against the scalar encoder, with
  // subnormal and overflowing magnitudes mixed in.
  std::vector<float> x = test::random_floats(4099, 7, -1.0f, 1.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::ldexp(x[i], static_cast<int>(i % 48) - 30);
  std::vector<f16_t> h(x.size());
  f32_to_f16_n(x.data(), h.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(h[i], f32_to_f16(x[i])) << x[i];
}

TEST(WeightTypesFp16, Bf16) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc040), -3.0f);
  EXPECT_EQ(bf16_to_f32(0x0001), f32_from_bits(0x00010000u));  // subnormal passes through
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie -> even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x00008000u)), 0x0000);  // subnormal tie -> even
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x00018000u)), 0x0002);
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  const bf16_t nan = f32_to_bf16(f32_from_bits(0x7f800001u));  // signalling NaN stays NaN
  EXPECT_TRUE(std::isnan(bf16_to_f32(nan)));
  std::vector<bf16_t> all(65536);
  for (uint32_t b = 0; b < 65536; ++b) all[b] = static_cast<bf16_t>(b);
  std::vector<float> bulk(65536);
  bf16_to_f32_n(all.data(), bulk.data(), 65536);
  for (uint32_t b = 0; b < 65536; ++b) ASSERT_EQ(f32_to_bits(bulk[b]), b << 16) << b;
}

TEST(WeightTypesFp16, FloatRowsThroughTraits) {
  const std::vector<float> x = test::random_floats(97, 3, -100.0f, 100.0f);
  for (WeightType t : {WeightType::F32, WeightType::F16, WeightType::BF16}) {
    const auto q = quantize(t, x);
    const auto y = dequantize_ref(t, q, 97);
    for (size_t i = 0; i < x.size(); ++i) {
      const float expect = t == WeightType::F32   ? x[i]
                           : t == WeightType::F16 ? f16_to_f32(f32_to_f16(x[i]))
                                                  : bf16_to_f32(f32_to_bf16(x[i]));
      ASSERT_EQ(y[i], expect) << weight_traits(t).name << " " << i;
    }
  }
}

// --------------------------------------------------------------------------
// Q8_0 / Q4_0

// x[j] = ((j*j) mod 37 - 18) / 7; expected bytes from gguf-py's quantize(),
// which is bit-exact with ggml's quantize_row_*_ref.
std::vector<float> golden_input() {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>((j * j) % 37 - 18) / 7.0f;
  return x;
}

TEST(WeightTypesQ8_0, MatchesGgmlBytes) {
  const uint8_t expect[34] = {0x2f, 0x25, 0x81, 0x88, 0x9d, 0xc0, 0xf2, 0x31, 0x7f, 0xd6, 0x40, 0xb2,
                              0x38, 0xc8, 0x6a, 0x15, 0xcf, 0x96, 0x71, 0x55, 0x47, 0x47, 0x55, 0x71,
                              0x96, 0xcf, 0x15, 0x6a, 0xc8, 0x38, 0xb2, 0x40, 0xd6, 0x7f};
  const auto q = quantize(WeightType::Q8_0, golden_input());
  ASSERT_EQ(q.size(), 34u);
  for (int i = 0; i < 34; ++i) EXPECT_EQ(q[i], expect[i]) << "byte " << i;
  // layout: d first, then codes; x = d * q
  const auto y = dequantize_ref(WeightType::Q8_0, q, 32);
  const float d = f16_to_f32(u16({0x2f, 0x25}));
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], d * static_cast<int8_t>(expect[2 + j]));
}

TEST(WeightTypesQ4_0, MatchesGgmlBytes) {
  // The largest |x| is -18/7 at j = 0 (first of a tie with +18/7 at j = 6),
  // so d > 0 and +18/7 lands on code 16, clipped to 15.
  const uint8_t expect[18] = {0x25, 0x35, 0xf0, 0xd0, 0xc2, 0xc4, 0xd7, 0xfb, 0x1f,
                              0x55, 0x9c, 0xf3, 0x4c, 0xc4, 0x3f, 0xc9, 0x55, 0xf1};
  const auto q = quantize(WeightType::Q4_0, golden_input());
  ASSERT_EQ(q.size(), 18u);
  for (int i = 0; i < 18; ++i) EXPECT_EQ(q[i], expect[i]) << "byte " << i;
  const auto y = dequantize_ref(WeightType::Q4_0, q, 32);
  const float d = f16_to_f32(u16({0x25, 0x35}));
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], d * ((expect[2 + j] & 0xF) - 8)) << j;
    EXPECT_EQ(y[j + 16], d * ((expect[2 + j] >> 4) - 8)) << j + 16;
  }
  EXPECT_EQ(y[6], 7 * d);  // the clipped element
}

// The 32-element formats beside Q4_0: bytes of gguf-py 0.10.0's quantize()
// of golden_input() (ggml's rules), and the decode of those bytes by the
// layout (x = d q + m, or d (q - 16) for Q5_0, with qh's bit j as element j's
// fifth bit).
TEST(WeightTypesQ32, MatchesGgmlBytes) {
  struct Case {
    WeightType t;
    std::vector<uint8_t> bytes;
    int qh_at, qs_at;  // -1: no fifth bits
    bool offset;       // m after d
  } cases[] = {
      {WeightType::Q4_1,
       {0x7c, 0x35, 0x25, 0xc1, 0xe0, 0xc0, 0xc2, 0xc4, 0xc7, 0xea, 0x1f, 0x55, 0x9b, 0xe3, 0x4b, 0xb4, 0x3e, 0xb9,
        0x55, 0xf1},
       -1, 4, true},
      {WeightType::Q5_0,
       {0x25, 0x31, 0x60, 0x35, 0x3f, 0xab, 0xe0, 0xb1, 0x94, 0x98, 0xbe, 0xe6, 0x3f, 0xab, 0x38, 0xd6, 0x97, 0x79,
        0x6d, 0x83, 0xba, 0xf3},
       2, 6, false},
      {WeightType::Q5_1,
       {0x4f, 0x31, 0x25, 0xc1, 0x60, 0x35, 0x3f, 0xab, 0xd0, 0xa1, 0x83, 0x88, 0xae, 0xd6, 0x3f, 0x9a, 0x27, 0xc6,
        0x96, 0x69, 0x6c, 0x72, 0xa9, 0xf3},
       4, 8, true},
  };
  for (const auto& c : cases) {
    const auto q = quantize(c.t, golden_input());
    ASSERT_EQ(q, c.bytes) << weight_traits(c.t).name;
    const auto y = dequantize_ref(c.t, q, 32);
    std::vector<float> fast(32);
    dequantize_row(c.t, q.data(), fast.data(), 32);
    const float d = f16_at(q.data()), m = c.offset ? f16_at(q.data() + 2) : 0.0f;
    uint32_t qh = 0;
    if (c.qh_at >= 0) std::memcpy(&qh, q.data() + c.qh_at, 4);
    for (int j = 0; j < 32; ++j) {
      const uint8_t byte = q[c.qs_at + j % 16];
      int code = j < 16 ? byte & 0xF : byte >> 4;
      code |= static_cast<int>((qh >> j) & 1) << 4;
      const float want = c.t == WeightType::Q5_0 ? d * static_cast<float>(code - 16) : d * code + m;
      EXPECT_EQ(y[j], want) << weight_traits(c.t).name << " element " << j;
      EXPECT_EQ(fast[j], want) << weight_traits(c.t).name << " element " << j << " (fast)";
      // within a step: half of one, what fp16 d and m move, and Q5_0's clip
      // of +18/7 (the far side of the largest magnitude) to code 31
      EXPECT_NEAR(y[j], golden_input()[j], 1.05f * std::fabs(d)) << weight_traits(c.t).name << " element " << j;
    }
  }
}

TEST(WeightTypesQ8_0, RoundTripWithinHalfStep) {
  const int64_t n = 32 * 301;
  const auto x = varied_floats(n, 11);
  const auto q = quantize(WeightType::Q8_0, x);
  const auto y = dequantize_ref(WeightType::Q8_0, q, n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    const float d = amax / 127.0f;                    // the quantizer's step
    const float d16 = f16_at(q.data() + b * 34);       // the stored step
    // half a step, plus what storing d in fp16 moves the largest code
    const float tol = 0.5f * d + 127.0f * std::fabs(d16 - d) + 1e-6f * amax;
    for (int j = 0; j < 32; ++j)
      ASSERT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), tol) << "block " << b << " elem " << j;
  }
  for (int j = 0; j < 64; ++j) EXPECT_EQ(y[j], 0.0f);
}

TEST(WeightTypesQ4_0, RoundTripWithinHalfStep) {
  const int64_t n = 32 * 301;
  const auto x = varied_floats(n, 12);
  const auto q = quantize(WeightType::Q4_0, x);
  const auto y = dequantize_ref(WeightType::Q4_0, q, n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j) {
      if (std::fabs(x[b * 32 + j]) > amax) {
        amax = std::fabs(x[b * 32 + j]);
        max = x[b * 32 + j];
      }
    }
    const float d = max / -8.0f;
    const float d16 = f16_at(q.data() + b * 18);
    for (int j = 0; j < 32; ++j) {
      const float xv = x[b * 32 + j];
      // codes reach -8..+7 steps: values beyond +7.5 steps clip to +7
      const float u = d != 0 ? xv / d : 0;
      float tol = u > 7.5f ? (u - 7.0f) * std::fabs(d) : 0.5f * std::fabs(d);
      tol += 8.0f * std::fabs(d16 - d) + 1e-6f * amax;
      ASSERT_LE(std::fabs(y[b * 32 + j] - xv), tol) << "block " << b << " elem " << j;
    }
  }
}

// --------------------------------------------------------------------------
// Q4_K / Q6_K: blocks built by hand from the FORMATS.md layout (the same
// construction decodes to the same values with gguf-py's dequantize()).

// Two copies of a hand-built super-block `off` bytes past an allocation
// start (so at an unaligned address): the reference and the fast decode both
// give c.value(e) exactly (every value is a short binary fraction). Returns
// the reference's 512 values.
template <typename Case>
std::vector<float> expect_decodes_exactly(WeightType t, const Case& c, int off) {
  const auto b = c.block();
  std::vector<uint8_t> two(off + 2 * b.size());
  std::memcpy(two.data() + off, b.data(), b.size());
  std::memcpy(two.data() + off + b.size(), b.data(), b.size());
  std::vector<float> ref(512), fast(512);
  weight_traits(t).to_float_ref(two.data() + off, ref.data(), 512);
  dequantize_row(t, two.data() + off, fast.data(), 512);
  for (int e = 0; e < 512; ++e) {
    if (ref[e] != c.value(e % 256) || fast[e] != c.value(e % 256)) {
      ADD_FAILURE() << weight_traits(t).name << " element " << e << ": reference " << ref[e] << ", fast " << fast[e]
                    << ", expected " << c.value(e % 256);
      break;
    }
  }
  return ref;
}

struct Q4KCase {
  uint8_t sc[8] = {1, 2, 3, 63, 17, 32, 48, 5};
  uint8_t m[8] = {0, 7, 63, 1, 33, 16, 9, 62};
  static int code(int e) { return (e * 7 + 3) % 16; }
  // d, dmin and sc/m above packed into 6-bit fields (bytes written out by
  // hand): the first 16 bytes of a Q4_K and of a Q5_K block.
  static void header(uint8_t* b) {
    const f16_t d = f32_to_f16(0.5f), dmin = f32_to_f16(0.25f);
    std::memcpy(b, &d, 2);
    std::memcpy(b + 2, &dmin, 2);
    const uint8_t scales[12] = {0x41, 0x82, 0xc3, 0x3f, 0x80, 0x47,
                                0x3f, 0xc1, 0x11, 0x00, 0x90, 0xe5};
    std::memcpy(b + 4, scales, 12);
  }
  std::vector<uint8_t> block() const {
    std::vector<uint8_t> b(144, 0);
    header(b.data());
    // chunk c of 64 elements: byte 32c + l holds element 64c + l (low
    // nibble) and element 64c + 32 + l (high nibble)
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        b[16 + 32 * c + l] = static_cast<uint8_t>(code(64 * c + l) | (code(64 * c + 32 + l) << 4));
    return b;
  }
  float value(int e) const { return 0.5f * sc[e / 32] * code(e) - 0.25f * m[e / 32]; }
};

TEST(WeightTypesQ4_K, DecodesHandBuiltBlock) {
  const auto ref = expect_decodes_exactly(WeightType::Q4_K, Q4KCase{}, 1);
  EXPECT_EQ(ref[0], 1.5f);
  EXPECT_EQ(ref[255], 14.5f);
}

// Q5_K: Q4_K's header, then qh[32] and qs[128]. Element 64c + l (l < 32)
// keeps its low 4 code bits in the low nibble of qs[32c + l] and its fifth
// in bit 2c of qh[l]; element 64c + 32 + l the high nibble and bit 2c + 1.
// gguf-py 0.10.0 decodes this block to the same 256 values:
//   quants.dequantize(np.frombuffer(block, np.uint8).reshape(1, 176), GGMLQuantizationType.Q5_K)
struct Q5KCase : Q4KCase {
  static int code(int e) { return (e * 11 + 5) % 32; }
  std::vector<uint8_t> block() const {
    std::vector<uint8_t> b(176, 0);
    header(b.data());
    uint8_t* qh = b.data() + 16;
    uint8_t* qs = b.data() + 48;
    for (int c = 0; c < 4; ++c) {
      for (int l = 0; l < 32; ++l) {
        const int lo = code(64 * c + l), hi = code(64 * c + 32 + l);
        qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
    }
    return b;
  }
  float value(int e) const { return 0.5f * sc[e / 32] * code(e) - 0.25f * m[e / 32]; }
};

TEST(WeightTypesQ5_K, DecodesHandBuiltBlock) {
  const auto ref = expect_decodes_exactly(WeightType::Q5_K, Q5KCase{}, 1);
  EXPECT_EQ(ref[0], 2.5f);
  EXPECT_EQ(ref[255], 49.5f);
  EXPECT_EQ(ref[100], 535.25f);  // sub-block 3 (sc 63, m 1), code 17: the fifth bit set
}

struct Q6KCase {
  int8_t sc[16] = {1, -2, 3, 127, -128, 17, -33, 64, 2, 5, -7, 11, -13, 19, 23, -1};
  static int code(int e) { return (e * 13 + 5) % 64; }  // unsigned 6-bit
  std::vector<uint8_t> block() const {
    std::vector<uint8_t> b(210, 0);
    uint8_t* ql = b.data();
    uint8_t* qh = b.data() + 128;
    // element e: half h = e / 128; within it, quarter k = (e % 128) / 32 and
    // lane l = e % 32. Low 4 bits go to ql[64h + l + 32*(k & 1)] (low nibble
    // for k < 2, high for k >= 2); high 2 bits to qh[32h + l] bits 2k..2k+1.
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      ql[64 * h + l + 32 * (k & 1)] |= static_cast<uint8_t>((code(e) & 0xF) << (4 * (k >> 1)));
      qh[32 * h + l] |= static_cast<uint8_t>((code(e) >> 4) << (2 * k));
    }
    std::memcpy(b.data() + 192, sc, 16);
    const f16_t d = f32_to_f16(0.125f);
    std::memcpy(b.data() + 208, &d, 2);
    return b;
  }
  float value(int e) const { return 0.125f * sc[e / 16] * (code(e) - 32); }
};

TEST(WeightTypesQ6_K, DecodesHandBuiltBlock) {
  const auto ref = expect_decodes_exactly(WeightType::Q6_K, Q6KCase{}, 3);
  EXPECT_EQ(ref[0], -3.375f);
  EXPECT_EQ(ref[255], -3.0f);
}

// Q2_K and Q3_K (FORMATS.md): 2-bit codes of element e = 128h + 32j + l at
// bits 2j of qs[32h + l], sub-block e / 16. gguf-py 0.10.0 decodes both
// blocks below to the same 256 values (the same construction in Python, then
//   quants.dequantize(np.frombuffer(block, np.uint8).reshape(1, 84), GGMLQuantizationType.Q2_K)
// and 110 bytes, Q3_K; checked when the formats were added).
void put_2bit(uint8_t* qs, int e, int q) {
  qs[32 * (e / 128) + e % 32] |= static_cast<uint8_t>((q & 3) << (2 * ((e % 128) / 32)));
}

// Q2_K: scales[16] (scale | min << 4), qs[64], d, dmin.
struct Q2KCase {
  uint8_t sc[16] = {1, 2, 3, 15, 0, 7, 9, 11, 4, 13, 5, 6, 14, 8, 10, 12};
  uint8_t m[16] = {0, 7, 15, 1, 3, 2, 9, 4, 11, 6, 5, 13, 8, 12, 10, 14};
  static int code(int e) { return (e * 7 + 3) % 4; }
  std::vector<uint8_t> block() const {
    std::vector<uint8_t> b(84, 0);
    for (int s = 0; s < 16; ++s) b[s] = static_cast<uint8_t>(sc[s] | (m[s] << 4));
    for (int e = 0; e < 256; ++e) put_2bit(b.data() + 16, e, code(e));
    const f16_t d = f32_to_f16(0.5f), dmin = f32_to_f16(0.25f);
    std::memcpy(b.data() + 80, &d, 2);
    std::memcpy(b.data() + 82, &dmin, 2);
    return b;
  }
  float value(int e) const { return 0.5f * sc[e / 16] * code(e) - 0.25f * m[e / 16]; }
};

TEST(WeightTypesQ2_K, DecodesHandBuiltBlock) {
  const auto ref = expect_decodes_exactly(WeightType::Q2_K, Q2KCase{}, 1);
  EXPECT_EQ(ref[0], 1.5f);
  EXPECT_EQ(ref[255], -3.5f);
  EXPECT_EQ(ref[100], 11.25f);
}

// Q3_K: hmask[32] (the third code bit of element 128h + 32j + l at bit
// 4h + j of hmask[l]), qs[64], 6-bit scales in 12 bytes, d;
// x = d * (scale - 32) * (code - 4) for the 3-bit code.
struct Q3KCase {
  int sc[16] = {0, 1, 31, 32, 33, 63, 17, 45, 2, 60, 40, 20, 10, 50, 30, 5};
  static int code(int e) { return (e * 5 + 1) % 8 - 4; }  // signed, -4..3
  std::vector<uint8_t> block() const {
    std::vector<uint8_t> b(110, 0);
    for (int e = 0; e < 256; ++e) {
      const int c = code(e) + 4;
      put_2bit(b.data() + 32, e, c);
      b[e % 32] |= static_cast<uint8_t>((c >> 2) << (4 * (e / 128) + (e % 128) / 32));
    }
    // scale s: low 4 bits in byte s % 8 (low nibble for s < 8, high for
    // s >= 8), high 2 bits in byte 8 + s % 4 at bits 2 (s / 4)
    for (int s = 0; s < 16; ++s) {
      b[96 + s % 8] |= static_cast<uint8_t>((sc[s] & 0xF) << (4 * (s / 8)));
      b[104 + s % 4] |= static_cast<uint8_t>((sc[s] >> 4) << (2 * (s / 4)));
    }
    const f16_t d = f32_to_f16(0.125f);
    std::memcpy(b.data() + 108, &d, 2);
    return b;
  }
  float value(int e) const { return 0.125f * (sc[e / 16] - 32) * code(e); }
};

TEST(WeightTypesQ3_K, DecodesHandBuiltBlock) {
  const auto ref = expect_decodes_exactly(WeightType::Q3_K, Q3KCase{}, 3);
  EXPECT_EQ(ref[0], 12.0f);
  EXPECT_EQ(ref[100], -1.875f);
  EXPECT_EQ(ref[200], 8.25f);
}

// IQ4_NL and IQ4_XS: 4-bit codes index the table
// {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}
// (FORMATS.md), in Q4_0's nibble order per 32 elements. gguf-py 0.10.0
// decodes both cases below to the same 256 values (the same construction in
// Python, then quants.dequantize(..., GGMLQuantizationType.IQ4_NL / IQ4_XS);
// checked when the formats were added).
constexpr int kIq4Table[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
int iq4_code(int e) { return (e * 7 + 3) % 16; }
void put_iq4_codes(uint8_t* qs, int e0) {  // 32 elements from e0
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(iq4_code(e0 + j) | (iq4_code(e0 + 16 + j) << 4));
}

// IQ4_NL: 256 elements are eight 18-byte blocks {d, qs[16]}.
struct IQ4NLCase {
  float d[8] = {0.5f, 0.25f, 1.0f, 2.0f, 0.125f, 4.0f, 0.75f, 1.5f};
  std::vector<uint8_t> block() const {
    std::vector<uint8_t> b(8 * 18, 0);
    for (int k = 0; k < 8; ++k) {
      const f16_t h = f32_to_f16(d[k]);
      std::memcpy(b.data() + 18 * k, &h, 2);
      put_iq4_codes(b.data() + 18 * k + 2, 32 * k);
    }
    return b;
  }
  float value(int e) const { return d[e / 32] * static_cast<float>(kIq4Table[iq4_code(e)]); }
};

TEST(WeightTypesIQ4_NL, DecodesHandBuiltBlocks) {
  const auto ref = expect_decodes_exactly(WeightType::IQ4_NL, IQ4NLCase{}, 1);
  EXPECT_EQ(ref[0], -32.5f);
  EXPECT_EQ(ref[100], 226.0f);
  EXPECT_EQ(ref[255], 79.5f);
}

// IQ4_XS: d, scales_h (2 high bits of sub-block ib's 6-bit scale at bits
// 2 ib), scales_l[4] (4 low bits, sub-block ib in byte ib / 2 at bits
// 4 (ib % 2)), qs[128]; x = d * (scale - 32) * value.
struct IQ4XSCase {
  int ls[8] = {0, 1, 31, 32, 33, 63, 17, 45};
  std::vector<uint8_t> block() const {
    std::vector<uint8_t> b(136, 0);
    const f16_t h = f32_to_f16(0.25f);
    std::memcpy(b.data(), &h, 2);
    const uint8_t scales[6] = {0x90, 0x9e, 0x10, 0x0f, 0xf1, 0xd1};  // ls above, written out by hand
    std::memcpy(b.data() + 2, scales, 6);
    for (int ib = 0; ib < 8; ++ib) put_iq4_codes(b.data() + 8 + 16 * ib, 32 * ib);
    return b;
  }
  float value(int e) const { return 0.25f * static_cast<float>(ls[e / 32] - 32) * kIq4Table[iq4_code(e)]; }
};

TEST(WeightTypesIQ4_XS, DecodesHandBuiltBlock) {
  const auto ref = expect_decodes_exactly(WeightType::IQ4_XS, IQ4XSCase{}, 3);
  EXPECT_EQ(ref[0], 520.0f);
  EXPECT_EQ(ref[100], 0.0f);  // scale 32: a zero step
  EXPECT_EQ(ref[255], 172.25f);
}

// The IQ4 fits: every element within half the gap to its neighbouring table
// values (times the stored step), i.e. each code is the nearest value for
// the stored step; and a step no worse than the plain one that maps the
// largest element to the table's end.
TEST(WeightTypesIQ4, CodesAreNearestForTheStoredStep) {
  const int64_t n = 256 * 33;
  const auto x = varied_floats(n, 31);
  for (WeightType t : {WeightType::IQ4_NL, WeightType::IQ4_XS}) {
    const auto q = quantize(t, x);
    const auto y = dequantize_ref(t, q, n);
    for (int64_t g = 0; g < n / 32; ++g) {
      // the stored step of group g
      float step;
      if (t == WeightType::IQ4_NL) {
        step = f16_at(q.data() + 18 * g);
      } else {
        const uint8_t* b = q.data() + 136 * (g / 8);
        const int ib = static_cast<int>(g % 8);
        const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b[2] | b[3] << 8) >> (2 * ib) & 3) << 4);
        step = f16_at(b) * static_cast<float>(ls - 32);
      }
      double err = 0, plain = 0;
      float amax = 0, mx = 0;
      for (int j = 0; j < 32; ++j)
        if (std::fabs(x[32 * g + j]) > amax) {
          amax = std::fabs(x[32 * g + j]);
          mx = x[32 * g + j];
        }
      for (int j = 0; j < 32; ++j) {
        const float xv = x[32 * g + j], yv = y[32 * g + j];
        float best = INFINITY, pbest = INFINITY;
        for (int v : kIq4Table) {
          best = std::min(best, std::fabs(xv - step * static_cast<float>(v)));
          pbest = std::min(pbest, std::fabs(xv - mx / -127.0f * static_cast<float>(v)));
        }
        ASSERT_LE(std::fabs(xv - yv), best * (1 + 1e-5f) + 1e-6f * amax) << weight_traits(t).name << " group " << g;
        err += static_cast<double>(xv - yv) * (xv - yv);
        plain += static_cast<double>(pbest) * pbest;
      }
      // IQ4_XS rounds the step to a multiple of d: allow what that costs.
      if (t == WeightType::IQ4_NL) {
        EXPECT_LE(err, plain * 1.01 + 1e-6 * amax * amax) << "group " << g;
      }
    }
    for (int j = 0; j < 64; ++j) EXPECT_EQ(y[j], 0.0f) << weight_traits(t).name;
  }
}

// The step of every format shrinks with the data's spread: nmse on
// unit-uniform data stays at the level its bits allow.
TEST(WeightTypesQuant, NmseMatchesBitWidth) {
  const int64_t n = 256 * 64;
  const auto x = test::random_floats(n, 5);
  struct Case {
    WeightType t;
    double max_nmse;
  } cases[] = {{WeightType::Q8_0, 2e-5}, {WeightType::Q4_0, 1e-2},
               {WeightType::Q2_K, 6e-2}, {WeightType::Q3_K, 1.8e-2}, {WeightType::Q4_K, 4e-3},
               {WeightType::Q5_K, 1e-3}, {WeightType::Q6_K, 2.5e-4}, {WeightType::Q4_1, 6e-3},
               {WeightType::Q5_0, 2.5e-3}, {WeightType::Q5_1, 1.5e-3}, {WeightType::IQ4_NL, 8e-3},
               {WeightType::IQ4_XS, 8e-3}};
  for (const auto& c : cases) {
    const auto y = dequantize_ref(c.t, quantize(c.t, x), n);
    EXPECT_LT(test::nmse(y.data(), x.data(), n), c.max_nmse) << weight_traits(c.t).name;
  }
}

}  // namespace
}  // namespace longkv

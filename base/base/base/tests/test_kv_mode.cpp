// The KV mode string grammar: canonical spelling, defaults, and one clear
// message per kind of bad input.
#include <gtest/gtest.h>

#include <utility>

#include "core/error.h"
#include "kv/kv_mode.h"

namespace longkv {
namespace {

TEST(KvMode, DenseModes) {
  EXPECT_EQ(parse_kv_mode("f16").kind, KvKind::f16);
  EXPECT_EQ(parse_kv_mode("f32").to_string(), "f32");
  EXPECT_EQ(parse_kv_mode("f16").k_bits, 16);
}

TEST(KvMode, DefaultsAreSpelledOut) {
  const KvMode m = parse_kv_mode("k4v2");
  EXPECT_EQ(m.kind, KvKind::quant);
  EXPECT_EQ(m.k_bits, 4);
  EXPECT_EQ(m.v_bits, 2);
  EXPECT_EQ(m.to_string(), "k4v2:g32:r128:s4:rope=post");
  EXPECT_EQ(m.warning(), "");
}

TEST(KvMode, FieldsInAnyOrderRoundTrip) {
  const KvMode m = parse_kv_mode("k2v2:sym:rope=pre:s0:r64:g64");
  EXPECT_EQ(m.group, 64);
  EXPECT_EQ(m.residual, 64);
  EXPECT_EQ(m.sinks, 0);
  EXPECT_TRUE(m.pre_rope);
  EXPECT_TRUE(m.symmetric);
  EXPECT_EQ(m.to_string(), "k2v2:g64:r64:s0:rope=pre:sym");
  EXPECT_EQ(parse_kv_mode(m.to_string()).to_string(), m.to_string());
}

TEST(KvMode, KeysWithFewerBitsThanValuesWarn) {
  EXPECT_NE(parse_kv_mode("k2v4").warning().find("keys fewer bits than values"), std::string::npos);
}

void expect_error(const std::string& mode, const std::string& fragment) {
  try {
    parse_kv_mode(mode);
    ADD_FAILURE() << "no error for " << mode;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << mode << ": " << e.what();
  }
}

TEST(KvMode, BadModesFailWithReason) {
  expect_error("", "empty KV mode");
  expect_error("q4", "unknown KV cache mode 'q4': expected f32, f16 or k<bits>v<bits>");
  expect_error("k5v2", "bits must be 8, 4, 3, 2 or 1 (got k5 v2)");
  expect_error("k4v", "unknown KV cache mode 'k4v'");
  expect_error("k4v4:g33", "group size 33 must be a multiple of 8");
  expect_error("k4v4:g0", "group size 0");
  expect_error("k4v4:r", "unknown field 'r'");
  expect_error("k4v4:x1", "unknown field 'x1'");
  expect_error("k4v4:rope=sideways", "unknown field 'rope=sideways'");
  expect_error("k4v4:g32:g64", "field 'g64' given twice");
  expect_error("k4v4:", "unknown field ''");
  expect_error("f16:r128", "dense mode f16 takes no options");
  expect_error("k1v1:sym", "symmetric 1-bit codes cannot represent zero");
  expect_error("k4v4:r99999999", "unknown field");
}

}  // namespace
}  // namespace longkv

namespace longkv {
namespace {

TEST(KvMode, RotationFieldAndItsConstraints) {
  EXPECT_EQ(parse_kv_mode("k2v2:rot").to_string(), "k2v2:g32:r128:s4:rope=post:rot");
  expect_error("k2v2:rot:rope=pre", "':rot' needs keys after RoPE");
  expect_error("k2v2:rot:rot", "given twice");
}

TEST(KvMode, RangeFit) {
  EXPECT_EQ(parse_kv_mode("k2v2:fit=mse").to_string(), "k2v2:g32:r128:s4:rope=post:fit=mse");
  EXPECT_EQ(parse_kv_mode("k2v2:a3:fit=mse:rot:o2").to_string(), "k2v2:g32:r128:s4:rope=post:rot:fit=mse:o2:a3");
  EXPECT_EQ(parse_kv_mode("k4v4:fit=minmax").to_string(), "k4v4:g32:r128:s4:rope=post");
  EXPECT_TRUE(parse_kv_mode("k2v2:fit=mse").fit_mse);
  EXPECT_FALSE(parse_kv_mode("k2v2").fit_mse);
  expect_error("k2v2:fit=best", "unknown field 'fit=best'");
  expect_error("k2v2:fit=mse:fit=minmax", "given twice");
  expect_error("k2v2:sym:fit=mse", "'fit=mse' refits asymmetric ranges; drop ':sym' or 'fit=mse'");
  expect_error("f16:fit=mse", "dense mode f16 takes no options");
}

TEST(KvMode, CutAfterAttentionByDefault) {
  EXPECT_TRUE(parse_kv_mode("k4v4").defer);
  EXPECT_FALSE(parse_kv_mode("k4v4:cut=append").defer);
  // The default is not spelled out; "defer" is the older spelling of it.
  EXPECT_EQ(parse_kv_mode("k2v2:cut=attend").to_string(), "k2v2:g32:r128:s4:rope=post");
  EXPECT_EQ(parse_kv_mode("k2v2:defer").to_string(), "k2v2:g32:r128:s4:rope=post");
  EXPECT_EQ(parse_kv_mode("k2v2:o2:cut=append:fit=mse:rot").to_string(),
            "k2v2:g32:r128:s4:rope=post:rot:fit=mse:cut=append:o2");
  EXPECT_EQ(parse_kv_mode(parse_kv_mode("k2v2:cut=append").to_string()).to_string(),
            "k2v2:g32:r128:s4:rope=post:cut=append");
  EXPECT_TRUE(parse_kv_mode("k2v2:a3:cut=attend").defer);
  const std::pair<const char*, const char*> bad[] = {
      {"k2v2:cut=attend:cut=append", "given twice"},
      {"k2v2:defer:cut=attend", "given twice"},
      {"k2v2:cut=later", "unknown field 'cut=later'"},
      {"k2v2:a3:cut=append", "anchored modes (':a<P>') always cut groups after attention; drop ':cut=append'"},
      {"f16:cut=append", "dense mode f16 takes no options"},
  };
  for (const auto& [mode, message] : bad) expect_error(mode, message);
}

TEST(KvMode, OutlierShare) {
  EXPECT_EQ(parse_kv_mode("k2v2:o2:rot").to_string(), "k2v2:g32:r128:s4:rope=post:rot:o2");
  EXPECT_EQ(parse_kv_mode("k4v2:o0.5").to_string(), "k4v2:g32:r128:s4:rope=post:o0.5");
  EXPECT_DOUBLE_EQ(parse_kv_mode("k2v2:o1.25").outlier_pct, 1.25);
  EXPECT_EQ(parse_kv_mode("k2v2").outlier_pct, 0.0);
  expect_error("k2v2:o0", "outlier share 0% must be in (0, 10]");
  expect_error("k2v2:o12", "outlier share 12% must be in (0, 10]");
  expect_error("k2v2:o-1", "unknown field 'o-1'");
  expect_error("k2v2:o1.2.3", "unknown field 'o1.2.3'");
  expect_error("k2v2:o.5", "unknown field 'o.5'");
  expect_error("k2v2:o1:o2", "field 'o2' given twice");
}

TEST(KvMode, AnchorShare) {
  EXPECT_EQ(parse_kv_mode("k2v2:a1").to_string(), "k2v2:g32:r128:s4:rope=post:a1");
  EXPECT_EQ(parse_kv_mode("k2v2:a2:o2:rot").to_string(), "k2v2:g32:r128:s4:rope=post:rot:o2:a2");
  EXPECT_DOUBLE_EQ(parse_kv_mode("k2v2:a0.5").anchor_pct, 0.5);
  EXPECT_EQ(parse_kv_mode("k2v2").anchor_pct, 0.0);
  EXPECT_EQ(parse_kv_mode(parse_kv_mode("k4v2:a1.25:r64").to_string()).to_string(), "k4v2:g32:r64:s4:rope=post:a1.25");
  expect_error("k2v2:a0", "anchor share 0% must be in (0, 10]");
  expect_error("k2v2:a11", "anchor share 11% must be in (0, 10]");
  expect_error("k2v2:a-1", "unknown field 'a-1'");
  expect_error("k2v2:a", "unknown field 'a'");
  expect_error("k2v2:a1:a2", "field 'a2' given twice");
  expect_error("k2v2:a1:rope=pre", "anchor tokens ':a' need keys after RoPE");
}

}  // namespace
}  // namespace longkv

// GGUF reader/writer: exact bytes against a hand-assembled file, round trips
// of every value type, the real evaluation model (written by gguf-py, an
// independent writer), and one corrupted file per validation rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "formats/gguf.h"
#include "test_util.h"

namespace longkv {
namespace {

using Bytes = std::vector<uint8_t>;
const char* const kName = "test.gguf";

constexpr uint32_t kF32 = 0, kF16 = 1, kQ8_0 = 8, kQ4_K = 12;

template <typename T>
void put(Bytes& b, T v) {
  uint8_t raw[sizeof(T)];
  std::memcpy(raw, &v, sizeof(T));
  b.insert(b.end(), raw, raw + sizeof(T));
}

void put_str(Bytes& b, std::string_view s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

template <typename T>
void poke(Bytes& b, size_t pos, T v) {
  ASSERT_LE(pos + sizeof(T), b.size());
  std::memcpy(b.data() + pos, &v, sizeof(T));
}

// Offset of the first occurrence of `needle` (a key or tensor name, which
// the writer stores right after its u64 length).
size_t find_at(const Bytes& b, std::string_view needle) {
  auto it = std::search(b.begin(), b.end(), needle.begin(), needle.end());
  EXPECT_NE(it, b.end()) << "pattern not found: " << needle;
  return static_cast<size_t>(it - b.begin());
}

// Position of the u32 type field that follows a metadata key.
size_t kv_type_at(const Bytes& b, std::string_view key) { return find_at(b, key) + key.size(); }

// Position of a tensor info's fields: name, then n_dims, ne[], type, offset.
struct TensorFields {
  size_t n_dims, ne0, type, offset;
};
TensorFields tensor_fields(const Bytes& b, std::string_view name, size_t n_dims) {
  const size_t nd = find_at(b, name) + name.size();
  return {nd, nd + 4, nd + 4 + 8 * n_dims, nd + 4 + 8 * n_dims + 4};
}

std::string parse_error(const Bytes& b) {
  try {
    GgufFile::parse(b, kName);
  } catch (const Error& e) {
    return e.what();
  }
  return "(parsed without error)";
}

// Every message names the file first, then contains the fragment.
::testing::AssertionResult fails_with(const Bytes& b, std::string_view fragment) {
  const std::string msg = parse_error(b);
  if (msg.rfind(std::string(kName) + ": ", 0) != 0 || msg.find(fragment) == std::string::npos) {
    return ::testing::AssertionFailure() << "message \"" << msg << "\" lacks \"" << fragment << "\"";
  }
  return ::testing::AssertionSuccess();
}

Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

Bytes pattern_bytes(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 7);
  return b;
}

GgufValue make_typed(GgufType t, uint64_t u, int64_t i, double f) {
  GgufValue v;
  v.type = t;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}

// A small file exercising the paths the bad-input tests corrupt.
Bytes sample_file() {
  GgufWriter w;
  w.set("general.architecture", GgufValue::make_string("llama"));
  w.set("test.count", GgufValue::make_u32(7));
  w.set("test.flag", GgufValue::make_bool(true));
  w.set("test.ints", GgufValue::make_i32_array({1, -2, 3}));
  w.set("test.nested", GgufValue::make_array(GgufType::ARRAY, {GgufValue::make_string_array({"x", "yz"})}));
  w.set("dup.a", GgufValue::make_u32(1));
  w.set("dup.b", GgufValue::make_u32(2));
  w.set("general.alignment", GgufValue::make_u32(32));
  w.add_tensor("t.a", {3, 2}, kF32, f32_bytes({1, 2, 3, 4, 5, 6}));
  w.add_tensor("t.b", {64, 2}, kQ8_0, pattern_bytes(2 * 2 * 34, 5));
  return w.to_bytes();
}

TEST(GgufWriter, MatchesHandAssembledBytes) {
  GgufWriter w;
  w.set("a", GgufValue::make_u32(7));
  w.add_tensor("t", {2}, kF32, f32_bytes({1.0f, 2.0f}));
  Bytes want;
  want.insert(want.end(), {'G', 'G', 'U', 'F'});
  put<uint32_t>(want, 3);
  put<uint64_t>(want, 1);  // tensors
  put<uint64_t>(want, 1);  // kv
  put_str(want, "a");
  put<uint32_t>(want, 4);  // u32
  put<uint32_t>(want, 7);
  put_str(want, "t");
  put<uint32_t>(want, 1);
  put<uint64_t>(want, 2);
  put<uint32_t>(want, kF32);
  put<uint64_t>(want, 0);
  ASSERT_EQ(want.size(), 74u);
  want.resize(96, 0);  // pad to 32
  put<float>(want, 1.0f);
  put<float>(want, 2.0f);
  want.resize(128, 0);
  EXPECT_EQ(w.to_bytes(), want);
}

TEST(GgufWriter, RejectsInconsistentTensors) {
  GgufWriter w;
  auto msg = [&](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(msg([&] { w.add_tensor("x", {4}, kF32, Bytes(15)); }).find("has 15 bytes of data, shape needs 16"),
            std::string::npos);
  EXPECT_NE(msg([&] { w.add_tensor("x", {48}, kQ8_0, Bytes(51)); }).find("not a multiple of the block size 32"),
            std::string::npos);
  EXPECT_NE(msg([&] { w.add_tensor("x", {1, 1, 1, 1, 1}, kF32, Bytes(4)); }).find("5 dims"), std::string::npos);
  EXPECT_NE(msg([&] { w.add_tensor(std::string(65, 'n'), {1}, kF32, Bytes(4)); }).find("longer than 64"),
            std::string::npos);
  w.add_tensor("x", {1}, kF32, Bytes(4));
  EXPECT_NE(msg([&] { w.add_tensor("x", {1}, kF32, Bytes(4)); }).find("duplicate tensor name 'x'"),
            std::string::npos);
  w.set("general.alignment", GgufValue::make_u32(24));
  EXPECT_NE(msg([&] { w.to_bytes(); }).find("power of two"), std::string::npos);
  GgufWriter mixed;
  mixed.set("m", GgufValue::make_array(GgufType::U32, {GgufValue::make_string("s")}));
  EXPECT_NE(msg([&] { mixed.to_bytes(); }).find("element 0 has type string, array holds u32"),
            std::string::npos);
}

TEST(GgufRoundTrip, EveryValueType) {
  const std::string with_nul("a\0b\xe2\x96\x81", 6);
  GgufWriter w;
  w.set("v.u8", make_typed(GgufType::U8, 200, 0, 0));
  w.set("v.i8", make_typed(GgufType::I8, 0, -100, 0));
  w.set("v.u16", make_typed(GgufType::U16, 60000, 0, 0));
  w.set("v.i16", make_typed(GgufType::I16, 0, -30000, 0));
  w.set("v.u32", GgufValue::make_u32(4000000000u));
  w.set("v.i32", GgufValue::make_i32(-2000000000));
  w.set("v.u64", GgufValue::make_u64((1ull << 63) + 5));
  w.set("v.i64", make_typed(GgufType::I64, 0, std::numeric_limits<int64_t>::min(), 0));
  w.set("v.f32", GgufValue::make_f32(1.5f));
  w.set("v.f64", make_typed(GgufType::F64, 0, 0, 0.1));
  w.set("v.true", GgufValue::make_bool(true));
  w.set("v.false", GgufValue::make_bool(false));
  w.set("v.str", GgufValue::make_string(with_nul));
  w.set("v.empty", GgufValue::make_string(""));
  w.set("v.f32s", GgufValue::make_f32_array({0.25f, -3.0f}));
  w.set("v.i32s", GgufValue::make_i32_array({-1, 2, 1 << 30}));
  w.set("v.u8s", GgufValue::make_array(GgufType::U8, {make_typed(GgufType::U8, 255, 0, 0)}));
  w.set("v.bools", GgufValue::make_array(GgufType::BOOL, {GgufValue::make_bool(false), GgufValue::make_bool(true)}));
  w.set("v.none", GgufValue::make_array(GgufType::U64, {}));
  w.set("v.nested", GgufValue::make_array(GgufType::ARRAY, {GgufValue::make_string_array({"a", "bc"}),
                                                             GgufValue::make_string_array({}),
                                                             GgufValue::make_string_array({with_nul})}));
  w.set("v.u32", GgufValue::make_u32(123));  // replaces, keeps position
  const Bytes bytes = w.to_bytes();
  auto g = GgufFile::parse(bytes, kName);

  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->alignment(), 32u);
  ASSERT_EQ(g->metadata().size(), 20u);
  EXPECT_EQ(g->metadata()[4].first, "v.u32");
  EXPECT_EQ(g->metadata()[19].first, "v.nested");

  EXPECT_EQ(g->get("v.u8").type, GgufType::U8);
  EXPECT_EQ(g->get_int("v.u8"), 200);
  EXPECT_EQ(g->get("v.i8").type, GgufType::I8);
  EXPECT_EQ(g->get_int("v.i8"), -100);
  EXPECT_EQ(g->get_int("v.u16"), 60000);
  EXPECT_EQ(g->get_int("v.i16"), -30000);
  EXPECT_EQ(g->get_int("v.u32"), 123);
  EXPECT_EQ(g->get_int("v.i32"), -2000000000);
  EXPECT_EQ(g->get("v.u64").u, (1ull << 63) + 5);
  EXPECT_EQ(g->get_int("v.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(g->get("v.f32").type, GgufType::F32);
  EXPECT_EQ(g->get_float("v.f32"), 1.5);
  EXPECT_EQ(g->get("v.f64").type, GgufType::F64);
  EXPECT_EQ(g->get_float("v.f64"), 0.1);  // f64 is stored exactly
  EXPECT_TRUE(g->get_bool("v.true", false));
  EXPECT_FALSE(g->get_bool("v.false", true));
  EXPECT_EQ(g->get_string("v.str"), with_nul);
  EXPECT_EQ(g->get("v.empty").type, GgufType::STRING);
  EXPECT_EQ(g->get_string("v.empty", "default"), "");

  const GgufValue& f32s = g->get("v.f32s");
  ASSERT_EQ(f32s.type, GgufType::ARRAY);
  EXPECT_EQ(f32s.elem_type, GgufType::F32);
  ASSERT_EQ(f32s.arr.size(), 2u);
  EXPECT_EQ(f32s.arr[1].f, -3.0);
  const GgufValue& i32s = g->get("v.i32s");
  ASSERT_EQ(i32s.arr.size(), 3u);
  EXPECT_EQ(i32s.arr[2].as_int("k"), 1 << 30);
  EXPECT_EQ(g->get("v.u8s").arr.at(0).u, 255u);
  EXPECT_EQ(g->get("v.bools").arr.at(1).u, 1u);
  EXPECT_EQ(g->get("v.none").elem_type, GgufType::U64);
  EXPECT_TRUE(g->get("v.none").arr.empty());

  const GgufValue& nested = g->get("v.nested");
  EXPECT_EQ(nested.elem_type, GgufType::ARRAY);
  ASSERT_EQ(nested.arr.size(), 3u);
  EXPECT_EQ(nested.arr[0].elem_type, GgufType::STRING);
  ASSERT_EQ(nested.arr[0].arr.size(), 2u);
  EXPECT_EQ(nested.arr[0].arr[1].s, "bc");
  EXPECT_TRUE(nested.arr[1].arr.empty());
  EXPECT_EQ(nested.arr[2].arr.at(0).s, with_nul);

  EXPECT_TRUE(g->tensors().empty());
  // Writing what we read gives the same bytes.
  GgufWriter again;
  for (const auto& [k, v] : g->metadata()) again.set(k, v);
  EXPECT_EQ(again.to_bytes(), bytes);
}

TEST(GgufRoundTrip, TensorsAndData) {
  GgufWriter w;
  w.set("general.alignment", GgufValue::make_u32(64));
  const Bytes a = f32_bytes(test::random_floats(15, 1));
  const Bytes b = pattern_bytes(7 * 2, 3);
  const Bytes c = pattern_bytes(3 * 2 * 34, 9);
  const Bytes d = pattern_bytes(144, 11);
  w.add_tensor("a", {3, 5}, kF32, a);
  w.add_tensor("b", {7}, kF16, b);
  w.add_tensor("c", {64, 3, 1}, kQ8_0, c);
  w.add_tensor(std::string(64, 'd'), {256, 1, 1, 1}, kQ4_K, d);
  const Bytes bytes = w.to_bytes();
  EXPECT_EQ(bytes.size() % 64, 0u);
  auto g = GgufFile::parse(bytes, kName);
  EXPECT_EQ(g->alignment(), 64u);
  ASSERT_EQ(g->tensors().size(), 4u);

  const struct {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t type;
    const Bytes* data;
    uint64_t n;
  } want[] = {{"a", {3, 5}, kF32, &a, 15},
              {"b", {7}, kF16, &b, 7},
              {"c", {64, 3, 1}, kQ8_0, &c, 192},
              {std::string(64, 'd'), {256, 1, 1, 1}, kQ4_K, &d, 256}};
  uint64_t expect_offset = 0;
  for (size_t k = 0; k < 4; ++k) {
    const GgufTensorInfo& t = g->tensors()[k];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, want[k].name);
    EXPECT_EQ(t.ne, want[k].ne);
    EXPECT_EQ(t.type, want[k].type);
    EXPECT_EQ(t.n_elements(), want[k].n);
    EXPECT_EQ(t.nbytes, want[k].data->size());
    EXPECT_EQ(t.offset, expect_offset);
    expect_offset += (t.nbytes + 63) / 64 * 64;
    EXPECT_EQ(static_cast<size_t>(t.data - bytes.data()) % 64, 0u);
    ASSERT_NE(t.data, nullptr);
    EXPECT_EQ(Bytes(t.data, t.data + t.nbytes), *want[k].data);
    EXPECT_EQ(g->find_tensor(t.name), &t);
  }
  EXPECT_EQ(g->find_tensor("missing"), nullptr);
}

TEST(GgufRoundTrip, WriteAndOpenFile) {
  const std::string path = test::temp_dir() + "/rt.gguf";
  GgufWriter w;
  w.set("general.architecture", GgufValue::make_string("llama"));
  w.add_tensor("w", {32}, kQ8_0, pattern_bytes(34, 1));
  w.write(path);
  auto g = GgufFile::open(path);
  EXPECT_EQ(g->name(), path);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  ASSERT_EQ(g->tensors().size(), 1u);
  EXPECT_EQ(Bytes(g->tensors()[0].data, g->tensors()[0].data + 34), pattern_bytes(34, 1));

  try {
    w.write("/nonexistent-dir/x.gguf");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/x.gguf: cannot create"), std::string::npos) << e.what();
  }
  try {
    GgufFile::open("/nonexistent-dir/x.gguf");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("/nonexistent-dir/x.gguf: ", 0), 0u) << e.what();
  }
}

TEST(GgufValueAccess, TypedHelpers) {
  const Bytes bytes = sample_file();
  auto g = GgufFile::parse(bytes, kName);
  auto msg = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_EQ(msg([&] { g->get_int("general.architecture"); }),
            "test.gguf: metadata key 'general.architecture' has type string, expected integer");
  EXPECT_EQ(msg([&] { g->get_int("general.architecture", 5); }),
            "test.gguf: metadata key 'general.architecture' has type string, expected integer");
  EXPECT_EQ(msg([&] { g->get_float("general.architecture"); }),
            "test.gguf: metadata key 'general.architecture' has type string, expected float");
  EXPECT_EQ(msg([&] { g->get_string("test.count"); }),
            "test.gguf: metadata key 'test.count' has type u32, expected string");
  EXPECT_EQ(msg([&] { g->get_bool("test.count", false); }),
            "test.gguf: metadata key 'test.count' has type u32, expected bool");
  EXPECT_EQ(msg([&] { g->get("no.such.key"); }), "test.gguf: missing metadata key 'no.such.key'");
  EXPECT_EQ(msg([&] { g->get_int("no.such.key"); }), "test.gguf: missing metadata key 'no.such.key'");
  EXPECT_EQ(g->get_int("no.such.key", -4), -4);
  EXPECT_EQ(g->get_float("no.such.key", 2.5), 2.5);
  EXPECT_EQ(g->get_float("test.count"), 7.0);  // integers widen to float
  EXPECT_EQ(g->get_string("no.such.key", "dflt"), "dflt");
  EXPECT_TRUE(g->get_bool("no.such.key", true));
  EXPECT_TRUE(g->get_bool("test.flag", false));
  EXPECT_EQ(g->find("no.such.key"), nullptr);
  EXPECT_TRUE(g->get("test.count").is_integer());
  EXPECT_FALSE(g->get("test.flag").is_integer());

  const GgufValue big = GgufValue::make_u64(~0ull);
  EXPECT_EQ(msg([&] { big.as_int("k"); }), "metadata key 'k' value 18446744073709551615 does not fit in int64");
  EXPECT_EQ(std::string(gguf_type_name(GgufType::F64)), "f64");
}

TEST(GgufEvalModel, ReadsRealFile) {
  const std::string rel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
  LONGKV_REQUIRE_SHARED(rel);
  auto g = GgufFile::open(test::shared_path(rel));
  // Facts below come from an independent Python parse of the file.
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->alignment(), 32u);
  EXPECT_EQ(g->metadata().size(), 27u);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_int("llama.block_count"), 8);
  EXPECT_EQ(g->get_int("llama.attention.head_count_kv"), 2);
  EXPECT_NEAR(g->get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-11);
  EXPECT_EQ(g->get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_TRUE(g->get_bool("tokenizer.ggml.add_bos_token", false));
  EXPECT_FALSE(g->get_bool("tokenizer.ggml.add_eos_token", true));

  const GgufValue& tokens = g->get("tokenizer.ggml.tokens");
  EXPECT_EQ(tokens.elem_type, GgufType::STRING);
  ASSERT_EQ(tokens.arr.size(), 32000u);
  EXPECT_EQ(tokens.arr[0].s, "<unk>");
  EXPECT_EQ(tokens.arr[2].s, "</s>");
  const GgufValue& types = g->get("tokenizer.ggml.token_type");
  EXPECT_EQ(types.elem_type, GgufType::I32);
  ASSERT_EQ(types.arr.size(), 32000u);
  EXPECT_EQ(types.arr[0].i, 2);
  EXPECT_EQ(g->get("tokenizer.ggml.scores").arr.size(), 32000u);

  ASSERT_EQ(g->tensors().size(), 74u);
  const GgufTensorInfo* emb = g->find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->type, kQ8_0);
  EXPECT_EQ(emb->ne, (std::vector<uint64_t>{512, 32000}));
  EXPECT_EQ(emb->offset, 0u);
  EXPECT_EQ(emb->nbytes, 32000u * 512 / 32 * 34);
  EXPECT_EQ(Bytes(emb->data, emb->data + 4), (Bytes{0x3c, 0x16, 0xab, 0x06}));
  const GgufTensorInfo* norm = g->find_tensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->type, kF32);
  EXPECT_EQ(norm->offset, 39723008u);
  EXPECT_EQ(norm->data - emb->data, 39723008);
  EXPECT_EQ(g->find_tensor("output.weight"), nullptr);  // tied to the embedding
  const GgufTensorInfo* k = g->find_tensor("blk.0.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->ne, (std::vector<uint64_t>{512, 128}));
}

// ---- corrupted inputs -----------------------------------------------------

TEST(GgufBadInput, SampleParses) {
  // The base of every corruption below must itself be valid.
  EXPECT_EQ(parse_error(sample_file()), "(parsed without error)");
}

TEST(GgufBadInput, BadMagic) {
  Bytes b = sample_file();
  b[0] = 'H';
  EXPECT_EQ(parse_error(b), "test.gguf: bad magic 0x46554748 (not a GGUF file)");
}

TEST(GgufBadInput, UnsupportedVersions) {
  Bytes b = sample_file();
  poke<uint32_t>(b, 4, 1);
  EXPECT_TRUE(fails_with(b, "GGUF version 1 is not supported"));
  poke<uint32_t>(b, 4, 4);
  EXPECT_TRUE(fails_with(b, "unsupported GGUF version 4"));
  poke<uint32_t>(b, 4, 0);
  EXPECT_TRUE(fails_with(b, "unsupported GGUF version 0"));
  poke<uint32_t>(b, 4, 2);  // v2 has the v3 layout
  EXPECT_EQ(GgufFile::parse(b, kName)->version(), 2u);
}

TEST(GgufBadInput, BigEndian) {
  Bytes b = sample_file();
  poke<uint32_t>(b, 4, 0x03000000);
  EXPECT_TRUE(fails_with(b, "big-endian GGUF not supported"));
}

TEST(GgufBadInput, TruncatedAnywhere) {
  const Bytes full = sample_file();
  auto g = GgufFile::parse(full, kName);
  const size_t data_start = static_cast<size_t>(g->tensors()[0].data - full.data());
  const GgufTensorInfo& last = g->tensors().back();
  const size_t data_end = static_cast<size_t>(last.data + last.nbytes - full.data());
  ASSERT_LT(data_end, full.size());
  for (size_t n = 0; n < full.size(); ++n) {
    const Bytes cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
    SCOPED_TRACE(n);
    if (n >= data_end) {
      // Only the last tensor's trailing padding is missing: nothing is lost.
      EXPECT_EQ(parse_error(cut), "(parsed without error)");
    } else {
      EXPECT_TRUE(fails_with(cut, n < data_start ? "truncated while reading" : "runs past the end of the file"));
    }
  }
  EXPECT_TRUE(fails_with(Bytes(full.begin(), full.begin() + 2), "truncated while reading magic"));
  EXPECT_TRUE(fails_with(Bytes(full.begin(), full.begin() + 6), "truncated while reading version"));
  EXPECT_TRUE(fails_with(Bytes(full.begin(), full.begin() + 20), "truncated while reading metadata count"));
  EXPECT_TRUE(fails_with(Bytes(full.begin(), full.begin() + static_cast<ptrdiff_t>(data_start) - 1),
                         "truncated while reading padding before the tensor data"));
}

TEST(GgufBadInput, HugeStringLength) {
  Bytes b = sample_file();
  poke<uint64_t>(b, 24, 1ull << 40);  // first key's length
  EXPECT_TRUE(fails_with(b, "truncated while reading metadata entry 0 key (string of 1099511627776 bytes"));
  b = sample_file();
  const size_t v = kv_type_at(b, "general.architecture") + 4;
  poke<uint64_t>(b, v, ~0ull);
  EXPECT_TRUE(fails_with(b, "truncated while reading metadata key 'general.architecture' (string of"));
}

TEST(GgufBadInput, HugeArrayCounts) {
  Bytes b = sample_file();
  poke<uint64_t>(b, kv_type_at(b, "test.ints") + 8, 1ull << 62);
  EXPECT_TRUE(fails_with(b, "metadata key 'test.ints': 4611686018427387904 elements of type i32 need at least 4 bytes each"));
  b = sample_file();
  poke<uint64_t>(b, kv_type_at(b, "test.nested") + 8, ~0ull);
  EXPECT_TRUE(fails_with(b, "elements of type array need at least 12 bytes each"));
  b = sample_file();  // the inner array of strings
  poke<uint64_t>(b, kv_type_at(b, "test.nested") + 16 + 4, 1000);
  EXPECT_TRUE(fails_with(b, "truncated while reading metadata key 'test.nested'[0]: 1000 elements of type string"));
}

TEST(GgufBadInput, HugeKvAndTensorCounts) {
  Bytes b = sample_file();
  poke<uint64_t>(b, 16, 1ull << 60);
  EXPECT_TRUE(fails_with(b, "truncated while reading metadata: 1152921504606846976 entries"));
  b = sample_file();
  poke<uint64_t>(b, 8, ~0ull);
  EXPECT_TRUE(fails_with(b, "truncated while reading tensor infos: 18446744073709551615 tensors"));
}

TEST(GgufBadInput, UnknownValueTypes) {
  Bytes b = sample_file();
  poke<uint32_t>(b, kv_type_at(b, "test.count"), 13);
  EXPECT_TRUE(fails_with(b, "metadata key 'test.count' has unknown value type 13"));
  b = sample_file();
  poke<uint32_t>(b, kv_type_at(b, "test.ints") + 4, 99);
  EXPECT_TRUE(fails_with(b, "metadata key 'test.ints': unknown array element type 99"));
}

TEST(GgufBadInput, BoolNotZeroOrOne) {
  Bytes b = sample_file();
  b[kv_type_at(b, "test.flag") + 4] = 2;
  EXPECT_TRUE(fails_with(b, "metadata key 'test.flag': bool value is 2, must be 0 or 1"));
}

TEST(GgufBadInput, DuplicateKey) {
  Bytes b = sample_file();
  b[find_at(b, "dup.b") + 4] = 'a';
  EXPECT_TRUE(fails_with(b, "duplicate metadata key 'dup.a'"));
}

TEST(GgufBadInput, DuplicateTensorName) {
  Bytes b = sample_file();
  b[find_at(b, "t.b") + 2] = 'a';
  EXPECT_TRUE(fails_with(b, "duplicate tensor name 't.a'"));
}

TEST(GgufBadInput, BadDims) {
  Bytes b = sample_file();
  const TensorFields f = tensor_fields(b, "t.a", 2);
  poke<uint32_t>(b, f.n_dims, 0);
  EXPECT_TRUE(fails_with(b, "tensor 't.a' has n_dims 0 (must be 1 to 4)"));
  poke<uint32_t>(b, f.n_dims, 5);
  EXPECT_TRUE(fails_with(b, "tensor 't.a' has n_dims 5 (must be 1 to 4)"));
}

TEST(GgufBadInput, ShapeOverflow) {
  Bytes b = sample_file();
  const TensorFields f = tensor_fields(b, "t.a", 2);
  poke<uint64_t>(b, f.ne0, 1ull << 63);
  EXPECT_TRUE(fails_with(b, "tensor 't.a' shape overflows int64 at ne[0]"));
  b = sample_file();
  poke<uint64_t>(b, f.ne0 + 8, 1ull << 62);  // 3 * 2^62 > INT64_MAX
  EXPECT_TRUE(fails_with(b, "tensor 't.a' shape overflows int64 at ne[1]"));
  b = sample_file();
  poke<uint64_t>(b, f.ne0 + 8, 1ull << 40);  // representable, but not in this file
  EXPECT_TRUE(fails_with(b, "tensor 't.a' data [") && fails_with(b, "runs past the end of the file"));
  b = sample_file();
  poke<uint64_t>(b, f.ne0 + 8, 0);  // zero-sized tensors are allowed
  EXPECT_EQ(GgufFile::parse(b, kName)->tensors()[0].nbytes, 0u);
}

TEST(GgufBadInput, UnknownGgmlType) {
  Bytes b = sample_file();
  const TensorFields f = tensor_fields(b, "t.a", 2);
  poke<uint32_t>(b, f.type, 4);  // Q4_2, removed
  EXPECT_TRUE(fails_with(b, "tensor 't.a' has unknown or removed ggml type id 4"));
  poke<uint32_t>(b, f.type, 1000);
  EXPECT_TRUE(fails_with(b, "tensor 't.a' has unknown or removed ggml type id 1000"));
}

TEST(GgufBadInput, RowNotWholeBlocks) {
  Bytes b = sample_file();
  poke<uint64_t>(b, tensor_fields(b, "t.b", 2).ne0, 48);
  EXPECT_TRUE(fails_with(b, "tensor 't.b' ne[0] = 48 is not a multiple of the"));
  EXPECT_TRUE(fails_with(b, "block size 32"));
}

TEST(GgufBadInput, BadAlignment) {
  Bytes b = sample_file();
  const size_t t = kv_type_at(b, "general.alignment");
  poke<uint32_t>(b, t + 4, 48);
  EXPECT_TRUE(fails_with(b, "general.alignment must be a power of two, got 48"));
  poke<uint32_t>(b, t + 4, 0);
  EXPECT_TRUE(fails_with(b, "general.alignment must be a power of two, got 0"));
  b = sample_file();
  poke<uint32_t>(b, t, static_cast<uint32_t>(GgufType::I32));
  EXPECT_TRUE(fails_with(b, "general.alignment must be a u32 power of two, got type i32"));
}

TEST(GgufBadInput, MisalignedOrOutOfRangeOffset) {
  Bytes b = sample_file();
  const TensorFields f = tensor_fields(b, "t.b", 2);
  poke<uint64_t>(b, f.offset, 32 + 16);
  EXPECT_TRUE(fails_with(b, "tensor 't.b' offset 48 is not a multiple of the alignment 32"));
  poke<uint64_t>(b, f.offset, 64);  // aligned, but 64 + 136 bytes pass the end
  EXPECT_TRUE(fails_with(b, "tensor 't.b' data [") && fails_with(b, "runs past the end of the file (size"));
  poke<uint64_t>(b, f.offset, ~0ull - 31);  // aligned, and offset + size wraps
  EXPECT_TRUE(fails_with(b, "tensor 't.b' data (offset 18446744073709551584"));
}

TEST(GgufBadInput, TensorNameTooLong) {
  GgufWriter w;
  const std::string name(64, 'n');
  w.add_tensor(name, {1}, kF32, Bytes(4));
  Bytes b = w.to_bytes();
  EXPECT_EQ(parse_error(b), "(parsed without error)");  // 64 bytes is the limit, inclusive
  poke<uint64_t>(b, find_at(b, name) - 8, 65);
  EXPECT_TRUE(fails_with(b, "name is 65 bytes, longer than the GGUF limit of 64"));
}

TEST(GgufBadInput, DeeplyNestedArrays) {
  auto nest = [](int levels) {
    GgufValue v = GgufValue::make_string_array({"leaf"});
    for (int k = 1; k < levels; ++k) v = GgufValue::make_array(GgufType::ARRAY, {v});
    GgufWriter w;
    w.set("deep", v);
    return w.to_bytes();
  };
  EXPECT_EQ(parse_error(nest(16)), "(parsed without error)");
  EXPECT_TRUE(fails_with(nest(17), "arrays nested deeper than 16 levels"));
}

TEST(GgufBadInput, KeysInMessagesArePrintable) {
  Bytes b = sample_file();
  const size_t k = find_at(b, "test.count");
  b[k] = '\n';
  poke<uint32_t>(b, k + 10, 13);
  EXPECT_TRUE(fails_with(b, "metadata key '\\x0aest.count' has unknown value type 13"));
}

// ---- fuzz seeds -------------------------------------------------------------

std::filesystem::path seed_dir() {
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "fuzz" / "corpus" / "gguf";
}

std::vector<std::pair<std::string, Bytes>> seed_files() {
  std::vector<std::pair<std::string, Bytes>> seeds;
  {
    GgufWriter w;
    w.set("general.architecture", GgufValue::make_string("llama"));
    seeds.emplace_back("metadata_only.gguf", w.to_bytes());
  }
  {
    GgufWriter w;
    w.set("u8", make_typed(GgufType::U8, 1, 0, 0));
    w.set("i16", make_typed(GgufType::I16, 0, -2, 0));
    w.set("u64", GgufValue::make_u64(3));
    w.set("i64", make_typed(GgufType::I64, 0, -4, 0));
    w.set("f64", make_typed(GgufType::F64, 0, 0, 0.5));
    w.set("f32", GgufValue::make_f32(1e-5f));
    w.set("b", GgufValue::make_bool(true));
    w.set("nested", GgufValue::make_array(GgufType::ARRAY, {GgufValue::make_string_array({"a", "b"}),
                                                            GgufValue::make_i32_array({1, 2})}));
    seeds.emplace_back("all_types.gguf", w.to_bytes());
  }
  {
    GgufWriter w;
    w.set("general.alignment", GgufValue::make_u32(64));
    w.add_tensor("f", {3, 2}, kF32, f32_bytes({1, 2, 3, 4, 5, 6}));
    w.add_tensor("q", {32, 2}, kQ8_0, pattern_bytes(68, 1));
    w.add_tensor("h", {4}, kF16, pattern_bytes(8, 2));
    seeds.emplace_back("tensors.gguf", w.to_bytes());
  }
  {
    GgufWriter w;
    w.set("tokenizer.ggml.model", GgufValue::make_string("llama"));
    w.set("tokenizer.ggml.tokens", GgufValue::make_string_array({"<unk>", "<s>", "</s>", "\xe2\x96\x81the"}));
    w.set("tokenizer.ggml.scores", GgufValue::make_f32_array({0, 0, 0, -1.5f}));
    w.set("tokenizer.ggml.token_type", GgufValue::make_i32_array({2, 3, 3, 1}));
    w.add_tensor("token_embd.weight", {32, 4}, kQ8_0, pattern_bytes(4 * 34, 3));
    seeds.emplace_back("tokenizer.gguf", w.to_bytes());
  }
  return seeds;
}

// Regenerates the committed seeds: run with --gtest_also_run_disabled_tests.
TEST(GgufFuzzSeeds, DISABLED_Write) {
  std::filesystem::create_directories(seed_dir());
  for (const auto& [name, bytes] : seed_files()) {
    ASSERT_LT(bytes.size(), 4096u);
    test::write_file((seed_dir() / name).string(), std::string(bytes.begin(), bytes.end()));
  }
}

TEST(GgufFuzzSeeds, CommittedSeedsMatchWriter) {
  if (!std::filesystem::exists(seed_dir())) GTEST_SKIP() << "no seed directory " << seed_dir();
  for (const auto& [name, bytes] : seed_files()) {
    SCOPED_TRACE(name);
    const std::string on_disk = test::read_file((seed_dir() / name).string());
    EXPECT_EQ(Bytes(on_disk.begin(), on_disk.end()), bytes);
    EXPECT_EQ(parse_error(bytes), "(parsed without error)");
  }
}

}  // namespace
}  // namespace longkv

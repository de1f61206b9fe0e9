// Model loaders (GGUF, llama2.c, Hugging Face safetensors), the GGUF model
// writer and the safetensors reader. Oracles: raw file offsets computed here
// from the format descriptions, the llama2.c copy of stories260K against its
// HF copy (rows permuted per head), and exact error-text fragments.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/model_loader.h"
#include "model/synthetic_model.h"
#include "test_util.h"

namespace longkv {
namespace {

namespace fs = std::filesystem;
using test::read_file;
using test::shared_path;
using test::temp_dir;
using test::write_file;

const char* kStoriesBin = "models/stories260K/stories260K.bin";
const char* kStoriesHf = "models/stories260K/hf";
const char* kEvalGguf = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";

// Runs fn and returns the Error text ("" if nothing was thrown).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR(stmt, fragment)                                      \
  do {                                                                    \
    const std::string msg_ = error_of([&] { stmt; });                     \
    EXPECT_NE(msg_.find(fragment), std::string::npos)                     \
        << "expected error containing \"" << (fragment) << "\", got \"" << msg_ << "\""; \
  } while (0)

bool same_bytes(const WeightView& a, const WeightView& b) {
  return a.type == b.type && a.rows == b.rows && a.cols == b.cols && a.nbytes() == b.nbytes() &&
         std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

// Row r of an F32 view as floats.
std::vector<float> f32_row(const WeightView& v, int64_t r) {
  std::vector<float> out(static_cast<size_t>(v.cols));
  std::memcpy(out.data(), v.row(r), out.size() * sizeof(float));
  return out;
}

// Independent statement of the HF <-> llama2.c relation: within each head of
// hd rows, HF row q holds llama2.c row 2q for q < hd/2 and row 2(q - hd/2)+1
// for the second half.
int64_t llama2c_row_of_hf_row(int64_t r, int hd) {
  const int64_t h = r / hd, q = r % hd;
  return h * hd + (q < hd / 2 ? 2 * q : 2 * (q - hd / 2) + 1);
}

void expect_unpermuted_equal(const WeightView& hf, const WeightView& l2c, int hd) {
  ASSERT_EQ(hf.rows, l2c.rows);
  ASSERT_EQ(hf.cols, l2c.cols);
  for (int64_t r = 0; r < hf.rows; ++r) {
    EXPECT_EQ(f32_row(hf, r), f32_row(l2c, llama2c_row_of_hf_row(r, hd))) << "row " << r;
  }
}

Vocab synthetic_vocab(int n) {
  Vocab v;
  for (int i = 0; i < n; ++i) {
    v.pieces.push_back("tok" + std::to_string(i));
    v.scores.push_back(-static_cast<float>(i));
    v.types.push_back(i < 3 ? TokenType::control : TokenType::normal);
  }
  return v;
}

// ---------------------------------------------------------------- llama2.c

TEST(LoaderLlama2c, Stories260KConfigAndOffsets) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  const std::string path = shared_path(kStoriesBin);
  const LoadedModel m = load_model(path);
  const ModelWeights& w = m.weights;
  const ModelConfig& c = w.cfg;
  EXPECT_EQ(w.source, "llama2c");
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.name, "stories260K");
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.n_vocab, 512);
  EXPECT_EQ(c.ctx_len, 512);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.rope_dim, 8);
  EXPECT_EQ(c.rope, RopeStyle::interleaved);
  EXPECT_FLOAT_EQ(c.rope_base, 10000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_TRUE(w.tied_output);
  EXPECT_EQ(w.output.data, w.tok_embd.data);
  EXPECT_FALSE(m.vocab.has_value());
  ASSERT_EQ(w.layers.size(), 5u);

  // Offsets from the README's array order, in floats after the 28-byte header.
  const std::string raw = read_file(path);
  auto at = [&](size_t float_off) { return raw.data() + 28 + 4 * float_off; };
  const size_t V = 512, D = 64, L = 5, KV = 32, H = 172;
  EXPECT_EQ(std::memcmp(w.tok_embd.data, at(0), V * D * 4), 0);
  const size_t rms_att = V * D, wq = rms_att + L * D, wk = wq + L * D * D, wv = wk + L * KV * D;
  const size_t wo = wv + L * KV * D, rms_ffn = wo + L * D * D, w1 = rms_ffn + L * D;
  const size_t w2 = w1 + L * H * D, w3 = w2 + L * D * H, rms_final = w3 + L * H * D;
  for (size_t i = 0; i < L; ++i) {
    const LayerWeights& l = w.layers[i];
    EXPECT_EQ(std::memcmp(l.attn_norm.data(), at(rms_att + i * D), D * 4), 0);
    EXPECT_EQ(l.wq.data, reinterpret_cast<const uint8_t*>(w.tok_embd.data) + 4 * (wq + i * D * D));
    EXPECT_EQ(std::memcmp(l.wq.data, at(wq + i * D * D), D * D * 4), 0);
    EXPECT_EQ(std::memcmp(l.wk.data, at(wk + i * KV * D), KV * D * 4), 0);
    EXPECT_EQ(std::memcmp(l.wv.data, at(wv + i * KV * D), KV * D * 4), 0);
    EXPECT_EQ(std::memcmp(l.wo.data, at(wo + i * D * D), D * D * 4), 0);
    EXPECT_EQ(std::memcmp(l.ffn_norm.data(), at(rms_ffn + i * D), D * 4), 0);
    EXPECT_EQ(std::memcmp(l.w_gate.data, at(w1 + i * H * D), H * D * 4), 0);
    EXPECT_EQ(std::memcmp(l.w_down.data, at(w2 + i * D * H), D * H * 4), 0);
    EXPECT_EQ(std::memcmp(l.w_up.data, at(w3 + i * H * D), H * D * 4), 0);
    EXPECT_EQ(l.w_down.rows, 64);
    EXPECT_EQ(l.w_down.cols, 172);
    EXPECT_TRUE(l.bq.empty());
  }
  EXPECT_EQ(std::memcmp(w.output_norm.data(), at(rms_final), D * 4), 0);
  // Layer matrices plus the tied classifier, all F32.
  const size_t per_layer = 2 * D * D + 2 * KV * D + 3 * H * D;
  EXPECT_EQ(w.weight_bytes(), 4 * (L * per_layer + V * D));
}

TEST(LoaderLlama2c, SeparateClassifierAndNoRopeTables) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  std::string raw = read_file(shared_path(kStoriesBin));
  const size_t V = 512, D = 64;
  const size_t rope_tables = 512 * 8 * 4;  // seq_len * head_dim floats
  // Strip the legacy tables, append a classifier, flag it with -vocab.
  std::string body = raw.substr(0, raw.size() - rope_tables);
  std::string cls(V * D * 4, '\0');
  for (size_t i = 0; i < cls.size(); ++i) cls[i] = static_cast<char>(i * 7);
  std::string file = body + cls;
  const int32_t neg = -512;
  std::memcpy(file.data() + 20, &neg, 4);
  const std::string dir = temp_dir();
  write_file(dir + "/unshared.bin", file);
  const LoadedModel m = load_llama2c_model(dir + "/unshared.bin");
  EXPECT_FALSE(m.weights.tied_output);
  EXPECT_EQ(m.weights.cfg.n_vocab, 512);
  EXPECT_EQ(std::memcmp(m.weights.output.data, cls.data(), cls.size()), 0);
  EXPECT_NE(m.weights.output.data, m.weights.tok_embd.data);
}

TEST(LoaderLlama2c, RejectsTruncatedAndAbsurdFiles) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  const std::string raw = read_file(shared_path(kStoriesBin));
  const std::string dir = temp_dir();
  write_file(dir + "/stories.bin", raw.substr(0, raw.size() - 100));
  EXPECT_ERROR(load_llama2c_model(dir + "/stories.bin"),
               "stories.bin: file has 1056440 bytes, header implies 1056540");

  write_file(dir + "/tiny.bin", std::string(10, '\0'));
  EXPECT_ERROR(load_llama2c_model(dir + "/tiny.bin"), "too small for a llama2.c header");

  auto with_header = [&](std::array<int32_t, 7> h) {
    std::string f = raw;
    std::memcpy(f.data(), h.data(), 28);
    write_file(dir + "/bad.bin", f);
    return dir + "/bad.bin";
  };
  EXPECT_ERROR(load_llama2c_model(with_header({64, 172, 2000000, 8, 4, 512, 512})),
               "n_layers = 2000000 is out of range");
  EXPECT_ERROR(load_llama2c_model(with_header({0, 172, 5, 8, 4, 512, 512})),
               "n_heads 8 does not divide dim 0");
  EXPECT_ERROR(load_llama2c_model(with_header({64, 172, 5, 8, 3, 512, 512})),
               "n_kv_heads 3 does not divide n_heads 8");
  EXPECT_ERROR(load_llama2c_model(with_header({64, -1, 5, 8, 4, 512, 512})),
               "ffn_dim = -1 is out of range");
  EXPECT_ERROR(load_llama2c_model(with_header({64, 172, 5, 8, 4, INT32_MIN, 512})),
               "vocab_size -2147483648 is invalid");
  // Plausible but different dims: caught by the size check.
  EXPECT_ERROR(load_llama2c_model(with_header({64, 172, 6, 8, 4, 512, 512})), "header implies");
}

// ---------------------------------------------------------------- HF safetensors

TEST(LoaderHf, Stories260KMatchesLlama2cUpToRowPermutation) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  LONGKV_REQUIRE_SHARED(kStoriesHf);
  const LoadedModel hf = load_model(shared_path(kStoriesHf));
  const LoadedModel l2c = load_model(shared_path(kStoriesBin));
  const ModelWeights& a = hf.weights;
  const ModelWeights& b = l2c.weights;
  EXPECT_EQ(a.source, "safetensors");
  EXPECT_EQ(a.cfg.rope, RopeStyle::neox);
  EXPECT_EQ(a.cfg.arch, "llama");
  EXPECT_EQ(a.cfg.name, "hf");
  EXPECT_EQ(a.cfg.dim, 64);
  EXPECT_EQ(a.cfg.n_kv_heads, 4);
  EXPECT_EQ(a.cfg.head_dim, 8);
  EXPECT_EQ(a.cfg.ctx_len, 512);
  EXPECT_FLOAT_EQ(a.cfg.rms_eps, 1e-5f);
  EXPECT_TRUE(a.tied_output);
  EXPECT_TRUE(same_bytes(a.tok_embd, b.tok_embd));
  EXPECT_EQ(a.output_norm, b.output_norm);
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i));
    const LayerWeights& x = a.layers[i];
    const LayerWeights& y = b.layers[i];
    expect_unpermuted_equal(x.wq, y.wq, 8);
    expect_unpermuted_equal(x.wk, y.wk, 8);
    EXPECT_FALSE(same_bytes(x.wq, y.wq));  // the permutation is not the identity
    EXPECT_TRUE(same_bytes(x.wv, y.wv));
    EXPECT_TRUE(same_bytes(x.wo, y.wo));
    EXPECT_TRUE(same_bytes(x.w_gate, y.w_gate));
    EXPECT_TRUE(same_bytes(x.w_up, y.w_up));
    EXPECT_TRUE(same_bytes(x.w_down, y.w_down));
    EXPECT_EQ(x.attn_norm, y.attn_norm);
    EXPECT_EQ(x.ffn_norm, y.ffn_norm);
  }
  // A .safetensors path and config.json resolve to the same model.
  const LoadedModel by_file = load_model(shared_path(kStoriesHf) + "/model.safetensors");
  EXPECT_TRUE(same_bytes(by_file.weights.layers[3].wk, a.layers[3].wk));
}

// Writes a safetensors file holding `tensors` (copied from their files).
void write_safetensors(const std::string& path, const std::vector<const SafetensorsTensor*>& ts) {
  nlohmann::json h = nlohmann::json::object();
  std::string data;
  for (const SafetensorsTensor* t : ts) {
    h[t->name] = {{"dtype", safetensors_dtype_name(t->dtype)},
                  {"shape", t->shape},
                  {"data_offsets", {data.size(), data.size() + t->nbytes()}}};
    data.append(reinterpret_cast<const char*>(t->data), t->nbytes());
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  write_file(path, out + header + data);
}

TEST(LoaderHf, ShardedIndexLoadsTheSameModel) {
  LONGKV_REQUIRE_SHARED(kStoriesHf);
  const std::string src = shared_path(kStoriesHf);
  const auto st = SafetensorsFile::open(src + "/model.safetensors");
  std::vector<const SafetensorsTensor*> s1, s2;
  nlohmann::json map = nlohmann::json::object();
  for (const auto& t : st->tensors()) {
    const bool first = t.name.find("layers.3") == std::string::npos &&
                       t.name.find("layers.4") == std::string::npos;
    (first ? s1 : s2).push_back(&t);
    map[t.name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  const std::string dir = temp_dir() + "/sharded";
  fs::create_directories(dir);
  fs::copy_file(src + "/config.json", dir + "/config.json");
  write_safetensors(dir + "/model-00001-of-00002.safetensors", s1);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", s2);
  write_file(dir + "/model.safetensors.index.json",
             nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump());
  const LoadedModel a = load_model(dir);
  const LoadedModel b = load_model(src);
  for (size_t i = 0; i < a.weights.layers.size(); ++i) {
    EXPECT_TRUE(same_bytes(a.weights.layers[i].wq, b.weights.layers[i].wq));
    EXPECT_TRUE(same_bytes(a.weights.layers[i].w_down, b.weights.layers[i].w_down));
    EXPECT_EQ(a.weights.layers[i].ffn_norm, b.weights.layers[i].ffn_norm);
  }

  // An index that points outside its directory or at the wrong shard.
  map["model.norm.weight"] = "../elsewhere.safetensors";
  write_file(dir + "/model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  EXPECT_ERROR(load_model(dir), "not a file beside the index");
  map["model.norm.weight"] = "model-00002-of-00002.safetensors";
  write_file(dir + "/model.safetensors.index.json", nlohmann::json{{"weight_map", map}}.dump());
  EXPECT_ERROR(load_model(dir), "weight_map puts tensor 'model.norm.weight' in "
                                "model-00002-of-00002.safetensors, which does not hold it");
}

TEST(LoaderHf, RejectsMissingTensorAndConfigField) {
  LONGKV_REQUIRE_SHARED(kStoriesHf);
  const std::string src = shared_path(kStoriesHf);
  const auto st = SafetensorsFile::open(src + "/model.safetensors");
  const std::string dir = temp_dir() + "/hf_missing";
  fs::create_directories(dir);
  std::vector<const SafetensorsTensor*> keep;
  for (const auto& t : st->tensors()) {
    if (t.name != "model.layers.2.mlp.up_proj.weight") keep.push_back(&t);
  }
  write_safetensors(dir + "/model.safetensors", keep);
  fs::copy_file(src + "/config.json", dir + "/config.json");
  EXPECT_ERROR(load_model(dir), "missing tensor 'model.layers.2.mlp.up_proj.weight'");

  nlohmann::json cfg = nlohmann::json::parse(read_file(src + "/config.json"));
  const std::string cdir = temp_dir() + "/hf_cfg";
  fs::create_directories(cdir);
  fs::copy_file(src + "/model.safetensors", cdir + "/model.safetensors");
  auto with_config = [&](const nlohmann::json& j) {
    write_file(cdir + "/config.json", j.dump());
    return cdir;
  };
  nlohmann::json c1 = cfg;
  c1.erase("hidden_size");
  EXPECT_ERROR(load_model(with_config(c1)), "config.json: missing field 'hidden_size'");
  nlohmann::json c2 = cfg;
  c2["model_type"] = "gemma";
  EXPECT_ERROR(load_model(with_config(c2)), "unsupported model_type 'gemma'");
  nlohmann::json c3 = cfg;
  c3["num_hidden_layers"] = "five";
  EXPECT_ERROR(load_model(with_config(c3)), "field 'num_hidden_layers' is not an integer");
  nlohmann::json c4 = cfg;
  c4["intermediate_size"] = 173;
  EXPECT_ERROR(load_model(with_config(c4)),
               "tensor 'model.layers.0.mlp.gate_proj.weight' has shape [172, 64], expected [173, 64]");
  nlohmann::json c5 = cfg;
  c5["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_ERROR(load_model(with_config(c5)), "rope_scaling: rope_type 'yarn' is not supported");
  c5["rope_scaling"] = {{"rope_type", "linear"}};
  EXPECT_ERROR(load_model(with_config(c5)), "rope_scaling: missing field 'factor'");
  c5["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}, {"high_freq_factor", 1.0}};
  EXPECT_ERROR(load_model(with_config(c5)), "config.json: rope_scaling: needs 0 < low_freq_factor < high_freq_factor");
  write_file(cdir + "/config.json", "{\"hidden_size\": ");
  EXPECT_ERROR(load_model(cdir), "config.json: not valid JSON");
}

// rope_scaling: "llama3" (Llama 3.1) and "linear" become per-frequency
// divisors; "default" and null change nothing.
TEST(LoaderHf, RopeScalingBecomesFrequencyFactors) {
  LONGKV_REQUIRE_SHARED(kStoriesHf);
  const std::string src = shared_path(kStoriesHf);
  nlohmann::json cfg = nlohmann::json::parse(read_file(src + "/config.json"));
  const std::string dir = temp_dir() + "/hf_rope";
  fs::create_directories(dir);
  fs::copy_file(src + "/model.safetensors", dir + "/model.safetensors", fs::copy_options::overwrite_existing);
  auto load_with = [&](const nlohmann::json& scaling) {
    nlohmann::json c = cfg;
    c["rope_scaling"] = scaling;
    write_file(dir + "/config.json", c.dump());
    return load_model(dir).weights.cfg;
  };
  EXPECT_TRUE(load_with(nullptr).rope_freq_factors.empty());
  EXPECT_TRUE(load_with({{"rope_type", "default"}}).rope_freq_factors.empty());
  const ModelConfig lin = load_with({{"type", "linear"}, {"factor", 2.5}});
  EXPECT_EQ(lin.rope_freq_factors, std::vector<float>(static_cast<size_t>(lin.rope_dim / 2), 2.5f));
  EXPECT_EQ(lin.rope_scaling, "linear x2.5");
  const ModelConfig l3 = load_with({{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                    {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}});
  EXPECT_EQ(l3.rope_freq_factors, llama3_rope_factors(l3.rope_dim, l3.rope_base, 8, 1, 4, 64));
  EXPECT_NE(l3.rope_scaling.find("llama3 x8"), std::string::npos) << l3.rope_scaling;
  // This model's 4 frequencies (head_dim 8, base 10000) fall in all three bands.
  EXPECT_EQ(l3.rope_freq_factors.front(), 1.0f);
  EXPECT_EQ(l3.rope_freq_factors.back(), 8.0f);
}

// ---------------------------------------------------------------- GGUF

TEST(LoaderGguf, EvalModelConfig) {
  LONGKV_REQUIRE_SHARED(kEvalGguf);
  const LoadedModel m = load_model(shared_path(kEvalGguf));
  const ModelConfig& c = m.weights.cfg;
  EXPECT_EQ(m.weights.source, "gguf");
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layers, 8);
  EXPECT_EQ(c.dim, 512);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rope_dim, 64);
  EXPECT_EQ(c.ffn_dim, 1280);
  EXPECT_EQ(c.ctx_len, 4096);
  EXPECT_EQ(c.n_vocab, 32000);
  EXPECT_FLOAT_EQ(c.rope_base, 100000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_EQ(c.rope, RopeStyle::interleaved);
  EXPECT_TRUE(m.weights.tied_output);
  EXPECT_EQ(m.weights.output.data, m.weights.tok_embd.data);
  EXPECT_EQ(m.weights.tok_embd.type, WeightType::Q8_0);
  for (const auto& l : m.weights.layers) {
    EXPECT_EQ(l.wq.type, WeightType::Q8_0);
    EXPECT_EQ(l.wk.rows, 128);
    EXPECT_EQ(l.w_down.cols, 1280);
    EXPECT_EQ(l.attn_norm.size(), 512u);
  }
  ASSERT_TRUE(m.vocab.has_value());
  EXPECT_EQ(m.vocab->size(), 32000);
  EXPECT_EQ(m.vocab->bos, 1);
  // Layer matrices plus the tied output, all Q8_0 (34 bytes per 32 weights).
  const size_t matrix_params = 8 * (2 * 512 * 512 + 2 * 128 * 512 + 3 * 1280 * 512) + 32000 * 512;
  EXPECT_EQ(m.weights.weight_bytes(), matrix_params / 32 * 34);
}

struct TinySpec {
  std::string arch = "llama";
  int dim = 8, heads = 2, kv = 1, ffn = 16, layers = 2, vocab = 5;
  bool biases = false;
  std::string wrong_tensor;  // this tensor gets one row short
  uint32_t q_type = 0;       // ggml type of attn_q
  std::vector<float> rope_freqs;   // written as rope_freqs.weight unless empty
  std::string scaling_type;        // rope.scaling.type unless empty
  float scaling_factor = 0;        // rope.scaling.factor unless 0
};

// A tiny, valid GGUF model built with GgufWriter; values are a deterministic
// function of the tensor index so permutations show.
std::vector<uint8_t> tiny_gguf(const TinySpec& s) {
  GgufWriter w;
  const std::string p = s.arch + ".";
  w.set("general.architecture", GgufValue::make_string(s.arch));
  w.set("general.name", GgufValue::make_string("tiny"));
  w.set(p + "context_length", GgufValue::make_u32(64));
  w.set(p + "embedding_length", GgufValue::make_u32(static_cast<uint32_t>(s.dim)));
  w.set(p + "block_count", GgufValue::make_u32(static_cast<uint32_t>(s.layers)));
  w.set(p + "feed_forward_length", GgufValue::make_u32(static_cast<uint32_t>(s.ffn)));
  w.set(p + "attention.head_count", GgufValue::make_u32(static_cast<uint32_t>(s.heads)));
  w.set(p + "attention.head_count_kv", GgufValue::make_u32(static_cast<uint32_t>(s.kv)));
  w.set(p + "attention.layer_norm_rms_epsilon", GgufValue::make_f32(1e-6f));
  w.set(p + "rope.freq_base", GgufValue::make_f32(500000.0f));
  if (!s.scaling_type.empty()) w.set(p + "rope.scaling.type", GgufValue::make_string(s.scaling_type));
  if (s.scaling_factor != 0) w.set(p + "rope.scaling.factor", GgufValue::make_f32(s.scaling_factor));
  if (!s.rope_freqs.empty()) {
    std::vector<uint8_t> f(s.rope_freqs.size() * sizeof(float));
    std::memcpy(f.data(), s.rope_freqs.data(), f.size());
    w.add_tensor("rope_freqs.weight", {s.rope_freqs.size()}, 0, f);
  }
  int counter = 0;
  auto add = [&](const std::string& name, uint64_t cols, uint64_t rows, uint32_t type = 0) {
    if (name == s.wrong_tensor) rows -= 1;
    std::vector<uint64_t> ne = rows ? std::vector<uint64_t>{cols, rows} : std::vector<uint64_t>{cols};
    const uint64_t n = cols * (rows ? rows : 1);
    int bs = 1, bb = 4;
    ggml_type_block(type, &bs, &bb);
    std::vector<uint8_t> data(n / static_cast<uint64_t>(bs) * static_cast<uint64_t>(bb));
    if (type == 0) {
      for (uint64_t i = 0; i < n; ++i) {
        const float v = static_cast<float>(counter * 1000 + static_cast<int>(i));
        std::memcpy(data.data() + 4 * i, &v, 4);
      }
    }
    ++counter;
    w.add_tensor(name, ne, type, data);
  };
  const uint64_t hd = static_cast<uint64_t>(s.dim / s.heads);
  const uint64_t D = static_cast<uint64_t>(s.dim), F = static_cast<uint64_t>(s.ffn);
  const uint64_t Q = hd * static_cast<uint64_t>(s.heads), KV = hd * static_cast<uint64_t>(s.kv);
  add("token_embd.weight", D, static_cast<uint64_t>(s.vocab));
  add("output_norm.weight", D, 0);
  for (int i = 0; i < s.layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    add(b + "attn_norm.weight", D, 0);
    add(b + "attn_q.weight", D, Q, s.q_type);
    add(b + "attn_k.weight", D, KV);
    add(b + "attn_v.weight", D, KV);
    add(b + "attn_output.weight", Q, D);
    if (s.biases) {
      add(b + "attn_q.bias", Q, 0);
      add(b + "attn_k.bias", KV, 0);
      add(b + "attn_v.bias", KV, 0);
    }
    add(b + "ffn_norm.weight", D, 0);
    add(b + "ffn_gate.weight", D, F);
    add(b + "ffn_up.weight", D, F);
    add(b + "ffn_down.weight", F, D);
  }
  return w.to_bytes();
}

LoadedModel load_tiny(const std::vector<uint8_t>& bytes) {
  return load_gguf_model(GgufFile::parse(bytes, "model.gguf"));
}

TEST(LoaderGguf, TinyModelsAndArchitectures) {
  TinySpec s;
  const auto bytes = tiny_gguf(s);
  const LoadedModel m = load_tiny(bytes);
  EXPECT_EQ(m.weights.cfg.name, "tiny");
  EXPECT_EQ(m.weights.cfg.head_dim, 4);
  EXPECT_EQ(m.weights.cfg.ctx_len, 64);
  EXPECT_FLOAT_EQ(m.weights.cfg.rope_base, 500000.0f);
  EXPECT_TRUE(m.weights.tied_output);
  EXPECT_FALSE(m.vocab.has_value());
  EXPECT_EQ(m.weights.layers[1].attn_norm[3], 11003.0f);  // tensor #11, element 3

  TinySpec q = s;
  q.arch = "qwen2";
  q.biases = true;
  const auto qbytes = tiny_gguf(q);
  const LoadedModel qm = load_tiny(qbytes);
  EXPECT_EQ(qm.weights.cfg.rope, RopeStyle::neox);
  EXPECT_EQ(qm.weights.layers[0].bq.size(), 8u);
  EXPECT_EQ(qm.weights.layers[0].bk.size(), 4u);
  EXPECT_EQ(qm.weights.layers[0].bk[1], 8001.0f);  // tensor #8 with biases on
}

// llama.cpp's Llama 3.1 GGUFs carry the divisors as rope_freqs.weight;
// rope.scaling.type "linear" divides every frequency by its factor (on top of
// rope_freqs.weight when both are given, as llama.cpp applies them).
TEST(LoaderGguf, RopeFreqsAndLinearScaling) {
  TinySpec s;  // head_dim 4: 2 frequencies
  EXPECT_TRUE(load_tiny(tiny_gguf(s)).weights.cfg.rope_freq_factors.empty());
  s.rope_freqs = {1.0f, 3.5f};
  const ModelConfig f = load_tiny(tiny_gguf(s)).weights.cfg;
  EXPECT_EQ(f.rope_freq_factors, s.rope_freqs);
  EXPECT_EQ(f.rope_scaling, "rope_freqs");
  s.scaling_type = "linear";
  s.scaling_factor = 2;
  const ModelConfig both = load_tiny(tiny_gguf(s)).weights.cfg;
  EXPECT_EQ(both.rope_freq_factors, (std::vector<float>{2.0f, 7.0f}));
  EXPECT_EQ(both.rope_scaling, "linear x2 + rope_freqs");
  s.rope_freqs.clear();
  EXPECT_EQ(load_tiny(tiny_gguf(s)).weights.cfg.rope_freq_factors, (std::vector<float>{2.0f, 2.0f}));

  s = TinySpec{};
  s.scaling_type = "yarn";
  s.scaling_factor = 4;
  EXPECT_ERROR(load_tiny(tiny_gguf(s)), "llama.rope.scaling.type 'yarn' is not supported");
  s = TinySpec{};
  s.rope_freqs = {1.0f, 2.0f, 3.0f};
  EXPECT_ERROR(load_tiny(tiny_gguf(s)), "tensor 'rope_freqs.weight' has shape [3], expected [2]");
  s.rope_freqs = {1.0f, -2.0f};
  EXPECT_ERROR(load_tiny(tiny_gguf(s)), "RoPE frequency factor 1 is -2");
}

TEST(LoaderGguf, RejectsBadModels) {
  TinySpec s;
  s.arch = "gpt2";
  EXPECT_ERROR(load_tiny(tiny_gguf(s)), "model.gguf: unsupported architecture 'gpt2'");

  s = TinySpec{};
  s.wrong_tensor = "blk.1.attn_q.weight";
  EXPECT_ERROR(load_tiny(tiny_gguf(s)),
               "model.gguf: tensor 'blk.1.attn_q.weight' has shape [8, 7], expected [8, 8]");

  s = TinySpec{};
  s.dim = 256;
  s.heads = 4;
  s.q_type = 16;  // IQ2_XXS: valid GGUF, not a type we compute with
  EXPECT_ERROR(load_tiny(tiny_gguf(s)),
               "model.gguf: tensor 'blk.0.attn_q.weight' has unsupported type IQ2_XXS (longkv computes with F32, F16, "
               "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, BF16; a Q2_K, Q3_K_M, "
               "Q4_K_M, Q5_K_M, Q6_K, Q8_0 or IQ4_XS file of the model loads)");

  s = TinySpec{};
  s.kv = 3;
  s.heads = 4;
  EXPECT_ERROR(load_tiny(tiny_gguf(s)), "n_kv_heads 3 does not divide n_heads 4");

  s = TinySpec{};
  s.layers = 0;
  EXPECT_ERROR(load_tiny(tiny_gguf(s)), "n_layers = 0 is out of range");

  // A missing required key and a missing tensor.
  GgufWriter w;
  w.set("general.architecture", GgufValue::make_string("llama"));
  const auto nokeys = w.to_bytes();
  EXPECT_ERROR(load_tiny(nokeys), "llama.embedding_length");

  // The vocabulary size is taken from the embedding rows.
  s = TinySpec{};
  s.wrong_tensor = "token_embd.weight";
  const auto shorter = tiny_gguf(s);
  EXPECT_EQ(load_tiny(shorter).weights.cfg.n_vocab, 4);
}

// ---------------------------------------------------------------- saving

TEST(LoaderSave, Llama2cRoundTripIsByteExact) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  const LoadedModel src = load_model(shared_path(kStoriesBin));
  const std::string path = temp_dir() + "/stories.gguf";
  save_model_gguf(src.weights, synthetic_vocab(512), path);
  const LoadedModel back = load_model(path);
  const ModelWeights& a = src.weights;
  const ModelWeights& b = back.weights;
  EXPECT_EQ(b.source, "gguf");
  EXPECT_EQ(b.cfg.name, "stories260K");
  EXPECT_EQ(b.cfg.n_kv_heads, a.cfg.n_kv_heads);
  EXPECT_EQ(b.cfg.ctx_len, a.cfg.ctx_len);
  EXPECT_EQ(b.cfg.ffn_dim, a.cfg.ffn_dim);
  EXPECT_EQ(b.cfg.rope, RopeStyle::interleaved);
  EXPECT_FLOAT_EQ(b.cfg.rms_eps, a.cfg.rms_eps);
  EXPECT_TRUE(b.tied_output);
  EXPECT_TRUE(same_bytes(a.tok_embd, b.tok_embd));
  EXPECT_EQ(a.output_norm, b.output_norm);
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LayerWeights& x = a.layers[i];
    const LayerWeights& y = b.layers[i];
    for (auto [p, q] : {std::pair{&x.wq, &y.wq}, {&x.wk, &y.wk}, {&x.wv, &y.wv}, {&x.wo, &y.wo},
                        {&x.w_gate, &y.w_gate}, {&x.w_up, &y.w_up}, {&x.w_down, &y.w_down}}) {
      EXPECT_TRUE(same_bytes(*p, *q)) << "layer " << i;
    }
    EXPECT_EQ(x.attn_norm, y.attn_norm);
    EXPECT_EQ(x.ffn_norm, y.ffn_norm);
  }
  ASSERT_TRUE(back.vocab.has_value());
  EXPECT_EQ(back.vocab->pieces[7], "tok7");
  EXPECT_EQ(back.vocab->scores[7], -7.0f);
  EXPECT_EQ(back.vocab->types[1], TokenType::control);
  // Keys llama.cpp needs.
  const auto g = GgufFile::open(path);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_int("general.alignment"), 32);
  EXPECT_EQ(g->get_int("llama.rope.dimension_count"), 8);
  EXPECT_EQ(g->get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(g->find("general.quantization_version"), nullptr);
  EXPECT_EQ(g->find_tensor("output.weight"), nullptr);
}

TEST(LoaderSave, Tok512VocabRoundTrips) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  LONGKV_REQUIRE_SHARED("models/stories260K/tok512.bin");
  const LoadedModel src = load_model(shared_path(kStoriesBin));
  const Vocab v = vocab_from_llama2c(shared_path("models/stories260K/tok512.bin"), 512);
  const std::string path = temp_dir() + "/stories_vocab.gguf";
  save_model_gguf(src.weights, v, path);
  const LoadedModel back = load_model(path);
  ASSERT_TRUE(back.vocab.has_value());
  EXPECT_EQ(back.vocab->pieces, v.pieces);
  EXPECT_EQ(back.vocab->scores, v.scores);
  EXPECT_EQ(back.vocab->types, v.types);
  EXPECT_EQ(back.vocab->bos, v.bos);
  EXPECT_EQ(back.vocab->eos, v.eos);
  EXPECT_EQ(back.vocab->unk, v.unk);
  EXPECT_EQ(back.vocab->add_bos, v.add_bos);
}

TEST(LoaderSave, HfToGgufPermutesBackToInterleaved) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  LONGKV_REQUIRE_SHARED(kStoriesHf);
  const LoadedModel hf = load_model(shared_path(kStoriesHf));
  const LoadedModel l2c = load_model(shared_path(kStoriesBin));
  const std::string path = temp_dir() + "/from_hf.gguf";
  save_model_gguf(hf.weights, synthetic_vocab(512), path);
  const LoadedModel back = load_model(path);
  EXPECT_EQ(back.weights.cfg.rope, RopeStyle::interleaved);
  for (size_t i = 0; i < back.weights.layers.size(); ++i) {
    EXPECT_TRUE(same_bytes(back.weights.layers[i].wq, l2c.weights.layers[i].wq)) << i;
    EXPECT_TRUE(same_bytes(back.weights.layers[i].wk, l2c.weights.layers[i].wk)) << i;
    EXPECT_TRUE(same_bytes(back.weights.layers[i].wv, l2c.weights.layers[i].wv)) << i;
  }
}

// A model with RoPE scaling keeps it through convert: the divisors go out as
// rope_freqs.weight (llama.cpp's form) and come back the same.
TEST(LoaderSave, RopeFactorsRoundTripAsRopeFreqs) {
  LONGKV_REQUIRE_SHARED(kStoriesHf);
  LoadedModel hf = load_model(shared_path(kStoriesHf));
  ModelConfig& c = hf.weights.cfg;
  c.rope_freq_factors = llama3_rope_factors(c.rope_dim, c.rope_base, 8, 1, 4, 64);
  const std::string path = temp_dir() + "/rope_freqs.gguf";
  save_model_gguf(hf.weights, synthetic_vocab(512), path);
  const ModelConfig back = load_model(path).weights.cfg;
  EXPECT_EQ(back.rope_freq_factors, hf.weights.cfg.rope_freq_factors);
  EXPECT_EQ(back.rope_scaling, "rope_freqs");
}

TEST(LoaderSave, BiasesPermuteWithTheirRowsAndQwenStaysNeox) {
  // A llama GGUF marked neox (as if from HF) with biases: saving moves
  // bias entry (h, p + hd/2) to (h, 2p + 1), exactly like the q rows.
  TinySpec s;
  s.biases = true;
  const auto bytes = tiny_gguf(s);
  LoadedModel m = load_tiny(bytes);
  m.weights.cfg.rope = RopeStyle::neox;
  const std::string dir = temp_dir();
  save_model_gguf(m.weights, synthetic_vocab(5), dir + "/perm.gguf");
  const LoadedModel back = load_model(dir + "/perm.gguf");
  const int hd = 4;
  const auto& l0 = m.weights.layers[0];
  const auto& b0 = back.weights.layers[0];
  for (int64_t r = 0; r < 8; ++r) {
    const int64_t src = llama2c_row_of_hf_row(r, hd);  // neox row r lands at interleaved row src
    EXPECT_EQ(b0.bq[static_cast<size_t>(src)], l0.bq[static_cast<size_t>(r)]);
    EXPECT_EQ(f32_row(b0.wq, src), f32_row(l0.wq, r));
  }
  EXPECT_EQ(b0.bv, l0.bv);

  // qwen2 GGUFs use neox RoPE themselves: no permutation.
  s.arch = "qwen2";
  const auto qbytes = tiny_gguf(s);
  const LoadedModel q = load_tiny(qbytes);
  save_model_gguf(q.weights, synthetic_vocab(5), dir + "/qwen.gguf");
  const LoadedModel qback = load_model(dir + "/qwen.gguf");
  EXPECT_EQ(qback.weights.cfg.arch, "qwen2");
  EXPECT_TRUE(same_bytes(qback.weights.layers[1].wq, q.weights.layers[1].wq));
  EXPECT_EQ(qback.weights.layers[1].bq, q.weights.layers[1].bq);
}

TEST(LoaderSave, QuantizesWholeBlockRowsAndKeepsTheRest) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  const LoadedModel src = load_model(shared_path(kStoriesBin));
  const std::string path = temp_dir() + "/q8.gguf";
  save_model_gguf(src.weights, synthetic_vocab(512), path, WeightType::Q8_0);
  const LoadedModel back = load_model(path);
  const auto& a = src.weights.layers[2];
  const auto& b = back.weights.layers[2];
  EXPECT_EQ(b.wq.type, WeightType::Q8_0);
  EXPECT_EQ(b.w_gate.type, WeightType::Q8_0);
  EXPECT_EQ(b.w_down.type, WeightType::F32);  // rows of 172 are not whole 32-blocks
  EXPECT_TRUE(same_bytes(a.w_down, b.w_down));
  EXPECT_EQ(back.weights.tok_embd.type, WeightType::Q8_0);
  // Q8_0 keeps about 8 bits: relative error well under 1e-3.
  const auto& tr = weight_traits(WeightType::Q8_0);
  std::vector<float> deq(static_cast<size_t>(b.w_gate.rows * b.w_gate.cols));
  tr.to_float_ref(b.w_gate.data, deq.data(), static_cast<int64_t>(deq.size()));
  const double err = test::nmse(deq.data(), reinterpret_cast<const float*>(a.w_gate.data), deq.size());
  EXPECT_LT(err, 1e-3);
  EXPECT_GT(err, 0.0);
  const auto g = GgufFile::open(path);
  EXPECT_EQ(g->get_int("general.quantization_version"), 2);
}

TEST(LoaderSave, RejectsInconsistentInputs) {
  LONGKV_REQUIRE_SHARED(kStoriesBin);
  LoadedModel m = load_model(shared_path(kStoriesBin));
  const std::string path = temp_dir() + "/bad.gguf";
  EXPECT_ERROR(save_model_gguf(m.weights, synthetic_vocab(100), path),
               "vocabulary has 100 tokens but the model has 512 embedding rows");
  m.weights.cfg.arch = "gemma";
  EXPECT_ERROR(save_model_gguf(m.weights, synthetic_vocab(512), path),
               "cannot write architecture 'gemma'");
  m.weights.cfg.arch = "llama";
  m.weights.layers[1].wk.rows = 31;
  EXPECT_ERROR(save_model_gguf(m.weights, synthetic_vocab(512), path),
               "weight 'blk.1.attn_k.weight' is [31 x 64], the config implies [32 x 64]");
}

// ---------------------------------------------------------------- safetensors reader

// u64 length + header text + `buffer` zero bytes.
std::vector<uint8_t> st_bytes(const std::string& header, size_t buffer, uint64_t len_override = 0) {
  // One sized buffer + memcpy (GCC 12 flags insert() of the header with a
  // false -Warray-bounds).
  std::vector<uint8_t> out(8 + header.size() + buffer, 0);
  const uint64_t n = len_override ? len_override : header.size();
  std::memcpy(out.data(), &n, 8);
  if (!header.empty()) std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

std::string st_error(const std::string& header, size_t buffer, uint64_t len_override = 0) {
  const auto bytes = st_bytes(header, buffer, len_override);
  return error_of([&] { SafetensorsFile::parse(bytes, "w.safetensors"); });
}

TEST(SafetensorsReader, ParsesValidFiles) {
  const std::string h =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[4,16]},)"
      R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("e":{"dtype":"I64","shape":[0,5],"data_offsets":[16,16]},)"
      R"("n":{"dtype":"F4","shape":[6],"data_offsets":[16,19]}}    )";
  auto bytes = st_bytes(h, 19);
  bytes[8 + h.size() + 4] = 0x7f;
  const auto st = SafetensorsFile::parse(bytes, "w.safetensors");
  ASSERT_EQ(st->tensors().size(), 4u);
  EXPECT_EQ(st->metadata().at("format"), "pt");
  EXPECT_EQ(st->data_offset(), 8 + h.size());
  const SafetensorsTensor* b = st->find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, SafetensorsDtype::BF16);
  EXPECT_EQ(b->shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(b->numel(), 6u);
  EXPECT_EQ(b->data, bytes.data() + 8 + h.size() + 4);
  EXPECT_EQ(b->data[0], 0x7f);
  EXPECT_EQ(st->find("a")->numel(), 1u);
  EXPECT_EQ(st->find("e")->nbytes(), 0u);
  EXPECT_EQ(st->find("missing"), nullptr);
}

TEST(SafetensorsReader, RejectsBadHeaders) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(st_error(ok, 24), "");
  EXPECT_NE(error_of([] { SafetensorsFile::parse(std::vector<uint8_t>(5), "w.safetensors"); })
                .find("w.safetensors: file has 5 bytes, too small"),
            std::string::npos);
  EXPECT_NE(st_error(ok, 24, 1000).find(
                "w.safetensors: header length 1000 runs past the end of the file (size " +
                std::to_string(8 + ok.size() + 24) + ")"),
            std::string::npos);
  EXPECT_NE(st_error(ok, 24, 200'000'000).find("exceeds the limit"), std::string::npos);
  EXPECT_NE(st_error(" " + ok, 24).find("header does not start with '{'"), std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32",)", 0).find("w.safetensors: header is not valid JSON"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F33","shape":[2,3],"data_offsets":[0,24]}})", 24)
                .find("tensor 'a' has unknown dtype 'F33'"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,24]}})", 24)
                .find("shape entries must be non-negative integers"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                     R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})",
                     24)
                .find("duplicate key 'a'"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20)
                .find("tensor 'a' (F32, shape [2, 3]) needs 24 bytes but data_offsets [0, 20) hold 20"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0)
                .find("overflows"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", 1)
                .find("not a whole number of bytes"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"a":[1,2]})", 0).find("tensor 'a' entry is not a JSON object"),
            std::string::npos);
  EXPECT_NE(st_error(R"({"__metadata__":{"k":1}})", 0).find("__metadata__ value 'k' is not a string"),
            std::string::npos);
  EXPECT_NE(st_error("[1]", 0).find("header does not start with '{'"), std::string::npos);
}

TEST(SafetensorsReader, RejectsBadDataOffsets) {
  const std::string two_f32 = R"("dtype":"F32","shape":[2])";
  auto hdr = [&](int a0, int a1, int b0, int b1) {
    return "{\"a\":{" + two_f32 + ",\"data_offsets\":[" + std::to_string(a0) + "," +
           std::to_string(a1) + "]},\"b\":{" + two_f32 + ",\"data_offsets\":[" +
           std::to_string(b0) + "," + std::to_string(b1) + "]}}";
  };
  EXPECT_EQ(st_error(hdr(0, 8, 8, 16), 16), "");
  EXPECT_EQ(st_error(hdr(8, 16, 0, 8), 16), "");  // order in the header does not matter
  EXPECT_NE(st_error(hdr(0, 8, 4, 12), 12).find("tensor 'b' data [4, 12) overlaps tensor 'a'"),
            std::string::npos);
  EXPECT_NE(st_error(hdr(0, 8, 12, 20), 20).find("hole in the byte buffer: bytes [8, 12)"),
            std::string::npos);
  EXPECT_NE(st_error(hdr(4, 12, 12, 20), 20).find("hole in the byte buffer: bytes [0, 4)"),
            std::string::npos);
  EXPECT_NE(st_error(hdr(0, 8, 8, 16), 12)
                .find("tensor 'b' data [8, 16) runs past the end of the byte buffer (size 12)"),
            std::string::npos);
  EXPECT_NE(st_error(hdr(0, 8, 8, 16), 20).find("byte buffer has 20 bytes but the tensors cover only 16"),
            std::string::npos);
  EXPECT_NE(st_error(hdr(0, 8, 16, 8), 16).find("with end before begin"), std::string::npos);
  EXPECT_NE(st_error(hdr(0, 8, 0, 8), 16).find("overlaps"), std::string::npos);
}

TEST(SafetensorsReader, RealFileTilesExactly) {
  LONGKV_REQUIRE_SHARED(kStoriesHf);
  const auto st = SafetensorsFile::open(shared_path(kStoriesHf) + "/model.safetensors");
  uint64_t total = 0;
  for (const auto& t : st->tensors()) {
    EXPECT_EQ(t.dtype, SafetensorsDtype::F32);
    total += t.nbytes();
  }
  EXPECT_EQ(st->data_offset() + total, fs::file_size(shared_path(kStoriesHf) + "/model.safetensors"));
  EXPECT_EQ(st->tensors().size(), 2u + 5u * 9u);  // tied: no lm_head
}

// The synthetic _M mixes follow llama.cpp's Q4_K_M / Q5_K_M layout: Q6_K for
// the output and for attn_v and ffn_down in 16 of 32 layers (the first and
// last four, and every third from layer 6), the base format elsewhere.
TEST(SyntheticModel, KMMixGivesQ6_KWhereLlamaCppDoes) {
  std::vector<int> more;
  for (int l = 0; l < 32; ++l)
    if (more_bits_layer(l, 32)) more.push_back(l);
  EXPECT_EQ(more, (std::vector<int>{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}));
  WeightMix wt;
  ASSERT_TRUE(parse_weight_mix("q4_k_m", &wt));
  EXPECT_EQ(wt.name, "Q4_K_M");
  EXPECT_FALSE(parse_weight_mix("q4_0_m", &wt));  // no such mix
  EXPECT_FALSE(parse_weight_mix("q6_k_m", &wt));
  EXPECT_FALSE(parse_weight_mix("iq2_xxs", &wt));  // a ggml type we cannot compute with
  ASSERT_TRUE(parse_weight_mix("Q5_K_M", &wt));
  ThreadPool pool(1);
  const ModelWeights w = make_synthetic_model(synthetic_config("tiny"), wt, 7, pool);  // 2 layers: layer 1 gets more
  EXPECT_EQ(w.tok_embd.type, WeightType::Q5_K);
  EXPECT_EQ(w.output.type, WeightType::Q6_K);
  for (int l = 0; l < 2; ++l) {
    const WeightType more_type = l == 1 ? WeightType::Q6_K : WeightType::Q5_K;
    EXPECT_EQ(w.layers[l].wv.type, more_type) << l;
    EXPECT_EQ(w.layers[l].w_down.type, more_type) << l;
    const LayerWeights& L = w.layers[l];
    for (const WeightView* m : {&L.wq, &L.wk, &L.wo, &L.w_gate, &L.w_up}) EXPECT_EQ(m->type, WeightType::Q5_K) << l;
  }
  EXPECT_EQ(w.weight_types(), "Q5_K+Q6_K");
  const ModelWeights one = make_synthetic_model(synthetic_config("tiny"), WeightType::Q8_0, 7, pool);
  EXPECT_EQ(one.weight_types(), "Q8_0");
}

// Q3_K_M (llama.cpp, llama models): Q5_K then Q4_K for attn_v (layers 0-1)
// and ffn_down (the first sixteenth: 2 of 32 layers), Q4_K for attn_output,
// Q6_K for the output, Q3_K elsewhere.
TEST(SyntheticModel, Q3_KMMixFollowsLlamaCpp) {
  WeightMix wt;
  ASSERT_TRUE(parse_weight_mix("q3_k_m", &wt));
  EXPECT_EQ(wt.name, "Q3_K_M");
  using R = MatrixRole;
  EXPECT_EQ(mix_matrix_type(wt, R::output, 0, 32), WeightType::Q6_K);
  EXPECT_EQ(mix_matrix_type(wt, R::token_embd, 0, 32), WeightType::Q3_K);
  for (int l : {0, 1, 2, 31}) {
    const WeightType first = l < 2 ? WeightType::Q5_K : WeightType::Q4_K;
    EXPECT_EQ(mix_matrix_type(wt, R::attn_v, l, 32), first) << l;
    EXPECT_EQ(mix_matrix_type(wt, R::ffn_down, l, 32), first) << l;
    EXPECT_EQ(mix_matrix_type(wt, R::attn_output, l, 32), WeightType::Q4_K) << l;
    for (R r : {R::attn_q, R::attn_k, R::ffn_gate, R::ffn_up}) EXPECT_EQ(mix_matrix_type(wt, r, l, 32), WeightType::Q3_K);
  }
  EXPECT_EQ(mix_matrix_type(wt, R::ffn_down, 1, 16), WeightType::Q4_K);  // 16 layers: only layer 0
  ThreadPool pool(1);
  const ModelWeights w = make_synthetic_model(synthetic_config("tiny"), wt, 7, pool);
  EXPECT_EQ(w.layers[1].wv.type, WeightType::Q5_K);
  EXPECT_EQ(w.layers[1].w_down.type, WeightType::Q4_K);  // 2 layers: no sixteenth
  EXPECT_EQ(w.weight_types(), "Q3_K+Q4_K+Q6_K+Q5_K");  // by bytes
}

}  // namespace
}  // namespace longkv

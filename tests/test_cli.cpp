// End-to-end tests of the longkv command line: exact generated text, the
// perplexity protocol against the reference figure, and one clear error
// line with a non-zero exit code for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "kv/kv_mode.h"
#include "model/model_loader.h"
#include "model/weight_mix.h"
#include "test_util.h"

namespace longkv {
namespace {

using test::run_cli;
using test::shared_path;

const std::string kStories = "models/stories260K/stories260K.bin";
const std::string kTok512 = "models/stories260K/tok512.bin";
const std::string kEval = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
const std::string kWiki = "data/wikitext-2-raw/wiki.test.raw";

std::string expected_greedy() { return test::read_file(shared_path("models/stories260K/expected_greedy_100.txt")); }

// The error contract: exit code 1 (2 for usage errors), nothing on stdout,
// and exactly one "error: " line on stderr, the last one, containing
// `fragment` (progress and configuration lines may come before it).
void expect_one_error_line(const test::CmdResult& r, const std::string& fragment, int exit_code = 1) {
  EXPECT_EQ(r.exit_code, exit_code) << r.err;
  EXPECT_EQ(r.out, "");
  const size_t at = r.err.find("error: ");
  ASSERT_NE(at, std::string::npos) << r.err;
  EXPECT_TRUE(at == 0 || r.err[at - 1] == '\n') << r.err;
  const std::string line = r.err.substr(at);
  EXPECT_NE(line.find(fragment), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << "error is not the single last line: " << r.err;
}

TEST(Cli, Stories260KGreedyExact) {
  LONGKV_REQUIRE_SHARED(kStories);
  auto r = run_cli("run -m " + shared_path(kStories) + " --tokenizer " + shared_path(kTok512) + " -n 100 --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expected_greedy());
  EXPECT_NE(r.err.find("decode:"), std::string::npos);
  EXPECT_NE(r.err.find("kv cache:"), std::string::npos);
  // A prompt that takes well under 5 s prints no progress (a long one does,
  // once it has run that long: Progress's deferred form).
  EXPECT_EQ(r.err.find("(100%)"), std::string::npos) << r.err;
}

// Without a GPU, --device cuda says why once and runs on the CPU: same text.
TEST(Cli, RunDeviceCudaFallsBackToCpuSayingWhy) {
  LONGKV_REQUIRE_SHARED(kStories);
  if (cuda_available(nullptr)) GTEST_SKIP() << "a CUDA device is present";
  auto r = run_cli("run -m " + shared_path(kStories) + " --tokenizer " + shared_path(kTok512) +
                   " -n 100 --temp 0 --device cuda");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expected_greedy());
  EXPECT_NE(r.err.find("--device cuda: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("running on the CPU"), std::string::npos) << r.err;
  auto bad = run_cli("run -m " + shared_path(kStories) + " --tokenizer " + shared_path(kTok512) + " -n 1 --device tpu");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("tpu"), std::string::npos) << bad.err;
}

// More threads than the machine has: a warning, and the same text.
TEST(Cli, RunWarnsOfMoreThreadsThanTheMachineHas) {
  LONGKV_REQUIRE_SHARED(kStories);
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw == 0) GTEST_SKIP() << "the machine's hardware threads are unknown";
  auto r = run_cli("run -m " + shared_path(kStories) + " --tokenizer " + shared_path(kTok512) + " -n 100 --temp 0 -t " +
                   std::to_string(hw + 1));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expected_greedy());
  EXPECT_NE(r.err.find("more than this machine's " + std::to_string(hw) + " hardware threads"), std::string::npos)
      << r.err;
}

// run --prompts: each prompt's completion is what run -p gives for it alone
// (the CPU's batched step, LlamaModel::forward_batch, equals each sequence's
// own to float rounding, ModelGolden.ForwardBatchEqualsEachSequenceAlone;
// greedy over these prompts is far from a tie), after a "### prompt N" line;
// empty lines are skipped and a CR before a line's end dropped. A file
// without a prompt is one error line.
TEST(Cli, RunPromptsGivesEachPromptsOwnCompletion) {
  LONGKV_REQUIRE_SHARED(kEval);
  const std::string model = "run -m " + shared_path(kEval) + " -n 16 --temp 0 --kv k4v4";
  const std::vector<std::string> prompts = {"The capital of France is", "Once upon a time", "In 1990, the"};
  const std::string file = test::temp_dir() + "/run-prompts.txt";
  test::write_file(file, prompts[0] + "\n\n" + prompts[1] + "\r\n" + prompts[2] + "\n");
  std::string expected;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto one = run_cli(model + " -p \"" + prompts[i] + "\"");
    ASSERT_EQ(one.exit_code, 0) << one.err;
    expected += "### prompt " + std::to_string(i + 1) + "\n" + one.out;
  }
  auto all = run_cli(model + " --prompts " + file);
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(all.out, expected);
  EXPECT_NE(all.err.find("3 prompts"), std::string::npos) << all.err;
  EXPECT_NE(all.err.find("decoded together on the CPU, up to 3 a step"), std::string::npos) << all.err;
  EXPECT_NE(all.err.find("decode: 48 tokens of 3 prompts"), std::string::npos) << all.err;
  test::write_file(file, "\n\r\n\n");
  expect_one_error_line(run_cli(model + " --prompts " + file), "no prompt in it");
  expect_one_error_line(run_cli(model + " --prompts " + file + " -p hi"), "--prompts", 2);
}

TEST(Cli, Stories260KGreedyExactFromHuggingFaceCopy) {
  LONGKV_REQUIRE_SHARED("models/stories260K/hf/model.safetensors");
  auto r = run_cli("run -m " + shared_path("models/stories260K/hf") + " --tokenizer " + shared_path(kTok512) +
                   " -n 100 --temp 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, expected_greedy());
}

TEST(Cli, Stories260KGreedyExactThroughConvertedGguf) {
  LONGKV_REQUIRE_SHARED(kStories);
  const std::string dir = test::temp_dir();
  for (const std::string& src : {shared_path(kStories), shared_path("models/stories260K/hf")}) {
    SCOPED_TRACE(src);
    const std::string out = dir + "/stories.gguf";
    auto c = run_cli("convert -m " + src + " --tokenizer " + shared_path(kTok512) + " -o " + out);
    ASSERT_EQ(c.exit_code, 0) << c.err;
    // The GGUF carries the vocabulary: no --tokenizer needed.
    auto r = run_cli("run -m " + out + " -n 100 --temp 0");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, expected_greedy());
  }
}

// Llama 3.1's RoPE scaling end to end: a Hugging Face copy of stories260K
// with rope_scaling "llama3" (an original context of 64 tokens, so that the
// 100 generated tokens reach past it) generates other text than the
// unscaled model, says so in its description, and its convert to GGUF
// (rope_freqs.weight) generates the very same text as the HF copy.
TEST(Cli, RopeScalingLlama3FromHfAndThroughConvert) {
  LONGKV_REQUIRE_SHARED("models/stories260K/hf/model.safetensors");
  const std::string src = shared_path("models/stories260K/hf"), dir = test::temp_dir() + "/cli_rope_hf";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(src + "/model.safetensors", dir + "/model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  nlohmann::json cfg = nlohmann::json::parse(test::read_file(src + "/config.json"));
  cfg["rope_scaling"] = {{"rope_type", "llama3"},         {"factor", 8.0},
                         {"low_freq_factor", 1.0},        {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 64}};
  test::write_file(dir + "/config.json", cfg.dump());
  const std::string tok = " --tokenizer " + shared_path(kTok512);
  auto hf = run_cli("run -m " + dir + tok + " -n 100 --temp 0");
  ASSERT_EQ(hf.exit_code, 0) << hf.err;
  EXPECT_NE(hf.err.find("scaled llama3 x8"), std::string::npos) << hf.err;
  EXPECT_NE(hf.out, expected_greedy());
  const std::string gguf = test::temp_dir() + "/cli_rope.gguf";
  auto c = run_cli("convert -m " + dir + tok + " -o " + gguf);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto back = run_cli("run -m " + gguf + " -n 100 --temp 0");
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_NE(back.err.find("scaled rope_freqs"), std::string::npos) << back.err;
  EXPECT_EQ(back.out, hf.out);
}

TEST(Cli, InspectShowsMetadataTensorsAndKvCost) {
  LONGKV_REQUIRE_SHARED(kEval);
  auto r = run_cli("inspect -m " + shared_path(kEval) + " --ctx 4096");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| llama.block_count | 8 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| token_embd.weight | Q8_0 | 512 x 32000 |"), std::string::npos);
  // 8 layers x 2 KV heads x 64 dims x (K+V) x 2 bytes = 4096 bytes/token in f16.
  EXPECT_NE(r.out.find("| f16 | 4096 | 16.00 MiB |"), std::string::npos) << r.out;
}

double parse_ppl(const std::string& table, const std::string& mode) {
  std::smatch m;
  const std::regex row("\\| " + mode + " \\|[^|]*\\|[^|]*\\|[^|]*\\| ([0-9.]+) \\|");
  if (!std::regex_search(table, m, row)) return -1;
  return std::stod(m[1].str());
}

// DESIGN.md protocol, ctx 1024, first 4 windows: the reference (float32
// numpy on the dequantized weights) is 246.3584.
TEST(Cli, PerplexityMatchesReference) {
  LONGKV_REQUIRE_SHARED(kEval);
  auto r = run_cli("perplexity -m " + shared_path(kEval) + " -f " + shared_path(kWiki) +
                   " --ctx 1024 --chunks 4 --kv f32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("332755 tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| 4092 |"), std::string::npos) << r.out;
  const double ppl = parse_ppl(r.out, "f32");
  EXPECT_NEAR(ppl, 246.3584, 246.3584 * 1e-4) << r.out;
}

// Attention fidelity on the evaluation model: a row per layer and the total,
// f16's rounding far below 2-bit codes' error at every layer, the JSON's
// figures the table's; a quantized --ref is refused.
TEST(Cli, FidelityTablePerLayer) {
  LONGKV_REQUIRE_SHARED(kEval);
  const std::string json = test::temp_dir() + "/fidelity.json";
  auto r = run_cli("fidelity -m " + shared_path(kEval) + " -f " + shared_path(kWiki) +
                   " --ctx 512 --chunks 1 --batch 128 --kv f16,k2v2 --json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| layer | f16 | k2v2:g32:r128:s4:rope=post |"), std::string::npos) << r.out;
  const nlohmann::json j = nlohmann::json::parse(test::read_file(json));
  ASSERT_EQ(j["modes"].size(), 2u);
  const auto& f16 = j["modes"][0];
  const auto& k2 = j["modes"][1];
  EXPECT_EQ(j["reference"], "f32");
  EXPECT_EQ(k2["query_rows"], 512);
  ASSERT_EQ(f16["layers"].size(), k2["layers"].size());
  ASSERT_GT(k2["layers"].size(), 0u);
  for (size_t l = 0; l < k2["layers"].size(); ++l) {
    const double e16 = f16["layers"][l], e2 = k2["layers"][l];
    EXPECT_LT(e16, 1e-2) << "layer " << l;
    EXPECT_GT(e2, 10 * e16) << "layer " << l;
    EXPECT_NE(r.out.find(strprintf("| %zu | %.3e | %.3e |", l, e16, e2)), std::string::npos) << r.out;
  }
  EXPECT_NE(r.out.find(strprintf("| all | **%.3e** | **%.3e** |", f16["relative_error"].get<double>(),
                                 k2["relative_error"].get<double>())),
            std::string::npos)
      << r.out;
  expect_one_error_line(run_cli("fidelity -m " + shared_path(kEval) + " -f " + shared_path(kWiki) +
                                " --kv k4v4 --ref k2v2"),
                        "--ref must be a dense mode");
}

// fidelity checks its modes before it loads anything: a bad --ref or --kv
// is named in one line even when the model path does not exist.
TEST(Cli, FidelityRefusesBadModesFirst) {
  const std::string missing = test::temp_dir() + "/no-such-model.gguf";
  expect_one_error_line(run_cli("fidelity -m " + missing + " -f " + missing + " --kv k4v4 --ref k2v2"),
                        "--ref must be a dense mode");
  const auto r = run_cli("fidelity -m " + missing + " -f " + missing + " --kv k9v9");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err.find("no-such-model"), std::string::npos) << "the mode should be refused first:\n" << r.err;
}

TEST(Cli, PerplexitySavedLogitsGiveZeroKlAgainstItself) {
  LONGKV_REQUIRE_SHARED(kEval);
  const std::string base = test::temp_dir() + "/base.lp";
  const std::string common = "perplexity -m " + shared_path(kEval) + " -f " + shared_path(kWiki) +
                             " --ctx 256 --chunks 1 --kv f32";
  auto a = run_cli(common + " --save-logits " + base);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto b = run_cli(common + " --kl-base " + base);
  ASSERT_EQ(b.exit_code, 0) << b.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(b.out, m, std::regex("\\| f32 \\|.*\\| ([0-9.]+) \\| ([0-9.]+)% \\| 255 \\|")))
      << b.out;
  EXPECT_LT(std::stod(m[1].str()), 1e-4);  // quantized log-probs: ~1e-7 in practice
  EXPECT_EQ(m[2].str(), "100.00");
  // A different window size is refused.
  auto c = run_cli("perplexity -m " + shared_path(kEval) + " -f " + shared_path(kWiki) +
                   " --ctx 128 --chunks 1 --kl-base " + base);
  expect_one_error_line(c, "ctx 256");
}

// The evaluation model's Q8_0 predictions saved once (2 windows of 256) and
// `convert --type T` of it scored against them: KL and perplexity. The
// converted file is dir + "/eval-T.gguf".
struct EvalConversions {
  std::string dir = test::temp_dir(), base = dir + "/q8_0.lp";
  std::string window = " -f " + shared_path(kWiki) + " --ctx 256 --chunks 2 --kv f32";
  double ppl_q8 = 0;
  // False (a failure recorded) if a command fails or prints no table row.
  bool save_base() {
    auto a = run_cli("perplexity -m " + shared_path(kEval) + window + " --save-logits " + base);
    EXPECT_EQ(a.exit_code, 0) << a.err;
    if (a.exit_code == 0) ppl_q8 = parse_ppl(a.out, "f32");
    return a.exit_code == 0;
  }
  std::string path(const std::string& type) const { return dir + "/eval-" + type + ".gguf"; }
  bool convert(const std::string& type) const {
    auto c = run_cli("convert -m " + shared_path(kEval) + " -o " + path(type) + " --type " + type);
    EXPECT_EQ(c.exit_code, 0) << type << ": " << c.err;
    return c.exit_code == 0;
  }
  bool score(const std::string& type, double* kl, double* ppl) const {
    if (!convert(type)) return false;
    auto r = run_cli("perplexity -m " + path(type) + window + " --kl-base " + base);
    EXPECT_EQ(r.exit_code, 0) << type << ": " << r.err;
    std::smatch m;
    if (r.exit_code != 0 ||
        !std::regex_search(r.out, m, std::regex("\\| f32 \\|.*\\| ([0-9.]+) \\| ([0-9.]+)% \\| 510 \\|"))) {
      ADD_FAILURE() << type << ": no KL row in\n" << r.out;
      return false;
    }
    *kl = std::stod(m[1].str());
    *ppl = parse_ppl(r.out, "f32");
    std::printf("evalmodel 2x256 tokens: ppl Q8_0 %.4f, %s %.4f (KL %.5f)\n", ppl_q8, type.c_str(), *ppl, *kl);
    return true;
  }
};

// convert quantizes a matrix's rows on every thread (-t): the file is the
// same bytes on one thread as on two, and says how many it used.
TEST(Cli, ConvertGivesTheSameBytesOnAnyThreadCount) {
  LONGKV_REQUIRE_SHARED(kEval);
  const std::string dir = test::temp_dir();
  std::string files[2];
  for (int t : {1, 2}) {
    files[t - 1] = dir + "/threads-" + std::to_string(t) + ".gguf";
    auto r = run_cli("convert -m " + shared_path(kEval) + " -o " + files[t - 1] + " --type q4_k_m -t " +
                     std::to_string(t));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("Q4_K_M (threads: " + std::to_string(t) + ")"), std::string::npos) << r.err;
  }
  const std::string a = test::read_file(files[0]), b = test::read_file(files[1]);
  EXPECT_GT(a.size(), 10u << 20);
  EXPECT_TRUE(a == b) << "the two files differ";
}

// convert --type q4_k_m / q3_k_m: llama.cpp's layouts of those names, read
// back from the file. The evaluation model ties its output to the embedding
// table, which therefore takes the output's Q6_K, as llama.cpp gives it. The
// bits the mix adds bring the predictions closer to the Q8_0 model's than
// plain Q4_K (KL to its saved logits, 2 windows of 256). Measured here: KL
// Q4_K_M 0.0142 against Q4_K's 0.0366 (0.0177 and 0.0439 with the min/max
// fits before the searched ones).
TEST(Cli, ConvertToKMixesTakesLlamaCppsLayout) {
  LONGKV_REQUIRE_SHARED(kEval);
  EvalConversions ev;
  ASSERT_TRUE(ev.save_base());
  double kl[2] = {}, ppl[2] = {};
  ASSERT_TRUE(ev.score("q4_k_m", &kl[0], &ppl[0]));
  ASSERT_TRUE(ev.score("q4_k", &kl[1], &ppl[1]));
  EXPECT_LT(kl[0], 0.6 * kl[1]);
  EXPECT_LT(kl[0], 0.016);

  ASSERT_TRUE(ev.convert("q3_k_m"));
  for (const char* name : {"q4_k_m", "q3_k_m"}) {
    SCOPED_TRACE(name);
    const std::string out = ev.path(name);
    WeightMix mix;
    ASSERT_TRUE(parse_weight_mix(name, &mix));
    const LoadedModel lm = load_model(out);
    const ModelWeights& w = lm.weights;
    ASSERT_TRUE(w.tied_output);
    EXPECT_EQ(w.tok_embd.type, WeightType::Q6_K);
    const int n = w.cfg.n_layers;
    for (int l = 0; l < n; ++l) {
      const LayerWeights& L = w.layers[l];
      EXPECT_EQ(L.wq.type, mix_matrix_type(mix, MatrixRole::attn_q, l, n)) << l;
      EXPECT_EQ(L.wv.type, mix_matrix_type(mix, MatrixRole::attn_v, l, n)) << l;
      EXPECT_EQ(L.wo.type, mix_matrix_type(mix, MatrixRole::attn_output, l, n)) << l;
      EXPECT_EQ(L.w_down.type, mix_matrix_type(mix, MatrixRole::ffn_down, l, n)) << l;
    }
  }
  // The mixes' own formats, spelled out for the 8-layer model: Q4_K_M gives
  // layers 0, 7 (the first and last eighth) and 3, 6 (every third between)
  // Q6_K attn_v and ffn_down; Q3_K_M gives Q5_K to attn_v in layers 0-1.
  const LoadedModel q4m = load_model(ev.path("q4_k_m"));
  int q6 = 0;
  for (const LayerWeights& L : q4m.weights.layers) q6 += L.wv.type == WeightType::Q6_K;
  EXPECT_EQ(q6, 4);
  EXPECT_EQ(q4m.weights.layers[1].wq.type, WeightType::Q4_K);
  const LoadedModel q3m = load_model(ev.path("q3_k_m"));
  EXPECT_EQ(q3m.weights.layers[1].wv.type, WeightType::Q5_K);
  EXPECT_EQ(q3m.weights.layers[2].wv.type, WeightType::Q4_K);
  EXPECT_EQ(q3m.weights.layers[2].wk.type, WeightType::Q3_K);
}

// convert --type q6_k / q5_k / q4_k / q3_k / q2_k: the evaluation model's
// Q8_0 weights requantized, through the GGUF writer, the reader and the CPU
// kernels. Each bit more halves a K-quant's step, so each format's
// predictions stay closer to the Q8_0 model's than the next smaller one's
// (KL to its saved logits, 2 windows of 256); a code bit read from the wrong
// place would break the order. Measured here with the searched fits: KL
// 0.00214 (Q6_K), 0.00813 (Q5_K), 0.0366 (Q4_K), 0.147 (Q3_K), 0.517 (Q2_K);
// perplexity 320.16 for Q8_0, 321.36, 322.87, 330.09, 339.28 and 461.72. The
// min/max fits before them gave KL 0.00286, 0.0130, 0.0439, 0.167 and 0.932
// (perplexity 320.88, 326.21, 327.98, 374.12, 778.50): the bounds below fail
// on those. llama.cpp's Q2_K files keep attn_v, ffn_down and the output at 3
// to 6 bits; plain Q2_K here quantizes every matrix to 2 bits.
TEST(Cli, ConvertKQuantsLoseLessWithEachBit) {
  LONGKV_REQUIRE_SHARED(kEval);
  EvalConversions ev;
  ASSERT_TRUE(ev.save_base());
  constexpr int kTypes = 5;
  double kl[kTypes] = {}, ppl[kTypes] = {};
  const char* types[kTypes] = {"q6_k", "q5_k", "q4_k", "q3_k", "q2_k"};
  const double max_kl[kTypes] = {0.0025, 0.01, 0.04, 0.16, 0.6};
  for (int i = 0; i < kTypes; ++i) ASSERT_TRUE(ev.score(types[i], &kl[i], &ppl[i]));
  for (int i = 0; i + 1 < kTypes; ++i) EXPECT_LT(kl[i], 0.5 * kl[i + 1]) << types[i];
  for (int i = 0; i < kTypes; ++i) EXPECT_LT(kl[i], max_kl[i]) << types[i];
  EXPECT_GT(kl[0], 0.0);
}

// convert to the 32-element formats and IQ4: each loses less than the
// format of fewer bits, and at Q4_0's 4.5 bits IQ4_NL's non-uniform table
// loses less than Q4_0's even steps, as IQ4_XS does at 4.25 (KL to the Q8_0
// model, as above). Measured here: KL 0.0113 (Q5_1), 0.0127 (Q5_0), 0.0458
// (Q4_1), 0.0529 (Q4_0), 0.0402 (IQ4_NL), 0.0400 (IQ4_XS; Q4_K above: 0.0366).
TEST(Cli, ConvertQ32AndIq4FormatsOrderByBits) {
  LONGKV_REQUIRE_SHARED(kEval);
  EvalConversions ev;
  ASSERT_TRUE(ev.save_base());
  constexpr int kTypes = 6;
  const char* types[kTypes] = {"q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl", "iq4_xs"};
  double kl[kTypes] = {}, ppl[kTypes] = {};
  for (int i = 0; i < kTypes; ++i) ASSERT_TRUE(ev.score(types[i], &kl[i], &ppl[i]));
  EXPECT_LT(kl[0], kl[1]);        // Q5_1 < Q5_0
  EXPECT_LT(kl[1], 0.5 * kl[2]);  // Q5_0 < Q4_1
  EXPECT_LT(kl[2], kl[3]);        // Q4_1 < Q4_0
  EXPECT_LT(kl[4], 0.9 * kl[3]);  // IQ4_NL < Q4_0
  EXPECT_LT(kl[5], 0.9 * kl[3]);  // IQ4_XS < Q4_0
  EXPECT_GT(kl[0], 0.0);
}

// --save-nll: one CSV row per scored token and a column per mode (NLL, then
// KL to the f16 base); the rows give back the table's perplexity and KLD.
TEST(Cli, PerplexitySavedNllGivesTheTable) {
  LONGKV_REQUIRE_SHARED(kEval);
  const std::string path = test::temp_dir() + "/nll.csv";
  auto r = run_cli("perplexity -m " + shared_path(kEval) + " -f " + shared_path(kWiki) +
                   " --ctx 256 --chunks 2 --kv f16,k2v2 --save-nll " + path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream in(test::read_file(path));
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, "window,pos,token,nll:f16,nll:k2v2:g32:r128:s4:rope=post,kl:f16,kl:k2v2:g32:r128:s4:rope=post");
  double nll[2] = {0, 0}, kl = 0;
  int rows = 0;
  while (std::getline(in, line)) {
    std::vector<double> v;
    std::istringstream fields(line);
    for (std::string f; std::getline(fields, f, ',');) v.push_back(std::stod(f));
    ASSERT_EQ(v.size(), 7u) << line;
    EXPECT_EQ(v[1], rows % 255 + 1) << line;  // positions 1..255 in each window
    nll[0] += v[3];
    nll[1] += v[4];
    EXPECT_EQ(v[5], 0) << line;
    kl += v[6];
    ++rows;
  }
  EXPECT_EQ(rows, 510);
  const double ppl[2] = {parse_ppl(r.out, "f16"), parse_ppl(r.out, "k2v2:g32:r128:s4:rope=post")};
  for (int i = 0; i < 2; ++i) EXPECT_NEAR(std::exp(nll[i] / rows), ppl[i], 1e-5 * ppl[i]);  // 6-digit NLLs
  std::smatch m;
  // The mean KLD may print as -0.000000: per-token KLs of equal rows round to
  // either side of 0 (seen on a CI-like machine, 2 threads).
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex("\\| k2v2[^|]* \\|(?:[^|]*\\|){6} (-?[0-9.]+) \\|"))) << r.out;
  EXPECT_NEAR(kl / rows, std::stod(m[1].str()), 1e-5);
}

TEST(Cli, BenchSyntheticPrintsTable) {
  auto r = run_cli("bench --synthetic tiny --wtype q4_0 -p 16 -n 4 -d 0,64 --threads-list 1 --no-membw");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| 1 | f16 | pp16 | 0 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| 1 | f16 | tg4 | 64 |"), std::string::npos) << r.out;
  // llama.cpp's Q4_K_M mix: the model line names both formats, largest first.
  auto m = run_cli("bench --synthetic tiny --wtype q4_k_m -p 0 -n 2 -d 0 --threads-list 1 --no-membw");
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_NE(m.out.find("weights Q4_K+Q6_K "), std::string::npos) << m.out;
  EXPECT_NE(m.out.find("| 1 | f16 | tg2 | 0 |"), std::string::npos) << m.out;
  expect_one_error_line(run_cli("bench --synthetic tiny --wtype q4_0_m -p 0 -n 1"),
                        "unknown weight type 'q4_0_m' (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, "
                        "iq4_nl, iq4_xs, bf16; q3_k_m, q4_k_m, q5_k_m)");
}

// --gpu-mem only sizes the --max-ctx and --batch searches; alone it is an
// error, and --max-ctx, --batch (and --sample) on the CPU say they did not
// apply rather than printing nothing; a batch size out of range is one line.
TEST(Cli, BenchGpuMemNeedsMaxCtx) {
  auto u = run_cli("bench --synthetic tiny --wtype q4_0 -p 0 -n 1 --gpu-mem 81559");  // a usage error (CLI11's)
  EXPECT_NE(u.exit_code, 0);
  EXPECT_EQ(u.out, "");
  EXPECT_NE(u.err.find("--gpu-mem requires --max-ctx"), std::string::npos) << u.err;
  auto r = run_cli("bench --synthetic tiny --wtype q4_0 -p 0 -n 1 -d 0 --threads-list 1 --no-membw --max-ctx "
                   "--gpu-mem 81559 --device cpu --sample");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("--max-ctx searches GPU memory; not run on the CPU"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--sample draws in the GPU's decode steps; the CPU's are greedy"), std::string::npos) << r.err;
  auto b = run_cli("bench --synthetic tiny --wtype q4_0 -p 0 -n 1 -d 0 --threads-list 1 --no-membw --batch 4,max "
                   "--gpu-mem 81559 --device cpu");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.err.find("--batch decodes on the GPU only; not run on the CPU"), std::string::npos) << b.err;
  for (const char* bad : {"0", "33", "4x", "many"}) {
    auto e = run_cli(std::string("bench --synthetic tiny -p 0 -n 1 --batch ") + bad);
    EXPECT_NE(e.exit_code, 0) << bad;
    EXPECT_NE(e.err.find("--batch takes sequence counts 1..32 or max, not '" + std::string(bad) + "'"),
              std::string::npos)
        << e.err;
  }
}

// bench checks its options and picks its device before it builds or loads
// the weights: a mistake is one error line at once, not after an 8B
// model's seconds of building (llama3-8b here, so that a late check would
// show its "built" line), and a missing GPU is said before the build.
TEST(Cli, BenchChecksItsOptionsBeforeBuildingWeights) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--batch 33", "--batch takes sequence counts 1..32 or max, not '33'"},
      {"--kv q9", "unknown KV cache mode 'q9'"},
      {"--wtype q3", "unknown weight type 'q3'"},
  };
  for (const auto& [opt, fragment] : cases) {
    auto r = run_cli("bench --synthetic llama3-8b -p 0 -n 1 -d 0 --no-membw " + opt);
    expect_one_error_line(r, fragment);
    EXPECT_EQ(r.err.find("built "), std::string::npos) << opt << ": " << r.err;
  }
  auto shape = run_cli("bench --synthetic llama9-99b -p 0 -n 1");
  expect_one_error_line(shape, "unknown synthetic model 'llama9-99b'");
  if (cuda_available(nullptr)) return;
  auto r = run_cli("bench --synthetic tiny --wtype q4_0 -p 0 -n 1 -d 0 --threads-list 1 --no-membw --device cuda");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t warn = r.err.find("--device cuda: "), built = r.err.find("built tiny");
  ASSERT_NE(warn, std::string::npos) << r.err;
  ASSERT_NE(built, std::string::npos) << r.err;
  EXPECT_LT(warn, built) << r.err;
}

// perplexity too: its modes and --cuda-gemm are checked before the model
// and the text are loaded (the model path here does not exist, so a late
// check would say that instead).
TEST(Cli, PerplexityChecksItsModesBeforeLoading) {
  expect_one_error_line(run_cli("perplexity -m /nonexistent/model.gguf -f /nonexistent/text.txt --ctx 64 --kv f16,q9"),
                        "unknown KV cache mode 'q9'");
  expect_one_error_line(
      run_cli("perplexity -m /nonexistent/model.gguf -f /nonexistent/text.txt --ctx 64 --cuda-gemm f8"),
      "--cuda-gemm must be f16 or f32");
  // --batch >= --ctx: a quantized mode that cuts after attention reads only
  // its window's own tokens, exactly; said before the model loads
  auto one = run_cli("perplexity -m /nonexistent/model.gguf -f /nonexistent/text.txt --kv f16,k2v2,k4v4:cut=append");
  EXPECT_NE(one.err.find("--batch 512 >= --ctx 512: each window is one chunk"), std::string::npos) << one.err;
  EXPECT_NE(one.err.find("so k2v2:g32:r128:s4:rope=post scores as f16 does"), std::string::npos) << one.err;
  auto chunked = run_cli("perplexity -m /nonexistent/model.gguf -f /nonexistent/text.txt --ctx 1024 --kv k2v2");
  EXPECT_EQ(chunked.err.find("each window is one chunk"), std::string::npos) << chunked.err;
  auto fid = run_cli("fidelity -m /nonexistent/model.gguf -f /nonexistent/text.txt --ctx 256 --kv k4v4:a3");
  EXPECT_NE(fid.err.find("so k4v4:g32:r128:s4:rope=post:a3 scores as f16 does"), std::string::npos) << fid.err;
  // the text file too (fidelity as well), before the model
  for (const char* cmd : {"perplexity", "fidelity --kv k4v4"})
    expect_one_error_line(run_cli(std::string(cmd) + " -m /nonexistent/model.gguf -f /nonexistent/text.txt --ctx 64"),
                          "/nonexistent/text.txt: cannot open");
}

// run: a prompt file that cannot be read, or a --prompts file without a
// prompt, before the model is loaded.
TEST(Cli, RunChecksItsPromptFilesBeforeLoading) {
  expect_one_error_line(run_cli("run -m /nonexistent/model.gguf -n 1 -f /nonexistent/prompt.txt"),
                        "/nonexistent/prompt.txt: cannot open prompt file");
  const std::string empty = test::temp_dir() + "/no-prompts.txt";
  test::write_file(empty, "\n\r\n\n");
  expect_one_error_line(run_cli("run -m /nonexistent/model.gguf -n 1 --prompts " + empty), "no prompt in it");
}

// Files written at the end of a run: a folder that does not exist, or a
// path that is a folder, is one error line before the model is loaded.
TEST(Cli, OutputPathsCheckedBeforeTheRun) {
  const std::string dir = test::temp_dir();
  const std::string text = dir + "/some-text.txt";
  test::write_file(text, "hello world\n");
  const std::string pre = " -m /nonexistent/model.gguf --ctx 64 -f " + text;
  expect_one_error_line(run_cli("perplexity" + pre + " --json /nonexistent-dir/out.json"),
                        "--json /nonexistent-dir/out.json: the folder /nonexistent-dir does not exist");
  expect_one_error_line(run_cli("perplexity" + pre + " --csv " + dir), "--csv " + dir + ": is a folder, not a file");
  expect_one_error_line(run_cli("fidelity --kv k4v4" + pre + " --json /nonexistent-dir/f.json"),
                        "the folder /nonexistent-dir does not exist");
  expect_one_error_line(run_cli("needle -m /nonexistent/model.gguf --html /nonexistent-dir/n.html"),
                        "--html /nonexistent-dir/n.html: the folder /nonexistent-dir does not exist");
}

// convert: the output type before the model is loaded.
TEST(Cli, ConvertChecksItsTypeBeforeLoading) {
  expect_one_error_line(run_cli("convert -m /nonexistent/model.gguf -o " + test::temp_dir() + "/never.gguf --type q3"),
                        "unknown weight type 'q3'");
}

// Usage errors: one line naming the option and what it takes, exit code 2
// (CLI11's own checks printed DBL_MAX in 300 digits, and called 0 "not in
// range 0.000000 to ..." where the option needs at least 1).
TEST(Cli, UsageErrorsAreOneLineSayingWhatTheOptionTakes) {
  const struct {
    const char* args;
    const char* fragment;
  } cases[] = {
      {"run -m x.gguf -p hi -n -5", "--n-predict: needs a whole number from 0 to 2147483647 (got '-5')"},
      {"run -m x.gguf -p hi -b 0", "--batch: needs a whole number from 1 to 2147483647 (got '0')"},
      {"run -m x.gguf -p hi -n 99999999999", "--n-predict: needs a whole number from 0 to 2147483647"},
      {"perplexity -m x.gguf -f y.txt --ctx 0", "--ctx: needs a whole number from 1 to 2147483647 (got '0')"},
      {"perplexity -m x.gguf -f y.txt --chunks -1", "--chunks: needs a whole number from 0"},
      {"bench -m x.gguf --reps 0", "--reps: needs a whole number from 1"},
      {"bench -m x.gguf -n abc", "--n-gen: needs a whole number from 0 to 2147483647 (got 'abc')"},
      {"bench -m x.gguf --max-ctx --gpu-mem -3", "--gpu-mem: needs a number >= 0 (got '-3')"},
      {"run -m x.gguf -p hi --temp -1", "--temp: needs a number >= 0 (got '-1')"},
      {"run -m x.gguf -p hi --top-p 7", "--top-p: needs a number in (0, 1] (got '7')"},
      {"run -m x.gguf -p hi --min-p nan", "--min-p: needs a number in [0, 1] (got 'nan')"},
      {"run -m x.gguf -p hi --repeat-penalty 0", "--repeat-penalty: needs a number > 0 (got '0')"},
      {"bench -m x.gguf -d 0,-5", "--depth: needs a whole number from 0 to 2147483647 (got '-5')"},  // was an abort
      {"inspect -m x.gguf --ctx -4", "--ctx: needs a whole number from 0"},
      {"run -p hi", "--model is required"},
      {"run -m x.gguf --bogus", "--bogus"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = run_cli(c.args);
    expect_one_error_line(r, c.fragment, 2);
    EXPECT_EQ(r.err.find("1797693"), std::string::npos) << r.err;
  }
}

TEST(Cli, MissingModelFile) {
  expect_one_error_line(run_cli("run -m /nonexistent/model.gguf -p hi -n 1"), "/nonexistent/model.gguf: cannot open");
}

TEST(Cli, ModelIsADirectoryWithoutConfig) {
  expect_one_error_line(run_cli("run -m /tmp -p hi -n 1"), "/tmp");
}

TEST(Cli, UnknownKvMode) {
  LONGKV_REQUIRE_SHARED(kStories);
  expect_one_error_line(
      run_cli("run -m " + shared_path(kStories) + " --tokenizer " + shared_path(kTok512) + " -n 1 --kv q9"),
      "unknown KV cache mode 'q9'");
}

TEST(Cli, Llama2cModelWithoutTokenizer) {
  LONGKV_REQUIRE_SHARED(kStories);
  expect_one_error_line(run_cli("run -m " + shared_path(kStories) + " -n 1"), "pass --tokenizer");
}

TEST(Cli, TokenizerOfWrongSize) {
  LONGKV_REQUIRE_SHARED(kEval);
  expect_one_error_line(run_cli("run -m " + shared_path(kEval) + " --tokenizer " + shared_path(kTok512) + " -n 1"),
                        "512");
}

TEST(Cli, PromptLongerThanContext) {
  LONGKV_REQUIRE_SHARED(kStories);
  expect_one_error_line(run_cli("run -m " + shared_path(kStories) + " --tokenizer " + shared_path(kTok512) +
                                " -c 4 -p 'Once upon a time there was a cat' -n 1"),
                        "does not fit the context of 4");
}

TEST(Cli, CorruptModelFiles) {
  LONGKV_REQUIRE_SHARED(kEval);
  const std::string dir = test::temp_dir();
  const std::string good = test::read_file(shared_path(kEval));
  // Truncated GGUF: header and metadata present, tensor data cut off.
  test::write_file(dir + "/trunc.gguf", good.substr(0, good.size() / 2));
  auto r = run_cli("run -m " + dir + "/trunc.gguf -p hi -n 1");
  expect_one_error_line(r, "trunc.gguf");
  // Not a model at all.
  test::write_file(dir + "/text.bin", "hello world, this is not a model file at all");
  expect_one_error_line(run_cli("run -m " + dir + "/text.bin -p hi -n 1"), "text.bin");
  // Truncated llama2.c checkpoint.
  const std::string stories = test::read_file(shared_path(kStories));
  test::write_file(dir + "/short.bin", stories.substr(0, 5000));
  expect_one_error_line(run_cli("run -m " + dir + "/short.bin --tokenizer " + shared_path(kTok512) + " -n 1"),
                        "short.bin");
}

TEST(Cli, HelpListsSubcommands) {
  auto r = run_cli("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* cmd : {"run", "perplexity", "inspect", "convert", "bench", "needle", "fidelity"})
    EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd;
}

// Every command that takes --kv spells the whole mode grammar (kKvModeGrammar),
// so a new field such as :a<pct> shows up in each --help.
TEST(Cli, KvHelpSpellsTheModeGrammar) {
  for (const char* cmd : {"run", "perplexity", "inspect", "bench", "needle", "fidelity"}) {
    auto r = run_cli(std::string(cmd) + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find(kKvModeGrammar), std::string::npos) << cmd << " --help:\n" << r.out;
  }
}

}  // namespace
}  // namespace longkv

// Tokens chosen on the device against the host's choice. Greedy decoding
// (src/backend/cuda/greedy.cu, CudaModel::decode_greedy) against the host's
// argmax: the kernel alone on odd sizes, ties and NaNs, and whole
// generations of the evaluation model, pipelined or not, replayed as graphs
// or launched kernel by kernel. Top-k sampling (top_k.cu,
// CudaModel::forward_top, milestone 30) against the host's sampler: the
// candidates alone, and the tokens a seeded generation draws.
// Without a GPU (or in a build without CUDA) each test reports SKIPPED.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "model/model_loader.h"
#include "runtime/sampler.h"
#include "test_cuda_util.h"
#include "test_util.h"

namespace longkv {
namespace {

constexpr const char* kEvalModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";

// A row of n logits for the device-selection tests, drawn from rng through
// nd: variant 0 plain normal values; 1 ties (tie_halves: every value rounded
// to a half, long runs of ties; else the maximum 9.5 at two places, n > 2);
// 2 every value 0.25; 3 negative values only; 4 -inf and NaN scattered (n > 2).
std::vector<float> logit_row(int n, int variant, bool tie_halves, std::mt19937& rng,
                             std::normal_distribution<float>& nd) {
  std::vector<float> x(n);
  for (float& v : x) v = nd(rng);
  if (variant == 1 && tie_halves) {
    for (float& v : x) v = std::round(v * 2.0f) / 2.0f;
  } else if (variant == 1 && n > 2) {
    const int a = static_cast<int>(rng() % (n / 2)) + 1, b = a + static_cast<int>(rng() % (n - a));
    x[a] = x[b] = 9.5f;
  } else if (variant == 2) {
    std::fill(x.begin(), x.end(), 0.25f);
  } else if (variant == 3) {
    for (float& v : x) v = -std::fabs(v) - 1.0f;
  } else if (variant == 4 && n > 2) {
    for (int i = 1; i < n; i += 7) x[i] = i % 2 ? -std::numeric_limits<float>::infinity() : std::nanf("");
  }
  return x;
}

// fn(n, variant, row) for each size in `sizes` and each variant of
// logit_row, the rows drawn in that order from one generator seeded `seed`.
template <typename Fn>
void for_each_logit_row(uint32_t seed, std::initializer_list<int> sizes, bool tie_halves, Fn&& fn) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  for (int n : sizes)
    for (int variant = 0; variant < 5; ++variant) fn(n, variant, logit_row(n, variant, tie_halves, rng, nd));
}

// Sizes around the kernel's 256 threads and 2048 values a block, and
// llama3's vocabulary (128,256) and one more; each with plain normal values,
// the maximum twice (the lower index wins), every value equal (index 0),
// negative values only, and -inf / NaN scattered (never the answer).
TEST(CudaGreedy, ArgmaxMatchesCpuArgmax) {
  LONGKV_REQUIRE_CUDA();
  int checked = 0;
  const auto sizes = {1, 2, 33, 255, 257, 2048, 2049, 32000, 128256, 128257, 300001};
  for_each_logit_row(7, sizes, false, [&](int n, int variant, const std::vector<float>& x) {
    const int32_t want = argmax(x.data(), n);
    for (int rounds : {1, 3}) {
      EXPECT_EQ(cuda_check_argmax(x.data(), n, rounds), want) << "n " << n << " variant " << variant << " rounds "
                                                              << rounds;
      ++checked;
    }
  });
  std::printf("device argmax vs CPU argmax: %d cases\n", checked);
}

// The host's greedy loop: forward_view a step, argmax on the CPU.
std::vector<int32_t> host_greedy(CudaModel& m, int32_t first, int pos, int n) {
  std::vector<int32_t> out;
  int32_t t = first;
  for (int i = 0; i < n; ++i) {
    t = argmax(m.forward_view(&t, 1, pos + i), m.config().n_vocab);
    out.push_back(t);
  }
  return out;
}

struct GreedyRun {
  bool graphs, pipelined;
};

// The evaluation model and its vocabulary size, loaded once for the tests
// that use it (each asks LONGKV_REQUIRE_SHARED(kEvalModel) first).
struct EvalModel {
  LoadedModel lm;
  int nv;
};
const EvalModel& eval_model() {
  static const EvalModel m = [] {
    LoadedModel lm = load_model(test::shared_path(kEvalModel));
    const int nv = lm.weights.cfg.n_vocab;
    return EvalModel{std::move(lm), nv};
  }();
  return m;
}

// n token ids spread over the vocabulary: (i * mul + add) % n_vocab.
std::vector<int32_t> spread_tokens(int n, int mul, int add, int n_vocab) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = static_cast<int32_t>((static_cast<int64_t>(i) * mul + add) % n_vocab);
  return t;
}

// Model options with a cache of `mode` for max_tokens tokens.
CudaModelOptions cache_options(const char* mode, int max_tokens) {
  CudaModelOptions o;
  o.max_tokens = max_tokens;
  o.kv_mode = mode;
  return o;
}

// CudaTuning::greedy_pipeline set for a scope and put back after it, also
// when a check returns early or a call throws.
struct PipelineSetting {
  explicit PipelineSetting(bool on) : saved(cuda_tuning().greedy_pipeline) { cuda_tuning().greedy_pipeline = on; }
  ~PipelineSetting() { cuda_tuning().greedy_pipeline = saved; }
  bool saved;
};
constexpr GreedyRun kRuns[] = {{true, true}, {true, false}, {false, true}};

// The generations that pass k2v2's first group cut (token 164): kCutSteps
// tokens after the prompt cut_prompt(n_vocab) of kCutPrompt tokens.
constexpr int kCutPrompt = 20, kCutSteps = 180;
std::vector<int32_t> cut_prompt(int n_vocab) { return spread_tokens(kCutPrompt, 131, 7, n_vocab); }
// Runs fn(mode, options) for the KV modes those tests compare (f16, and
// k2v2, whose first group cut the generation passes), the options holding
// the prompt and kCutSteps tokens.
template <typename Fn>
void for_each_cut_mode(Fn&& fn) {
  for (const char* mode : {"f16", "k2v2"}) {
    SCOPED_TRACE(mode);
    fn(mode, cache_options(mode, kCutPrompt + kCutSteps + 1));
  }
}

// After a prompt, 180 tokens, past k2v2's first group (token 164), so
// through the graphed steps that cut a group: the same tokens as the host's
// argmax over the same logits, with the caches grown by exactly the tokens
// fed. A run with the attention timed (steps waited for one by one) still
// times replayed steps.
TEST(CudaGreedy, DecodeGreedyMatchesHostArgmax) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  const auto& [lm, nv] = eval_model();
  constexpr int kPrompt = kCutPrompt, kSteps = kCutSteps;
  const std::vector<int32_t> prompt = cut_prompt(nv);
  for_each_cut_mode([&](const char* mode, CudaModelOptions o) {
    auto host = CudaModel::create(lm.weights, o);
    const int32_t first = argmax(host->forward_view(prompt.data(), kPrompt, 0), nv);
    const std::vector<int32_t> want = host_greedy(*host, first, kPrompt, kSteps);
    for (const GreedyRun& r : kRuns) {
      for (bool timed : {false, true}) {
        if (timed && !(r.graphs && r.pipelined)) continue;
        SCOPED_TRACE(testing::Message() << "graphs " << r.graphs << " pipelined " << r.pipelined << " timed " << timed);
        const PipelineSetting pipeline(r.pipelined);
        o.graphs = r.graphs;
        auto dev = CudaModel::create(lm.weights, o);
        dev->time_decode_attention(timed);
        EXPECT_EQ(argmax(dev->forward_view(prompt.data(), kPrompt, 0), nv), first);
        std::vector<int32_t> got;
        const int n = dev->decode_greedy(first, kPrompt, kSteps, [&](int32_t t) {
          got.push_back(t);
          return true;
        });
        EXPECT_EQ(n, kSteps);
        EXPECT_EQ(got, want);
        EXPECT_EQ(dev->kv_size(), kPrompt + kSteps);  // the last token is not fed
        const CudaModel::StepTimes& st = dev->step_times();
        EXPECT_EQ(st.pipelined, r.pipelined && !timed ? kSteps : 0);
        if (r.graphs) {
          EXPECT_GT(dev->graph_replays(), kSteps / 2);
        } else {
          EXPECT_EQ(dev->graph_replays(), 0);
          EXPECT_EQ(st.direct, kSteps);
        }
        if (timed) {
          EXPECT_GT(dev->timings().attention_s, 0.0) << "greedy replays recorded no attention time";
        }
        int same = 0;
        while (same < kSteps && got.size() == want.size() && got[same] == want[same]) ++same;
        std::printf("decode_greedy, %s, graphs %d, pipelined %d, timed %d: %d of %d tokens as the host's argmax, "
                    "%d replays, %d captures\n",
                    mode, r.graphs, r.pipelined, timed, same, kSteps, dev->graph_replays(), dev->graph_captures());
      }
    }
  });
}

// emit returning false ends the generation. Without the pipeline the
// stopping token is not fed; with it, its step had been launched, so the
// caches hold it too (the contract in cuda_backend.h). Either way the next
// step continues from exactly those tokens: its logits are the bits of a
// model fed the same tokens one forward_view at a time.
TEST(CudaGreedy, EarlyStopFeedsWhatTheContractSays) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  const auto& [lm, nv] = eval_model();
  constexpr int kPrompt = 9, kStop = 5;
  const std::vector<int32_t> prompt = spread_tokens(kPrompt, 977, 3, nv);
  for (const char* mode : {"f16", "k4v4"}) {
    for (const GreedyRun& r : kRuns) {
      SCOPED_TRACE(testing::Message() << mode << " graphs " << r.graphs << " pipelined " << r.pipelined);
      CudaModelOptions o = cache_options(mode, 64);
      o.graphs = r.graphs;
      const PipelineSetting pipeline(r.pipelined);
      auto dev = CudaModel::create(lm.weights, o);
      auto ref = CudaModel::create(lm.weights, o);
      const int32_t first = argmax(dev->forward_view(prompt.data(), kPrompt, 0), nv);
      ref->forward_view(prompt.data(), kPrompt, 0);
      std::vector<int32_t> got;
      const int n = dev->decode_greedy(first, kPrompt, 40, [&](int32_t t) {
        got.push_back(t);
        return static_cast<int>(got.size()) < kStop;
      });
      EXPECT_EQ(n, kStop);
      ASSERT_EQ(static_cast<int>(got.size()), kStop);
      const int fed = kStop + (r.pipelined ? 1 : 0);  // first, then got[0..fed-2]
      ASSERT_EQ(dev->kv_size(), kPrompt + fed);
      std::vector<int32_t> fed_tokens{first};
      fed_tokens.insert(fed_tokens.end(), got.begin(), got.begin() + (fed - 1));
      for (int i = 0; i < fed; ++i) ref->forward_view(&fed_tokens[i], 1, kPrompt + i);
      const int32_t next = 42;
      std::vector<float> a(nv);
      std::memcpy(a.data(), ref->forward_view(&next, 1, kPrompt + fed), sizeof(float) * nv);
      const float* b = dev->forward_view(&next, 1, kPrompt + fed);
      EXPECT_EQ(std::memcmp(a.data(), b, sizeof(float) * nv), 0) << "the continuation's logits differ";
    }
  }
}

// The step after a prompt (or a synthetic fill, the bench's stand-in for
// one) is captured while the prompt runs, of the kind the last step was:
// a second generation's first step replays, and its tokens are still the
// host argmax's.
TEST(CudaGreedy, FirstStepAfterAPromptReplays) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  const auto& [lm, nv] = eval_model();
  constexpr int kPrompt = 20, kMore = 30, kSteps = 8;
  const std::vector<int32_t> prompt = spread_tokens(kPrompt + kMore, 331, 5, nv);
  auto all = [](int32_t) { return true; };
  for (const char* mode : {"f16", "k2v2"}) {
    SCOPED_TRACE(mode);
    CudaModelOptions o = cache_options(mode, 1100);
    auto dev = CudaModel::create(lm.weights, o);
    auto host = CudaModel::create(lm.weights, o);
    if (!dev->graphs() || !cuda_tuning().graph_ahead) GTEST_SKIP() << "graphs or capture ahead off in the environment";
    const int32_t first = argmax(dev->forward_view(prompt.data(), kPrompt, 0), nv);
    host->forward_view(prompt.data(), kPrompt, 0);
    std::vector<int32_t> fed{first};
    dev->decode_greedy(first, kPrompt, kSteps, [&](int32_t t) {
      fed.push_back(t);
      return true;
    });
    fed.pop_back();  // the last token is not fed
    for (size_t i = 0; i < fed.size(); ++i) host->forward_view(&fed[i], 1, kPrompt + static_cast<int>(i));
    const int pos = dev->kv_size();
    ASSERT_EQ(pos, kPrompt + kSteps);
    const int32_t first2 = argmax(dev->forward_view(prompt.data() + kPrompt, kMore, pos), nv);
    EXPECT_EQ(argmax(host->forward_view(prompt.data() + kPrompt, kMore, pos), nv), first2);
    dev->step_times() = {};
    std::vector<int32_t> got;
    dev->decode_greedy(first2, pos + kMore, kSteps, [&](int32_t t) {
      got.push_back(t);
      return true;
    });
    EXPECT_EQ(got, host_greedy(*host, first2, pos + kMore, kSteps));
    const CudaModel::StepTimes st = dev->step_times();
    EXPECT_EQ(st.captured, 0);
    EXPECT_EQ(st.direct, 0);
    EXPECT_EQ(st.replayed, kSteps);
    // After a fill (k2v2: 27 groups and a window): the same.
    dev->clear();
    dev->fill_random_kv(1000, 3);
    dev->step_times() = {};
    dev->decode_greedy(1, 1000, kSteps, all);
    EXPECT_EQ(dev->step_times().captured, 0);
    EXPECT_EQ(dev->step_times().replayed, kSteps);
    std::printf("decode_greedy after a prompt, %s: %d of %d steps replayed, after a fill %d\n", mode, st.replayed,
                kSteps, dev->step_times().replayed);
  }
}

// `longkv run --device cuda ARGS` on the evaluation model, a dense and a
// quantized cache: the device's way (its decode line says `device_says`)
// prints the text the host's way prints (LONGKV_CUDA_TUNING=host_setting).
void expect_run_text_as_host(const std::string& args, const char* host_setting, const char* device_says) {
  for (const char* kv : {"f16", "k2v2"}) {
    SCOPED_TRACE(kv);
    const std::string cmd = "run -m " + test::shared_path(kEvalModel) +
                            " -p 'Once upon a time, in a small town' -n 200 --device cuda --kv " + kv + " " + args;
    const auto dev = test::run_cli(cmd);
    ::setenv("LONGKV_CUDA_TUNING", host_setting, 1);
    const auto host = test::run_cli(cmd);
    ::unsetenv("LONGKV_CUDA_TUNING");
    ASSERT_EQ(dev.exit_code, 0) << dev.err;
    ASSERT_EQ(host.exit_code, 0) << host.err;
    EXPECT_NE(dev.err.find(device_says), std::string::npos) << dev.err;
    EXPECT_EQ(host.err.find(device_says), std::string::npos) << host.err;
    EXPECT_GT(dev.out.size(), 100u);
    EXPECT_EQ(dev.out, host.out);
  }
}

// `longkv run --device cuda --temp 0` generates on the device the text the
// host's argmax gives (gdev=0).
TEST(CudaGreedy, RunTempZeroMatchesHostArgmaxText) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  expect_run_text_as_host("--temp 0", "gdev=0", "greedy on the GPU");
}

// The host's order of a row's candidates (candidate_before, with NaN below
// every value, as the device's keys order it), first k.
std::vector<Candidate> host_top_k(const std::vector<float>& x, int k) {
  std::vector<Candidate> c;
  for (int i = 0; i < static_cast<int>(x.size()); ++i) c.emplace_back(x[i], i);
  std::stable_sort(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) {
    const bool na = std::isnan(a.first), nb = std::isnan(b.first);
    if (na || nb) return !na;  // a number before a NaN; NaNs in id order (stable)
    return candidate_before(a, b);
  });
  c.resize(k);
  return c;
}

// The device's top-k on the argmax test's sizes and variants, for k = 1, 40
// (the sampler's default) and 64 (the most): every candidate's id and logit
// bits as the host's, in the same order.
TEST(CudaSample, TopKMatchesHostOrder) {
  LONGKV_REQUIRE_CUDA();
  int checked = 0;
  const auto sizes = {1, 2, 33, 2047, 2048, 2049, 32000, 128256, 152064};
  // Ties as halves: runs of equal logits across every block's cut.
  for_each_logit_row(17, sizes, true, [&](int n, int variant, const std::vector<float>& x) {
    for (int k : {1, 40, 64}) {
      if (k > n) continue;
      const std::vector<Candidate> want = host_top_k(x, k), got = cuda_check_top_k(x.data(), n, k);
      ASSERT_EQ(got.size(), want.size());
      int bad = 0;
      for (int j = 0; j < k; ++j)
        bad += got[j].second != want[j].second || std::memcmp(&got[j].first, &want[j].first, sizeof(float)) != 0;
      EXPECT_EQ(bad, 0) << "n " << n << " variant " << variant << " k " << k << ": first " << got[0].second
                        << " want " << want[0].second;
      ++checked;
    }
  });
  std::printf("device top-k vs host order: %d cases\n", checked);
}

// A seeded generation with the default sampler (temperature 0.8, top-k 40,
// top-p 0.95, min-p 0.05): two models fed the same tokens, one drawing from
// its whole row of logits on the host (forward_view, Sampler::sample), the
// other from its k candidates selected on the device (forward_top,
// Sampler::sample_top), through k2v2's first group cut. Every token equal,
// and the device's candidates the host's top-k of the same logits.
TEST(CudaSample, ForwardTopDrawsTheHostSamplersTokens) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  const auto& [lm, nv] = eval_model();
  constexpr int kPrompt = kCutPrompt, kSteps = kCutSteps;
  const std::vector<int32_t> prompt = cut_prompt(nv);
  for_each_cut_mode([&](const char* mode, const CudaModelOptions& o) {
    auto a = CudaModel::create(lm.weights, o), b = CudaModel::create(lm.weights, o);
    SamplerParams sp;
    sp.seed = 42;
    Sampler host(sp), dev(sp);
    const int k = dev.top_only(nv, kMaxDeviceTopK);
    ASSERT_EQ(k, 40);
    int32_t ta = host.sample(a->forward_view(prompt.data(), kPrompt, 0), nv, {});
    const size_t kk = static_cast<size_t>(k);
    int32_t tb = dev.sample_top({b->forward_top(prompt.data(), kPrompt, 0, k), kk});
    int same = ta == tb, cand_bad = 0;
    for (int i = 0; i < kSteps && ta == tb; ++i) {
      float* row = a->forward_view(&ta, 1, kPrompt + i);
      const std::vector<Candidate> want = host_top_k(std::vector<float>(row, row + nv), k);
      const Candidate* top = b->forward_top(&tb, 1, kPrompt + i, k);
      cand_bad += !std::equal(top, top + k, want.begin());
      ta = host.sample(row, nv, {});
      tb = dev.sample_top({top, kk});
      same += ta == tb;
    }
    EXPECT_EQ(same, kSteps + 1);
    EXPECT_EQ(cand_bad, 0);
    EXPECT_GT(b->graph_replays(), kSteps / 2);
    std::printf("forward_top, %s: %d of %d sampled tokens as the host sampler's, %d candidate lists differ\n", mode,
                same, kSteps + 1, cand_bad);
  });
}

// `longkv run` with the default sampler on the GPU selects on the device
// (and says so) and prints the text the host's sampler prints (gtop=0).
TEST(CudaSample, RunDefaultSamplingMatchesHostText) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  expect_run_text_as_host("--seed 3", "gtop=0", "top-k on the GPU");
}

}  // namespace
}  // namespace longkv

// Batched decode on the GPU (CudaModel::forward_batch, milestone 50): one
// token of each of several sequences a step, each at its own position over
// its own caches. Against the CPU engine run sequence by sequence, and
// against the same sequences run one at a time through the same path (bit
// for bit). Without a GPU (or in a build without CUDA) each test reports
// SKIPPED with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model/llama_model.h"
#include "model/model_loader.h"
#include "test_cuda_util.h"
#include "test_util.h"

namespace longkv {
namespace {

constexpr const char* kEvalModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";

// The evaluation model with every matrix requantized to Q4_0 (the batch
// GEMV's format), saved under a temp dir of its own (its path to *path when
// given) and loaded back.
LoadedModel eval_model_q4_0_batch(std::string* path = nullptr) {
  const std::string q4 = test::temp_dir() + "/evalmodel-q4_0-batch.gguf";
  if (path) *path = q4;
  {
    LoadedModel src = load_model(test::shared_path(kEvalModel));
    EXPECT_TRUE(src.vocab.has_value());
    if (src.vocab) save_model_gguf(src.weights, *src.vocab, q4, WeightType::Q4_0);
  }
  return load_model(q4);
}

// Three sequences that start at different steps, so that they sit at
// different positions in every batch and the batches change size; token i
// of sequence s is fixed by (s, i).
constexpr int kSeqs = 3;
constexpr int kStart[kSeqs] = {0, 3, 10};
int32_t seq_token(int s, int i, int n_vocab) { return static_cast<int32_t>((i * 7919 + 13 + 101 * s) % n_vocab); }

// Step j's batch: the sequences started by then, in order; their tokens.
void batch_at(int j, int n_vocab, std::vector<int>* seqs, std::vector<int32_t>* toks) {
  seqs->clear();
  toks->clear();
  for (int s = 0; s < kSeqs; ++s)
    if (j >= kStart[s]) {
      seqs->push_back(s);
      toks->push_back(seq_token(s, j - kStart[s], n_vocab));
    }
}

// forward_batch against the CPU engine, with exact products (gemv_i8x off:
// the batch GEMV's f32 path, the CPU's arithmetic) and f32 prefill GEMMs
// nowhere in the step. f16 KV: as EvalModelDecodeMatchesCpuEngine, worst
// nmse < 1e-5 (f16 rounding of the same K/V on both sides). k4v4 past the
// first group cut (r128: from step ~160 of a sequence): a code near a
// boundary may flip, so the rotated test's limits (nmse < 1e-3). A token of
// the wrong sequence, position or cache gives nmse ~1e-1 and more. k4v4 once
// more with the batched attention in one launch a layer (b1l, milestone 55:
// the steps where every sequence has groups; the others go sequence by
// sequence). f16 once more with the batch GEMV's f16 activations (gbh,
// milestone 57: x and the weights rounded to f16, products summed in f32):
// nmse < 1e-4.
TEST(CudaBatch, ForwardBatchTracksCpuEnginePerSequence) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  LoadedModel lm = eval_model_q4_0_batch();
  const ModelWeights& w = lm.weights;
  const int nv = w.cfg.n_vocab;
  ThreadPool pool(2);
  LlamaModel cpu(w, pool);
  const struct {
    const char* mode;
    bool one_launch, h16;
  } cases[] = {{"f16", false, false}, {"k4v4", false, false}, {"k4v4", true, false}, {"f16", false, true}};
  for (const auto& [mode, one_launch, h16] : cases) {
    SCOPED_TRACE(std::string(mode) + (one_launch ? ", one launch" : "") + (h16 ? ", f16 GEMV activations" : ""));
    const int steps = std::string(mode) == "f16" ? 40 : 200;
    std::vector<std::vector<std::unique_ptr<KvCache>>> caches;
    for (int s = 0; s < kSeqs; ++s) caches.push_back(cpu.make_caches(mode, steps + 1));
    cuda_tuning().gemv_i8x = h16;  // exact products, or f16 activations (gbh)
    cuda_tuning().gemv_batch_h16 = h16 ? 2 : 0;
    cuda_tuning().gemv_batch_h16_dim = 0;  // every matrix, not only those of >= 8192 rows or columns
    cuda_tuning().batch_one_launch = one_launch;
    CudaModelOptions o;
    o.kv_mode = mode;
    o.max_tokens = steps + 1;
    o.max_seqs = kSeqs;
    o.gemm = CudaGemm::f32;
    auto gpu = CudaModel::create(w, o);
    std::vector<float> ref(nv);
    std::vector<int> seqs;
    std::vector<int32_t> toks;
    double worst = 0;
    int top1 = 0, rows = 0;
    for (int j = 0; j < steps; ++j) {
      batch_at(j, nv, &seqs, &toks);
      const float* got = gpu->forward_batch(toks.data(), seqs.data(), static_cast<int>(seqs.size()));
      for (size_t i = 0; i < seqs.size(); ++i) {
        const int s = seqs[i];
        ASSERT_EQ(gpu->seq_size(s), j - kStart[s] + 1);
        cpu.forward(&toks[i], 1, j - kStart[s], caches[s], ref.data(), false);
        const float* g = got + i * nv;
        worst = std::max(worst, test::nmse(g, ref.data(), nv));
        top1 += std::max_element(ref.begin(), ref.end()) - ref.begin() == std::max_element(g, g + nv) - g;
        ++rows;
      }
    }
    cuda_tuning() = CudaTuning{};
    EXPECT_LT(worst, h16 ? 1e-4 : std::string(mode) == "f16" ? 1e-5 : 1e-3);
    EXPECT_GE(top1, rows - 4);
    EXPECT_EQ(gpu->kv_size(), steps);  // sequence 0 is kv_size()'s
    std::printf("evalmodel Q4_0 batched decode, %d sequences, %d rows, %s KV%s, %s: worst nmse %.3g "
                "against the CPU, top-1 %d of %d\n",
                kSeqs, rows, mode, one_launch ? " (attention in one launch)" : "",
                h16 ? "f16 GEMV activations" : "exact products", worst, top1, rows);
  }
}

// A batch gives each of its sequences the logits that sequence gets alone
// through the same path (default tuning: int8 activations), bit for bit: a
// token's GEMV sums do not depend on the batch's other tokens
// (gemv_batch.cu), and each sequence attends over its own caches. Every
// matrix of the model is Q4_0, so no product goes through cuBLAS, whose
// algorithm may change with the column count. k4v4:rot past its first group
// takes the quantized two-launch step of each sequence. The attention on
// the default streams (CudaTuning::batch_streams: 2 for f16, 4 with v3's
// grids at half a wave for k4v4:rot), on one, on the most (three
// sequences: three streams), and k4v4:rot's in one launch a layer (b1l,
// streams -1 below; its inner cache's kernels), and so once more with the
// batch GEMV's f16 activations (gbh; -2).
TEST(CudaBatch, ABatchEqualsItsSequencesOneByOne) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  LoadedModel lm = eval_model_q4_0_batch();
  const ModelWeights& w = lm.weights;
  ASSERT_EQ(w.output.type, WeightType::Q4_0);
  const int nv = w.cfg.n_vocab;
  for (const auto& [mode, streams] : {std::pair{"f16", 0}, std::pair{"k4v4:rot", 0},
                                      std::pair{"f16", 1}, std::pair{"k4v4:rot", 1},
                                      std::pair{"f16", kMaxBatchStreams}, std::pair{"k4v4:rot", kMaxBatchStreams},
                                      std::pair{"k4v4:rot", -1}, std::pair{"k4v4:rot", -2}}) {
    SCOPED_TRACE(std::string(mode) + ", streams " + std::to_string(streams));
    if (streams > 0) cuda_tuning().batch_streams = streams;  // 0: the default
    cuda_tuning().batch_one_launch = streams < 0;
    if (streams == -2) {  // and the batch GEMV's f16 activations (gbh) for every matrix (gbhd=0)
      cuda_tuning().gemv_batch_h16 = 2;
      cuda_tuning().gemv_batch_h16_dim = 0;
    }
    const int steps = 180;
    CudaModelOptions o;
    o.kv_mode = mode;
    o.max_tokens = steps + 1;
    o.max_seqs = kSeqs;
    auto together = CudaModel::create(w, o), alone = CudaModel::create(w, o);
    std::vector<int> seqs;
    std::vector<int32_t> toks;
    int differ = 0;
    for (int j = 0; j < steps; ++j) {
      batch_at(j, nv, &seqs, &toks);
      const int n = static_cast<int>(seqs.size());
      const float* t = together->forward_batch(toks.data(), seqs.data(), n);
      const std::vector<float> all(t, t + static_cast<size_t>(n) * nv);
      for (int i = 0; i < n; ++i) {
        const float* a = alone->forward_batch(&toks[i], &seqs[i], 1);
        differ += std::memcmp(a, all.data() + static_cast<size_t>(i) * nv, sizeof(float) * nv) != 0;
      }
    }
    cuda_tuning() = CudaTuning{};
    EXPECT_EQ(differ, 0);
    std::printf("%s, attention on %s stream(s): %d steps of %d sequences, batched against one by one: %d rows "
                "differ\n", mode,
                streams > 0    ? std::to_string(streams).c_str()
                : streams == -1 ? "one launch, no"
                : streams == -2 ? "one launch (f16 GEMV activations), no"
                                : "the default",
                steps,
                kSeqs, differ);
    // A sequence's random fill lands in its own caches only.
    const int before = alone->seq_size(1);
    alone->fill_random_kv_seq(2, 1, 5);
    EXPECT_EQ(alone->seq_size(2), steps - kStart[2] + 1);
    EXPECT_EQ(alone->seq_size(1), before);
  }
  // Bad arguments are one clear Error each.
  CudaModelOptions o;
  o.max_tokens = 8;
  o.max_seqs = 2;
  auto m = CudaModel::create(w, o);
  const int32_t two[2] = {5, 6};
  const int dup[2] = {1, 1}, past[1] = {2};
  EXPECT_THROW(m->forward_batch(two, dup, 2), Error);
  EXPECT_THROW(m->forward_batch(two, past, 1), Error);
  EXPECT_THROW(m->forward_batch(two, dup, 3), Error);
  o.max_seqs = kMaxBatchSeqs + 1;
  EXPECT_THROW(CudaModel::create(w, o), Error);
}

// prefill_seq: a prompt prefilled into sequences 0, 1 and 2 in the same
// chunks gives the same logits bit for bit (the same chunk kernels over
// caches of their own), and so does every batched step after it, all three
// at the same positions with the same tokens. Then run --prompts on the GPU:
// a prompt's completion in a batch of three is what it gets alone (the batch
// GEMV's rows do not depend on the batch; the model requantized to Q4_0).
TEST(CudaBatch, PrefilledSequencesDecodeAlike) {
  LONGKV_REQUIRE_CUDA();
  LONGKV_REQUIRE_SHARED(kEvalModel);
  std::string q4;  // the CLI part below runs this file
  LoadedModel lm = eval_model_q4_0_batch(&q4);
  const ModelWeights& w = lm.weights;
  const int nv = w.cfg.n_vocab;
  std::vector<int32_t> prompt(37);
  for (int i = 0; i < 37; ++i) prompt[i] = seq_token(0, i, nv);
  for (const char* mode : {"f16", "k4v4"}) {
    SCOPED_TRACE(mode);
    CudaModelOptions o;
    o.kv_mode = mode;
    o.max_tokens = 64;
    o.max_seqs = kSeqs;
    auto m = CudaModel::create(w, o);
    std::vector<std::vector<float>> last(kSeqs);
    for (int s = 0; s < kSeqs; ++s) {
      const float* row = nullptr;
      for (int p : {0, 16, 32}) row = m->prefill_seq(s, prompt.data() + p, std::min(16, 37 - p));
      last[s].assign(row, row + nv);
      EXPECT_EQ(m->seq_size(s), 37);
      if (s > 0) {
        EXPECT_EQ(std::memcmp(last[s].data(), last[0].data(), sizeof(float) * nv), 0) << "sequence " << s;
      }
    }
    const int seqs[kSeqs] = {0, 1, 2};
    for (int j = 0; j < 8; ++j) {
      const int32_t t = seq_token(1, j, nv), toks[kSeqs] = {t, t, t};
      const float* rows = m->forward_batch(toks, seqs, kSeqs);
      for (int s = 1; s < kSeqs; ++s)
        EXPECT_EQ(std::memcmp(rows + static_cast<size_t>(s) * nv, rows, sizeof(float) * nv), 0)
            << "step " << j << ", sequence " << s;
    }
    EXPECT_THROW(m->prefill_seq(kSeqs, prompt.data(), 2), Error);
    EXPECT_THROW(m->prefill_seq(1, prompt.data(), 64), Error);  // past max_tokens
  }
  const std::string run = "run -m " + q4 + " -n 24 --temp 0 --kv k4v4 --device cuda --prompts ";
  const std::string three = test::temp_dir() + "/prompts-three.txt", one = test::temp_dir() + "/prompts-one.txt";
  test::write_file(three, "The capital of France is\nOnce upon a time\nIn 1990, the\n");
  test::write_file(one, "Once upon a time\n");
  const auto all = test::run_cli(run + three), alone = test::run_cli(run + one);
  ASSERT_EQ(all.exit_code, 0) << all.err;
  ASSERT_EQ(alone.exit_code, 0) << alone.err;
  EXPECT_NE(all.err.find("decoded together on the GPU, up to 3 a step"), std::string::npos) << all.err;
  const size_t b2 = all.out.find("### prompt 2\n"), b3 = all.out.find("### prompt 3\n");
  ASSERT_TRUE(b2 != std::string::npos && b3 != std::string::npos) << all.out;
  EXPECT_EQ("### prompt 1\n" + all.out.substr(b2 + 13, b3 - b2 - 13), alone.out);
  std::printf("run --prompts on the GPU, prompt 2 of 3: %s", all.out.substr(b2, b3 - b2).c_str());
}

}  // namespace
}  // namespace longkv

// longkv bench: prefill and decode speed at given context depths, as a
// Markdown table like llama-bench's, with GB/s against the bytes a decode
// step must read (weights + KV) next to the measured memory bandwidth.
#include <cmath>
#include <cstdio>
#include <random>

#include "common.h"
#include "device.h"
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "core/timer.h"
#include "kv/kv_mode.h"
#include "membw.h"
#include "model/llama_model.h"
#include "model/synthetic_model.h"

namespace longkv::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  std::string synthetic, wtype = "q8_0", fill = "auto";
  std::vector<int> threads;
  std::vector<int> depths{0};
  std::vector<std::string> kv_modes{"f16"};
  int n_prompt = 512, n_gen = 16, reps = 1;
  bool no_membw = false;
  std::string device = "cpu", cuda_gemm = "f16";
  bool max_ctx = false;
  bool sample = false;  // --sample: decode steps draw with the default sampler (GPU only)
  double gpu_mem_mib = 0;  // --gpu-mem: size the --max-ctx search for a card of this many MiB
  std::vector<std::string> batch;  // --batch: sequences a batched decode step (GPU only), "max" = as many as fit
};

// Fills every layer's cache with `n` random keys/values (synthetic context).
void fill_random(std::vector<std::unique_ptr<KvCache>>& caches, int n, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const KvShape& s = caches[0]->shape();
  const int chunk = 256;
  std::vector<float> k(static_cast<size_t>(chunk) * s.kv_dim()), v(k.size());
  for (auto& x : k) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  for (auto& c : caches)
    for (int done = 0; done < n; done += chunk) c->append(k.data(), v.data(), std::min(chunk, n - done));
}

int cmd_bench(const BenchOptions& o) {
  LONGKV_CHECK(!o.synthetic.empty() || !o.model.model.empty(), "bench needs -m MODEL or --synthetic SHAPE");
  std::vector<int> thread_list = o.threads.empty() ? std::vector<int>{0} : o.threads;
  // The options and the device first: a mistake or a missing GPU is said
  // before the weights are built or loaded (an 8B model takes seconds to
  // minutes), not after.
  const bool random_fill = o.fill == "random" || (o.fill == "auto" && !o.synthetic.empty());
  LONGKV_CHECK(o.fill == "auto" || o.fill == "random" || o.fill == "prefill", "--fill must be auto, random or prefill");
  LONGKV_CHECK(o.gpu_mem_mib == 0 || o.max_ctx || !o.batch.empty(),
               "--gpu-mem requires --max-ctx or --batch (it sizes their search)");
  std::vector<int> batches;  // --batch: 0 = max
  for (const auto& b : o.batch) {
    int v = 0;
    char tail = 0;
    LONGKV_CHECK(b == "max" || (std::sscanf(b.c_str(), "%d%c", &v, &tail) == 1 && v >= 1 && v <= kMaxBatchSeqs),
                 "--batch takes sequence counts 1..%d or max, not '%s'", kMaxBatchSeqs, b.c_str());
    batches.push_back(b == "max" ? 0 : v);
  }
  for (const auto& m : o.kv_modes) parse_kv_mode(m);  // an unknown mode fails here, with its rule
  WeightMix wt;
  ModelConfig shape;
  if (!o.synthetic.empty()) {
    LONGKV_CHECK(parse_weight_mix(o.wtype, &wt),
                 "unknown weight type '%s' (%s)", o.wtype.c_str(), weight_mix_names().c_str());
    shape = synthetic_config(o.synthetic);
  }
  const bool on_gpu = use_cuda_device(o.device);  // says why when it falls back to the CPU
  ThreadPool build_pool(0);
  LoadedModel lm;
  if (!o.synthetic.empty()) {
    const double t0 = now_seconds();
    lm.weights = make_synthetic_model(shape, wt, 1234, build_pool);
    log_info("built %s with random %s weights (%s) in %.1f s", o.synthetic.c_str(), wt.name.c_str(),
             human_bytes(static_cast<double>(lm.weights.weight_bytes())).c_str(), now_seconds() - t0);
  } else {
    lm = load_model(o.model.model);
  }
  const ModelWeights& w = lm.weights;
  if (on_gpu) {
    CudaBenchOptions co;
    co.kv_mode = o.kv_modes.empty() ? "f16" : o.kv_modes[0];
    co.gemm = o.cuda_gemm;
    co.depths = o.depths;
    co.n_prompt = o.n_prompt;
    co.n_gen = o.n_gen;
    co.reps = o.reps;
    co.synthetic = random_fill;
    co.max_ctx = o.max_ctx;
    co.sample = o.sample;
    co.gpu_mem_mib = o.gpu_mem_mib;
    co.kv_modes = o.kv_modes;
    co.batches = batches;
    return bench_cuda(w, co);
  }

  if (o.max_ctx) std::fprintf(stderr, "warning: --max-ctx searches GPU memory; not run on the CPU\n");
  if (!o.batch.empty()) std::fprintf(stderr, "warning: --batch decodes on the GPU only; not run on the CPU\n");
  if (o.sample) std::fprintf(stderr, "warning: --sample draws in the GPU's decode steps; the CPU's are greedy\n");
  const double membw = o.no_membw ? 0.0 : measure_read_bandwidth(build_pool);
  std::printf("\n## longkv bench\n\nmodel: %s  \nmeasured memory read bandwidth: %.1f GB/s (all %d threads)  \n"
              "context fill: %s\n\n",
              describe_model(w).c_str(), membw, build_pool.size(),
              random_fill ? "random keys/values appended to the cache (synthetic, no prefill)" : "real prefill of random tokens");
  std::printf("| threads | KV mode | test | depth | tok/s | ms/tok | attn ms/tok | KV read/step | bytes/step | GB/s | %% of bw |\n");
  std::printf("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");

  std::mt19937 rng(42);
  for (int nt : thread_list) {
    ThreadPool pool(nt);
    LlamaModel model(w, pool);
    for (const auto& mode_arg : o.kv_modes) {
      const std::string mode = parse_kv_mode(mode_arg).to_string();
      for (int depth : o.depths) {
        const int max_tokens = depth + std::max(o.n_prompt, o.n_gen) + 1;
        auto caches = model.make_caches(mode, max_tokens);
        std::vector<int32_t> toks(std::max(o.n_prompt, std::max(o.n_gen, 1)));
        for (auto& t : toks) t = static_cast<int32_t>(rng() % w.cfg.n_vocab);
        std::vector<float> logits(w.cfg.n_vocab);

        auto fill_to_depth = [&] {
          for (auto& c : caches) c->clear();
          if (depth == 0) return;
          if (random_fill) {
            fill_random(caches, depth, 7);
          } else {
            std::vector<int32_t> ctx_toks(depth);
            for (auto& t : ctx_toks) t = static_cast<int32_t>(rng() % w.cfg.n_vocab);
            for (int p = 0; p < depth; p += 512) {
              const int n = std::min(512, depth - p);
              model.forward(ctx_toks.data() + p, n, p, caches, nullptr, false);
            }
          }
        };

        if (o.n_prompt > 0) {
          double best = 1e30;
          for (int r = 0; r < o.reps; ++r) {
            fill_to_depth();
            const double t0 = now_seconds();
            model.forward(toks.data(), o.n_prompt, depth, caches, logits.data(), false);
            best = std::min(best, now_seconds() - t0);
          }
          std::printf("| %d | %s | pp%d | %d | %.1f | %.2f | — | — | — | — | — |\n", pool.size(), mode.c_str(), o.n_prompt,
                      depth, o.n_prompt / best, 1e3 * best / o.n_prompt);
          std::fflush(stdout);
        }
        if (o.n_gen > 0) {
          double best = 1e30, best_attn = 0;
          double kv_bytes = 0;
          for (int r = 0; r < o.reps; ++r) {
            fill_to_depth();
            model.timings() = {};
            const double t0 = now_seconds();
            for (int i = 0; i < o.n_gen; ++i)
              model.forward(&toks[i], 1, depth + i, caches, logits.data(), false);
            const double dt = now_seconds() - t0;
            if (dt < best) {
              best = dt;
              best_attn = model.timings().attention_s;
            }
            kv_bytes = 0;
            for (auto& c : caches) kv_bytes += static_cast<double>(c->footprint().bytes());
          }
          // Bytes a step reads: all weight matrices + the KV held at the
          // middle of the run (it grows by one token per step).
          const double mid_kv = kv_bytes * (depth + o.n_gen / 2.0) / std::max(1, depth + o.n_gen);
          const double step_bytes = static_cast<double>(w.weight_bytes()) + mid_kv;
          const double per_tok = best / o.n_gen;
          const double gbs = step_bytes / per_tok / 1e9;
          std::printf("| %d | %s | tg%d | %d | %.2f | %.1f | %.2f | %s | %s | %.1f | %s |\n", pool.size(),
                      mode.c_str(), o.n_gen, depth, 1.0 / per_tok, 1e3 * per_tok, 1e3 * best_attn / o.n_gen,
                      human_bytes(mid_kv).c_str(), human_bytes(step_bytes).c_str(), gbs, membw > 0 ? strprintf("%.0f%%", 100 * gbs / membw).c_str() : "—");
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("bench", "Prefill/decode speed at context depths (Markdown table)");
  add_model_options(sub, o->model, false);
  std::string shapes;
  for (auto& s : synthetic_shape_names()) shapes += (shapes.empty() ? "" : ", ") + s;
  sub->add_option("--synthetic", o->synthetic, "Random weights of a named shape instead of a file: " + shapes);
  sub->add_option("--wtype", o->wtype,
                  "Weight type of the synthetic model (" + weight_mix_names() +
                      "; the last three: llama.cpp's mixes, e.g. Q4_K_M's Q6_K for the output and half the layers' "
                      "attn_v and ffn_down)")
      ->capture_default_str();
  sub->add_option("--threads-list", o->threads, "Thread counts to measure, e.g. 1,2 (default: -t or all)")
      ->delimiter(',')
      ->check(whole_at_least(0));
  sub->add_option("-d,--depth", o->depths, "Context depths, e.g. 0,4096,32768")
      ->delimiter(',')
      ->capture_default_str()
      ->check(whole_at_least(0));
  sub->add_option("--kv", o->kv_modes, std::string("KV cache modes, comma-separated, each ") + kKvModeGrammar)->delimiter(',')->capture_default_str();
  sub->add_option("-p,--n-prompt", o->n_prompt, "Prompt tokens per prefill test (0: skip)")->capture_default_str()->check(
      whole_at_least(0));
  sub->add_option("-n,--n-gen", o->n_gen, "Tokens per decode test (0: skip)")->capture_default_str()->check(
      whole_at_least(0));
  sub->add_option("-r,--reps", o->reps, "Repetitions (best is reported)")->capture_default_str()->check(
      whole_at_least(1));
  sub->add_option("--fill", o->fill, "How to reach a depth: auto, random (synthetic KV), prefill")
      ->capture_default_str();
  sub->add_flag("--no-membw", o->no_membw, "Skip the memory bandwidth measurement");
  sub->add_option("--device", o->device, "cpu or cuda (falls back to the CPU, with the reason, without a GPU)")
      ->capture_default_str();
  sub->add_option("--cuda-gemm", o->cuda_gemm, "CUDA prefill GEMM precision: f16 (tensor cores) or f32")
      ->capture_default_str();
  sub->add_flag("--sample", o->sample,
                "With --device cuda: decode steps draw a token with `longkv run`'s default sampler (temperature "
                "0.8, top-k 40 selected on the GPU, top-p 0.95, min-p 0.05) instead of greedy");
  sub->add_option("--batch", o->batch,
                  "With --device cuda: also decode B sequences at once, one token of each a step, for each B "
                  "given (comma-separated, 1..32, or max: as many as fit, on a card of --gpu-mem when given)")
      ->delimiter(',');
  sub->add_flag("--max-ctx", o->max_ctx,
                                 "With --device cuda: the longest context that fits the GPU, per KV mode");
  sub->add_option("--gpu-mem", o->gpu_mem_mib,
                  "With --max-ctx or --batch max: size as on a card whose total memory is this many MiB (e.g. "
                  "81559, what an "
                  "H100 80GB reports), by leaving the rest of a larger card unused; 0 = the whole card")
      ->check(number_in(0))
      ->capture_default_str();
  sub->callback([o] {
    if (o->threads.empty() && o->model.threads > 0) o->threads = {o->model.threads};
    g_exit_code = cmd_bench(*o);
  });
}

}  // namespace longkv::cli

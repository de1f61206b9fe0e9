#include "device.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "kv/kv_mode.h"
#include "runtime/sampler.h"

namespace longkv::cli {

bool use_cuda_device(const std::string& device) {
  LONGKV_CHECK(device == "cpu" || device == "cuda", "--device must be cpu or cuda, not '%s'", device.c_str());
  if (device == "cpu") return false;
  std::string why;
  if (cuda_available(&why)) return true;
  log_warn("--device cuda: %s; running on the CPU", why.c_str());
  return false;
}

namespace {

// n single-token steps from tokens[0] at pos, as the bench times them:
// greedy on the device (CudaModel::decode_greedy, `longkv run --temp 0`'s
// way), or with CudaTuning::greedy_device off one forward_view a step fed
// tokens[i] (n of them). With `sample`, as `longkv run` samples with its
// default sampler: each step's top-k candidates from the device
// (forward_top) drawn on the host, or with CudaTuning::sample_top_device
// off the whole row to the host.
void decode_steps(CudaModel& model, const int32_t* tokens, int pos, int n, bool sample) {
  if (sample) {
    Sampler sampler{SamplerParams{}};
    const int nv = model.config().n_vocab;
    const int k = cuda_tuning().sample_top_device ? sampler.top_only(nv, kMaxDeviceTopK) : 0;
    int32_t t = tokens[0];
    for (int i = 0; i < n; ++i)
      t = k > 0 ? sampler.sample_top({model.forward_top(&t, 1, pos + i, k), static_cast<size_t>(k)})
                : sampler.sample(model.forward_view(&t, 1, pos + i), nv, {});
    return;
  }
  if (cuda_tuning().greedy_device) {
    model.decode_greedy(tokens[0], pos, n, [](int32_t) { return true; });
    return;
  }
  for (int i = 0; i < n; ++i) model.forward_view(&tokens[i], 1, pos + i);
}

// The GPU cache's bytes per token of context, all layers, K and V (for
// quantized modes the code records with their scales/zeros); throws for
// modes the GPU lacks.
double gpu_kv_bytes_per_token(const ModelConfig& c, const std::string& mode) {
  KvShape ks;
  ks.n_heads = c.n_heads;
  ks.n_kv_heads = c.n_kv_heads;
  ks.head_dim = c.head_dim;
  return static_cast<double>(c.n_layers) * cuda_kv_bytes_per_token(mode, ks);
}

// Device bytes free once the model is resident with a KV cache of `mode`
// (probed with a tiny cache), as on a card of gpu_mem_mib in total when that
// is smaller than this one: what it would have free is what this one has,
// less the part of this one's memory it does not have.
double free_after_weights(const ModelWeights& w, const std::string& mode, CudaGemm gemm, double gpu_mem_mib) {
  CudaModelOptions mo;
  mo.kv_mode = mode;
  mo.max_tokens = 16;
  mo.gemm = gemm;
  size_t free_b = 0, total_b = 0;
  {
    auto probe = CudaModel::create(w, mo);
    cuda_memory_info(&free_b, &total_b);
  }
  const double cap_b = gpu_mem_mib * (1 << 20);
  double free_d = static_cast<double>(free_b);
  if (cap_b > 0 && cap_b < static_cast<double>(total_b)) {
    const double missing = static_cast<double>(total_b) - cap_b;
    LONGKV_CHECK(free_d > missing, "--gpu-mem %.0f MiB: the weights alone do not fit", gpu_mem_mib);
    free_d -= missing;
  }
  return free_d;
}

// Decode partials, logits, cuBLAS, allocator slack: kept free beside the caches.
constexpr double kReserveBytes = 768.0 * (1 << 20);

// Longest context whose KV cache fits next to the weights: the GPU cache's
// bytes per token in that mode (all layers, K and V; for quantized modes the
// code records with their scales/zeros) into the free memory left once the
// model is resident, less a reserve for the decode workspace, the fp16
// sinks/window and the CUDA context's own growth. Then proven by allocating
// it: a model with that capacity, filled with random keys/values to the last
// slots, decodes n_gen tokens (timed). Modes the GPU lacks say so.
void max_context_search(const ModelWeights& w, const CudaBenchOptions& o, CudaGemm gemm, double bw) {
  const ModelConfig& c = w.cfg;
  std::printf("\n### Longest context on the GPU\n\n");
  if (o.gpu_mem_mib > 0) {
    size_t free_b = 0, total_b = 0;
    cuda_memory_info(&free_b, &total_b);
    const double total_mib = static_cast<double>(total_b) / (1 << 20);
    if (o.gpu_mem_mib < total_mib)
      std::printf("sized for a card of %.0f MiB (--gpu-mem): %.0f of this card's %.0f MiB are left unused  \n",
                  o.gpu_mem_mib, total_mib - o.gpu_mem_mib, total_mib);
    else
      std::printf("--gpu-mem %.0f MiB is not below this card's %.0f MiB: the whole card is used  \n", o.gpu_mem_mib,
                  total_mib);
  }
  std::printf("\n| KV mode | bytes/token | free after weights | max context | "
              "decode at max: tok/s | ms/tok | GB/s | %% of copy bw |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& arg : o.kv_modes) {
    const std::string mode = parse_kv_mode(arg).to_string();
    double per_token = 0;
    try {
      per_token = gpu_kv_bytes_per_token(c, mode);
    } catch (const Error& e) {
      std::printf("| %s | — | — | %s | — | — | — | — |\n", mode.c_str(), e.what());
      continue;
    }
    const double free_b = free_after_weights(w, mode, gemm, o.gpu_mem_mib);
    const int64_t n = static_cast<int64_t>((free_b - kReserveBytes) / per_token);
    LONGKV_CHECK(n > o.n_gen + 1, "no room for a KV cache: %.2f GiB free after the weights", free_b / 1073741824.0);
    CudaModelOptions mo;
    mo.kv_mode = mode;
    mo.gemm = gemm;
    mo.max_tokens = static_cast<int>(std::min<int64_t>(n, INT32_MAX / 2));
    auto model = CudaModel::create(w, mo);
    const int depth = mo.max_tokens - o.n_gen - 1;
    model->fill_random_kv(depth, 11);
    const int32_t tok = 1;
    model->forward_view(&tok, 1, depth);  // warm-up (workspace growth)
    model->clear();
    model->fill_random_kv(depth, 11);
    const double ts = now_seconds();
    const std::vector<int32_t> toks(o.n_gen, tok);
    decode_steps(*model, toks.data(), depth, o.n_gen, o.sample);
    const double per_tok = (now_seconds() - ts) / std::max(1, o.n_gen);
    const KvFootprint fp = model->kv_footprint();
    const double step = static_cast<double>(model->step_weight_bytes()) + static_cast<double>(fp.gpu_bytes);
    std::printf("| %s | %s | %s | %d | %.2f | %.2f | %.0f | %.0f%% |\n", mode.c_str(), human_bytes(per_token).c_str(),
                human_bytes(free_b).c_str(), mo.max_tokens, 1.0 / per_tok, 1e3 * per_tok,
                step / per_tok / 1e9, 100 * step / per_tok / 1e9 / bw);
    std::fflush(stdout);
  }
}

// Batched decode (milestone 50): one token for each of B sequences a step
// (CudaModel::forward_batch), every sequence's caches filled to the depth
// with random keys/values. B = 0 ("max"): the most sequences whose caches
// fit beside the weights (on a card of --gpu-mem when given), at most
// kMaxBatchSeqs. The caches hold depth + (reps + 1) n_gen + 1 tokens: the
// warm-up and the timed runs continue one after the other (a few dozen
// tokens past the depth, not refilled).
void batch_decode_table(const ModelWeights& w, const CudaBenchOptions& o, CudaGemm gemm, double bw) {
  const ModelConfig& c = w.cfg;
  std::printf("\n### Batched decode: one token of each of B sequences a step\n\n"
              "Each sequence's caches filled to the depth with random keys/values; max = the most sequences whose "
              "caches fit beside the weights%s (at most %d); the same token fed every step; every step's logits "
              "(B rows) copied to the host; steps launched kernel by kernel. tok/s counts the tokens of all B "
              "sequences; bytes/step = the weights + the B caches at the run's middle.\n\n",
              o.gpu_mem_mib > 0 ? strprintf(" on a card of %.0f MiB (--gpu-mem)", o.gpu_mem_mib).c_str() : "",
              kMaxBatchSeqs);
  std::printf("| KV mode | depth | B | tok/s | ms/step | KV read/step | bytes/step | GB/s | %% of copy bw |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const int n_gen = std::max(1, o.n_gen);
  for (const auto& arg : o.kv_modes) {
    const std::string mode = parse_kv_mode(arg).to_string();
    const double per_token = gpu_kv_bytes_per_token(c, mode);
    for (int depth : o.depths) {
      const int cap = depth + (o.reps + 1) * n_gen + 1;
      // The most sequences that fit (on a card of --gpu-mem when given).
      const double free_b = free_after_weights(w, mode, gemm, o.gpu_mem_mib);
      const int fit = static_cast<int>(std::min<double>(kMaxBatchSeqs, (free_b - kReserveBytes) / (per_token * cap)));
      for (int want : o.batches) {
        const int seqs_n = want == 0 ? fit : want;
        if (seqs_n < 1) {
          std::printf("| %s | %d | max | no sequence fits | | | | | |\n", mode.c_str(), depth);
          continue;
        }
        CudaModelOptions mo;
        mo.kv_mode = mode;
        mo.gemm = gemm;
        mo.max_tokens = cap;
        mo.max_seqs = seqs_n;
        std::unique_ptr<CudaModel> model;
        try {
          model = CudaModel::create(w, mo);
        } catch (const Error& e) {
          std::printf("| %s | %d | %d | %s | | | | | |\n", mode.c_str(), depth, seqs_n, e.what());
          continue;
        }
        const double tf = now_seconds();
        for (int b = 0; b < seqs_n && depth > 0; ++b) model->fill_random_kv_seq(b, depth, 7 + b);
        log_info("%s: %d sequences filled to %d tokens in %.1f s", mode.c_str(), seqs_n, depth, now_seconds() - tf);
        std::vector<int> seqs(seqs_n);
        for (int b = 0; b < seqs_n; ++b) seqs[b] = b;
        const std::vector<int32_t> toks(seqs_n, 1);
        double best = 1e30;
        int best_start = depth;
        for (int r = 0; r < o.reps + 1; ++r) {  // the first run warms up
          const int start = model->seq_size(0);
          const double ts = now_seconds();
          for (int i = 0; i < n_gen; ++i) model->forward_batch(toks.data(), seqs.data(), seqs_n);
          const double dt = now_seconds() - ts;
          if (r > 0 && dt < best) best = dt, best_start = start;
        }
        const KvFootprint fp = model->kv_footprint();  // sequence 0's; every sequence holds as many tokens
        const double mid_kv = fp.tokens > 0 ? static_cast<double>(fp.gpu_bytes) / fp.tokens * seqs_n *
                                                  (best_start + n_gen / 2.0)
                                            : 0;
        const double step = static_cast<double>(model->step_weight_bytes()) + mid_kv, per_step = best / n_gen;
        // A count past what a --gpu-mem card holds ran on this one's memory: the row says so.
        const char* note = want == 0 ? " (max)" : o.gpu_mem_mib > 0 && want > fit ? " (over --gpu-mem)" : "";
        std::printf("| %s | %d | %d%s | %.1f | %.3f | %s | %s | %.0f | %.0f%% |\n", mode.c_str(), depth, seqs_n,
                    note, seqs_n / per_step, 1e3 * per_step, human_bytes(mid_kv).c_str(),
                    human_bytes(step).c_str(), step / per_step / 1e9, 100 * step / per_step / 1e9 / bw);
        std::fflush(stdout);
      }
    }
  }
}

}  // namespace

int bench_cuda(const ModelWeights& w, const CudaBenchOptions& o) {
  CudaGemm gemm;
  LONGKV_CHECK(parse_cuda_gemm(o.gemm, &gemm), "--cuda-gemm must be f16 or f32, not '%s'", o.gemm.c_str());
  // One table over the KV modes (--kv f16,k4v4,...), a model per mode.
  std::vector<std::string> modes;
  for (const auto& m : o.kv_modes.empty() ? std::vector<std::string>{o.kv_mode} : o.kv_modes)
    modes.push_back(parse_kv_mode(m).to_string());
  const int max_depth = *std::max_element(o.depths.begin(), o.depths.end());
  const double bw = cuda_copy_bandwidth_gbs();
  const bool graphs = cuda_graphs_default();
  std::printf("\n## longkv bench (CUDA)\n\nmodel: %s  \ndevice: %s  \nmeasured copy bandwidth: %.1f GB/s "
              "(device-to-device cudaMemcpy of 1 GiB, read + write)  \nprefill GEMM: %s  \ncontext fill: %s  \n"
              "decode steps: %s; %s  \nbytes/step: the weights a step reads (every matrix; of the token "
              "embeddings one row) and the KV cache at the run's middle  \nkernels: %s\n\n",
              describe_model(w).c_str(), cuda_device_description().c_str(), bw, cuda_gemm_name(gemm),
              o.synthetic ? "random keys/values written to the GPU cache (synthetic, no prefill)"
                          : "real prefill of random tokens",
              graphs ? "CUDA graphs (captured once per replay key, the next step's while the GPU runs this one, "
                       "the first step's while the GPU fills the context, as while it runs a prompt; replayed); attn ms/tok of decode from the warm-up run (device events around one layer's "
                       "attention, times the layers; the timed runs record none)"
                     : "launched kernel by kernel (LONGKV_CUDA_GRAPHS=0); attn ms/tok of decode from the warm-up run",
              o.sample ? (cuda_tuning().sample_top_device
                              ? "drawn with `longkv run`'s default sampler (" + SamplerParams{}.describe() +
                                    "): each step's top-k candidates selected on the GPU, the draw on the host"
                              : "drawn with `longkv run`'s default sampler (" + SamplerParams{}.describe() +
                                    "): each step's logits to the host, the whole sampler there (gtop=0)")
                             .c_str()
              : !cuda_tuning().greedy_device
                  ? "the given tokens, each step's logits to the host (the model's pinned buffer; gdev=0)"
                  : cuda_tuning().greedy_pipeline
                        ? "greedy on the GPU as `longkv run --temp 0` decodes: each step's argmax fed to the next "
                          "step on the device, which is launched before the host reads the token"
                        : "greedy on the GPU, each step's token read before the next step is launched (gpipe=0)",
              cuda_tuning_description().c_str());
  std::printf("| device | KV mode | test | depth | tok/s | ms/tok | attn ms/tok | KV read/step | bytes/step | GB/s | %% of copy bw "
              "| attn TFLOP/s |\n");
  std::printf("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const ModelConfig& c = w.cfg;
  for (const std::string& mode : modes) {
    CudaModelOptions mo;
    mo.kv_mode = mode;
    mo.max_tokens = max_depth + std::max(o.n_prompt, o.n_gen) + 1;
    mo.gemm = gemm;
    const double t0 = now_seconds();
    std::unique_ptr<CudaModel> model;
    try {
      model = CudaModel::create(w, mo);
    } catch (const Error& e) {
      std::printf("| cuda | %s | — | — | %s | | | | | | |\n", mode.c_str(), e.what());
      continue;
    }
    log_info("uploaded %s of weights to the GPU in %.1f s", human_bytes(static_cast<double>(model->weight_bytes())).c_str(),
             now_seconds() - t0);
    std::mt19937 rng(42);
    std::vector<int32_t> toks(std::max(o.n_prompt, std::max(o.n_gen, 1)));
    for (auto& t : toks) t = static_cast<int32_t>(rng() % c.n_vocab);
    const double weights = static_cast<double>(model->step_weight_bytes());
    for (int depth : o.depths) {
      auto fill = [&] {
        model->clear();
        if (depth == 0) return;
        if (o.synthetic) {
          model->fill_random_kv(depth, 7);
          return;
        }
        std::vector<int32_t> ctx(depth);
        for (auto& t : ctx) t = static_cast<int32_t>(rng() % c.n_vocab);
        for (int p = 0; p < depth; p += 512) model->forward(ctx.data() + p, std::min(512, depth - p), p, nullptr, false);
        model->synchronize();
      };
      if (o.n_prompt > 0) {
        double best = 1e30, best_attn = 0;
        for (int r = 0; r < o.reps + 1; ++r) {  // the first run warms up (cuBLAS, allocations)
          fill();
          model->timings() = {};
          const double ts = now_seconds();
          model->forward_view(toks.data(), o.n_prompt, depth);
          const double dt = now_seconds() - ts;
          if ((r > 0 || o.reps == 0) && dt < best) {
            best = dt;
            best_attn = model->timings().attention_s;
          }
        }
        // Attention FLOPs of the chunk, causal: row i sees depth + i + 1 keys;
        // QK^T and PV are 2 * head_dim FLOPs per (head, row, key) each.
        const double rows = o.n_prompt, keys = rows * depth + rows * (rows + 1) / 2;
        const double flops = 4.0 * keys * c.head_dim * c.n_heads * c.n_layers;
        std::printf("| cuda | %s | pp%d | %d | %.1f | %.3f | %.3f | — | — | — | — | %.1f |\n", mode.c_str(), o.n_prompt,
                    depth, o.n_prompt / best, 1e3 * best / o.n_prompt, 1e3 * best_attn / o.n_prompt,
                    best_attn > 0 ? flops / best_attn / 1e12 : 0.0);
        std::fflush(stdout);
      }
      if (o.n_gen > 0) {
        double best = 1e30, best_attn = 0;
        CudaModel::StepTimes best_steps, warm_steps;
        for (int r = 0; r < o.reps + 1; ++r) {
          // The warm-up run says how long the GPU took of a replay and of one
          // layer's attention; the timed runs record no events. Set before
          // the fill, which captures the first step ahead (a key of its own
          // with the events: set after it, a timed run's first step was
          // captured again while the GPU waited, milestone 28).
          model->time_decode_attention(r == 0);
          fill();
          model->timings() = {};
          model->step_times() = {};
          model->step_times().time_gpu = r == 0;
          const double ts = now_seconds();
          decode_steps(*model, toks.data(), depth, o.n_gen, o.sample);
          const double dt = now_seconds() - ts;
          if (r == 0) {
            warm_steps = model->step_times();
            best_attn = model->timings().attention_s;
          }
          if (r > 0 && dt < best) {
            best = dt;
            best_steps = model->step_times();
          }
        }
        model->time_decode_attention(false);
        if (model->graphs()) {
          // How the timed run's steps ran: captures (and the direct steps
          // before them) are the graph's cost in the ms/token below.
          const CudaModel::StepTimes& st = best_steps;
          auto mean_ms = [](double s, int n) { return n > 0 ? 1e3 * s / n : 0.0; };
          log_info("%s depth %d, best run: %d replayed steps (%.3f ms each), %d captured (%.3f ms each, of which "
                   "%.3f ms recording and updating), %d direct (%.3f ms each); %d next steps captured ahead "
                   "(%.3f ms each, while the GPU ran)%s",
                   mode.c_str(), depth, st.replayed, mean_ms(st.replayed_s, st.replayed), st.captured,
                   mean_ms(st.captured_s, st.captured), mean_ms(st.capture_s, st.captured), st.direct,
                   mean_ms(st.direct_s, st.direct), st.ahead, mean_ms(st.ahead_s, st.ahead),
                   st.pipelined ? strprintf("; %d steps pipelined (their ms: the host's launch only)", st.pipelined).c_str()
                                : "");
          const CudaModel::StepTimes& w = warm_steps;
          if (w.replayed > 0)
            log_info("%s depth %d, warm-up run: a replay %.3f ms on the host, %.3f ms between its device events", mode.c_str(),
                     depth, mean_ms(w.replayed_s, w.replayed), mean_ms(w.replayed_gpu_s, w.replayed));
        }
        const KvFootprint fp = model->kv_footprint();
        // KV read per step at the middle of the run (it grows a token a step).
        const double mid_kv = fp.tokens > 0 ? static_cast<double>(fp.gpu_bytes) * (depth + o.n_gen / 2.0) / fp.tokens : 0;
        const double step = weights + mid_kv, per_tok = best / o.n_gen, gbs = step / per_tok / 1e9;
        std::printf("| cuda | %s | tg%d | %d | %.1f | %.3f | %.3f | %s | %s | %.0f | %.0f%% | — |\n", mode.c_str(), o.n_gen,
                    depth, 1.0 / per_tok, 1e3 * per_tok, 1e3 * best_attn / o.n_gen, human_bytes(mid_kv).c_str(),
                    human_bytes(step).c_str(), gbs, 100 * gbs / bw);
        std::fflush(stdout);
      }
    }
  }
  if (!o.batches.empty()) batch_decode_table(w, o, gemm, bw);
  if (o.max_ctx) max_context_search(w, o, gemm, bw);
  return 0;
}

}  // namespace longkv::cli

#include "device.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include "backend/cuda/cuda_backend.h"
#include "common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "kv/kv_mode.h"

namespace longkv::cli {

bool use_cuda_device(const std::string& device) {
  LONGKV_CHECK(device == "cpu" || device == "cuda", "--device must be cpu or cuda, not '%s'", device.c_str());
  if (device == "cpu") return false;
  std::string why;
  if (cuda_available(&why)) return true;
  log_warn("--device cuda: %s; running on the CPU", why.c_str());
  return false;
}

int bench_cuda(const ModelWeights& w, const CudaBenchOptions& o) {
  CudaGemm gemm;
  LONGKV_CHECK(parse_cuda_gemm(o.gemm, &gemm), "--cuda-gemm must be f16 or f32, not '%s'", o.gemm.c_str());
  const std::string mode = parse_kv_mode(o.kv_mode).to_string();
  const int max_depth = *std::max_element(o.depths.begin(), o.depths.end());
  CudaModelOptions mo;
  mo.kv_mode = mode;
  mo.max_tokens = max_depth + std::max(o.n_prompt, o.n_gen) + 1;
  mo.gemm = gemm;
  const double t0 = now_seconds();
  auto model = CudaModel::create(w, mo);
  log_info("uploaded %s of weights to the GPU in %.1f s", human_bytes(static_cast<double>(model->weight_bytes())).c_str(),
           now_seconds() - t0);
  const double bw = cuda_copy_bandwidth_gbs();
  std::printf("\n## longkv bench (CUDA)\n\nmodel: %s  \ndevice: %s  \nmeasured copy bandwidth: %.1f GB/s "
              "(device-to-device cudaMemcpy of 1 GiB, read + write)  \nprefill GEMM: %s  \ncontext fill: %s\n\n",
              describe_model(w).c_str(), cuda_device_description().c_str(), bw, cuda_gemm_name(gemm),
              o.synthetic ? "random keys/values written to the GPU cache (synthetic, no prefill)"
                          : "real prefill of random tokens");
  std::printf("| device | KV mode | test | depth | tok/s | ms/tok | attn ms/tok | KV read/step | bytes/step | GB/s | %% of copy bw |\n");
  std::printf("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const ModelConfig& c = w.cfg;
  std::mt19937 rng(42);
  std::vector<int32_t> toks(std::max(o.n_prompt, std::max(o.n_gen, 1)));
  for (auto& t : toks) t = static_cast<int32_t>(rng() % c.n_vocab);
  std::vector<float> logits(c.n_vocab);
  const double weights = static_cast<double>(model->weight_bytes());
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
      double best = 1e30;
      for (int r = 0; r < o.reps + 1; ++r) {  // the first run warms up (cuBLAS, allocations)
        fill();
        const double ts = now_seconds();
        model->forward(toks.data(), o.n_prompt, depth, logits.data(), false);
        if (r > 0 || o.reps == 0) best = std::min(best, now_seconds() - ts);
      }
      std::printf("| cuda | %s | pp%d | %d | %.1f | %.3f | — | — | — | — | — |\n", mode.c_str(), o.n_prompt, depth,
                  o.n_prompt / best, 1e3 * best / o.n_prompt);
      std::fflush(stdout);
    }
    if (o.n_gen > 0) {
      double best = 1e30, best_attn = 0;
      for (int r = 0; r < o.reps + 1; ++r) {
        fill();
        model->timings() = {};
        const double ts = now_seconds();
        for (int i = 0; i < o.n_gen; ++i) model->forward(&toks[i], 1, depth + i, logits.data(), false);
        const double dt = now_seconds() - ts;
        if (r > 0 && dt < best) {
          best = dt;
          best_attn = model->timings().attention_s;
        }
      }
      const KvFootprint fp = model->kv_footprint();
      // KV read per step at the middle of the run (it grows a token a step).
      const double mid_kv = fp.tokens > 0 ? static_cast<double>(fp.gpu_bytes) * (depth + o.n_gen / 2.0) / fp.tokens : 0;
      const double step = weights + mid_kv, per_tok = best / o.n_gen, gbs = step / per_tok / 1e9;
      std::printf("| cuda | %s | tg%d | %d | %.1f | %.3f | %.3f | %s | %s | %.0f | %.0f%% |\n", mode.c_str(), o.n_gen,
                  depth, 1.0 / per_tok, 1e3 * per_tok, 1e3 * best_attn / o.n_gen, human_bytes(mid_kv).c_str(),
                  human_bytes(step).c_str(), gbs, 100 * gbs / bw);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace longkv::cli

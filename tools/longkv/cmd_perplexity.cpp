// longkv perplexity: the evaluation protocol of ../shared/DESIGN.md.
//
// The text is tokenized once with BOS, cut into non-overlapping windows of
// ctx tokens; each window starts from empty caches with its first token
// replaced by BOS and is streamed in chunks (--batch), so attention of a
// chunk reads the cache's stored (possibly compressed) form of everything
// before it. Every position after the first is scored. Several --kv modes
// run side by side chunk by chunk; the first f16 mode (added if absent when
// more than one mode is given) is the base for KL divergence and top-1
// agreement, unless --kl-base names a file saved by --save-logits.
#include <cmath>
#include <cstdio>
#include <memory>

#include "common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "core/timer.h"
#include "formats/logprob_file.h"
#include "backend/cuda/cuda_backend.h"
#include "device.h"
#include "kv/kv_mode.h"
#include <nlohmann/json.hpp>
#include "model/llama_model.h"
#include "runtime/sampler.h"

namespace longkv::cli {
namespace {

struct PplOptions {
  ModelOptions model;
  std::string text_file;
  std::vector<std::string> kv_modes;
  int ctx = 512, chunks = 0, batch = 512;
  std::string save_logits, kl_base, save_nll;
  std::string csv, json;
  std::string device = "cpu", cuda_gemm = "f32";
};

struct ModeRun {
  std::string mode;
  std::vector<std::unique_ptr<KvCache>> caches;  // CPU
  std::unique_ptr<CudaModel> gpu;                // --device cuda: weights + this mode's caches on the GPU
  double nll_sum = 0, nll_sq = 0;
  int64_t scored = 0;
  double kl_sum = 0;
  int64_t kl_n = 0, top1_same = 0;
  double seconds = 0;
  KvFootprint fp;  // at the end of a full window
};

int cmd_perplexity(const PplOptions& o) {
  // The modes and the device before the model and the text: a mistake is
  // said at once, not after loading and tokenizing them.
  std::vector<std::string> modes;
  for (const auto& m : o.kv_modes.empty() ? std::vector<std::string>{"f16"} : o.kv_modes) {
    const KvMode km = parse_kv_mode(m);
    if (!km.warning().empty()) log_warn("%s", km.warning().c_str());
    modes.push_back(km.to_string());
  }
  warn_unchunked_modes(modes, o.batch, o.ctx);
  int base = -1;
  for (size_t i = 0; i < modes.size(); ++i)
    if (modes[i] == "f16") {
      base = static_cast<int>(i);
      break;
    }
  if (modes.size() > 1 && base < 0 && o.kl_base.empty()) {
    modes.insert(modes.begin(), "f16");
    base = 0;
  }
  const bool on_gpu = use_cuda_device(o.device);
  CudaGemm gemm = CudaGemm::f32;
  LONGKV_CHECK(parse_cuda_gemm(o.cuda_gemm, &gemm), "--cuda-gemm must be f16 or f32");
  check_text_windows_args(o.text_file, o.ctx);
  check_output_path(o.csv, "--csv");
  check_output_path(o.json, "--json");
  check_output_path(o.save_nll, "--save-nll");
  check_output_path(o.save_logits, "--save-logits");

  Runtime rt = load_runtime(o.model, true);
  const ModelConfig& cfg = rt.model.weights.cfg;
  ThreadPool pool(o.model.threads);
  LlamaModel model(rt.model.weights, pool);
  const int nv = cfg.n_vocab;

  const TextWindows text = load_text_windows(*rt.tokenizer, o.text_file, o.ctx, o.chunks, cfg.ctx_len);
  const std::vector<int32_t>& tokens = text.tokens;
  const int n_windows = text.count;

  std::vector<ModeRun> runs(modes.size());
  for (size_t i = 0; i < modes.size(); ++i) {
    runs[i].mode = modes[i];
    if (on_gpu) {
      CudaModelOptions co;
      co.kv_mode = modes[i];
      co.max_tokens = o.ctx;
      co.gemm = gemm;
      runs[i].gpu = CudaModel::create(rt.model.weights, co);
    } else {
      runs[i].caches = model.make_caches(modes[i], o.ctx);
    }
  }

  std::unique_ptr<LogProbReader> base_file;
  if (!o.kl_base.empty()) {
    base_file = std::make_unique<LogProbReader>(o.kl_base);
    LONGKV_CHECK(base_file->n_vocab() == nv && base_file->ctx() == o.ctx,
                 "%s: saved with vocabulary %d and ctx %d, this run has %d and %d", o.kl_base.c_str(),
                 base_file->n_vocab(), base_file->ctx(), nv, o.ctx);
    base = -1;
  }
  std::unique_ptr<LogProbWriter> save;
  if (!o.save_logits.empty()) save = std::make_unique<LogProbWriter>(o.save_logits, nv, o.ctx);
  // --save-nll: one CSV row per scored token, each mode's NLL (and KL to
  // the base where there is one), for per-token comparisons of modes.
  std::unique_ptr<FILE, int (*)(FILE*)> nll_out(nullptr, std::fclose);
  if (!o.save_nll.empty()) {
    nll_out.reset(std::fopen(o.save_nll.c_str(), "w"));
    LONGKV_CHECK(nll_out != nullptr, "%s: cannot create", o.save_nll.c_str());
    std::fprintf(nll_out.get(), "window,pos,token");
    for (const auto& m : modes) std::fprintf(nll_out.get(), ",nll:%s", m.c_str());
    if (base >= 0 || !o.kl_base.empty())
      for (const auto& m : modes) std::fprintf(nll_out.get(), ",kl:%s", m.c_str());
    std::fputc('\n', nll_out.get());
  }
  std::vector<double> row_nll(modes.size()), row_kl(modes.size());

  log_info("model: %s", describe_model(rt.model.weights).c_str());
  std::string mode_list;
  for (auto& m : modes) mode_list += (mode_list.empty() ? "" : ", ") + m;
  log_info("perplexity: %d windows of %d tokens, batch %d, threads %d, kv modes: %s", n_windows, o.ctx, o.batch,
           pool.size(), mode_list.c_str());

  const int batch = std::max(1, std::min(o.batch, o.ctx));
  std::vector<std::vector<float>> logits(runs.size(), std::vector<float>(static_cast<size_t>(batch) * nv));
  std::vector<float> lp_base(nv), lp(nv);
  Progress progress("perplexity", static_cast<int64_t>(n_windows) * o.ctx);

  for (int w = 0; w < n_windows; ++w) {
    const std::vector<int32_t> win = text.window(w, o.ctx, rt.tokenizer->bos());
    for (auto& r : runs)
      for (auto& c : r.caches) c->clear();
    for (auto& r : runs)
      if (r.gpu) r.gpu->clear();
    for (int p = 0; p < o.ctx; p += batch) {
      const int n = std::min(batch, o.ctx - p);
      for (size_t m = 0; m < runs.size(); ++m) {
        const double t0 = now_seconds();
        if (runs[m].gpu) runs[m].gpu->forward(win.data() + p, n, p, logits[m].data(), true);
        else model.forward(win.data() + p, n, p, runs[m].caches, logits[m].data(), true);
        runs[m].seconds += now_seconds() - t0;
      }
      // Row i of the chunk predicts token p + i + 1.
      for (int i = 0; i < n; ++i) {
        const int target_pos = p + i + 1;
        if (target_pos >= o.ctx) break;
        const int32_t target = win[target_pos];
        bool have_base = false;
        if (base_file) {
          int32_t t_saved;
          LONGKV_CHECK(base_file->next(lp_base.data(), &t_saved), "%s: ends before this run (fewer positions)",
                       o.kl_base.c_str());
          LONGKV_CHECK(t_saved == target, "%s: scored a different text (token %d vs %d)", o.kl_base.c_str(),
                       t_saved, target);
          have_base = true;
        } else if (base >= 0) {
          log_softmax(&logits[base][static_cast<size_t>(i) * nv], nv, lp_base.data());
          have_base = true;
        }
        for (size_t m = 0; m < runs.size(); ++m) {
          const float* lg = &logits[m][static_cast<size_t>(i) * nv];
          log_softmax(lg, nv, lp.data());
          const double nll = -lp[target];
          row_nll[m] = nll;
          runs[m].nll_sum += nll;
          runs[m].nll_sq += nll * nll;
          ++runs[m].scored;
          if (save && m == 0) save->add(lg, target);
          if (have_base) {
            double kl = 0;
            for (int v = 0; v < nv; ++v) kl += std::exp(static_cast<double>(lp_base[v])) * (lp_base[v] - lp[v]);
            runs[m].kl_sum += kl;
            row_kl[m] = kl;
            ++runs[m].kl_n;
            runs[m].top1_same += argmax(lp_base.data(), nv) == argmax(lp.data(), nv);
          }
        }
        if (nll_out) {
          std::fprintf(nll_out.get(), "%d,%d,%d", w, target_pos, target);
          for (double v : row_nll) std::fprintf(nll_out.get(), ",%.6g", v);
          if (have_base)
            for (double v : row_kl) std::fprintf(nll_out.get(), ",%.6g", v);
          std::fputc('\n', nll_out.get());
        }
      }
      const ModeRun& r0 = runs[0];
      progress.update(static_cast<int64_t>(w) * o.ctx + p + n,
                      strprintf("ppl(%s) %.4f", r0.mode.c_str(), std::exp(r0.nll_sum / std::max<int64_t>(1, r0.scored))));
    }
    for (auto& r : runs) r.fp = r.gpu ? r.gpu->kv_footprint() : total_footprint(r.caches);
  }
  progress.finish();

  const double base_ppl = base >= 0 ? std::exp(runs[base].nll_sum / runs[base].scored) : 0.0;
  struct Row {
    std::string mode;
    double k_bits, v_bits, kv_mib, ppl, err, ratio, kld, top1, tok_s;
    int64_t scored;
    bool has_ratio, has_kl;
  };
  std::vector<Row> rows;
  for (const auto& r : runs) {
    const double mean = r.nll_sum / r.scored;
    const double var = std::max(0.0, r.nll_sq / r.scored - mean * mean);
    Row row{r.mode, r.fp.k_bits, r.fp.v_bits, r.fp.bytes() / 1048576.0, std::exp(mean), 0, 0, 0, 0,
            r.scored / r.seconds, r.scored, base_ppl > 0, r.kl_n > 0};
    row.err = row.ppl * std::sqrt(var / r.scored);
    row.ratio = base_ppl > 0 ? row.ppl / base_ppl : 0;
    row.kld = r.kl_n ? r.kl_sum / r.kl_n : 0;
    row.top1 = r.kl_n ? 100.0 * r.top1_same / r.kl_n : 0;
    rows.push_back(row);
  }

  std::printf("\n## Perplexity\n\n");
  const std::string where =
      on_gpu ? strprintf("device cuda (%s GEMM for prefill)", cuda_gemm_name(gemm)) : strprintf("threads %d", pool.size());
  std::printf("model: %s  \ntext: %s (%zu tokens), ctx %d, %d windows, batch %d, %s%s\n\n",
              describe_model(rt.model.weights).c_str(), o.text_file.c_str(), tokens.size(), o.ctx, n_windows, batch,
              where.c_str(), o.kl_base.empty() ? "" : (", KL base " + o.kl_base).c_str());
  std::printf("| KV mode | K bits/elem | V bits/elem | KV MiB at ctx | ppl | ± | ppl ÷ f16 | mean KLD | top-1 agree | tokens scored | tok/s |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rows) {
    const std::string ratio = r.has_ratio ? strprintf("%.4f", r.ratio) : "—";
    const std::string kld = r.has_kl ? strprintf("%.6f", r.kld) : "—";
    const std::string top1 = r.has_kl ? strprintf("%.2f%%", r.top1) : "—";
    std::printf("| %s | %.2f | %.2f | %.2f | %.4f | %.4f | %s | %s | %s | %lld | %.1f |\n", r.mode.c_str(), r.k_bits,
                r.v_bits, r.kv_mib, r.ppl, r.err, ratio.c_str(), kld.c_str(), top1.c_str(),
                static_cast<long long>(r.scored), r.tok_s);
  }
  if (!o.csv.empty()) {
    FILE* f = std::fopen(o.csv.c_str(), "w");
    LONGKV_CHECK(f, "%s: cannot create", o.csv.c_str());
    std::fprintf(f, "mode,k_bits,v_bits,kv_mib,ppl,ppl_stderr,ppl_ratio,mean_kld,top1_agree,tokens_scored,tok_s\n");
    for (const auto& r : rows)
      std::fprintf(f, "%s,%.4f,%.4f,%.4f,%.6f,%.6f,%s,%s,%s,%lld,%.2f\n", r.mode.c_str(), r.k_bits, r.v_bits, r.kv_mib,
                   r.ppl, r.err, r.has_ratio ? strprintf("%.6f", r.ratio).c_str() : "",
                   r.has_kl ? strprintf("%.8f", r.kld).c_str() : "", r.has_kl ? strprintf("%.4f", r.top1).c_str() : "",
                   static_cast<long long>(r.scored), r.tok_s);
    std::fclose(f);
  }
  if (!o.json.empty()) {
    nlohmann::json j = windows_json(rt.model.weights, o.text_file, o.ctx, n_windows, batch);
    j["threads"] = pool.size();
    for (const auto& r : rows) {
      nlohmann::json m = {{"mode", r.mode},       {"k_bits", r.k_bits}, {"v_bits", r.v_bits},
                          {"kv_mib", r.kv_mib},   {"ppl", r.ppl},       {"ppl_stderr", r.err},
                          {"tokens_scored", r.scored}, {"tok_s", r.tok_s}};
      if (r.has_ratio) m["ppl_ratio"] = r.ratio;
      if (r.has_kl) {
        m["mean_kld"] = r.kld;
        m["top1_agree"] = r.top1 / 100.0;
      }
      j["modes"].push_back(m);
    }
    write_json_file(o.json, j);
  }
  return 0;
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto o = std::make_shared<PplOptions>();
  CLI::App* sub = app.add_subcommand("perplexity", "Perplexity of a text file (DESIGN.md protocol), KV modes side by side");
  add_model_options(sub, o->model);
  sub->add_option("-f,--file", o->text_file, "Text file to score")->required();
  sub->add_option("-c,--ctx", o->ctx, "Window size in tokens")->capture_default_str()->check(whole_at_least(1));
  sub->add_option("--chunks", o->chunks, "Score only the first K windows (0: all)")->capture_default_str()->check(
      whole_at_least(0));
  sub->add_option("-b,--batch", o->batch, "Tokens streamed per forward call")->capture_default_str()->check(
      whole_at_least(1));
  sub->add_option("--kv", o->kv_modes, std::string("KV cache mode(s), repeated or comma-separated, compared side by side (default f16); each ") + kKvModeGrammar)->delimiter(',');
  sub->add_option("--save-logits", o->save_logits, "Save the first mode's log-probabilities to FILE");
  sub->add_option("--kl-base", o->kl_base, "Compare against log-probabilities saved by --save-logits");
  sub->add_option("--save-nll", o->save_nll,
                  "Write every scored token's NLL per mode (and KL to the base) to FILE as CSV");
  sub->add_option("--csv", o->csv, "Also write the table as CSV to FILE");
  sub->add_option("--device", o->device, "cpu or cuda (falls back to the CPU, saying why, without a GPU)")
      ->capture_default_str();
  sub->add_option("--cuda-gemm", o->cuda_gemm, "Prefill products on the GPU: f32 (CPU arithmetic) or f16 (tensor cores)")
      ->capture_default_str();
  sub->add_option("--json", o->json, "Also write the results as JSON to FILE");
  sub->callback([o] { g_exit_code = cmd_perplexity(*o); });
}

}  // namespace longkv::cli

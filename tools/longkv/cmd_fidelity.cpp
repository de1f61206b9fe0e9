// longkv fidelity: attention fidelity (../shared/DESIGN.md, evaluation
// protocol) -- the relative error of each KV mode's attention outputs against
// dense attention, per layer.
//
// The text is windowed and streamed as `perplexity` does it (BOS once,
// non-overlapping windows of ctx tokens, each from empty caches with its
// first token replaced by BOS, chunks of --batch). The model runs on a dense
// reference cache (--ref, f32 by default); every layer's reference also
// hands its appends and queries to one cache per --kv mode and compares
// their outputs with its own (kv/shadow_cache.h). Since the model only sees
// the reference's outputs, a mode's error at a layer is its own, not one
// carried up from the layers below. CPU only.
#include <cstdio>
#include <memory>

#include "common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "core/timer.h"
#include "kv/kv_mode.h"
#include "kv/shadow_cache.h"
#include "model/llama_model.h"

namespace longkv::cli {
namespace {

struct FidelityOptions {
  ModelOptions model;
  std::string text_file;
  std::vector<std::string> kv_modes;
  std::string reference = "f32";
  int ctx = 1024, chunks = 4, batch = 512;
  std::string json;
};

int cmd_fidelity(const FidelityOptions& o) {
  // The modes first: a misspelled one is refused before the model loads.
  const std::string reference = parse_kv_mode(o.reference).to_string();
  LONGKV_CHECK(reference == "f32" || reference == "f16", "--ref must be a dense mode (f32 or f16), not %s",
               o.reference.c_str());
  std::vector<std::string> modes;
  for (const auto& m : o.kv_modes) {
    const KvMode km = parse_kv_mode(m);
    if (!km.warning().empty()) log_warn("%s", km.warning().c_str());
    modes.push_back(km.to_string());
  }
  warn_unchunked_modes(modes, o.batch, o.ctx);
  check_text_windows_args(o.text_file, o.ctx);
  check_output_path(o.json, "--json");

  Runtime rt = load_runtime(o.model, true);
  const ModelConfig& cfg = rt.model.weights.cfg;
  ThreadPool pool(o.model.threads);
  LlamaModel model(rt.model.weights, pool);

  const TextWindows text = load_text_windows(*rt.tokenizer, o.text_file, o.ctx, o.chunks, cfg.ctx_len);
  const int n_windows = text.count;

  // One ShadowCache a layer: the reference, and a cache per mode beside it.
  const KvShape shape = model.kv_shape(o.ctx);
  std::vector<std::unique_ptr<KvCache>> caches;
  std::vector<ShadowCache*> shadows;
  for (int l = 0; l < cfg.n_layers; ++l) {
    std::vector<std::unique_ptr<KvCache>> per_mode;
    for (const auto& m : modes) per_mode.push_back(make_kv_cache(m, shape, pool));
    auto c = std::make_unique<ShadowCache>(make_kv_cache(reference, shape, pool), std::move(per_mode));
    shadows.push_back(c.get());
    caches.push_back(std::move(c));
  }

  std::string mode_list;
  for (const auto& m : modes) mode_list += (mode_list.empty() ? "" : ", ") + m;
  log_info("model: %s", describe_model(rt.model.weights).c_str());
  const int batch = std::max(1, std::min(o.batch, o.ctx));
  log_info("fidelity: %d windows of %d tokens, batch %d, threads %d, reference %s, kv modes: %s", n_windows, o.ctx,
           batch, pool.size(), reference.c_str(), mode_list.c_str());
  Progress progress("fidelity", static_cast<int64_t>(n_windows) * o.ctx);
  const double t0 = now_seconds();
  std::vector<KvFootprint> fp(modes.size());
  for (int w = 0; w < n_windows; ++w) {
    const std::vector<int32_t> win = text.window(w, o.ctx, rt.tokenizer->bos());
    for (auto& c : caches) c->clear();
    for (int p = 0; p < o.ctx; p += batch) {
      const int n = std::min(batch, o.ctx - p);
      model.forward(win.data() + p, n, p, caches, nullptr, false);
      progress.update(static_cast<int64_t>(w) * o.ctx + p + n);
    }
    for (size_t m = 0; m < modes.size(); ++m) {  // at the end of a full window, as perplexity reports it
      fp[m] = KvFootprint{};
      for (const ShadowCache* s : shadows) fp[m].add_layer(s->shadow(m).footprint());
    }
  }
  progress.finish();

  // Per mode: each layer's error, and all layers' sums together.
  std::vector<AttnError> all(modes.size());
  for (const ShadowCache* s : shadows)
    for (size_t m = 0; m < modes.size(); ++m) all[m].add(s->errors()[m]);

  std::printf("\n## Attention fidelity\n\n");
  std::printf("model: %s  \ntext: %s (%zu tokens), ctx %d, %d windows, batch %d, threads %d, %.1f s  \n",
              describe_model(rt.model.weights).c_str(), o.text_file.c_str(), text.tokens.size(), o.ctx, n_windows, batch,
              pool.size(), now_seconds() - t0);
  std::printf("relative RMS error of each layer's attention outputs against the %s cache's, every query row and head "
              "of every chunk; the model runs on the %s cache, so each layer's inputs are exact\n\n",
              reference.c_str(), reference.c_str());
  std::printf("| layer |");
  for (const auto& m : modes) std::printf(" %s |", m.c_str());
  std::printf("\n|---:|");
  for (size_t m = 0; m < modes.size(); ++m) std::printf("---:|");
  std::printf("\n");
  for (int l = 0; l < cfg.n_layers; ++l) {
    std::printf("| %d |", l);
    for (size_t m = 0; m < modes.size(); ++m) std::printf(" %.3e |", shadows[l]->errors()[m].relative());
    std::printf("\n");
  }
  std::printf("| all |");
  for (size_t m = 0; m < modes.size(); ++m) std::printf(" **%.3e** |", all[m].relative());
  std::printf("\n| K / V bits/elem |");
  for (size_t m = 0; m < modes.size(); ++m) std::printf(" %.2f / %.2f |", fp[m].k_bits, fp[m].v_bits);
  std::printf("\n");

  if (!o.json.empty()) {
    nlohmann::json j = windows_json(rt.model.weights, o.text_file, o.ctx, n_windows, batch);
    j["reference"] = reference;
    for (size_t m = 0; m < modes.size(); ++m) {
      nlohmann::json layers = nlohmann::json::array();
      for (const ShadowCache* s : shadows) layers.push_back(s->errors()[m].relative());
      j["modes"].push_back({{"mode", modes[m]},
                            {"k_bits", fp[m].k_bits},
                            {"v_bits", fp[m].v_bits},
                            {"relative_error", all[m].relative()},
                            {"layers", layers},
                            {"query_rows", shadows[0]->errors()[m].rows}});  // a layer's
    }
    write_json_file(o.json, j);
  }
  return 0;
}

}  // namespace

void register_fidelity(CLI::App& app) {
  auto o = std::make_shared<FidelityOptions>();
  CLI::App* sub = app.add_subcommand(
      "fidelity", "Attention fidelity: each KV mode's attention error against dense attention, per layer (CPU)");
  add_model_options(sub, o->model);
  sub->add_option("-f,--file", o->text_file, "Text file to stream through the model")->required();
  sub->add_option("--kv", o->kv_modes, std::string("KV cache mode(s) to measure, repeated or comma-separated; each ") +
                                           kKvModeGrammar)
      ->delimiter(',')
      ->required();
  sub->add_option("--ref", o->reference, "The dense cache the model runs on and the modes are measured against: f32 "
                                         "or f16")
      ->capture_default_str();
  sub->add_option("-c,--ctx", o->ctx, "Window size in tokens")->capture_default_str()->check(whole_at_least(2));
  sub->add_option("--chunks", o->chunks, "Measure only the first K windows (0: all)")->capture_default_str()->check(
      whole_at_least(0));
  sub->add_option("-b,--batch", o->batch, "Tokens streamed per forward call")->capture_default_str()->check(
      whole_at_least(1));
  sub->add_option("--json", o->json, "Also write the results as JSON to FILE");
  sub->callback([o] { g_exit_code = cmd_fidelity(*o); });
}

}  // namespace longkv::cli

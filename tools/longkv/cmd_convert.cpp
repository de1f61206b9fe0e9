// longkv convert: llama2.c checkpoints and Hugging Face safetensors to GGUF.
#include <cstdio>

#include "common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"

namespace longkv::cli {
namespace {

struct ConvertOptions {
  ModelOptions model;
  std::string out, type;
};

int cmd_convert(const ConvertOptions& o) {
  std::optional<WeightMix> out_mix;  // checked before a model of many GB is loaded
  if (!o.type.empty()) {
    WeightMix m;
    LONGKV_CHECK(parse_weight_mix(o.type, &m), "unknown weight type '%s' (%s)", o.type.c_str(),
                 weight_mix_names().c_str());
    out_mix = m;
  }
  Runtime rt = load_runtime(o.model, false);
  LONGKV_CHECK(rt.tokenizer, "%s carries no vocabulary: pass --tokenizer FILE so the GGUF is self-contained",
               o.model.model.c_str());
  log_info("model: %s", describe_model(rt.model.weights).c_str());
  // Quantizing is the long part (the K-quants' searched fits take ~30 ns a
  // weight on one core): rows on every thread, progress by weights.
  ThreadPool pool(o.model.threads);
  log_info("writing %s: matrices %s (threads: %d)", o.out.c_str(), out_mix ? out_mix->name.c_str() : "as loaded",
           pool.size());
  std::optional<Progress> progress;
  GgufSaveWork work;
  work.pool = &pool;
  work.progress = [&](int64_t done, int64_t total) {
    if (!progress) progress.emplace("converting (millions of weights)", (total + 999999) / 1000000, true);
    progress->update((done + 999999) / 1000000);
  };
  save_model_gguf(rt.model.weights, rt.tokenizer->vocab(), o.out, out_mix, work);
  if (progress) progress->finish();
  log_info("wrote %s", o.out.c_str());
  return 0;
}

}  // namespace

void register_convert(CLI::App& app) {
  auto o = std::make_shared<ConvertOptions>();
  CLI::App* sub = app.add_subcommand("convert", "Convert a llama2.c or Hugging Face model to GGUF");
  add_model_options(sub, o->model);
  sub->add_option("-o,--output", o->out, "Output GGUF file")->required();
  sub->add_option("--type", o->type,
                  "Quantize matrices to this type (default: keep): " + weight_mix_names() +
                      " (the last three: llama.cpp's layouts of those names; Q4_K_M: Q6_K for the output and half "
                      "the layers' attn_v and ffn_down)");
  sub->callback([o] { g_exit_code = cmd_convert(*o); });
}

}  // namespace longkv::cli

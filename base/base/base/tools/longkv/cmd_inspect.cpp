// longkv inspect: what is in a model file, and what its KV cache costs.
#include <cstdio>

#include "common.h"
#include "core/error.h"
#include "formats/gguf.h"
#include "kv/kv_cache.h"
#include "kv/kv_mode.h"

namespace longkv::cli {
namespace {

struct InspectOptions {
  ModelOptions model;
  int ctx = 0;
  std::vector<std::string> kv_modes{"f32", "f16"};
  bool no_metadata = false, no_tensors = false;
};

std::string value_to_string(const GgufValue& v, int depth = 0) {
  switch (v.type) {
    case GgufType::STRING: {
      std::string s = v.s.size() > 80 ? v.s.substr(0, 77) + "..." : v.s;
      for (auto& c : s)
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
      return "\"" + s + "\"";
    }
    case GgufType::ARRAY: {
      std::string s = strprintf("[%s x %zu]", gguf_type_name(v.elem_type), v.arr.size());
      if (depth == 0 && !v.arr.empty()) {
        s += " ";
        for (size_t i = 0; i < std::min<size_t>(v.arr.size(), 5); ++i)
          s += (i ? ", " : "") + value_to_string(v.arr[i], depth + 1);
        if (v.arr.size() > 5) s += ", ...";
      }
      return s;
    }
    case GgufType::F32:
    case GgufType::F64: return strprintf("%g", v.f);
    case GgufType::BOOL: return v.u ? "true" : "false";
    default: return v.is_integer() ? (v.type == GgufType::I8 || v.type == GgufType::I16 || v.type == GgufType::I32 ||
                                              v.type == GgufType::I64
                                          ? strprintf("%lld", static_cast<long long>(v.i))
                                          : strprintf("%llu", static_cast<unsigned long long>(v.u)))
                                    : "?";
  }
}

int cmd_inspect(const InspectOptions& o) {
  FILE* f = std::fopen(o.model.model.c_str(), "rb");
  char magic[4] = {};
  const bool gguf = f && std::fread(magic, 1, 4, f) == 4 && std::string(magic, 4) == "GGUF";
  if (f) std::fclose(f);
  if (gguf) {
    auto g = GgufFile::open(o.model.model);
    std::printf("## %s\n\nGGUF v%u, alignment %u, %zu metadata keys, %zu tensors\n\n", o.model.model.c_str(),
                g->version(), g->alignment(), g->metadata().size(), g->tensors().size());
    if (!o.no_metadata) {
      std::printf("| key | value |\n|---|---|\n");
      for (const auto& [k, v] : g->metadata()) std::printf("| %s | %s |\n", k.c_str(), value_to_string(v).c_str());
      std::printf("\n");
    }
    if (!o.no_tensors) {
      std::printf("| tensor | type | shape (ne) | bytes |\n|---|---|---|---:|\n");
      for (const auto& t : g->tensors()) {
        std::string shape;
        for (size_t i = 0; i < t.ne.size(); ++i) shape += (i ? " x " : "") + std::to_string(t.ne[i]);
        std::printf("| %s | %s | %s | %llu |\n", t.name.c_str(), ggml_type_name(t.type), shape.c_str(),
                    static_cast<unsigned long long>(t.nbytes));
      }
      std::printf("\n");
    }
  }
  LoadedModel lm = load_model(o.model.model);
  const ModelConfig& c = lm.weights.cfg;
  std::printf("model: %s\n\n", describe_model(lm.weights).c_str());
  const int ctx = o.ctx > 0 ? o.ctx : c.ctx_len;
  KvShape shape;
  shape.n_heads = c.n_heads;
  shape.n_kv_heads = c.n_kv_heads;
  shape.head_dim = c.head_dim;
  shape.max_tokens = ctx;
  std::printf("| KV mode | bytes/token (all %d layers) | at ctx %d |\n|---|---:|---:|\n", c.n_layers, ctx);
  for (const auto& m : o.kv_modes) {
    const double bpt = kv_mode_bytes_per_token(m, shape) * c.n_layers;
    std::printf("| %s | %.0f | %s |\n", m.c_str(), bpt, human_bytes(bpt * ctx).c_str());
  }
  return 0;
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand("inspect", "Show a model's metadata, tensors and KV-cache cost");
  add_model_options(sub, o->model);
  sub->add_option("-c,--ctx", o->ctx, "Context for the KV cost (default: the model's)")->check(whole_at_least(0));
  sub->add_option("--kv", o->kv_modes, std::string("KV modes to cost, comma-separated, each ") + kKvModeGrammar)->delimiter(',')->capture_default_str();
  sub->add_flag("--no-metadata", o->no_metadata, "Do not list metadata");
  sub->add_flag("--no-tensors", o->no_tensors, "Do not list tensors");
  sub->callback([o] { g_exit_code = cmd_inspect(*o); });
}

}  // namespace longkv::cli

#include "common.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "core/timer.h"
#include "formats/gguf.h"
#include "kv/kv_mode.h"

namespace longkv::cli {

int g_exit_code = 0;

CLI::Validator whole_at_least(int lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (s.empty() || *end != '\0' || errno == ERANGE || v < lo || v > INT_MAX)
          return "needs a whole number from " + std::to_string(lo) + " to " + std::to_string(INT_MAX) + " (got '" + s +
                 "')";
        return std::string();
      },
      "INT>=" + std::to_string(lo));
}

CLI::Validator number_in(double lo, double hi, bool lo_open) {
  const std::string range = std::isinf(hi) ? strprintf("%s %g", lo_open ? ">" : ">=", lo)
                                           : strprintf("in %s%g, %g]", lo_open ? "(" : "[", lo, hi);
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (s.empty() || *end != '\0' || !std::isfinite(v) || v < lo || (lo_open && v == lo) || v > hi)
          return "needs a number " + range + " (got '" + s + "')";
        return std::string();
      },
      "NUM " + range);
}

void add_model_options(CLI::App* app, ModelOptions& o, bool model_required) {
  auto* m = app->add_option("-m,--model", o.model,
                            "Model: GGUF file, llama2.c checkpoint, or Hugging Face directory (config.json + "
                            "*.safetensors)");
  if (model_required) m->required();
  app->add_option("--tokenizer", o.tokenizer,
                  "Tokenizer: llama2.c tokenizer.bin, or a GGUF whose vocabulary to use (default: the model's)");
  app->add_option("-t,--threads", o.threads, "Threads (default: all cores)")->check(whole_at_least(0));
}

static bool is_gguf_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  char magic[4] = {};
  const bool ok = std::fread(magic, 1, 4, f) == 4 && magic[0] == 'G' && magic[1] == 'G' && magic[2] == 'U' &&
                  magic[3] == 'F';
  std::fclose(f);
  return ok;
}

Runtime load_runtime(const ModelOptions& o, bool need_tokenizer) {
  // More workers than hardware threads take turns on the cores, and every
  // step waits for the last of them (-t 999 on 2 cores: ~100x slower decode).
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw > 0 && o.threads > static_cast<int>(hw))
    log_warn("-t %d is more than this machine's %u hardware threads: the workers take turns on the cores, which "
             "slows every step (default: all cores)",
             o.threads, hw);
  Runtime rt;
  rt.model = load_model(o.model);
  std::optional<Vocab> vocab;
  if (!o.tokenizer.empty()) {
    if (is_gguf_file(o.tokenizer)) vocab = vocab_from_gguf(*GgufFile::open(o.tokenizer));
    else vocab = vocab_from_llama2c(o.tokenizer, rt.model.weights.cfg.n_vocab);
  } else {
    vocab = rt.model.vocab;
  }
  if (vocab) {
    LONGKV_CHECK(vocab->size() == rt.model.weights.cfg.n_vocab,
                 "tokenizer has %d tokens but the model has a vocabulary of %d", vocab->size(),
                 rt.model.weights.cfg.n_vocab);
    rt.tokenizer = std::make_unique<SpmTokenizer>(std::move(*vocab));
  } else if (need_tokenizer) {
    fail("%s carries no vocabulary: pass --tokenizer FILE", o.model.c_str());
  }
  return rt;
}

std::string describe_model(const ModelWeights& w) {
  const auto& c = w.cfg;
  const std::string scaling = c.rope_freq_factors.empty() ? "" : " scaled " + c.rope_scaling;
  return strprintf("%s (%s, %s): %d layers, dim %d, heads %d/%d x %d, ffn %d, vocab %d, ctx %d, rope %s base %g%s, "
                   "weights %s %s",
                   c.name.c_str(), c.arch.c_str(), w.source.c_str(), c.n_layers, c.dim, c.n_heads, c.n_kv_heads,
                   c.head_dim, c.ffn_dim, c.n_vocab, c.ctx_len, rope_style_name(c.rope), c.rope_base, scaling.c_str(),
                   w.weight_types().c_str(),
                   human_bytes(static_cast<double>(w.weight_bytes())).c_str());
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? strprintf("%.0f B", b) : strprintf("%.2f %s", b, units[u]);
}

Progress::Progress(std::string label, int64_t total, bool deferred)
    : label_(std::move(label)), total_(total), t0_(now_seconds()), tty_(::isatty(2)) {
  delay_s_ = deferred ? (tty_ ? 2.0 : 5.0) : 0.0;
}

void Progress::update(int64_t done, const std::string& extra) {
  const double now = now_seconds();
  if (now - t0_ < delay_s_) return;
  if (done < total_ && now - last_print_ < (tty_ ? 0.2 : 5.0)) return;
  last_print_ = now;
  printed_ = true;
  const double el = now - t0_;
  const double eta = done > 0 ? el * (total_ - done) / done : 0;
  const double frac = total_ > 0 ? static_cast<double>(done) / total_ : 1.0;
  if (tty_) {
    const int w = 30, fill = static_cast<int>(frac * w);
    std::fprintf(stderr, "\r%s [%.*s%*s] %3.0f%% %lld/%lld ETA %.0fs%s%s\033[K", label_.c_str(), fill,
                 "##############################", w - fill, "", frac * 100, static_cast<long long>(done),
                 static_cast<long long>(total_), eta, extra.empty() ? "" : " ", extra.c_str());
  } else {
    std::fprintf(stderr, "%s: %lld/%lld (%.0f%%), %.0fs elapsed, ETA %.0fs%s%s\n", label_.c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), frac * 100, el, eta,
                 extra.empty() ? "" : ", ", extra.c_str());
  }
}

void Progress::finish() {
  if (tty_ && printed_) std::fprintf(stderr, "\n");
}

std::vector<int32_t> TextWindows::window(int w, int ctx, int32_t bos) const {
  std::vector<int32_t> win(tokens.begin() + static_cast<int64_t>(w) * ctx,
                           tokens.begin() + static_cast<int64_t>(w + 1) * ctx);
  win[0] = bos;
  return win;
}

void warn_unchunked_modes(const std::vector<std::string>& modes, int batch, int ctx) {
  if (batch < ctx) return;
  std::string names;
  int n = 0;
  for (const auto& m : modes) {
    const KvMode km = parse_kv_mode(m);
    if (km.kind != KvKind::quant || !(km.defer || km.anchor_pct > 0)) continue;
    names += (names.empty() ? "" : ", ") + m;
    ++n;
  }
  if (n > 0)
    log_warn("--batch %d >= --ctx %d: each window is one chunk, which attends to its own tokens before any are "
             "compressed, so %s score%s as f16 does, to float rounding; a --ctx above --batch (docs/quality.md: "
             "--ctx 4096) streams the later chunks through the compressed cache",
             batch, ctx, names.c_str(), n == 1 ? "s" : "");
}

void check_text_windows_args(const std::string& path, int ctx) {
  LONGKV_CHECK(std::ifstream(path, std::ios::binary).good(), "%s: cannot open", path.c_str());
  LONGKV_CHECK(ctx >= 2, "--ctx must be at least 2");
}

TextWindows load_text_windows(const SpmTokenizer& tok, const std::string& path, int ctx, int chunks,
                              int trained_ctx) {
  check_text_windows_args(path, ctx);
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  TextWindows t;
  const double t0 = now_seconds();
  t.tokens = tok.encode(ss.str(), true);
  log_info("tokenized %s: %zu tokens in %.2f s", path.c_str(), t.tokens.size(), now_seconds() - t0);
  t.count = static_cast<int>(t.tokens.size() / ctx);
  LONGKV_CHECK(t.count > 0, "the text has %zu tokens, fewer than one window of %d", t.tokens.size(), ctx);
  if (chunks > 0 && chunks < t.count) t.count = chunks;
  if (ctx > trained_ctx) log_warn("--ctx %d exceeds the model's trained context of %d", ctx, trained_ctx);
  return t;
}

nlohmann::json windows_json(const ModelWeights& w, const std::string& text_file, int ctx, int windows, int batch) {
  return {{"model", describe_model(w)}, {"text", text_file}, {"ctx", ctx}, {"windows", windows}, {"batch", batch}};
}

void check_output_path(const std::string& path, const char* option) {
  if (path.empty()) return;
  namespace fs = std::filesystem;
  std::error_code ec;
  LONGKV_CHECK(!fs::is_directory(path, ec), "%s %s: is a folder, not a file", option, path.c_str());
  const fs::path dir = fs::path(path).parent_path();
  LONGKV_CHECK(dir.empty() || fs::is_directory(dir, ec), "%s %s: the folder %s does not exist", option, path.c_str(),
               dir.string().c_str());
}

void write_json_file(const std::string& path, const nlohmann::json& j) {
  FILE* f = std::fopen(path.c_str(), "w");
  LONGKV_CHECK(f, "%s: cannot create", path.c_str());
  const std::string text = j.dump(2);
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fputc('\n', f) != EOF;
  LONGKV_CHECK(std::fclose(f) == 0 && ok, "%s: cannot write", path.c_str());
}

}  // namespace longkv::cli

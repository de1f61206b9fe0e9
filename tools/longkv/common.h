// Pieces shared by the longkv subcommands: model + tokenizer loading, the
// configuration banner, human-readable sizes, progress lines.
#pragma once

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/model_loader.h"
#include "tokenizer/spm_tokenizer.h"

namespace longkv::cli {

struct ModelOptions {
  std::string model;
  std::string tokenizer;  // llama2.c tokenizer file, or a GGUF to take the vocabulary from
  int threads = 0;        // 0: all cores
};

// Option checks that say what the option takes. CLI11's PositiveNumber and
// NonNegativeNumber print their upper bound (DBL_MAX) in 300 digits and
// reject 0 as "not in range 0.000000 to ...".
CLI::Validator whole_at_least(int lo);  // an int >= lo
// A finite number in [lo, hi] ((lo, hi] with lo_open); hi = infinity for none.
CLI::Validator number_in(double lo, double hi = HUGE_VAL, bool lo_open = false);

// Adds -m/--model, --tokenizer, -t/--threads to a subcommand.
void add_model_options(CLI::App* app, ModelOptions& o, bool model_required = true);

struct Runtime {
  LoadedModel model;
  std::unique_ptr<SpmTokenizer> tokenizer;  // null if none available and not required
};

// Loads the model and a tokenizer (from --tokenizer or the model file).
Runtime load_runtime(const ModelOptions& o, bool need_tokenizer);

// One line describing the model for the stderr banner and table headers.
std::string describe_model(const ModelWeights& w);

std::string human_bytes(double bytes);  // "1.50 MiB"

// A text file tokenized once with BOS and cut into non-overlapping windows of
// ctx tokens (DESIGN.md's protocol: perplexity, fidelity). chunks > 0 keeps
// the first `chunks` windows; a ctx past the model's trained context warns.
struct TextWindows {
  std::vector<int32_t> tokens;
  int count = 0;  // windows used
  // Window w with its first token replaced by BOS.
  std::vector<int32_t> window(int w, int ctx, int32_t bos) const;
};
// Warns when --batch >= --ctx leaves quantized modes (spelled out) that cut
// their groups after a chunk's attention (cut=attend, anchored modes)
// unexercised: each window is then one chunk, which reads only its own
// tokens, exactly, so those modes score as f16 does.
void warn_unchunked_modes(const std::vector<std::string>& modes, int batch, int ctx);
// The text file's and --ctx's checks of load_text_windows, for a command to
// make before it loads the model (a mistake said at once).
void check_text_windows_args(const std::string& path, int ctx);
TextWindows load_text_windows(const SpmTokenizer& tok, const std::string& path, int ctx, int chunks,
                              int trained_ctx);

// The JSON record's opening fields of a run over text windows: model, text,
// ctx, windows, batch.
nlohmann::json windows_json(const ModelWeights& w, const std::string& text_file, int ctx, int windows, int batch);

// Writes j, indented, to path (an Error if it cannot).
void write_json_file(const std::string& path, const nlohmann::json& j);
// An output file a command writes at the end of its run (--json, --csv,
// --html, ...): its folder must exist and the path must not be a folder,
// checked before the run so that hours of work are not lost to a typo.
// Creates and truncates nothing. Empty: no file asked for.
void check_output_path(const std::string& path, const char* option);

// Progress on stderr: a bar with ETA on a terminal, plain lines otherwise.
// Deferred, it stays silent until the work has run 2 s (on a terminal) or
// 5 s, so that a short run (run's prompt of a few chunks) prints none.
class Progress {
 public:
  Progress(std::string label, int64_t total, bool deferred = false);
  void update(int64_t done, const std::string& extra = "");
  void finish();

 private:
  std::string label_;
  int64_t total_;
  double t0_, delay_s_;
  double last_print_ = 0;
  bool tty_, printed_ = false;
};

// Each subcommand registers itself; its callback stores the exit code here.
extern int g_exit_code;
void register_run(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_inspect(CLI::App& app);
void register_convert(CLI::App& app);
void register_bench(CLI::App& app);
void register_needle(CLI::App& app);
void register_fidelity(CLI::App& app);

}  // namespace longkv::cli

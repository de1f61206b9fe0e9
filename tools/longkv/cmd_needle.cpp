// longkv needle: pass-key retrieval and needle-in-a-haystack over a grid of
// prompt lengths x needle depths, several KV modes side by side on the very
// same prompts (DESIGN.md, "Retrieval"). Markdown tables on stdout, progress
// on stderr, optional per-trial JSON and an HTML heatmap report.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "core/timer.h"
#include "kv/kv_mode.h"
#include "runtime/needle_report.h"
#include "runtime/needle.h"
#include "runtime/sampler.h"
#include "runtime/session.h"

namespace longkv::cli {
namespace {

struct NeedleOptions {
  ModelOptions model;
  std::string task = "passkey", filler = "repeat", haystack, html, json;
  std::vector<int> lengths = {1024, 2048, 4096};
  std::vector<double> depths = {0, 0.25, 0.5, 0.75, 1};
  std::vector<std::string> kv_modes;
  int trials = 3, answer_tokens = 12, batch = 512;
  uint64_t seed = 1;
};

struct TrialRecord {
  std::string mode, task;
  int length = 0, prompt_tokens = 0, trial = 0, template_index = 0;
  double depth = 0, needle_depth = 0, seconds = 0;
  std::string key, city, answer;
  bool correct = false;
};

// Tallies of one (task, mode): [length][depth].
struct Grid {
  std::vector<std::vector<int>> correct, trials;
  double prefill_tokens = 0, prefill_seconds = 0;
  KvFootprint fp;
};

std::string default_haystack_dir() {
  const char* shared = std::getenv("LONGKV_SHARED");
  if (shared && *shared) return std::string(shared) + "/data/pg-essays";
  return "../shared/data/pg-essays";
}

std::string pct(int c, int n) { return n ? strprintf("%.1f", 100.0 * c / n) : std::string("—"); }

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// Greedy continuation of the prompt under one KV mode.
std::string generate_answer(LlamaModel& model, const SpmTokenizer& tok, const std::string& mode,
                            const NeedlePrompt& p, NeedleTask task, int answer_tokens, int batch, int n_vocab,
                            Grid& g) {
  Session session(model, mode, static_cast<int>(p.tokens.size()) + answer_tokens);
  const double t0 = now_seconds();
  const std::vector<float>* logits = &session.prefill(p.tokens, batch);
  g.prefill_seconds += now_seconds() - t0;
  g.prefill_tokens += static_cast<double>(p.tokens.size());
  std::string text;
  int32_t prev = p.tokens.back();
  for (int i = 0; i < answer_tokens; ++i) {
    const int32_t next = argmax(logits->data(), n_vocab);
    if (next == tok.eos()) break;
    text += tok.decode_token(prev, next);
    prev = next;
    // The pass-key verdict only reads the first number: stop once it ended.
    const std::string run = needle_first_digit_run(text);
    if (task == NeedleTask::passkey && !run.empty() && text.find(run) + run.size() < text.size()) break;
    if (i + 1 < answer_tokens) logits = &session.decode(next);
  }
  g.fp = session.footprint();
  return text;
}

void print_grid(const std::string& title, const Grid& g, const std::vector<int>& lengths,
                const std::vector<double>& depths) {
  std::printf("\n### %s\n\naccuracy %% (correct / trials); rows: prompt length in tokens, columns: needle depth\n\n",
              title.c_str());
  std::printf("| length |");
  for (double d : depths) std::printf(" %g%% |", 100.0 * d);
  std::printf(" mean |\n|---:|");
  for (size_t d = 0; d < depths.size(); ++d) std::printf("---:|");
  std::printf("---:|\n");
  std::vector<int> col_c(depths.size()), col_n(depths.size());
  for (size_t l = 0; l < lengths.size(); ++l) {
    int rc = 0, rn = 0;
    std::printf("| %d |", lengths[l]);
    for (size_t d = 0; d < depths.size(); ++d) {
      const int c = g.correct[l][d], n = g.trials[l][d];
      std::printf(" %s |", pct(c, n).c_str());
      rc += c, rn += n, col_c[d] += c, col_n[d] += n;
    }
    std::printf(" %s |\n", pct(rc, rn).c_str());
  }
  int tc = 0, tn = 0;
  std::printf("| mean |");
  for (size_t d = 0; d < depths.size(); ++d) {
    std::printf(" %s |", pct(col_c[d], col_n[d]).c_str());
    tc += col_c[d], tn += col_n[d];
  }
  std::printf(" **%s** |\n", pct(tc, tn).c_str());
}

void write_json(const std::string& path, const nlohmann::json& settings, const std::vector<TrialRecord>& recs) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : recs) {
    nlohmann::json j = {{"mode", r.mode},
                        {"task", r.task},
                        {"length", r.length},
                        {"prompt_tokens", r.prompt_tokens},
                        {"depth", r.depth},
                        {"needle_depth", r.needle_depth},
                        {"trial", r.trial},
                        {"template", r.template_index},
                        {"key", r.key},
                        {"answer", r.answer},
                        {"correct", r.correct},
                        {"seconds", r.seconds}};
    if (!r.city.empty()) j["city"] = r.city;
    arr.push_back(std::move(j));
  }
  // Generated text may cut a UTF-8 character short; replace rather than throw.
  const std::string s = nlohmann::json{{"settings", settings}, {"trials", arr}}.dump(
      1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::ofstream f(path, std::ios::binary);
  LONGKV_CHECK(f.good(), "%s: cannot create the JSON file", path.c_str());
  f << s << "\n";
  f.close();
  LONGKV_CHECK(f.good(), "%s: error writing the JSON file", path.c_str());
}

int cmd_needle(const NeedleOptions& o) {
  std::vector<NeedleTask> tasks;
  if (o.task == "both") tasks = {NeedleTask::passkey, NeedleTask::niah};
  else tasks = {parse_needle_task(o.task)};
  const NeedleFiller filler = parse_needle_filler(o.filler);
  LONGKV_CHECK(!o.lengths.empty() && !o.depths.empty(), "--lengths and --depths need at least one value each");
  for (double d : o.depths) LONGKV_CHECK(d >= 0.0 && d <= 1.0, "--depths: %g is outside [0, 1]", d);
  LONGKV_CHECK(o.trials >= 1, "--trials must be at least 1");
  check_output_path(o.html, "--html");
  check_output_path(o.json, "--json");
  const std::vector<std::string> modes = o.kv_modes.empty() ? std::vector<std::string>{"f16"} : o.kv_modes;
  std::vector<std::string> spelled;
  for (const auto& m : modes) spelled.push_back(parse_kv_mode(m).to_string());

  bool need_essays = filler == NeedleFiller::essays;
  for (NeedleTask t : tasks) need_essays |= t == NeedleTask::niah;
  const std::string hay_dir = o.haystack.empty() ? default_haystack_dir() : o.haystack;
  NeedleHaystack hay;
  if (need_essays) {
    log_info("haystack: %s", hay_dir.c_str());
    std::error_code ec;
    LONGKV_CHECK(!o.haystack.empty() || std::filesystem::is_directory(hay_dir, ec),
                 "%s: haystack directory not found (pass --haystack DIR, or set LONGKV_SHARED to the shared "
                 "assets directory)",
                 hay_dir.c_str());
    hay = load_needle_haystack(hay_dir);
  } else {
    log_info("haystack: not used (passkey with the repeat filler)");
  }

  Runtime rt = load_runtime(o.model, true);
  const ModelConfig& cfg = rt.model.weights.cfg;
  for (int len : o.lengths) {
    LONGKV_CHECK(len > 0, "--lengths: %d is not a positive token count", len);
    LONGKV_CHECK(len <= cfg.ctx_len, "--lengths: %d exceeds the model's context of %d tokens", len, cfg.ctx_len);
  }
  LONGKV_CHECK(o.answer_tokens >= 1 && o.answer_tokens < cfg.ctx_len, "--answer-tokens must be in [1, %d)",
               cfg.ctx_len);
  ThreadPool pool(o.model.threads);
  LlamaModel model(rt.model.weights, pool);
  // Fail on a mode the engine cannot build before any prompt is run.
  for (const auto& m : modes) model.make_caches(m, 16);

  const std::string model_desc = describe_model(rt.model.weights);
  std::string mode_list;
  for (size_t i = 0; i < modes.size(); ++i)
    mode_list += (i ? ", " : "") + modes[i] + (modes[i] != spelled[i] ? " = " + spelled[i] : "");
  std::string task_list;
  for (NeedleTask t : tasks) task_list += std::string(task_list.empty() ? "" : ", ") + needle_task_name(t);
  log_info("model: %s", model_desc.c_str());
  log_info("needle: tasks %s, %zu lengths x %zu depths x %d trials, kv modes: %s, threads %d", task_list.c_str(),
           o.lengths.size(), o.depths.size(), o.trials, mode_list.c_str(), pool.size());

  // A prompt of the model's full context would leave no room for the answer.
  std::vector<int> prompt_target(o.lengths.size());
  std::string clipped;
  for (size_t l = 0; l < o.lengths.size(); ++l) {
    prompt_target[l] = std::min(o.lengths[l], cfg.ctx_len - o.answer_tokens);
    if (prompt_target[l] != o.lengths[l])
      clipped += strprintf("%s%d -> %d", clipped.empty() ? "" : ", ", o.lengths[l], prompt_target[l]);
  }

  NeedlePromptBuilder builder(*rt.tokenizer, hay);
  std::map<std::pair<int, int>, Grid> grids;  // (task index, mode index)
  for (size_t t = 0; t < tasks.size(); ++t)
    for (size_t m = 0; m < modes.size(); ++m) {
      Grid& g = grids[{static_cast<int>(t), static_cast<int>(m)}];
      g.correct.assign(o.lengths.size(), std::vector<int>(o.depths.size(), 0));
      g.trials = g.correct;
    }
  std::vector<TrialRecord> records;

  int64_t total = 0;
  for (int pt : prompt_target) total += static_cast<int64_t>(pt) * o.depths.size() * o.trials * modes.size();
  total *= static_cast<int64_t>(tasks.size());
  Progress progress("needle", total);
  int64_t done = 0;
  int n_correct = 0, n_run = 0;
  const double t_start = now_seconds();

  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    const NeedleTask task = tasks[ti];
    for (size_t l = 0; l < o.lengths.size(); ++l)
      for (size_t d = 0; d < o.depths.size(); ++d)
        for (int trial = 0; trial < o.trials; ++trial) {
          NeedleSpec spec;
          spec.task = task;
          spec.filler = filler;
          spec.length = prompt_target[l];
          spec.depth = o.depths[d];
          spec.seed = needle_trial_seed(o.seed, task, o.lengths[l], o.depths[d], trial);
          const NeedlePrompt p = builder.build(spec);
          for (size_t m = 0; m < modes.size(); ++m) {
            Grid& g = grids[{static_cast<int>(ti), static_cast<int>(m)}];
            const double t0 = now_seconds();
            TrialRecord r;
            r.answer = generate_answer(model, *rt.tokenizer, modes[m], p, task, o.answer_tokens, o.batch,
                                       cfg.n_vocab, g);
            r.seconds = now_seconds() - t0;
            r.correct = needle_answer_correct(task, r.answer, p.key);
            r.mode = spelled[m];
            r.task = needle_task_name(task);
            r.length = o.lengths[l];
            r.prompt_tokens = static_cast<int>(p.tokens.size());
            r.depth = o.depths[d];
            r.needle_depth = p.actual_depth();
            r.trial = trial;
            r.template_index = p.template_index;
            r.key = p.key;
            r.city = p.city;
            g.correct[l][d] += r.correct;
            g.trials[l][d] += 1;
            n_correct += r.correct;
            ++n_run;
            records.push_back(std::move(r));
            done += prompt_target[l];
            progress.update(done, strprintf("%s len %d depth %g: %d/%d correct", needle_task_name(task),
                                            o.lengths[l], o.depths[d], n_correct, n_run));
          }
        }
  }
  progress.finish();
  const double wall = now_seconds() - t_start;
  log_info("needle: %d runs in %.1f s", n_run, wall);

  std::string templates;
  for (NeedleTask t : tasks) {
    const auto& ts = needle_templates(t);
    for (size_t i = 0; i < ts.size(); ++i)
      templates += strprintf("%s#%zu: \"%s\" / \"%s\"\n", needle_task_name(t), i, ts[i].needle, ts[i].question);
  }
  const std::string hay_desc =
      need_essays ? strprintf("%s (%zu essays)", hay_dir.c_str(), hay.texts.size()) : std::string("not used");
  std::string filler_desc;
  for (NeedleTask t : tasks)
    filler_desc += strprintf("%s%s (%s)", filler_desc.empty() ? "" : "; ",
                             t == NeedleTask::niah ? "essays" : needle_filler_name(filler), needle_task_name(t));

  std::printf("\n## Needle retrieval\n\n");
  std::printf("model: %s  \n", model_desc.c_str());
  std::printf("tasks: %s; filler: %s; haystack: %s  \n", task_list.c_str(), filler_desc.c_str(), hay_desc.c_str());
  std::printf("seed %llu, %d trials per cell, greedy answer of up to %d tokens, batch %d, threads %d  \n",
              static_cast<unsigned long long>(o.seed), o.trials, o.answer_tokens, o.batch, pool.size());
  std::printf("kv modes: %s  \n", mode_list.c_str());
  if (!clipped.empty())
    std::printf("prompt lengths shortened so the answer fits the %d-token context: %s  \n", cfg.ctx_len,
                clipped.c_str());
  std::printf("templates: %s\n", [&] {
    std::string s;
    for (NeedleTask t : tasks) s += strprintf("%s%zu %s", s.empty() ? "" : ", ", needle_templates(t).size(),
                                              needle_task_name(t));
    return s + " phrasings, one drawn per trial from the seed";
  }().c_str());

  for (size_t ti = 0; ti < tasks.size(); ++ti)
    for (size_t m = 0; m < modes.size(); ++m)
      print_grid(strprintf("%s — kv %s", needle_task_name(tasks[ti]), spelled[m].c_str()),
                 grids[{static_cast<int>(ti), static_cast<int>(m)}], o.lengths, o.depths);

  std::printf("\n### Summary\n\n| task | KV mode | K bits/elem | V bits/elem | accuracy %% | correct | prefill tok/s |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (size_t ti = 0; ti < tasks.size(); ++ti)
    for (size_t m = 0; m < modes.size(); ++m) {
      const Grid& g = grids[{static_cast<int>(ti), static_cast<int>(m)}];
      int c = 0, n = 0;
      for (size_t l = 0; l < o.lengths.size(); ++l)
        for (size_t d = 0; d < o.depths.size(); ++d) c += g.correct[l][d], n += g.trials[l][d];
      std::printf("| %s | %s | %.2f | %.2f | %s | %d/%d | %.1f |\n", needle_task_name(tasks[ti]),
                  spelled[m].c_str(), g.fp.k_bits, g.fp.v_bits, pct(c, n).c_str(), c, n,
                  g.prefill_seconds > 0 ? g.prefill_tokens / g.prefill_seconds : 0.0);
    }
  std::fflush(stdout);

  const std::string date = utc_now();
  if (!o.json.empty()) {
    nlohmann::json settings = {{"model", model_desc},   {"tasks", task_list},   {"filler", needle_filler_name(filler)},
                               {"haystack", hay_desc},  {"seed", o.seed},       {"trials", o.trials},
                               {"lengths", o.lengths},  {"depths", o.depths},   {"kv_modes", spelled},
                               {"answer_tokens", o.answer_tokens},              {"date", date}};
    write_json(o.json, settings, records);
    log_info("wrote %zu trial records to %s", records.size(), o.json.c_str());
  }
  if (!o.html.empty()) {
    NeedleReport rep;
    rep.title = "longkv needle: " + task_list;
    rep.settings = {{"model", model_desc},
                    {"kv modes", mode_list},
                    {"tasks", task_list},
                    {"filler", filler_desc},
                    {"haystack", hay_desc},
                    {"seed", std::to_string(o.seed)},
                    {"trials per cell", std::to_string(o.trials)},
                    {"answer", strprintf("greedy, up to %d tokens", o.answer_tokens)},
                    {"templates", templates},
                    {"date", date}};
    if (!clipped.empty()) rep.settings.push_back({"shortened prompts", clipped});
    for (size_t ti = 0; ti < tasks.size(); ++ti)
      for (size_t m = 0; m < modes.size(); ++m) {
        const Grid& g = grids[{static_cast<int>(ti), static_cast<int>(m)}];
        rep.heatmaps.push_back({needle_task_name(tasks[ti]), spelled[m], o.lengths, o.depths, g.correct, g.trials});
      }
    write_needle_report(o.html, rep);
    log_info("wrote the HTML report to %s", o.html.c_str());
  }
  return 0;
}

}  // namespace

void register_needle(CLI::App& app) {
  auto o = std::make_shared<NeedleOptions>();
  CLI::App* sub = app.add_subcommand(
      "needle", "Pass-key / needle-in-a-haystack retrieval over lengths x depths, KV modes side by side");
  add_model_options(sub, o->model);
  sub->add_option("--task", o->task, "passkey, niah or both")
      ->capture_default_str()
      ->check(CLI::IsMember({"passkey", "niah", "both"}));
  sub->add_option("--lengths", o->lengths, "Prompt lengths in tokens, BOS included (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--depths", o->depths, "Needle depths in [0, 1] (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--trials", o->trials, "Prompts per (length, depth) cell")->capture_default_str();
  sub->add_option("--seed", o->seed, "Seed of keys, cities, templates and essay choice")->capture_default_str();
  sub->add_option("--kv", o->kv_modes, std::string("KV cache mode(s), repeated or comma-separated, compared side by side (default f16); each ") + kKvModeGrammar)
      ->delimiter(',');
  sub->add_option("--filler", o->filler, "Pass-key filler: repeat (grass/sky/sun lines) or essays")
      ->capture_default_str()
      ->check(CLI::IsMember({"repeat", "essays"}));
  sub->add_option("--haystack", o->haystack,
                  "Directory of essay .txt files (default: $LONGKV_SHARED/data/pg-essays if set, else "
                  "../shared/data/pg-essays)");
  sub->add_option("--answer-tokens", o->answer_tokens, "Greedy answer budget in tokens")->capture_default_str();
  sub->add_option("-b,--batch", o->batch, "Prompt chunk size")->capture_default_str()->check(whole_at_least(1));
  sub->add_option("--html", o->html, "Write a self-contained HTML heatmap report to FILE");
  sub->add_option("--json", o->json, "Write every trial (mode, length, depth, key, answer, correct) to FILE");
  sub->callback([o] { g_exit_code = cmd_needle(*o); });
}

}  // namespace longkv::cli

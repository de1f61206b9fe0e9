// longkv run: generate text from a prompt, streaming to stdout; statistics
// (prompt and decode speed, KV-cache memory) go to stderr.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "backend/cuda/cuda_backend.h"
#include "common.h"
#include "device.h"
#include "core/error.h"
#include "core/log.h"
#include "core/thread_pool.h"
#include "core/timer.h"
#include "kv/kv_mode.h"
#include "runtime/sampler.h"
#include "runtime/session.h"

namespace longkv::cli {
namespace {

struct RunOptions {
  ModelOptions model;
  std::string prompt, prompt_file, prompts_file, kv = "f16", device = "cpu", cuda_gemm = "f16";
  int n_predict = 128, ctx = 0, batch = 512;
  bool ignore_eos = false;
  SamplerParams sampling;
};

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LONGKV_CHECK(f.good(), "%s: cannot open prompt file", path.c_str());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int cmd_run(const RunOptions& o) {
  const KvMode kv = parse_kv_mode(o.kv);  // validate before loading anything
  if (!kv.warning().empty()) log_warn("%s", kv.warning().c_str());
  const bool on_gpu = use_cuda_device(o.device);  // says why when it falls back to the CPU
  std::string text = o.prompt;
  if (!o.prompt_file.empty()) text = read_text_file(o.prompt_file);  // a missing file before the model loads
  Runtime rt = load_runtime(o.model, true);
  const ModelConfig& cfg = rt.model.weights.cfg;
  ThreadPool pool(o.model.threads);
  LlamaModel model(rt.model.weights, pool);

  std::vector<int32_t> tokens = rt.tokenizer->encode(text, true);
  if (tokens.empty()) tokens.push_back(rt.tokenizer->bos());

  const int ctx = o.ctx > 0 ? o.ctx : cfg.ctx_len;
  LONGKV_CHECK(static_cast<int>(tokens.size()) < ctx, "prompt has %zu tokens, which does not fit the context of %d",
               tokens.size(), ctx);
  const int room = ctx - static_cast<int>(tokens.size());
  int n_predict = o.n_predict;
  if (n_predict > room) {
    log_warn("only %d of the %d requested tokens fit the context of %d; generation will stop there", room,
             n_predict, ctx);
    n_predict = room;
  }
  const int max_tokens = static_cast<int>(tokens.size()) + n_predict;

  log_info("model: %s", describe_model(rt.model.weights).c_str());
  log_info("kv: %s, threads %d, prompt %zu tokens, generating %d, sampling %s", kv.to_string().c_str(), pool.size(),
           tokens.size(), n_predict, o.sampling.describe().c_str());

  // One of the two engines behind prefill/decode/footprint below.
  std::unique_ptr<Session> session;
  std::unique_ptr<CudaModel> gpu;
  if (on_gpu) {
    CudaModelOptions co;
    co.kv_mode = kv.to_string();
    co.max_tokens = max_tokens;
    LONGKV_CHECK(parse_cuda_gemm(o.cuda_gemm, &co.gemm), "--cuda-gemm must be f16 or f32");
    gpu = CudaModel::create(rt.model.weights, co);
    log_info("device: %s (weights %s on the GPU)", cuda_device_description().c_str(),
             human_bytes(static_cast<double>(gpu->weight_bytes())).c_str());
  } else {
    session = std::make_unique<Session>(model, o.kv, max_tokens);
  }
  // The last position's logits: a copy of the CPU session's, or the GPU
  // model's own pinned buffer (forward_view: no staged copy), which the
  // sampler may modify until the next step.
  std::vector<float> logits(cfg.n_vocab);
  int pos = 0;
  // A long prompt's prefill (minutes at hundreds of thousands of tokens)
  // shows its progress on stderr once it has run for 2 s on a terminal, 5 s
  // otherwise; a short one prints none.
  auto prefill = [&](const std::vector<int32_t>& toks) -> float* {
    Progress progress("prompt", static_cast<int64_t>(toks.size()), true);
    float* last = nullptr;
    if (!gpu) {
      logits = session->prefill(toks, o.batch, [&](int done, int) { progress.update(done); });
      last = logits.data();
    } else {
      for (size_t p = 0; p < toks.size(); p += o.batch) {
        const int n = static_cast<int>(std::min<size_t>(o.batch, toks.size() - p));
        last = gpu->forward_view(toks.data() + p, n, pos);
        pos += n;
        progress.update(static_cast<int64_t>(p) + n);
      }
    }
    progress.finish();
    return last;
  };
  auto decode = [&](int32_t tok) -> float* {
    if (!gpu) {
      logits = session->decode(tok);
      return logits.data();
    }
    return gpu->forward_view(&tok, 1, pos++);
  };

  Sampler sampler(o.sampling);
  std::vector<int32_t> history = tokens;

  const double t0 = now_seconds();
  float* cur = prefill(tokens);
  const double t_prompt = now_seconds() - t0;

  int32_t prev = tokens.back();
  int generated = 0;
  // Prints a generated token; false at the end of the text.
  auto emit = [&](int32_t next) {
    if (next == rt.tokenizer->eos() && !o.ignore_eos) return false;
    const std::string piece = rt.tokenizer->decode_token(prev, next);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    history.push_back(next);
    prev = next;
    ++generated;
    return true;
  };
  // Greedy on the GPU without a repetition penalty: the argmax on the
  // device, each token fed to the next step there (CudaModel::decode_greedy)
  // -- the same tokens as the host's argmax, without the logits' trip.
  // Sampling with a top-k cut on the GPU: the k candidates selected on the
  // device (CudaModel::forward_top), the draw on the host from them alone
  // -- the same tokens as from the whole row (Sampler::sample_top), without
  // the row's copy and sort.
  const SamplerParams& sp = o.sampling;
  const bool device_greedy = gpu && sp.temperature <= 0 && (sp.repeat_penalty == 1.0f || sp.repeat_last_n == 0) &&
                             cuda_tuning().greedy_device;
  const int device_top = gpu && cuda_tuning().sample_top_device ? sampler.top_only(cfg.n_vocab, kMaxDeviceTopK) : 0;
  const double t1 = now_seconds();
  if (device_greedy) {
    if (n_predict > 0 && emit(sampler.sample(cur, cfg.n_vocab, history)) && n_predict > 1)
      gpu->decode_greedy(prev, pos, n_predict - 1, emit);
  } else if (device_top > 0) {
    for (int i = 0; i < n_predict; ++i) {
      const int32_t next = i == 0 ? sampler.sample(cur, cfg.n_vocab, history)
                                  : sampler.sample_top({gpu->forward_top(&prev, 1, pos++, device_top),
                                                        static_cast<size_t>(device_top)});
      if (!emit(next)) break;
    }
  } else {
    for (int i = 0; i < n_predict; ++i) {
      if (!emit(sampler.sample(cur, cfg.n_vocab, history))) break;
      if (i + 1 < n_predict) cur = decode(prev);
    }
  }
  const double t_gen = now_seconds() - t1;
  // The generated text ends with a newline on stdout so a redirect gives a
  // well-formed text file.
  std::fputc('\n', stdout);
  std::fflush(stdout);

  const KvFootprint fp = gpu ? gpu->kv_footprint() : session->footprint();
  const double f16_bytes = 4.0 * cfg.kv_dim() * cfg.n_layers * fp.tokens;
  log_info("prompt: %zu tokens in %.3f s (%.1f tok/s)", tokens.size(), t_prompt, tokens.size() / t_prompt);
  log_info("decode: %d tokens in %.3f s (%.1f tok/s)%s", generated, t_gen,
           generated > 1 ? (generated - 1) / t_gen : 0.0,
           device_greedy ? ", greedy on the GPU" : device_top > 0 ? ", top-k on the GPU" : "");
  log_info("kv cache: %s, %lld tokens, %s (K %.2f bits/elem, V %.2f bits/elem); f16 would be %s (%.1f%% saved)",
           kv.to_string().c_str(), static_cast<long long>(fp.tokens), human_bytes(static_cast<double>(fp.bytes())).c_str(),
           fp.k_bits, fp.v_bits, human_bytes(f16_bytes).c_str(),
           f16_bytes > 0 ? 100.0 * (1.0 - fp.bytes() / f16_bytes) : 0.0);
  return 0;
}

// One generation of run --prompts: a prompt's tokens, its sampler (seeded
// --seed + its index) and what it has generated so far.
struct PromptRun {
  std::vector<int32_t> tokens, history;
  Sampler sampler;
  std::string text;
  int32_t prev = 0;
  int generated = 0;
  bool done = false;
};

// run --prompts FILE: every non-empty line a prompt, each continued by up to
// -n tokens. The prompts are decoded together, one token of each a step,
// every weight read once a step for all of them: on the GPU through
// CudaModel::forward_batch in groups of up to kMaxBatchSeqs, on the CPU
// through Session::decode_batch. The completions print in the prompts' order
// once all are done.
int cmd_run_prompts(const RunOptions& o) {
  const KvMode kv = parse_kv_mode(o.kv);
  if (!kv.warning().empty()) log_warn("%s", kv.warning().c_str());
  const bool on_gpu = use_cuda_device(o.device);
  // The prompts before the model loads: a missing or empty file is said at once.
  const std::string prompts = read_text_file(o.prompts_file);
  LONGKV_CHECK(prompts.find_first_not_of("\r\n") != std::string::npos,
               "%s: no prompt in it (one a line; empty lines are skipped)", o.prompts_file.c_str());
  Runtime rt = load_runtime(o.model, true);
  const ModelConfig& cfg = rt.model.weights.cfg;
  ThreadPool pool(o.model.threads);
  LlamaModel model(rt.model.weights, pool);

  std::vector<PromptRun> runs;
  {
    std::istringstream lines(prompts);
    int index = 0;
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      SamplerParams sp = o.sampling;
      sp.seed += static_cast<uint64_t>(index++);
      PromptRun r{rt.tokenizer->encode(line, true), {}, Sampler(sp), {}, 0, 0, false};
      if (r.tokens.empty()) r.tokens.push_back(rt.tokenizer->bos());
      r.history = r.tokens;
      r.prev = r.tokens.back();
      runs.push_back(std::move(r));
    }
  }
  LONGKV_CHECK(!runs.empty(), "%s: no prompt in it (one a line; empty lines are skipped)", o.prompts_file.c_str());
  const int ctx = o.ctx > 0 ? o.ctx : cfg.ctx_len;
  size_t longest = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    LONGKV_CHECK(static_cast<int>(runs[i].tokens.size()) < ctx,
                 "prompt %zu has %zu tokens, which does not fit the context of %d", i + 1, runs[i].tokens.size(), ctx);
    longest = std::max(longest, runs[i].tokens.size());
  }
  int n_predict = o.n_predict;
  if (n_predict > ctx - static_cast<int>(longest)) {
    n_predict = ctx - static_cast<int>(longest);
    log_warn("only %d of the %d requested tokens fit the context of %d after the longest prompt; every generation "
             "stops there", n_predict, o.n_predict, ctx);
  }
  const int max_tokens = static_cast<int>(longest) + n_predict;
  const int n_runs = static_cast<int>(runs.size());
  const int group = on_gpu ? std::min(n_runs, kMaxBatchSeqs) : n_runs;  // prompts decoded together
  log_info("model: %s", describe_model(rt.model.weights).c_str());
  log_info("kv: %s, %zu prompts (longest %zu tokens), generating up to %d each, sampling %s, %s",
           kv.to_string().c_str(), runs.size(), longest, n_predict, o.sampling.describe().c_str(),
           strprintf("decoded together on the %s, up to %d a step", on_gpu ? "GPU" : "CPU", group).c_str());

  // Takes a prompt's next token; false when its generation ends. The
  // sampler works on a copy of the row (it may change the values).
  std::vector<float> row(cfg.n_vocab);
  auto take = [&](PromptRun& r, const float* logits) {
    std::copy(logits, logits + cfg.n_vocab, row.begin());
    const int32_t next = r.sampler.sample(row.data(), cfg.n_vocab, r.history);
    if (r.generated >= n_predict || (next == rt.tokenizer->eos() && !o.ignore_eos)) return !(r.done = true);
    r.text += rt.tokenizer->decode_token(r.prev, next);
    r.history.push_back(next);
    r.prev = next;
    if (++r.generated >= n_predict) r.done = true;
    return !r.done;
  };
  double t_prompt = 0, t_gen = 0;
  KvFootprint first_fp;
  std::unique_ptr<CudaModel> gpu;
  if (on_gpu) {
    CudaModelOptions co;
    co.kv_mode = kv.to_string();
    co.max_tokens = max_tokens;
    co.max_seqs = group;
    LONGKV_CHECK(parse_cuda_gemm(o.cuda_gemm, &co.gemm), "--cuda-gemm must be f16 or f32");
    gpu = CudaModel::create(rt.model.weights, co);
    log_info("device: %s (weights %s on the GPU, caches for %d sequences)", cuda_device_description().c_str(),
             human_bytes(static_cast<double>(gpu->weight_bytes())).c_str(), group);
  }
  std::vector<float> cpu_rows;  // the CPU's batched logits [n][n_vocab]
  int64_t prompt_total = 0, prompt_done = 0;
  for (const PromptRun& r : runs) prompt_total += static_cast<int64_t>(r.tokens.size());
  Progress progress("prompts", prompt_total, true);  // as run's: only once prefill has taken a while
  for (size_t g0 = 0; g0 < runs.size(); g0 += group) {
    const int n = std::min<int>(group, static_cast<int>(runs.size() - g0));
    std::vector<std::unique_ptr<Session>> sessions(gpu ? 0 : n);
    if (gpu) gpu->clear();
    double t0 = now_seconds();
    for (int i = 0; i < n; ++i) {  // the prompts, chunk by chunk, each into its own sequence
      const std::vector<int32_t>& toks = runs[g0 + i].tokens;
      if (!gpu) {
        sessions[i] = std::make_unique<Session>(model, o.kv, max_tokens);
        take(runs[g0 + i], sessions[i]->prefill(toks, o.batch, [&](int done, int) {
                                          progress.update(prompt_done + done);
                                        }).data());
        prompt_done += static_cast<int64_t>(toks.size());
        continue;
      }
      const float* last = nullptr;
      for (size_t p = 0; p < toks.size(); p += o.batch) {
        const int m = static_cast<int>(std::min<size_t>(o.batch, toks.size() - p));
        last = gpu->prefill_seq(i, toks.data() + p, m);
        progress.update(prompt_done += m);
      }
      take(runs[g0 + i], last);  // before the next prompt's prefill reuses the row
    }
    progress.finish();
    t_prompt += now_seconds() - t0;
    t0 = now_seconds();
    std::vector<int32_t> toks;
    std::vector<int> seqs;
    std::vector<Session*> active;
    for (;;) {  // one token of every unfinished prompt a step
      toks.clear();
      seqs.clear();
      active.clear();
      for (int i = 0; i < n; ++i)
        if (!runs[g0 + i].done) {
          toks.push_back(runs[g0 + i].prev);
          seqs.push_back(i);
          if (!gpu) active.push_back(sessions[i].get());
        }
      if (seqs.empty()) break;
      const float* rows = nullptr;
      if (gpu) {
        rows = gpu->forward_batch(toks.data(), seqs.data(), static_cast<int>(seqs.size()));
      } else {
        Session::decode_batch(active, toks.data(), &cpu_rows);
        rows = cpu_rows.data();
      }
      for (size_t j = 0; j < seqs.size(); ++j) take(runs[g0 + seqs[j]], rows + j * static_cast<size_t>(cfg.n_vocab));
    }
    if (g0 == 0) first_fp = gpu ? gpu->kv_footprint() : sessions[0]->footprint();
    t_gen += now_seconds() - t0;
  }
  size_t prompt_tokens = 0;
  int generated = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    std::printf("### prompt %zu\n%s\n", i + 1, runs[i].text.c_str());
    prompt_tokens += runs[i].tokens.size();
    generated += runs[i].generated;
  }
  std::fflush(stdout);
  const double f16_bytes = 4.0 * cfg.kv_dim() * cfg.n_layers * first_fp.tokens;
  log_info("prompts: %zu tokens in %.3f s (%.1f tok/s)", prompt_tokens, t_prompt, prompt_tokens / t_prompt);
  log_info("decode: %d tokens of %zu prompts in %.3f s (%.1f tok/s in all)", generated, runs.size(), t_gen,
           t_gen > 0 ? generated / t_gen : 0.0);
  log_info("kv cache of prompt 1: %s, %lld tokens, %s (K %.2f bits/elem, V %.2f bits/elem); f16 would be %s (%.1f%% "
           "saved)", kv.to_string().c_str(), static_cast<long long>(first_fp.tokens),
           human_bytes(static_cast<double>(first_fp.bytes())).c_str(), first_fp.k_bits, first_fp.v_bits,
           human_bytes(f16_bytes).c_str(), f16_bytes > 0 ? 100.0 * (1.0 - first_fp.bytes() / f16_bytes) : 0.0);
  return 0;
}

}  // namespace

void register_run(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* sub = app.add_subcommand("run", "Generate text (stdout) from a prompt; stats on stderr");
  add_model_options(sub, o->model);
  auto* p = sub->add_option("-p,--prompt", o->prompt, "Prompt text (default: start from BOS)");
  auto* f = sub->add_option("-f,--file", o->prompt_file, "Read the prompt from a file")->excludes(p);
  sub->add_option("--prompts", o->prompts_file,
                  "Several prompts from a file, one a line, each continued by up to -n tokens and printed after a "
                  "'### prompt N' line; decoded together, one token of each a step (with --device cuda up to 32 at once)")
      ->excludes(p)
      ->excludes(f);
  sub->add_option("-n,--n-predict", o->n_predict, "Tokens to generate")->capture_default_str()->check(
      whole_at_least(0));
  sub->add_option("-c,--ctx", o->ctx, "Context size (default: the model's)")->check(whole_at_least(0));
  sub->add_option("-b,--batch", o->batch, "Prompt chunk size")->capture_default_str()->check(whole_at_least(1));
  sub->add_option("--kv", o->kv, std::string("KV cache mode: ") + kKvModeGrammar)->capture_default_str();
  sub->add_option("--temp", o->sampling.temperature, "Temperature (0: greedy; with --device cuda and no repetition penalty the argmax is taken on the GPU)")->capture_default_str()->check(
      number_in(0));
  sub->add_option("--top-k", o->sampling.top_k, "Top-k (0: off; with --device cuda, no repetition penalty and k <= 64 the k candidates are selected on the GPU)")->capture_default_str()->check(whole_at_least(0));
  sub->add_option("--top-p", o->sampling.top_p, "Top-p (1: off)")->capture_default_str()->check(number_in(0, 1, true));
  sub->add_option("--min-p", o->sampling.min_p, "Min-p (0: off)")->capture_default_str()->check(number_in(0, 1));
  sub->add_option("--repeat-penalty", o->sampling.repeat_penalty, "Repetition penalty (1: off)")
      ->capture_default_str()
      ->check(number_in(0, HUGE_VAL, true));
  sub->add_option("--repeat-last-n", o->sampling.repeat_last_n, "Tokens the penalty looks back over")
      ->capture_default_str()
      ->check(whole_at_least(0));
  sub->add_option("--seed", o->sampling.seed, "Sampling seed")->capture_default_str();
  sub->add_flag("--ignore-eos", o->ignore_eos, "Keep generating after end-of-sequence");
  sub->add_option("--device", o->device, "cpu or cuda (falls back to the CPU, saying why, without a GPU)")
      ->capture_default_str();
  sub->add_option("--cuda-gemm", o->cuda_gemm, "Prefill products on the GPU: f16 (tensor cores) or f32")
      ->capture_default_str();
  sub->callback([o] { g_exit_code = o->prompts_file.empty() ? cmd_run(*o) : cmd_run_prompts(*o); });
}

}  // namespace longkv::cli

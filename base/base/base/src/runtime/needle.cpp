#include "runtime/needle.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace longkv {
namespace {

// splitmix64: tiny, and unlike std::uniform_int_distribution its output is
// the same on every standard library, which keeps prompts reproducible.
class NeedleRng {
 public:
  explicit NeedleRng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); the modulo bias (< n / 2^64) is irrelevant here.
  uint64_t below(uint64_t n) { return next() % n; }

 private:
  uint64_t s_;
};

const char* const kRepeatFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";

const char* const kCities[] = {
    "Chicago",  "Yangon",   "Antananarivo", "Colombo",   "Almaty",    "Sydney",   "Mexico City",
    "Seattle",  "Lagos",    "Amsterdam",    "Belgrade",  "Cairo",     "Baghdad",  "Damascus",
    "Kigali",   "Dakar",    "Sofia",        "Victoria",  "Tashkent",  "Mumbai",   "Barcelona",
    "Helsinki", "Santiago", "Montevideo",   "Reykjavik", "Lisbon",    "Hanoi",    "Nairobi",
    "Ottawa",   "Bergen",   "Kyoto",        "Valparaiso", "Marrakesh", "Tallinn", "Quito",
};

std::string substitute(std::string s, const std::string& key, const std::string& city) {
  for (const auto& [ph, val] : {std::pair<std::string, std::string>{"{key}", key}, {"{city}", city}}) {
    for (size_t at = s.find(ph); at != std::string::npos; at = s.find(ph, at + val.size()))
      s.replace(at, ph.size(), val);
  }
  return s;
}

std::string random_digits(NeedleRng& rng, int n) {
  std::string s(1, static_cast<char>('1' + rng.below(9)));  // no leading zero: "04821" reads as 4821
  while (static_cast<int>(s.size()) < n) s += static_cast<char>('0' + rng.below(10));
  return s;
}

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Filler as tokens plus each token's text, with the token indices where the
// text may be cut (word starts) and where a needle may go (sentence starts).
struct FillerTokens {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  std::vector<char> word_start, sentence_start;  // per index 0..ids.size()
};

FillerTokens tokenize_filler(const SpmTokenizer& tok, const std::string& text) {
  FillerTokens f;
  f.ids = tok.encode(text, false);
  f.pieces.reserve(f.ids.size());
  // prev = -1 is never BOS, so every piece keeps its leading space.
  for (int32_t id : f.ids) f.pieces.push_back(tok.decode_token(-1, id));
  const size_t n = f.ids.size();
  f.word_start.assign(n + 1, 0);
  f.sentence_start.assign(n + 1, 0);
  f.word_start[0] = f.sentence_start[0] = 1;
  f.word_start[n] = f.sentence_start[n] = 1;
  for (size_t i = 1; i < n; ++i) {
    const std::string& prev = f.pieces[i - 1];
    const std::string& cur = f.pieces[i];
    if (prev.empty() || cur.empty()) continue;
    const bool starts_word = is_space(cur[0]) || prev.back() == '\n';
    f.word_start[i] = starts_word;
    // The essays lost some paragraph breaks ("it.A lot"), so a capital
    // right after a full stop also starts a sentence.
    const char last = prev.back();
    const bool after_stop = last == '.' || last == '!' || last == '?';
    const bool capital = cur[0] >= 'A' && cur[0] <= 'Z';
    f.sentence_start[i] = (after_stop && (starts_word || capital)) || (prev == "\n" && cur != "\n");
    if (f.sentence_start[i]) f.word_start[i] = 1;
  }
  return f;
}

// At least `min_tokens` tokens of filler text.
FillerTokens make_filler(const SpmTokenizer& tok, const NeedleHaystack& hay, NeedleFiller kind, NeedleRng& rng,
                         int min_tokens) {
  const size_t n_essays = hay.texts.size();
  const size_t first = kind == NeedleFiller::essays ? rng.below(n_essays) : 0;
  size_t total_chars = 0;
  for (const auto& t : hay.texts) total_chars += t.size() + 2;
  // ~4.5 characters per token in English prose; start a bit above and grow.
  size_t want_chars = static_cast<size_t>(min_tokens) * 6 + 256;
  for (;;) {
    std::string text;
    bool exhausted = false;
    if (kind == NeedleFiller::repeat) {
      while (text.size() < want_chars) text += kRepeatFiller;
    } else {
      for (size_t k = 0; text.size() < want_chars; ++k) {
        if (k == n_essays) {
          exhausted = true;
          break;
        }
        if (!text.empty()) text += "\n\n";
        text += hay.texts[(first + k) % n_essays];
      }
    }
    FillerTokens f = tokenize_filler(tok, trim(text));
    if (static_cast<int>(f.ids.size()) >= min_tokens) return f;
    LONGKV_CHECK(!exhausted, "%s: the essays hold only %zu tokens, fewer than the %d a prompt needs",
                 hay.dir.c_str(), f.ids.size(), min_tokens);
    want_chars = std::min(want_chars * 2, total_chars + 1);
  }
}

std::string join_pieces(const FillerTokens& f, int b, int e) {
  std::string s;
  for (int i = b; i < e; ++i) s += f.pieces[i];
  return s;
}

std::string rtrim(std::string s) {
  while (!s.empty() && is_space(s.back())) s.pop_back();
  return s;
}

}  // namespace

const char* needle_task_name(NeedleTask t) { return t == NeedleTask::passkey ? "passkey" : "niah"; }
const char* needle_filler_name(NeedleFiller f) { return f == NeedleFiller::repeat ? "repeat" : "essays"; }

NeedleTask parse_needle_task(const std::string& s) {
  if (s == "passkey") return NeedleTask::passkey;
  if (s == "niah") return NeedleTask::niah;
  fail("unknown needle task '%s' (expected passkey or niah)", s.c_str());
}

NeedleFiller parse_needle_filler(const std::string& s) {
  if (s == "repeat") return NeedleFiller::repeat;
  if (s == "essays") return NeedleFiller::essays;
  fail("unknown filler '%s' (expected repeat or essays)", s.c_str());
}

NeedleHaystack load_needle_haystack(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  LONGKV_CHECK(fs::is_directory(dir, ec), "%s: haystack directory not found", dir.c_str());
  NeedleHaystack h;
  h.dir = dir;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".txt" && e.is_regular_file(ec)) h.names.push_back(e.path().filename().string());
  LONGKV_CHECK(!ec, "%s: cannot list the haystack directory (%s)", dir.c_str(), ec.message().c_str());
  std::sort(h.names.begin(), h.names.end());
  for (const auto& name : h.names) {
    const std::string path = (fs::path(dir) / name).string();
    std::ifstream f(path, std::ios::binary);
    LONGKV_CHECK(f.good(), "%s: cannot open", path.c_str());
    std::stringstream ss;
    ss << f.rdbuf();
    std::string t = trim(ss.str());
    if (!t.empty()) h.texts.push_back(std::move(t));
  }
  LONGKV_CHECK(!h.texts.empty(), "%s: no non-empty .txt files to build a haystack from", dir.c_str());
  return h;
}

const std::vector<NeedleTemplate>& needle_templates(NeedleTask t) {
  // Template 0 of each task is the phrasing of the literature (passkey:
  // Mohtashami & Jaggi; niah: the "special magic number" of RULER/LLMTest).
  static const std::vector<NeedleTemplate> passkey = {
      {"The pass key is {key}. Remember it. {key} is the pass key.", "What is the pass key? The pass key is"},
      {"The pass key is {key}. Keep it in mind. {key} is the pass key.", "What is the pass key? The pass key is"},
      {"Here is the pass key: {key}. Remember it. The pass key is {key}.", "What is the pass key? The pass key is"},
      {"Important: the pass key is {key}. Do not forget {key}.", "What was the pass key? The pass key is"},
  };
  static const std::vector<NeedleTemplate> niah = {
      {"The special magic number for {city} is {key}.",
       "What is the special magic number for {city}? The special magic number for {city} is"},
      {"One of the special magic numbers for {city} is: {key}.",
       "What is the special magic number for {city} mentioned in the text above? The special magic number for "
       "{city} is"},
      {"The special magic {city} number is {key}. Remember it.",
       "What is the special magic {city} number? The special magic {city} number is"},
  };
  return t == NeedleTask::passkey ? passkey : niah;
}

double NeedlePrompt::actual_depth() const {
  const int hay = (context_end - 1) - (needle_end - needle_begin);
  return hay > 0 ? std::clamp(static_cast<double>(needle_begin - 1) / hay, 0.0, 1.0) : 0.0;
}

NeedlePromptBuilder::NeedlePromptBuilder(const SpmTokenizer& tok, const NeedleHaystack& haystack)
    : tok_(tok), hay_(haystack) {}

NeedlePrompt NeedlePromptBuilder::build(const NeedleSpec& spec) const {
  LONGKV_CHECK(spec.depth >= 0.0 && spec.depth <= 1.0, "needle depth %g is outside [0, 1]", spec.depth);
  const NeedleFiller filler = spec.task == NeedleTask::niah ? NeedleFiller::essays : spec.filler;
  LONGKV_CHECK(filler == NeedleFiller::repeat || !hay_.texts.empty(),
               "the %s task needs a haystack directory of essays", needle_task_name(spec.task));

  NeedleRng rng(spec.seed);
  const auto& templates = needle_templates(spec.task);
  NeedlePrompt p;
  p.template_index = static_cast<int>(rng.below(templates.size()));
  if (spec.task == NeedleTask::passkey) {
    p.key = random_digits(rng, 5 + static_cast<int>(rng.below(3)));
  } else {
    p.city = kCities[rng.below(std::size(kCities))];
    p.key = random_digits(rng, 7);
  }
  const NeedleTemplate& tpl = templates[p.template_index];
  const std::string needle = substitute(tpl.needle, p.key, p.city);
  const std::string question = "\n\n" + substitute(tpl.question, p.key, p.city);

  const int fixed = static_cast<int>(tok_.encode(needle + question, true).size());
  const int target = spec.length;
  LONGKV_CHECK(target - fixed >= 8,
               "prompt length %d is too short: the needle and question alone take %d tokens", target, fixed);
  const FillerTokens f = make_filler(tok_, hay_, filler, rng, target - fixed + 64);
  const int n_filler = static_cast<int>(f.ids.size());

  // Joins between pieces can merge or split a token or two, so the haystack
  // budget is corrected from the measured length a few times; the best
  // prompt not over the target wins.
  int hay_budget = target - fixed;
  int last_cut = -1;
  bool have_best = false;
  NeedlePrompt best;
  size_t best_needle_b = 0, best_needle_e = 0, best_ctx_e = 0;
  for (int iter = 0; iter < 8; ++iter) {
    int cut = std::clamp(hay_budget, 0, n_filler);
    while (cut > 0 && !f.word_start[cut]) --cut;
    if (cut == last_cut) break;
    last_cut = cut;
    // The sentence start nearest the requested depth (0 and cut always qualify).
    const double want = spec.depth * cut;
    int at = 0;
    for (int i = 0; i <= cut; ++i)
      if ((f.sentence_start[i] || i == cut) && std::abs(i - want) < std::abs(at - want)) at = i;

    std::string left = join_pieces(f, 0, at), right = join_pieces(f, at, cut);
    size_t b = 0;
    while (b < left.size() && is_space(left[b])) ++b;
    left.erase(0, b);
    std::string text = left;
    if (!text.empty() && !is_space(text.back())) text += ' ';
    const size_t needle_b = text.size();
    text += needle;
    const size_t needle_e = text.size();
    if (!right.empty() && !is_space(right[0])) text += ' ';
    text += right;
    text = rtrim(std::move(text));
    const size_t ctx_e = text.size();
    text += question;

    std::vector<int32_t> tokens = tok_.encode(text, true);
    const int len = static_cast<int>(tokens.size());
    if (len <= target && (!have_best || len > static_cast<int>(best.tokens.size()))) {
      have_best = true;
      best.text = std::move(text);
      best.tokens = std::move(tokens);
      best_needle_b = needle_b;
      best_needle_e = needle_e;
      best_ctx_e = ctx_e;
    }
    if (len == target) break;
    hay_budget += target - len;
  }
  LONGKV_CHECK(have_best, "could not fit a prompt into %d tokens", target);

  p.text = std::move(best.text);
  p.tokens = std::move(best.tokens);
  const auto prefix_tokens = [&](size_t chars) {
    // A trailing space would become a lone "▁" token that, in the full
    // text, merges into the next word.
    return static_cast<int>(tok_.encode(rtrim(p.text.substr(0, chars)), true).size());
  };
  p.needle_begin = prefix_tokens(best_needle_b);
  p.needle_end = prefix_tokens(best_needle_e);
  p.context_end = prefix_tokens(best_ctx_e);
  return p;
}

std::string needle_first_digit_run(std::string_view s) {
  size_t b = 0;
  while (b < s.size() && !(s[b] >= '0' && s[b] <= '9')) ++b;
  size_t e = b;
  while (e < s.size() && s[e] >= '0' && s[e] <= '9') ++e;
  return std::string(s.substr(b, e - b));
}

bool needle_answer_correct(NeedleTask t, std::string_view generated, std::string_view key) {
  if (key.empty()) return false;
  if (t == NeedleTask::passkey) return needle_first_digit_run(generated) == key;
  for (size_t i = 0; i < generated.size();) {
    const std::string run = needle_first_digit_run(generated.substr(i));
    if (run.empty()) return false;
    if (run == key) return true;
    i = static_cast<size_t>(generated.find(run, i) + run.size());
  }
  return false;
}

uint64_t needle_trial_seed(uint64_t run_seed, NeedleTask t, int length, double depth, int trial) {
  NeedleRng rng(run_seed);
  uint64_t h = rng.next();
  for (uint64_t v : {static_cast<uint64_t>(t), static_cast<uint64_t>(length),
                     static_cast<uint64_t>(std::llround(depth * 1e6)), static_cast<uint64_t>(trial)}) {
    NeedleRng mix(h ^ (v * 0x9E3779B97F4A7C15ull));
    h = mix.next();
  }
  return h;
}

}  // namespace longkv

// Retrieval prompts for the evaluation protocol of DESIGN.md: pass-key
// retrieval and needle-in-a-haystack, built to an exact token length with the
// needle at a requested depth, fully reproducible from a seed.
//
// A prompt is [BOS] haystack-with-needle "\n\n" question. The haystack is
// filler text cut to fit the token budget (at a word boundary, so the
// prompt length lands on the target or a few tokens under it, never over);
// the needle goes in at the sentence boundary nearest to depth * haystack
// tokens (depth 0: first thing after BOS; depth 1: right before the
// question). Lengths count the tokens of encode(prompt text, BOS), i.e.
// exactly what the model is fed.
//
// Thread safety: NeedlePromptBuilder is immutable after construction; build()
// may be called concurrently.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/spm_tokenizer.h"

namespace longkv {

enum class NeedleTask { passkey, niah };
enum class NeedleFiller {
  repeat,  // "The grass is green. The sky is blue. ..." repeated
  essays,  // Paul Graham essays (the haystack directory)
};

const char* needle_task_name(NeedleTask t);      // "passkey" | "niah"
const char* needle_filler_name(NeedleFiller f);  // "repeat" | "essays"
NeedleTask parse_needle_task(const std::string& s);      // throws Error
NeedleFiller parse_needle_filler(const std::string& s);  // throws Error

// Haystack essays: every *.txt of `dir` in file-name order (so the text does
// not depend on directory enumeration order). Throws Error naming the
// directory when it is missing, unreadable or holds no .txt file.
struct NeedleHaystack {
  std::string dir;
  std::vector<std::string> names;  // file names, sorted
  std::vector<std::string> texts;  // contents, leading/trailing whitespace trimmed
};
NeedleHaystack load_needle_haystack(const std::string& dir);

// One phrasing of a task: the needle sentence and the final question, with
// "{key}" and "{city}" placeholders. The question is the start of the
// answer sentence, so the model's continuation should begin with the key.
struct NeedleTemplate {
  const char* needle;
  const char* question;
};
// The templates of a task (at least 3); build() picks one with the seed.
const std::vector<NeedleTemplate>& needle_templates(NeedleTask t);

struct NeedleSpec {
  NeedleTask task = NeedleTask::passkey;
  NeedleFiller filler = NeedleFiller::repeat;  // passkey only; niah always uses essays
  int length = 1024;   // target prompt tokens, BOS included
  double depth = 0.5;  // in [0, 1]
  uint64_t seed = 0;   // everything random (key, city, template, essay) derives from it
};

struct NeedlePrompt {
  std::string text;             // prompt text (BOS not included)
  std::vector<int32_t> tokens;  // encode(text, BOS): what the model is fed
  std::string key;              // the digits the answer must hold
  std::string city;             // niah only
  int template_index = 0;
  // Token span of the needle sentence in `tokens` ([begin, end)) and of the
  // haystack-with-needle (tokens [1, context_end) — BOS excluded, question
  // excluded). Spans are measured by tokenizing the text up to the span's
  // character offsets, so they can be off by one token at a join.
  int needle_begin = 0, needle_end = 0, context_end = 0;
  // Where the needle ended up: (needle_begin - 1) / (context tokens - needle
  // tokens), 0 at the start of the haystack and 1 at its end.
  double actual_depth() const;
};

class NeedlePromptBuilder {
 public:
  // `haystack` may be empty when only the repeat filler is used (niah and
  // essay filler then throw). Both references must outlive the builder.
  NeedlePromptBuilder(const SpmTokenizer& tok, const NeedleHaystack& haystack);

  // Throws Error when the length cannot hold the needle and question (or
  // the haystack is too small for it).
  NeedlePrompt build(const NeedleSpec& spec) const;

 private:
  const SpmTokenizer& tok_;
  const NeedleHaystack& hay_;
};

// The first run of ASCII digits in `s` ("" if none).
std::string needle_first_digit_run(std::string_view s);
// Whether the generated continuation answers `key`: for passkey its first
// digit run equals the key ("48213." and " 48213 is" pass, "4821" and
// "482130" fail); for niah any digit run of it equals the key.
bool needle_answer_correct(NeedleTask t, std::string_view generated, std::string_view key);

// Seed of one (task, length, depth, trial) cell of a grid: splitmix64 over
// the run seed and the cell coordinates, so every cell gets its own key and
// template, reproducibly, independent of which other cells run.
uint64_t needle_trial_seed(uint64_t run_seed, NeedleTask t, int length, double depth, int trial);

}  // namespace longkv

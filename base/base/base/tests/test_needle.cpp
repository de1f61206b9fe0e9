// Retrieval prompts (runtime/needle.h), the HTML report of `longkv needle`,
// and the subcommand end to end on the evaluation model.
//
// Depths and lengths are re-measured here from the prompt text alone (find
// the needle sentence, tokenize the text before it), not read back from the
// builder's own bookkeeping.
#include <gtest/gtest.h>

#include <algorithm>
#include <regex>

#include "core/error.h"
#include "formats/gguf.h"
#include "runtime/needle.h"
#include "test_util.h"
#include "tokenizer/spm_tokenizer.h"

// The report writer is tool code (tools/longkv), which the test binary does
// not link; it depends on nothing but core/error, so it is compiled in here.
#include "runtime/needle_report.h"

namespace longkv {
namespace {

using test::shared_path;

const std::string kEval = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
const std::string kEssays = "data/pg-essays";

// One tokenizer and haystack for the whole suite (loading is the slow part).
struct Assets {
  std::unique_ptr<SpmTokenizer> tok;
  NeedleHaystack hay;
};
const Assets& assets() {
  static Assets a = [] {
    Assets x;
    x.tok = std::make_unique<SpmTokenizer>(vocab_from_gguf(*GgufFile::open(shared_path(kEval))));
    x.hay = load_needle_haystack(shared_path(kEssays));
    return x;
  }();
  return a;
}

#define NEEDLE_REQUIRE_ASSETS()        \
  do {                                 \
    LONGKV_REQUIRE_SHARED(kEval);      \
    LONGKV_REQUIRE_SHARED(kEssays);    \
  } while (0)

std::string fill(std::string s, const std::string& key, const std::string& city) {
  for (const auto& [ph, v] : {std::pair<std::string, std::string>{"{key}", key}, {"{city}", city}})
    for (size_t at; (at = s.find(ph)) != std::string::npos;) s.replace(at, ph.size(), v);
  return s;
}

std::string rtrim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
  return s;
}

struct Measured {
  int needle_begin, needle_end, context_end;  // token indices, BOS = 0
  double depth;
};

// Where the needle sentence is, from the text: the template's sentence with
// the key filled in must occur exactly once, and the question follows the
// last blank line.
Measured measure(const SpmTokenizer& tok, const NeedlePrompt& p, NeedleTask task) {
  const std::string needle = fill(needle_templates(task)[p.template_index].needle, p.key, p.city);
  const size_t b = p.text.find(needle);
  EXPECT_NE(b, std::string::npos) << p.text;
  EXPECT_EQ(p.text.find(needle, b + 1), std::string::npos);
  const size_t q = p.text.rfind("\n\n");
  EXPECT_NE(q, std::string::npos);
  auto n_tok = [&](size_t chars) { return static_cast<int>(tok.encode(rtrim(p.text.substr(0, chars)), true).size()); };
  Measured m{n_tok(b), n_tok(b + needle.size()), n_tok(q), 0};
  const int hay = (m.context_end - 1) - (m.needle_end - m.needle_begin);
  m.depth = static_cast<double>(m.needle_begin - 1) / hay;
  return m;
}

struct Case {
  NeedleTask task;
  NeedleFiller filler;
  const char* name;
};
const Case kCases[] = {
    {NeedleTask::passkey, NeedleFiller::repeat, "passkey/repeat"},
    {NeedleTask::passkey, NeedleFiller::essays, "passkey/essays"},
    {NeedleTask::niah, NeedleFiller::essays, "niah"},
};

TEST(NeedlePrompt, DeterministicForASeedAndDifferentForAnother) {
  NEEDLE_REQUIRE_ASSETS();
  NeedlePromptBuilder b(*assets().tok, assets().hay);
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    NeedleSpec s{c.task, c.filler, 700, 0.4, 12345};
    const NeedlePrompt p1 = b.build(s), p2 = b.build(s);
    EXPECT_EQ(p1.text, p2.text);
    EXPECT_EQ(p1.tokens, p2.tokens);
    EXPECT_EQ(p1.key, p2.key);
    EXPECT_EQ(p1.template_index, p2.template_index);
    s.seed = 12346;
    const NeedlePrompt p3 = b.build(s);
    EXPECT_NE(p1.text, p3.text);
    EXPECT_NE(p1.key, p3.key);
  }
  // Keys: 5-7 digits for the pass key, 7 for niah, never a leading zero.
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const NeedlePrompt pk = b.build({NeedleTask::passkey, NeedleFiller::repeat, 200, 0.5, seed});
    EXPECT_TRUE(std::regex_match(pk.key, std::regex("[1-9][0-9]{4,6}"))) << pk.key;
    const NeedlePrompt nh = b.build({NeedleTask::niah, NeedleFiller::essays, 300, 0.5, seed});
    EXPECT_TRUE(std::regex_match(nh.key, std::regex("[1-9][0-9]{6}"))) << nh.key;
    EXPECT_FALSE(nh.city.empty());
    EXPECT_NE(nh.text.find("What is the special magic"), std::string::npos);
  }
  // Every cell of a grid gets its own seed.
  EXPECT_NE(needle_trial_seed(1, NeedleTask::passkey, 1024, 0.5, 0),
            needle_trial_seed(1, NeedleTask::passkey, 1024, 0.5, 1));
  EXPECT_NE(needle_trial_seed(1, NeedleTask::passkey, 1024, 0.5, 0),
            needle_trial_seed(1, NeedleTask::passkey, 1024, 0.25, 0));
  EXPECT_NE(needle_trial_seed(1, NeedleTask::passkey, 1024, 0.5, 0), needle_trial_seed(1, NeedleTask::niah, 1024, 0.5, 0));
  EXPECT_EQ(needle_trial_seed(7, NeedleTask::niah, 2048, 0.75, 3), needle_trial_seed(7, NeedleTask::niah, 2048, 0.75, 3));
}

TEST(NeedlePrompt, NeedleSitsAtTheRequestedDepth) {
  NEEDLE_REQUIRE_ASSETS();
  const SpmTokenizer& tok = *assets().tok;
  NeedlePromptBuilder b(tok, assets().hay);
  for (const Case& c : kCases)
    for (int len : {1024, 2048})
      for (double d : {0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0})
        for (uint64_t seed : {1u, 2u}) {
          SCOPED_TRACE(testing::Message() << c.name << " length " << len << " depth " << d << " seed " << seed);
          const NeedlePrompt p = b.build({c.task, c.filler, len, d, seed});
          const Measured m = measure(tok, p, c.task);
          // Sentence boundaries of the essays are a few dozen tokens apart.
          const double tol = c.filler == NeedleFiller::repeat ? 0.01 : 0.04;
          EXPECT_NEAR(m.depth, d, tol);
          if (d == 0.0) {
            EXPECT_EQ(m.needle_begin, 1);  // right after BOS
          }
          if (d == 1.0) {
            EXPECT_EQ(m.needle_end, m.context_end);  // right before the question
          }
          EXPECT_NEAR(p.needle_begin, m.needle_begin, 1);
          EXPECT_NEAR(p.needle_end, m.needle_end, 1);
          EXPECT_NEAR(p.context_end, m.context_end, 1);
          EXPECT_NEAR(p.actual_depth(), m.depth, 0.005);
        }
}

TEST(NeedlePrompt, TokenLengthIsTheRequestedLengthOrJustUnder) {
  NEEDLE_REQUIRE_ASSETS();
  const SpmTokenizer& tok = *assets().tok;
  NeedlePromptBuilder b(tok, assets().hay);
  int exact = 0, n = 0;
  for (const Case& c : kCases)
    for (int len : {120, 1000, 1024, 2048, 4084})
      for (double d : {0.0, 0.5, 1.0}) {
        SCOPED_TRACE(testing::Message() << c.name << " length " << len << " depth " << d);
        const NeedlePrompt p = b.build({c.task, c.filler, len, d, static_cast<uint64_t>(len + 100 * d)});
        EXPECT_EQ(p.tokens, tok.encode(p.text, true));  // the tokens are exactly the text's
        EXPECT_LE(static_cast<int>(p.tokens.size()), len);
        EXPECT_GE(static_cast<int>(p.tokens.size()), len - 4);
        // The question closes the prompt, so the answer is the continuation.
        const std::string q = fill(needle_templates(c.task)[p.template_index].question, p.key, p.city);
        ASSERT_GE(p.text.size(), q.size());
        EXPECT_EQ(p.text.substr(p.text.size() - q.size()), q);
        exact += static_cast<int>(p.tokens.size()) == len;
        ++n;
      }
  EXPECT_GE(exact * 2, n) << "most prompts should hit the length exactly";
}

TEST(NeedlePrompt, RejectsBadRequests) {
  NEEDLE_REQUIRE_ASSETS();
  NeedlePromptBuilder b(*assets().tok, assets().hay);
  auto error_of = [&](const NeedleSpec& s) {
    try {
      b.build(s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of({NeedleTask::passkey, NeedleFiller::repeat, 20, 0.5, 1}).find("too short"), std::string::npos);
  EXPECT_NE(error_of({NeedleTask::passkey, NeedleFiller::repeat, 500, 1.5, 1}).find("outside [0, 1]"),
            std::string::npos);
  NeedleHaystack none;
  NeedlePromptBuilder no_hay(*assets().tok, none);
  EXPECT_NO_THROW(no_hay.build({NeedleTask::passkey, NeedleFiller::repeat, 300, 0.5, 1}));
  EXPECT_THROW(no_hay.build({NeedleTask::niah, NeedleFiller::essays, 300, 0.5, 1}), Error);
  try {
    load_needle_haystack("/nonexistent/needle/dir");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/needle/dir: haystack directory not found"), std::string::npos)
        << e.what();
  }
  const std::string empty_dir = test::temp_dir();
  test::write_file(empty_dir + "/notes.md", "not a haystack");
  EXPECT_THROW(load_needle_haystack(empty_dir), Error);
  EXPECT_THROW(parse_needle_task("needle"), Error);
  EXPECT_THROW(parse_needle_filler("lorem"), Error);
}

TEST(NeedleAnswer, FirstDigitRunMustEqualTheKey) {
  const NeedleTask pk = NeedleTask::passkey;
  EXPECT_TRUE(needle_answer_correct(pk, "48213.", "48213"));
  EXPECT_TRUE(needle_answer_correct(pk, " 48213 is", "48213"));
  EXPECT_TRUE(needle_answer_correct(pk, " 48213\n", "48213"));
  EXPECT_FALSE(needle_answer_correct(pk, " 4821", "48213"));
  EXPECT_FALSE(needle_answer_correct(pk, " 482130", "48213"));
  EXPECT_FALSE(needle_answer_correct(pk, " 12345. No, 48213", "48213"));
  EXPECT_FALSE(needle_answer_correct(pk, " the pass key", "48213"));
  EXPECT_FALSE(needle_answer_correct(pk, "", "48213"));
  EXPECT_FALSE(needle_answer_correct(pk, "", ""));
  EXPECT_EQ(needle_first_digit_run("ab 12c34"), "12");
  EXPECT_EQ(needle_first_digit_run("none"), "");
  // niah: the number anywhere in the answer, as a whole run.
  const NeedleTask nh = NeedleTask::niah;
  EXPECT_TRUE(needle_answer_correct(nh, " 7654321.", "7654321"));
  EXPECT_TRUE(needle_answer_correct(nh, ": number 1) 7654321", "7654321"));
  EXPECT_FALSE(needle_answer_correct(nh, " 76543210", "7654321"));
  EXPECT_FALSE(needle_answer_correct(nh, " 765432", "7654321"));
}

NeedleHeatmap heatmap(const std::string& mode, int c00) {
  return {"passkey", mode, {1024, 2048}, {0.0, 0.5, 1.0}, {{c00, 1, 0}, {2, 2, 0}}, {{2, 2, 2}, {2, 2, 0}}};
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(NeedleReport, EscapesTextAndDrawsOneHeatmapPerMode) {
  EXPECT_EQ(html_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  NeedleReport r;
  r.title = "run <script>alert(1)</script> & co";
  r.settings = {{"model", "tiny<model>&"}, {"kv modes", "f16, k4v4<x>"}};
  r.heatmaps = {heatmap("f16", 2), heatmap("k4v4:g32:r128:s4:rope=post", 1), heatmap("k2v2&<>", 0)};
  const std::string h = needle_report_html(r);
  EXPECT_EQ(h.find("<script"), std::string::npos);
  EXPECT_NE(h.find("run &lt;script&gt;alert(1)&lt;/script&gt; &amp; co"), std::string::npos);
  EXPECT_NE(h.find("tiny&lt;model&gt;&amp;"), std::string::npos);
  EXPECT_NE(h.find("k2v2&amp;&lt;&gt;"), std::string::npos);
  EXPECT_EQ(h.find("k2v2&<>"), std::string::npos);
  EXPECT_EQ(count(h, "<section class=\"heatmap\">"), 3);
  EXPECT_EQ(count(h, "<table class=\"grid\">"), 3);
  // Self-contained: no scripts, nothing fetched.
  EXPECT_EQ(h.find("http"), std::string::npos);
  EXPECT_EQ(h.find("<link"), std::string::npos);
  // Cells: 100% green, 50%, 0% red, and an empty cell for 0 trials.
  EXPECT_NE(h.find("hsl(120,75%,35%)\" title=\"length 1024, depth 0%: 2/2 correct\">100%</td>"), std::string::npos);
  EXPECT_NE(h.find(">50%</td>"), std::string::npos);
  EXPECT_NE(h.find("hsl(0,75%,45%)"), std::string::npos);
  EXPECT_EQ(count(h, "cell empty"), 3);
  // Axes: depths across, lengths down.
  EXPECT_LT(h.find("<th>0%</th><th>50%</th><th>100%</th>"), h.find("<th class=\"len\">1024</th>"));
  EXPECT_LT(h.find("<th class=\"len\">1024</th>"), h.find("<th class=\"len\">2048</th>"));

  r.heatmaps[1].trials.pop_back();
  EXPECT_THROW(needle_report_html(r), Error);
}

TEST(NeedleCli, PassKeyAt1KEndToEnd) {
  LONGKV_REQUIRE_SHARED(kEval);
  const std::string dir = test::temp_dir();
  const auto r = test::run_cli("needle -m " + shared_path(kEval) +
                               " --task passkey --lengths 1024 --depths 0.5 --trials 2 --kv f16 --html " + dir +
                               "/report.html --json " + dir + "/trials.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| length | 50% | mean |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("evalmodel"), std::string::npos);
  EXPECT_NE(r.out.find("kv modes: f16"), std::string::npos);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(\| 1024 \| ([0-9.]+) \| ([0-9.]+) \|)"))) << r.out;
  // The model README reports ~100% at 1K; two trials leave room for one miss.
  EXPECT_GE(std::stod(m[1]), 50.0) << r.out;
  ASSERT_TRUE(std::regex_search(r.out, m, std::regex(R"(\| passkey \| f16 \| 16\.00 \| 16\.00 \| ([0-9.]+) \| (\d)/2 \|)")))
      << r.out;
  EXPECT_GE(std::stod(m[1]), 50.0);

  const std::string html = test::read_file(dir + "/report.html");
  EXPECT_NE(html.find("<table"), std::string::npos);
  EXPECT_EQ(count(html, "<section class=\"heatmap\">"), 1);
  const std::string json = test::read_file(dir + "/trials.json");
  EXPECT_EQ(count(json, "\"mode\": \"f16\""), 2) << json;
  EXPECT_EQ(count(json, "\"prompt_tokens\": 102"), 2) << json;  // 1020..1024
}

TEST(NeedleCli, ErrorsAreOneClearLine) {
  LONGKV_REQUIRE_SHARED(kEval);
  auto expect_error = [](const test::CmdResult& r, const std::string& fragment) {
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.out, "");
    const size_t at = r.err.find("error: ");
    ASSERT_NE(at, std::string::npos) << r.err;
    EXPECT_NE(r.err.find(fragment, at), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin() + at, r.err.end(), '\n'), 1) << r.err;
  };
  const std::string m = "needle -m " + shared_path(kEval);
  expect_error(test::run_cli(m + " --lengths 1024,8192"), "--lengths: 8192 exceeds the model's context of 4096");
  expect_error(test::run_cli(m + " --task niah --haystack /nonexistent/essays"),
               "/nonexistent/essays: haystack directory not found");
  expect_error(test::run_cli(m + " --depths 0.5,2"), "--depths: 2 is outside [0, 1]");
  expect_error(test::run_cli(m + " --kv k9v9"), "k9v9");
}

}  // namespace
}  // namespace longkv

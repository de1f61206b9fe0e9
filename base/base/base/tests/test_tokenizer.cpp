// SentencePiece-style tokenizer and vocabulary loaders. The oracle is the
// SentencePiece library itself (Debian libsentencepiece) on the Llama-2
// model, on models trained here (user-defined/control symbols, no byte
// fallback) and with a restricted vocabulary (unused pieces).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "core/error.h"
#include "formats/gguf.h"
#include "test_util.h"
#include "tokenizer/spm_tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

#ifdef LONGKV_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#endif

namespace longkv {
namespace {

using test::shared_path;

const char* kSpModel = "tokenizers/llama2/tokenizer.model";
const char* kWiki = "data/wikitext-2-raw/wiki.test.raw";
const char* kTok512 = "models/stories260K/tok512.bin";
const char* kEvalGguf = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
const char* kEvalRef = "models/evalmodel/reference.json";

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < s.size()) {
    size_t nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    lines.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

std::string ids_str(const std::vector<int32_t>& ids, size_t max = 40) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size() && i < max; ++i) {
    if (i) s += ' ';
    s += std::to_string(ids[i]);
  }
  if (ids.size() > max) s += " ...";
  return s + "]";
}

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

// Random text over many scripts (valid scalar values only), weighted toward
// what real text mixes: ASCII words and spaces, accents, CJK, emoji with ZWJ.
std::string random_unicode(size_t bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  struct Range {
    uint32_t lo, hi;
    int weight;
  };
  const Range ranges[] = {
      {0x61, 0x7A, 30},     {0x20, 0x20, 15},     {0x21, 0x7E, 10},     {0x09, 0x0A, 2},
      {0x00, 0x1F, 1},      {0xA0, 0x24F, 8},     {0x300, 0x36F, 3},    {0x400, 0x4FF, 5},
      {0x600, 0x6FF, 4},    {0x900, 0x97F, 2},    {0x3040, 0x30FF, 4},  {0x4E00, 0x9FFF, 8},
      {0xAC00, 0xD7A3, 3},  {0x1F300, 0x1F64F, 4}, {0x200D, 0x200D, 2}, {0xFE0F, 0xFE0F, 1},
      {0x2581, 0x2581, 1},  {0x80, 0xD7FF, 2},    {0xE000, 0x10FFFF, 2},
  };
  std::vector<int> weights;
  for (const auto& r : ranges) weights.push_back(r.weight);
  std::discrete_distribution<int> pick(weights.begin(), weights.end());
  std::string s;
  while (s.size() < bytes) {
    const Range& r = ranges[pick(rng)];
    uint32_t cp = std::uniform_int_distribution<uint32_t>(r.lo, r.hi)(rng);
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    s += utf8_encode(cp);
  }
  return s;
}

// Strings that stress normalization, merging and fallback (all valid UTF-8).
std::vector<std::string> adversarial_valid() {
  std::vector<std::string> v = {
      "",
      " ",
      "  ",
      "a",
      " leading",
      "trailing ",
      "  both  ",
      "Hello world",
      "Hello, world! How's it going?",
      "\xF0\x9F\x98\x80\xF0\x9F\x98\x81 emoji \xF0\x9F\x8E\x89",                          // 😀😁 🎉
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",          // family ZWJ
      "\xF0\x9F\x8F\xB3\xEF\xB8\x8F\xE2\x80\x8D\xF0\x9F\x8C\x88 flag",                      // 🏳️‍🌈
      "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",                                                  // skin tone
      "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xE3\x80\x82",          // 你好，世界。
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD\xE3\x82\xB9\xE3\x83\x88",
      "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 \xED\x85\x8C\xEC\x8A\xA4\xED\x8A\xB8",          // 한국어 테스트
      "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7 \xD8\xA8\xD8\xA7\xD9\x84\xD8\xB9\xD8\xA7\xD9\x84\xD9\x85",  // Arabic
      "\xD7\xA9\xD7\x9C\xD7\x95\xD7\x9D",                                                  // Hebrew
      "e\xCC\x81\xCC\x82\xCC\x83 a\xCC\x8A o\xCC\x88\xCC\x88\xCC\x88",                      // combining marks
      "\xC3\xA9 vs e\xCC\x81",                                                             // NFC vs NFD
      "Z\xCD\x91\xCD\x9B\xCC\x8E\xCD\xA0" "a\xCC\x96\xCD\x9Al\xCC\xA1go",                     // zalgo
      "\t\ttabs\tand\t\t\ttabs",
      "\n\nnewlines\n\n\n",
      "\r\n windows \r\n",
      std::string(1000, ' '),
      std::string(1000, ' ') + "x" + std::string(999, ' '),
      std::string(1000, '\n'),
      std::string(500, '\t'),
      std::string("a\0b\0\0c", 6),
      std::string("\0", 1),
      std::string(" \0 ", 3),
      "\x01\x02\x03\x07\x1B[31mred\x1B[0m\x7F",
      "<s>",
      "</s>",
      "<unk>",
      "<s>Hello</s> <unk> <0x41> <0xFF>",
      "\xE2\x96\x81 literal U+2581 \xE2\x96\x81\xE2\x96\x81",
      "\xEF\xBF\xBD replacement char",
      "\xEF\xBB\xBF BOM",
      "\xF4\x8F\xBF\xBF max scalar",
      "\xEE\x80\x80 private use",
      "\xE2\x80\x8B zero width \xE2\x80\x8C\xE2\x80\x8D",
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "1234567890 3.14159 -42 1e10 0xDEADBEEF",
      "int main(int argc, char **argv) { return 0; }",
      "https://example.com/path?q=1&r=two#frag",
      "\xE2\x80\x9CSmart quotes\xE2\x80\x9D \xE2\x80\x94 dashes \xE2\x80\xA6",
  };
  std::string all_ascii;
  for (int c = 1; c < 128; ++c) all_ascii.push_back(static_cast<char>(c));
  v.push_back(all_ascii);
  return v;
}

TEST(TokenizerUtf8, CharLengths) {
  auto len = [](std::string_view s) {
    return utf8_char_len(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  EXPECT_EQ(len("a"), 1u);
  EXPECT_EQ(len("\xC3\xA9"), 2u);
  EXPECT_EQ(len("\xE2\x96\x81"), 3u);
  EXPECT_EQ(len("\xF0\x9F\x98\x80"), 4u);
  EXPECT_EQ(len("\x80"), 1u);              // lone continuation
  EXPECT_EQ(len("\xE2\x96"), 1u);          // truncated
  EXPECT_EQ(len("\xC0\xAF"), 1u);          // overlong '/'
  EXPECT_EQ(len("\xE0\x80\xAF"), 1u);      // overlong
  EXPECT_EQ(len("\xED\xA0\x80"), 1u);      // surrogate
  EXPECT_EQ(len("\xF4\x90\x80\x80"), 1u);  // > U+10FFFF
  EXPECT_EQ(len("\xFF"), 1u);
  EXPECT_TRUE(utf8_is_valid("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(utf8_is_valid("h\xC3llo"));
}

// ---------------------------------------------------------------------------
// llama2.c vocabulary (no oracle library needed)

TEST(TokenizerLlama2c, LoadsTok512) {
  LONGKV_REQUIRE_SHARED(kTok512);
  const Vocab v = vocab_from_llama2c(shared_path(kTok512), 512);
  ASSERT_EQ(v.size(), 512);
  EXPECT_EQ(v.pieces[0], "<unk>");
  EXPECT_EQ(v.types[0], TokenType::unknown);
  EXPECT_EQ(v.pieces[1], "<s>");
  EXPECT_EQ(v.types[1], TokenType::control);
  EXPECT_EQ(v.pieces[2], "</s>");
  EXPECT_EQ(v.types[2], TokenType::control);
  EXPECT_EQ(v.pieces[3], "<0x00>");
  EXPECT_EQ(v.types[3], TokenType::byte);
  EXPECT_EQ(v.pieces[258], "<0xFF>");
  EXPECT_EQ(v.types[258], TokenType::byte);
  // The file spells U+2581 as a plain space; the loader restores U+2581.
  EXPECT_EQ(v.pieces[259], "\xE2\x96\x81t");
  EXPECT_EQ(v.pieces[265], "\xE2\x96\x81the");
  EXPECT_EQ(v.pieces[410], "\xE2\x96\x81");
  EXPECT_EQ(v.pieces[260], "he");
  EXPECT_EQ(v.types[260], TokenType::normal);
  EXPECT_EQ(v.scores[260], -1.0f);
  EXPECT_EQ(v.scores[511], -252.0f);
  for (const auto& p : v.pieces) EXPECT_EQ(p.find(' '), std::string::npos) << p;
  EXPECT_EQ(v.bos, 1);
  EXPECT_EQ(v.eos, 2);
  EXPECT_EQ(v.unk, 0);
}

TEST(TokenizerLlama2c, EncodesStoriesText) {
  LONGKV_REQUIRE_SHARED(kTok512);
  SpmTokenizer tok(vocab_from_llama2c(shared_path(kTok512), 512));
  // " the" is a single piece; "Once upon a time" decomposes into pieces that
  // all exist (no byte fallback for plain English).
  const auto ids = tok.encode("the cat", false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 265);  // ▁the
  const auto once = tok.encode("Once upon a time, there was a little girl.", true);
  ASSERT_EQ(once[0], 1);
  for (size_t i = 1; i < once.size(); ++i) EXPECT_GT(once[i], 258);
  const std::string story = test::read_file(shared_path("models/stories260K/expected_greedy_100.txt"));
  if (!story.empty()) {
    const auto s_ids = tok.encode(story, true);
    EXPECT_EQ(tok.decode(s_ids), story);
  }
  // Characters outside the 512 pieces fall back to bytes and come back.
  const std::string odd = "caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80";
  EXPECT_EQ(tok.decode(tok.encode(odd, true)), odd);
}

std::string tok512_bytes() { return test::read_file(shared_path(kTok512)); }

std::string llama2c_error(const std::string& bytes, int32_t n) {
  const std::string path = test::temp_dir() + "/tok.bin";
  test::write_file(path, bytes);
  try {
    vocab_from_llama2c(path, n);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerLlama2c, RejectsBadFiles) {
  LONGKV_REQUIRE_SHARED(kTok512);
  const std::string good = tok512_bytes();
  ASSERT_EQ(good.size(), 6227u);

  EXPECT_NE(llama2c_error(good.substr(0, 3000), 512).find("truncated at token"), std::string::npos);
  EXPECT_NE(llama2c_error(good.substr(0, 2), 512).find("too short"), std::string::npos);
  EXPECT_NE(llama2c_error("", 512).find("too short"), std::string::npos);

  // Too many tokens asked for: runs off the end at token 512.
  const std::string big = llama2c_error(good, 600);
  EXPECT_NE(big.find("truncated at token 512 of 600"), std::string::npos) << big;
  EXPECT_NE(big.find("vocabulary size"), std::string::npos) << big;
  // Too few: bytes left over.
  const std::string small = llama2c_error(good, 500);
  EXPECT_NE(small.find("trailing bytes after 500 tokens"), std::string::npos) << small;

  // Absurd token length (token 0's length field sits at offset 8).
  std::string bad = good;
  const int32_t huge = 0x7fffffff;
  std::memcpy(bad.data() + 8, &huge, 4);
  std::string e = llama2c_error(bad, 512);
  EXPECT_NE(e.find("token 0 has length 2147483647"), std::string::npos) << e;
  const int32_t neg = -5;
  std::memcpy(bad.data() + 8, &neg, 4);
  e = llama2c_error(bad, 512);
  EXPECT_NE(e.find("token 0 has length -5"), std::string::npos) << e;

  // Absurd max_token_length header.
  bad = good;
  std::memcpy(bad.data(), &huge, 4);
  e = llama2c_error(bad, 512);
  EXPECT_NE(e.find("max_token_length 2147483647 is absurd"), std::string::npos) << e;

  // A length within max_token_length but past the end of a truncated file.
  e = llama2c_error(good.substr(0, 4 + 8 + 2), 512);
  EXPECT_NE(e.find("truncated at token 0 of 512: length 5 but only 2 bytes remain"), std::string::npos)
      << e;

  EXPECT_NE(llama2c_error(good, 2).find("too small"), std::string::npos);
  try {
    vocab_from_llama2c("/nonexistent/tok.bin", 512);
    FAIL() << "no error";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("/nonexistent/tok.bin: cannot open"), std::string::npos)
        << err.what();
  }
}

// ---------------------------------------------------------------------------
// Tokenizer behaviour on a hand-built vocabulary (no assets needed)

Vocab tiny_vocab(bool with_bytes) {
  Vocab v;
  auto add = [&](std::string p, float s, TokenType t) {
    v.pieces.push_back(std::move(p));
    v.scores.push_back(s);
    v.types.push_back(t);
  };
  add("<unk>", 0, TokenType::unknown);
  add("<s>", 0, TokenType::control);
  add("</s>", 0, TokenType::control);
  if (with_bytes) {
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      add(buf, 0, TokenType::byte);
    }
  }
  const char* normal[] = {"\xE2\x96\x81", "a", "b", "c", "s", ">", "<", "ab", "bc", "\xE2\x96\x81" "a", "abc", "s>"};
  float score = -1;
  for (const char* p : normal) add(p, score--, TokenType::normal);
  return v;
}

TEST(TokenizerSpm, MergesByScoreAndNeverFormsControlPieces) {
  const Vocab v = tiny_vocab(true);
  SpmTokenizer tok(v);
  auto id_of = [&](const std::string& p) {
    for (int32_t i = 0; i < v.size(); ++i)
      if (v.pieces[i] == p) return i;
    return -1;
  };
  // "▁abc": pairs ▁a (-10), ab (-8), bc (-9) -> ab first; then ▁+ab? no
  // piece; ab+c = abc (-11) -> [▁, abc].
  EXPECT_EQ(tok.encode("abc", false), (std::vector<int32_t>{id_of("\xE2\x96\x81"), id_of("abc")}));
  // "<s>" text: "s>" merges but "<s>" is control -> never formed.
  const auto ids = tok.encode("<s>", true);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, id_of("\xE2\x96\x81"), id_of("<"), id_of("s>")}));
  // Unknown characters -> bytes; decode returns them.
  const auto z = tok.encode("z\xC3\xA9", false);
  EXPECT_EQ(z, (std::vector<int32_t>{id_of("\xE2\x96\x81"), 3 + 'z', 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok.decode(z), "z\xC3\xA9");
  EXPECT_TRUE(tok.encode("", false).empty());
  EXPECT_EQ(tok.encode("", true), (std::vector<int32_t>{1}));

  // Without byte tokens: a run of unknown characters is one UNK.
  SpmTokenizer nob(tiny_vocab(false));
  EXPECT_EQ(nob.encode("zzz a", false), (std::vector<int32_t>{3, 0, 3 + 9}));
  EXPECT_EQ(nob.decode(std::vector<int32_t>{1, 3 + 1, 0}), "a \xE2\x81\x87 ");
}

TEST(TokenizerSpm, DecodeRules) {
  SpmTokenizer tok(tiny_vocab(true));
  const int32_t sp_a = 3 + 256 + 9;  // "▁a"
  // Leading space of the first piece is dropped after BOS / at the start.
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, sp_a, sp_a}), "a a");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{sp_a, sp_a}), "a a");
  // Only the first non-control piece loses its space: [▁, ▁a] -> " a".
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, 3 + 256, sp_a}), " a");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{3 + 'x', sp_a}), "x a");
  EXPECT_EQ(tok.decode_token(1, sp_a), "a");
  EXPECT_EQ(tok.decode_token(sp_a, sp_a), " a");
  EXPECT_EQ(tok.decode_token(sp_a, 2), "");
  EXPECT_EQ(tok.decode_token(sp_a, 3 + 0x41), "A");
  EXPECT_EQ(tok.decode_token(sp_a, 3 + 0xFF), "\xFF");
  EXPECT_THROW(tok.decode_token(1, 100000), Error);
  EXPECT_THROW(tok.decode_token(1, -1), Error);
}

TEST(TokenizerSpm, RejectsInconsistentVocab) {
  Vocab v = tiny_vocab(true);
  v.scores.pop_back();
  try {
    SpmTokenizer t(v);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scores"), std::string::npos) << e.what();
  }
  v = tiny_vocab(true);
  v.eos = 100000;
  try {
    SpmTokenizer t(v);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("eos id 100000 out of range"), std::string::npos) << e.what();
  }
}

TEST(TokenizerSpm, LongInputIsFast) {
  SpmTokenizer tok(tiny_vocab(true));
  // Worst cases for a quadratic implementation: one 1 MB "word" with many
  // merges, and 1 MB with none.
  std::string s;
  while (s.size() < (1 << 20)) s += "abcab";
  auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(s, false);
  const auto ids2 = tok.encode(std::string(1 << 20, 'z'), false);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(tok.decode(ids), s);
  EXPECT_EQ(ids2.size(), (1u << 20) + 1);
  EXPECT_LT(secs, 5.0);
}

// ---------------------------------------------------------------------------
// Against the SentencePiece library

#ifdef LONGKV_HAVE_SENTENCEPIECE

Vocab vocab_from_processor(const sentencepiece::SentencePieceProcessor& sp,
                           const std::set<std::string>& user_defined = {}) {
  Vocab v;
  for (int i = 0; i < sp.GetPieceSize(); ++i) {
    v.pieces.push_back(sp.IdToPiece(i));
    v.scores.push_back(sp.GetScore(i));
    TokenType t = TokenType::normal;
    if (sp.IsUnknown(i)) t = TokenType::unknown;
    else if (sp.IsControl(i)) t = TokenType::control;
    else if (sp.IsByte(i)) t = TokenType::byte;
    else if (sp.IsUnused(i)) t = TokenType::unused;
    else if (user_defined.count(v.pieces.back())) t = TokenType::user_defined;
    v.types.push_back(t);
  }
  v.bos = sp.bos_id();
  v.eos = sp.eos_id();
  v.unk = sp.unk_id();
  return v;
}

struct Llama2 {
  sentencepiece::SentencePieceProcessor sp;
  std::unique_ptr<SpmTokenizer> tok;
};

// Loaded once for the whole suite (32k pieces).
Llama2* llama2() {
  static std::unique_ptr<Llama2> m = [] {
    std::unique_ptr<Llama2> r;
    if (!test::shared_exists(kSpModel)) return r;
    r = std::make_unique<Llama2>();
    if (!r->sp.Load(shared_path(kSpModel)).ok()) return std::unique_ptr<Llama2>();
    r->tok = std::make_unique<SpmTokenizer>(vocab_from_processor(r->sp));
    return r;
  }();
  return m.get();
}

std::vector<int32_t> sp_encode(const sentencepiece::SentencePieceProcessor& sp, const std::string& s) {
  std::vector<int> ids;
  EXPECT_TRUE(sp.Encode(s, &ids).ok());
  return {ids.begin(), ids.end()};
}

std::string sp_decode(const sentencepiece::SentencePieceProcessor& sp, const std::vector<int32_t>& ids) {
  std::string s;
  EXPECT_TRUE(sp.Decode(std::vector<int>(ids.begin(), ids.end()), &s).ok());
  return s;
}

// Compares encodings of many strings; returns the number of mismatches and
// describes the first one.
size_t count_mismatches(const sentencepiece::SentencePieceProcessor& sp, const SpmTokenizer& tok,
                        const std::vector<std::string>& texts, std::string* first) {
  size_t bad = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto want = sp_encode(sp, texts[i]);
    const auto got = tok.encode(texts[i], false);
    if (got != want) {
      if (bad++ == 0)
        *first = "#" + std::to_string(i) + " '" + texts[i].substr(0, 80) + "': ours " + ids_str(got) +
                 " sentencepiece " + ids_str(want);
    }
  }
  return bad;
}

#define REQUIRE_LLAMA2()                                     \
  LONGKV_REQUIRE_SHARED(kSpModel);                           \
  Llama2* m = llama2();                                      \
  ASSERT_NE(m, nullptr) << "cannot load " << kSpModel;       \
  const auto& sp = m->sp;                                    \
  const SpmTokenizer& tok = *m->tok; (void)sp

TEST(TokenizerSentencePiece, VocabMatchesModel) {
  REQUIRE_LLAMA2();
  ASSERT_EQ(tok.n_vocab(), 32000);
  EXPECT_EQ(tok.vocab().types[0], TokenType::unknown);
  EXPECT_EQ(tok.vocab().types[1], TokenType::control);
  EXPECT_EQ(tok.vocab().types[3], TokenType::byte);
  EXPECT_EQ(tok.vocab().types[259], TokenType::normal);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  (void)sp;
}

TEST(TokenizerSentencePiece, WikiTextLinesMatch) {
  REQUIRE_LLAMA2();
  LONGKV_REQUIRE_SHARED(kWiki);
  const std::string wiki = test::read_file(shared_path(kWiki));
  const auto lines = split_lines(wiki);
  ASSERT_EQ(lines.size(), 2891u);
  std::string first;
  const size_t bad = count_mismatches(sp, tok, lines, &first);
  EXPECT_EQ(bad, 0u) << bad << " of " << lines.size() << " lines differ; first: " << first;
}

TEST(TokenizerSentencePiece, WikiTextWholeFileMatchesAndIsFast) {
  REQUIRE_LLAMA2();
  LONGKV_REQUIRE_SHARED(kWiki);
  const std::string wiki = test::read_file(shared_path(kWiki));
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(wiki, true);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto want = sp_encode(sp, wiki);
  want.insert(want.begin(), 1);
  EXPECT_EQ(ids.size(), want.size());
  EXPECT_TRUE(ids == want) << "whole-file encoding differs from SentencePiece";
  // The evaluation protocol's count (models/evalmodel/README.md).
  EXPECT_EQ(ids.size(), 332755u);
  std::printf("[ tokenizer ] wiki.test.raw: %zu bytes -> %zu tokens in %.3f s\n", wiki.size(), ids.size(),
              secs);
#ifdef NDEBUG
  EXPECT_LT(secs, 2.0);
#endif
  EXPECT_TRUE(tok.decode(ids) == sp_decode(sp, want)) << "whole-file decode differs from SentencePiece";
}

TEST(TokenizerSentencePiece, AdversarialStringsMatch) {
  REQUIRE_LLAMA2();
  auto texts = adversarial_valid();
  texts.push_back(random_unicode(200 * 1024, 7));
  for (uint32_t seed = 1; seed <= 200; ++seed) texts.push_back(random_unicode(1 + seed % 97, seed));
  std::string first;
  const size_t bad = count_mismatches(sp, tok, texts, &first);
  EXPECT_EQ(bad, 0u) << bad << " of " << texts.size() << " strings differ; first: " << first;
  // Text naming special pieces never produces their ids.
  for (const char* s : {"<s>", "</s>", "<unk>", "<s></s><unk>"}) {
    for (int32_t id : tok.encode(s, false)) EXPECT_GT(id, 2) << s;
  }
}

TEST(TokenizerSentencePiece, DecodeMatches) {
  REQUIRE_LLAMA2();
  auto texts = adversarial_valid();
  for (uint32_t seed = 1; seed <= 100; ++seed) texts.push_back(random_unicode(1 + seed % 61, seed));
  size_t bad = 0;
  std::string first;
  for (const auto& t : texts) {
    for (bool bos : {false, true}) {
      const auto ids = tok.encode(t, bos);
      const std::string got = tok.decode(ids), want = sp_decode(sp, ids);
      if (got != want && bad++ == 0) first = "'" + t.substr(0, 60) + "': ours '" + got.substr(0, 60) +
                                             "' sentencepiece '" + want.substr(0, 60) + "'";
    }
  }
  EXPECT_EQ(bad, 0u) << first;
  // Arbitrary id sequences (control and UNK anywhere; byte tokens left out
  // because SentencePiece turns invalid byte runs into U+FFFD).
  std::mt19937 rng(17);
  for (int k = 0; k < 300; ++k) {
    std::vector<int32_t> ids(1 + k % 23);
    for (auto& id : ids) {
      const uint32_t r = rng() % 40;
      id = r < 3 ? static_cast<int32_t>(r) : static_cast<int32_t>(259 + rng() % (32000 - 259));
    }
    const std::string got = tok.decode(ids), want = sp_decode(sp, ids);
    if (got != want && bad++ == 0) first = ids_str(ids) + ": ours '" + got + "' sentencepiece '" + want + "'";
  }
  EXPECT_EQ(bad, 0u) << first;
  // Streaming decode after BOS equals decoding the whole sequence.
  const std::string text = "Hello world, this is a streaming test. \xE4\xBD\xA0\xE5\xA5\xBD";
  const auto ids = tok.encode(text, true);
  std::string streamed;
  for (size_t i = 1; i < ids.size(); ++i) streamed += tok.decode_token(ids[i - 1], ids[i]);
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(tok.decode(ids), text);
}

TEST(TokenizerSentencePiece, RoundTripsValidText) {
  REQUIRE_LLAMA2();
  LONGKV_REQUIRE_SHARED(kWiki);
  std::vector<std::string> texts = adversarial_valid();
  for (auto& l : split_lines(test::read_file(shared_path(kWiki)))) texts.push_back(l);
  for (uint32_t seed = 1; seed <= 100; ++seed) texts.push_back(random_unicode(1 + seed * 7, seed));
  size_t checked = 0, bad = 0;
  std::string first;
  for (const auto& t : texts) {
    // Outside the round-trip contract: literal U+2581 (decodes to ' ').
    if (t.find("\xE2\x96\x81") != std::string::npos) continue;
    ++checked;
    if (tok.decode(tok.encode(t, true)) != t && bad++ == 0) first = t.substr(0, 80);
  }
  EXPECT_GT(checked, 100u);
  EXPECT_EQ(bad, 0u) << "first: '" << first << "'";
}

TEST(TokenizerSentencePiece, InvalidUtf8) {
  REQUIRE_LLAMA2();
  const std::vector<std::string> bad = {
      "\x80",          "abc\x80xyz",           "\xBF\xBF\xBF",      "\xC3",          "caf\xC3",
      "\xE2\x96",      "\xF0\x9F\x98",         "\xC0\xAF",          "\xE0\x80\xAF",  "\xED\xA0\x80",
      "\xF4\x90\x80\x80", "\xFF",              "\xFE\xFF",          "x\xFFy\xFEz",   "\xF8\x88\x80\x80\x80",
      std::string("\xC3\0\xA9", 3),
  };
  for (const auto& s : bad) {
    ASSERT_FALSE(utf8_is_valid(s));
    const auto ids = tok.encode(s, true);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.n_vocab());
    // Each invalid byte is its own character and falls back to its byte
    // token, so the exact bytes come back.
    EXPECT_EQ(tok.decode(ids), s);
  }
  // SentencePiece instead normalizes each invalid byte to U+FFFD (bytes
  // EF BF BD), so it cannot round-trip; we keep the raw byte (<0xFF>).
  const auto ours = tok.encode("\xFF", false);
  const auto theirs = sp_encode(sp, "\xFF");
  EXPECT_EQ(ours.back(), 3 + 0xFF);
  EXPECT_EQ(theirs, sp_encode(sp, "\xEF\xBF\xBD"));
  // Random bytes: no crash, exact round trip.
  std::mt19937 rng(5);
  for (int k = 0; k < 200; ++k) {
    std::string s(1 + k % 50, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    if (s[0] == ' ') s[0] = 'x';
    if (s.find("\xE2\x96\x81") != std::string::npos) continue;
    EXPECT_EQ(tok.decode(tok.encode(s, true)), s);
  }
}

// Models trained here exercise what Llama-2 lacks: user-defined symbols
// (matched whole, never merged), extra control symbols, no byte fallback
// (runs of unknown characters collapse into one UNK), and unused pieces.
class StringIterator : public sentencepiece::SentenceIterator {
 public:
  explicit StringIterator(std::vector<std::string> v) : v_(std::move(v)) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::vector<std::string> v_;
  size_t i_ = 0;
};

TEST(TokenizerSentencePiece, TrainedModelUserDefinedNoByteFallback) {
  LONGKV_REQUIRE_SHARED(kWiki);
  auto lines = split_lines(test::read_file(shared_path(kWiki)));
  lines.resize(600);
  StringIterator it(lines);
  std::string proto;
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", "500"},
      {"user_defined_symbols", "<tag>,@@,the cat"},
      {"control_symbols", "<ctl>"},
      {"normalization_rule_name", "identity"},
      {"character_coverage", "0.98"},
      {"byte_fallback", "false"},
      {"remove_extra_whitespaces", "false"},  // as Llama; our encoder has no such step
      {"minloglevel", "2"},
  };
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  ASSERT_TRUE(st.ok()) << st.ToString();
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.LoadFromSerializedProto(proto).ok());
  SpmTokenizer tok(vocab_from_processor(sp, {"<tag>", "@@", "the cat"}));

  std::vector<std::string> texts = {
      "a <tag> b",     "<tag><tag>@@",    "@@@",        "x<ctl>y",    "the <tag>the",
      "the cat sat",   "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96 unknown run \xF0\x9F\x98\x80\xF0\x9F\x98\x80",
      "<s></s><unk>", "Q Z X J",          "",           " ",          "  <tag>  ",
  };
  for (size_t i = 600; i < 900; ++i) texts.push_back(split_lines(test::read_file(shared_path(kWiki)))[i]);
  texts.push_back(random_unicode(5000, 3));
  std::string first;
  const size_t bad = count_mismatches(sp, tok, texts, &first);
  EXPECT_EQ(bad, 0u) << bad << " of " << texts.size() << " differ; first: " << first;
  size_t dbad = 0;
  for (const auto& t : texts) {
    const auto ids = tok.encode(t, true);
    if (tok.decode(ids) != sp_decode(sp, ids) && dbad++ == 0) first = t;
  }
  EXPECT_EQ(dbad, 0u) << "decode differs, first: '" << first << "'";
}

TEST(TokenizerSentencePiece, UnusedPiecesAreResegmented) {
  LONGKV_REQUIRE_SHARED(kSpModel);
  LONGKV_REQUIRE_SHARED(kWiki);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(shared_path(kSpModel)).ok());
  // Keep every 3rd normal piece valid (plus all single characters): the rest
  // become UNUSED, which SentencePiece still merges through and then splits.
  // SetVocabulary retypes byte pieces as NORMAL/UNUSED (they stay usable
  // for byte fallback): keep them all and restore their type on our side.
  std::vector<std::string> keep;
  std::vector<int> byte_ids;
  for (int i = 0; i < sp.GetPieceSize(); ++i) {
    const std::string& p = sp.IdToPiece(i);
    if (sp.IsByte(i)) byte_ids.push_back(i);
    if (sp.IsByte(i) || i % 3 == 0 ||
        utf8_char_len(reinterpret_cast<const uint8_t*>(p.data()), p.size()) == p.size())
      keep.push_back(p);
  }
  ASSERT_EQ(byte_ids.size(), 256u);
  std::vector<absl::string_view> keep_views(keep.begin(), keep.end());
  ASSERT_TRUE(sp.SetVocabulary(keep_views).ok());
  Vocab v = vocab_from_processor(sp);
  for (int i : byte_ids) v.types[i] = TokenType::byte;
  size_t unused = 0;
  for (auto t : v.types) unused += t == TokenType::unused;
  ASSERT_GT(unused, 10000u);
  SpmTokenizer tok(v);
  auto lines = split_lines(test::read_file(shared_path(kWiki)));
  lines.resize(400);
  lines.push_back(random_unicode(3000, 11));
  std::string first;
  const size_t bad = count_mismatches(sp, tok, lines, &first);
  EXPECT_EQ(bad, 0u) << bad << " of " << lines.size() << " differ; first: " << first;
  for (const auto& l : lines)
    for (int32_t id : tok.encode(l, false)) ASSERT_NE(v.types[id], TokenType::unused) << l;
}

// ---------------------------------------------------------------------------
// GGUF vocabulary

TEST(TokenizerGguf, EvalModelVocabMatchesSentencePiece) {
  REQUIRE_LLAMA2();
  LONGKV_REQUIRE_SHARED(kEvalGguf);
  const auto g = GgufFile::open(shared_path(kEvalGguf));
  const Vocab v = vocab_from_gguf(*g);
  const Vocab& ref = tok.vocab();
  ASSERT_EQ(v.size(), ref.size());
  EXPECT_EQ(v.model, "llama");
  size_t diff = 0;
  for (int32_t i = 0; i < v.size(); ++i) {
    diff += v.pieces[i] != ref.pieces[i] || v.scores[i] != ref.scores[i] || v.types[i] != ref.types[i];
  }
  EXPECT_EQ(diff, 0u);
  EXPECT_EQ(v.bos, 1);
  EXPECT_EQ(v.eos, 2);
  EXPECT_EQ(v.unk, 0);
  EXPECT_TRUE(v.add_bos);
  EXPECT_TRUE(v.add_space_prefix);
  (void)sp;
}

TEST(TokenizerGguf, EvalModelReferenceIds) {
  LONGKV_REQUIRE_SHARED(kEvalGguf);
  LONGKV_REQUIRE_SHARED(kEvalRef);
  const auto g = GgufFile::open(shared_path(kEvalGguf));
  SpmTokenizer tok(vocab_from_gguf(*g));
  const auto ref = nlohmann::json::parse(test::read_file(shared_path(kEvalRef)));
  const auto& prompts = ref.at("prompts");
  const auto& want = ref.at("token_ids");
  ASSERT_EQ(prompts.size(), want.size());
  ASSERT_EQ(prompts.size(), 3u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string p = prompts[i].get<std::string>();
    const auto ids = tok.encode(p, tok.vocab().add_bos);
    EXPECT_EQ(ids, want[i].get<std::vector<int32_t>>()) << "prompt " << i;
    EXPECT_EQ(tok.decode(ids), p);
  }
}

#endif  // LONGKV_HAVE_SENTENCEPIECE

// Synthetic GGUF metadata for the loader's checks.
GgufWriter tiny_gguf() {
  const Vocab v = tiny_vocab(true);
  GgufWriter w;
  w.set("general.architecture", GgufValue::make_string("llama"));
  w.set("tokenizer.ggml.model", GgufValue::make_string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::make_string_array(v.pieces));
  w.set("tokenizer.ggml.scores", GgufValue::make_f32_array(v.scores));
  std::vector<int32_t> types;
  for (auto t : v.types) types.push_back(static_cast<int32_t>(t));
  w.set("tokenizer.ggml.token_type", GgufValue::make_i32_array(types));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::make_u32(1));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::make_u32(2));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::make_u32(0));
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::make_bool(false));
  return w;
}

std::string gguf_vocab_error(const GgufWriter& w) {
  const auto bytes = w.to_bytes();
  try {
    const auto g = GgufFile::parse(bytes, "t.gguf");
    vocab_from_gguf(*g);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerGguf, SyntheticVocab) {
  const auto bytes = tiny_gguf().to_bytes();
  const auto g = GgufFile::parse(bytes, "t.gguf");
  const Vocab v = vocab_from_gguf(*g);
  EXPECT_EQ(v.pieces, tiny_vocab(true).pieces);
  EXPECT_EQ(v.scores, tiny_vocab(true).scores);
  EXPECT_EQ(v.types, tiny_vocab(true).types);
  EXPECT_FALSE(v.add_space_prefix);
  EXPECT_TRUE(v.add_bos);  // default
  SpmTokenizer tok(v);
  // No dummy prefix: "abc" -> [abc].
  EXPECT_EQ(tok.encode("abc", false).size(), 1u);

  // Optional scores/types: defaults (0, types inferred from the pieces).
  GgufWriter w2;
  w2.set("general.architecture", GgufValue::make_string("llama"));
  w2.set("tokenizer.ggml.model", GgufValue::make_string("llama"));
  w2.set("tokenizer.ggml.tokens", GgufValue::make_string_array(tiny_vocab(true).pieces));
  const auto b2 = w2.to_bytes();
  const Vocab v2 = vocab_from_gguf(*GgufFile::parse(b2, "t2.gguf"));
  EXPECT_EQ(v2.types, tiny_vocab(true).types);
  EXPECT_EQ(v2.scores, std::vector<float>(v2.size(), 0.0f));
  EXPECT_TRUE(v2.add_space_prefix);
}

TEST(TokenizerGguf, RejectsBadMetadata) {
  GgufWriter w = tiny_gguf();
  w.set("tokenizer.ggml.model", GgufValue::make_string("gpt2"));
  EXPECT_NE(gguf_vocab_error(w).find(
                "unsupported tokenizer model 'gpt2' (only 'llama' SentencePiece vocabularies are supported)"),
            std::string::npos)
      << gguf_vocab_error(w);

  w = tiny_gguf();
  w.set("tokenizer.ggml.scores", GgufValue::make_f32_array({1.0f, 2.0f}));
  std::string e = gguf_vocab_error(w);
  EXPECT_NE(e.find("tokenizer.ggml.scores has 2 entries but tokenizer.ggml.tokens has"), std::string::npos)
      << e;

  w = tiny_gguf();
  w.set("tokenizer.ggml.token_type", GgufValue::make_i32_array({1, 1, 1}));
  e = gguf_vocab_error(w);
  EXPECT_NE(e.find("tokenizer.ggml.token_type has 3 entries"), std::string::npos) << e;

  w = tiny_gguf();
  std::vector<int32_t> types(tiny_vocab(true).size(), 1);
  types[5] = 9;
  w.set("tokenizer.ggml.token_type", GgufValue::make_i32_array(types));
  e = gguf_vocab_error(w);
  EXPECT_NE(e.find("tokenizer.ggml.token_type[5] = 9 is not a known type"), std::string::npos) << e;

  w = tiny_gguf();
  w.set("tokenizer.ggml.bos_token_id", GgufValue::make_u32(99999));
  e = gguf_vocab_error(w);
  EXPECT_NE(e.find("tokenizer.ggml.bos_token_id = 99999 is out of range"), std::string::npos) << e;

  w = tiny_gguf();
  w.set("tokenizer.ggml.tokens", GgufValue::make_f32_array({1.0f}));
  e = gguf_vocab_error(w);
  EXPECT_NE(e.find("tokenizer.ggml.tokens must be an array of strings"), std::string::npos) << e;

  GgufWriter empty;
  empty.set("general.architecture", GgufValue::make_string("llama"));
  e = gguf_vocab_error(empty);
  EXPECT_NE(e.find("missing metadata key 'tokenizer.ggml.model'"), std::string::npos) << e;
}

}  // namespace
}  // namespace longkv

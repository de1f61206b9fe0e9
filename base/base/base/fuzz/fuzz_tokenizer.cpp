// Fuzz target: encode arbitrary bytes with SentencePiece-style BPE and decode
// them back. Self-contained: the vocabularies are built here (byte tokens,
// merges with ties, a user-defined piece, an unused piece, a vocabulary
// without byte fallback), no files are read.
//
// Checks: no crash; ids in range; text never yields control ids; with byte
// fallback, decode(encode(x)) == x (unless x contains U+2581, which decodes
// to a space); streaming decode_token equals decode.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/spm_tokenizer.h"

namespace {

using longkv::SpmTokenizer;
using longkv::TokenType;
using longkv::Vocab;

Vocab make_vocab(bool bytes, bool extras) {
  Vocab v;
  auto add = [&](std::string p, float s, TokenType t) {
    v.pieces.push_back(std::move(p));
    v.scores.push_back(s);
    v.types.push_back(t);
  };
  add("<unk>", 0, TokenType::unknown);
  add("<s>", 0, TokenType::control);
  add("</s>", 0, TokenType::control);
  if (bytes) {
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      add(buf, 0, TokenType::byte);
    }
  }
  // Equal scores on purpose: ties must resolve leftmost-first.
  const char* pieces[] = {
      "\xE2\x96\x81", "a", "b", "c", "e", "h", "t", "s", ">", "<", "\xC3\xA9", "\xE4\xBD\xA0",
      "\xE2\x96\x81\xE2\x96\x81", "\xE2\x96\x81t", "he", "\xE2\x96\x81the", "ab", "bc", "abc",
      "aa", "aaa", "aaaa", "s>", "\xE2\x96\x81\xC3\xA9", "\xC3\xA9\xC3\xA9", "ea", "ta",
  };
  float score = 0;
  int i = 0;
  for (const char* p : pieces) add(p, (i++ % 3 == 0) ? score : --score, TokenType::normal);
  if (extras) {
    add("<tag>", 0, TokenType::user_defined);
    add("bca", -2, TokenType::unused);
    add("bcab", -3, TokenType::normal);
  }
  return v;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_tokenizer: check failed: %s\n", what);
  std::abort();
}

void check(const SpmTokenizer& tok, std::string_view text, bool round_trip) {
  const std::vector<int32_t> ids = tok.encode(text, true);
  if (ids.empty() || ids[0] != tok.bos()) die("missing BOS");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= tok.n_vocab()) die("id out of range");
    if (i > 0 && tok.vocab().types[ids[i]] == TokenType::control) die("control id from text");
  }
  const std::string dec = tok.decode(ids);
  std::string streamed;
  for (size_t i = 1; i < ids.size(); ++i) streamed += tok.decode_token(ids[i - 1], ids[i]);
  if (streamed != dec) die("streaming decode differs from decode");
  if (round_trip && text.find("\xE2\x96\x81") == std::string_view::npos && dec != text) {
    die("decode(encode(x)) != x");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const SpmTokenizer with_bytes(make_vocab(true, false));
  static const SpmTokenizer with_extras(make_vocab(true, true));
  static const SpmTokenizer no_bytes(make_vocab(false, true));
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check(with_bytes, text, true);
  check(with_extras, text, true);
  check(no_bytes, text, false);
  return 0;
}

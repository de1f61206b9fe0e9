#include "tokenizer/vocab.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "formats/gguf.h"

namespace longkv {

namespace {

bool is_byte_piece(const std::string& p) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return p.size() == 6 && p.compare(0, 3, "<0x") == 0 && hex(p[3]) && hex(p[4]) && p[5] == '>';
}

// Types for files that carry none: the fixed SentencePiece layout of the
// Llama vocabularies (0 <unk>, 1 <s>, 2 </s>) and <0xNN> byte pieces.
TokenType infer_type(int32_t id, const std::string& piece, const Vocab& v) {
  if (id == v.unk) return TokenType::unknown;
  if (id == v.bos || id == v.eos) return TokenType::control;
  if (is_byte_piece(piece)) return TokenType::byte;
  return TokenType::normal;
}

const char* type_name(GgufType t) { return gguf_type_name(t); }

// An optional array key: nullptr if absent; otherwise it must be an array of
// `n` elements.
const GgufValue* optional_array(const GgufFile& f, const char* key, size_t n) {
  const GgufValue* v = f.find(key);
  if (!v) return nullptr;
  LONGKV_CHECK(v->type == GgufType::ARRAY, "%s: %s has type %s, expected array", f.name().c_str(), key,
               type_name(v->type));
  LONGKV_CHECK(v->arr.size() == n, "%s: %s has %zu entries but tokenizer.ggml.tokens has %zu",
               f.name().c_str(), key, v->arr.size(), n);
  return v;
}

int32_t special_id(const GgufFile& f, const char* key, int32_t def, int32_t n) {
  const int64_t id = f.get_int(key, def);
  LONGKV_CHECK(id >= 0 && id < n, "%s: %s = %lld is out of range (vocabulary has %d tokens)",
               f.name().c_str(), key, static_cast<long long>(id), n);
  return static_cast<int32_t>(id);
}

}  // namespace

Vocab vocab_from_gguf(const GgufFile& f) {
  const char* fname = f.name().c_str();
  Vocab v;
  v.model = f.get("tokenizer.ggml.model").as_string("tokenizer.ggml.model");
  LONGKV_CHECK(v.model == "llama",
               "%s: unsupported tokenizer model '%s' (only 'llama' SentencePiece vocabularies are "
               "supported)",
               fname, v.model.c_str());

  const GgufValue& tokens = f.get("tokenizer.ggml.tokens");
  LONGKV_CHECK(tokens.type == GgufType::ARRAY && tokens.elem_type == GgufType::STRING,
               "%s: tokenizer.ggml.tokens must be an array of strings", fname);
  const size_t n = tokens.arr.size();
  LONGKV_CHECK(n > 0, "%s: tokenizer.ggml.tokens is empty", fname);
  LONGKV_CHECK(n < static_cast<size_t>(INT32_MAX), "%s: tokenizer.ggml.tokens has %zu entries (too many)",
               fname, n);
  const auto n32 = static_cast<int32_t>(n);
  v.pieces.reserve(n);
  for (const GgufValue& t : tokens.arr) v.pieces.push_back(t.s);

  v.bos = special_id(f, "tokenizer.ggml.bos_token_id", 1, n32);
  v.eos = special_id(f, "tokenizer.ggml.eos_token_id", 2, n32);
  v.unk = special_id(f, "tokenizer.ggml.unknown_token_id", 0, n32);
  v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", true);
  v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", true);

  v.scores.assign(n, 0.0f);
  if (const GgufValue* s = optional_array(f, "tokenizer.ggml.scores", n)) {
    LONGKV_CHECK(s->elem_type == GgufType::F32 || s->elem_type == GgufType::F64,
                 "%s: tokenizer.ggml.scores has element type %s, expected f32", fname,
                 type_name(s->elem_type));
    for (size_t i = 0; i < n; ++i) {
      v.scores[i] = static_cast<float>(s->arr[i].f);
      // A NaN score would break the strict weak ordering of the merge queue.
      LONGKV_CHECK(!std::isnan(v.scores[i]), "%s: tokenizer.ggml.scores[%zu] is NaN", fname, i);
    }
  }

  v.types.resize(n);
  if (const GgufValue* t = optional_array(f, "tokenizer.ggml.token_type", n)) {
    for (size_t i = 0; i < n; ++i) {
      const GgufValue& e = t->arr[i];
      LONGKV_CHECK(e.is_integer(), "%s: tokenizer.ggml.token_type has element type %s, expected i32",
                   fname, type_name(e.type));
      const int64_t x = e.as_int("tokenizer.ggml.token_type");
      LONGKV_CHECK(x >= 0 && x <= 6, "%s: tokenizer.ggml.token_type[%zu] = %lld is not a known type (0..6)",
                   fname, i, static_cast<long long>(x));
      v.types[i] = static_cast<TokenType>(x);
    }
  } else {
    for (int32_t i = 0; i < n32; ++i) v.types[i] = infer_type(i, v.pieces[i], v);
  }
  return v;
}

Vocab vocab_from_llama2c(const std::string& path, int32_t expected_size) {
  const char* fname = path.c_str();
  LONGKV_CHECK(expected_size >= 3, "%s: vocabulary size %d is too small (need <unk>, <s>, </s>)", fname,
               expected_size);
  std::ifstream in(path, std::ios::binary);
  LONGKV_CHECK(in.good(), "%s: cannot open tokenizer file (%s)", fname, std::strerror(errno));
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LONGKV_CHECK(!in.bad(), "%s: read error", fname);

  size_t off = 0;
  auto read_i32 = [&](const char* what, int32_t tok) {
    LONGKV_CHECK(data.size() - off >= 4,
                 "%s: truncated at token %d of %d while reading its %s (offset %zu, file size %zu); "
                 "is the vocabulary size right?",
                 fname, tok, expected_size, what, off, data.size());
    int32_t x;
    std::memcpy(&x, data.data() + off, 4);  // little-endian host (x86-64/aarch64)
    off += 4;
    return x;
  };

  LONGKV_CHECK(data.size() >= 4, "%s: file of %zu bytes is too short for a llama2.c tokenizer", fname,
               data.size());
  const int32_t max_len = read_i32("header", -1);
  LONGKV_CHECK(max_len > 0 && static_cast<size_t>(max_len) <= data.size(),
               "%s: max_token_length %d is absurd for a file of %zu bytes", fname, max_len, data.size());

  Vocab v;
  v.model = "llama";
  v.bos = 1, v.eos = 2, v.unk = 0;
  v.add_bos = true;
  v.add_space_prefix = true;
  // Reserve from what the file can hold (8 bytes per token at least), not
  // from the caller's count alone.
  v.pieces.reserve(std::min<size_t>(static_cast<size_t>(expected_size), data.size() / 8));
  for (int32_t id = 0; id < expected_size; ++id) {
    float score;
    const int32_t score_bits = read_i32("score", id);
    std::memcpy(&score, &score_bits, 4);
    LONGKV_CHECK(!std::isnan(score), "%s: token %d has a NaN score", fname, id);
    const int32_t len = read_i32("length", id);
    LONGKV_CHECK(len >= 0 && len <= max_len,
                 "%s: token %d has length %d, outside [0, max_token_length %d]", fname, id, len, max_len);
    LONGKV_CHECK(static_cast<size_t>(len) <= data.size() - off,
                 "%s: truncated at token %d of %d: length %d but only %zu bytes remain; is the "
                 "vocabulary size right?",
                 fname, id, expected_size, len, data.size() - off);
    std::string piece = data.substr(off, static_cast<size_t>(len));
    off += static_cast<size_t>(len);

    // llama2.c's exporter writes SentencePiece pieces with U+2581 replaced by
    // a plain space (and BOS/EOS as "\n<s>\n", "\n</s>\n"). Undo that, so the
    // pieces are the SentencePiece ones and one encoder (which escapes input
    // spaces to U+2581) serves both GGUF and llama2.c vocabularies.
    if (id == v.bos) {
      piece = "<s>";
    } else if (id == v.eos) {
      piece = "</s>";
    } else {
      std::string conv;
      conv.reserve(piece.size() + 8);
      for (char c : piece) {
        if (c == ' ') conv += "\xE2\x96\x81";
        else conv.push_back(c);
      }
      piece = std::move(conv);
    }
    v.types.push_back(infer_type(id, piece, v));
    v.scores.push_back(score);
    v.pieces.push_back(std::move(piece));
  }
  LONGKV_CHECK(off == data.size(),
               "%s: %zu trailing bytes after %d tokens; the vocabulary size does not match this file",
               fname, data.size() - off, expected_size);
  return v;
}

}  // namespace longkv

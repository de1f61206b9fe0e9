// A SentencePiece-style ("llama") vocabulary: pieces, scores, token types and
// special ids, from GGUF metadata or a llama2.c tokenizer file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace longkv {

class GgufFile;

// GGUF tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
};

struct Vocab {
  std::string model = "llama";      // tokenizer.ggml.model
  std::vector<std::string> pieces;  // UTF-8, with U+2581 for spaces
  std::vector<float> scores;
  std::vector<TokenType> types;
  int32_t bos = 1, eos = 2, unk = 0;
  bool add_bos = true;
  bool add_space_prefix = true;

  int32_t size() const { return static_cast<int32_t>(pieces.size()); }
};

// From tokenizer.ggml.* keys; throws Error naming the key on missing or
// inconsistent data (array lengths differ, special id out of range,
// unsupported tokenizer model).
Vocab vocab_from_gguf(const GgufFile& gguf);

// From a llama2.c tokenizer file (int32 max_token_length, then per token:
// f32 score, int32 length, bytes). Token types are inferred: <unk>/<s>/</s>
// control or unknown, <0xNN> byte, others normal. Throws on truncation or
// absurd lengths.
Vocab vocab_from_llama2c(const std::string& path, int32_t expected_size);

}  // namespace longkv

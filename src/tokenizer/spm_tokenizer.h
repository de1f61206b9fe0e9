// SentencePiece-style BPE tokenizer (GGUF tokenizer model "llama").
//
// encode: spaces -> U+2581, a U+2581 prefixed when add_space_prefix, then
// highest-score adjacent pair merging over UTF-8 characters; characters
// without a piece fall back to <0xNN> byte tokens (or UNK). Matches the
// SentencePiece library's ids for the Llama-2 model. Invalid UTF-8 input
// never crashes: each bad byte is treated as its own character (-> byte
// fallback).
//
// decode: U+2581 -> space, <0xNN> -> the raw byte; the leading space of the
// first piece after BOS is dropped (as SentencePiece does).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <functional>
#include <vector>

#include "tokenizer/vocab.h"

namespace longkv {

class SpmTokenizer {
 public:
  explicit SpmTokenizer(Vocab vocab);

  const Vocab& vocab() const { return vocab_; }
  int32_t n_vocab() const { return vocab_.size(); }
  int32_t bos() const { return vocab_.bos; }
  int32_t eos() const { return vocab_.eos; }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;

  // Text of one token given the previous token (for streaming): applies the
  // "no leading space after BOS" rule when prev == BOS. Control tokens
  // decode to "".
  std::string decode_token(int32_t prev, int32_t id) const;
  std::string decode(std::span<const int32_t> ids) const;

 private:
  struct PieceHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct TrieNode {  // user-defined pieces, matched longest-first before merging
    std::vector<std::pair<uint8_t, int32_t>> next;
    int32_t id = -1;
  };

  Vocab vocab_;
  // Every piece's first id (heterogeneous lookup: no std::string per query).
  std::unordered_map<std::string, int32_t, PieceHash, std::equal_to<>> piece_to_id_;
  int32_t byte_tokens_[256];  // byte -> <0xNN> id, or -1
  bool byte_fallback_ = false;
  size_t max_piece_len_ = 0;  // longest mergeable piece, bounds pair lookups
  std::vector<TrieNode> user_trie_;
};

}  // namespace longkv

// SentencePiece-style BPE tokenizer (GGUF tokenizer model "llama").
//
// encode: spaces -> U+2581, a U+2581 prefixed when add_space_prefix, then
// highest-score adjacent pair merging (ties: leftmost) over UTF-8 characters,
// user-defined pieces matched whole first; only normal/user-defined/unused
// pieces are ever formed, never control/unknown/byte ones. Characters
// without a piece fall back to <0xNN> byte tokens (or one UNK per run).
// Matches the SentencePiece library's ids for the Llama-2 model. Invalid
// UTF-8 input never crashes: each bad byte is treated as its own character
// and falls back to its byte token (SentencePiece instead substitutes
// U+FFFD), so with byte tokens decode(encode(x)) == x for any bytes x
// that contain no U+2581.
//
// decode: U+2581 -> space, <0xNN> -> the raw byte (not validated), control
// -> "", UNK -> " ⁇ " (U+2047); the leading space of the first non-control piece
// is dropped (as SentencePiece does); decode_token drops it when prev is BOS.
//
// Thread safety: all methods are const and may be called concurrently.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
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
  // Adjacent character pairs occurring inside mergeable pieces. Where two
  // neighbouring characters of the input form no such pair, no merge can
  // ever cross between them, so encode() runs BPE on each side separately
  // (small heaps instead of one per input). Off when unused pieces exist:
  // their re-splitting depends on merge order over the whole input.
  std::unordered_set<uint64_t> char_pairs_;
  bool segment_ = true;
};

}  // namespace longkv

#include "tokenizer/spm_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace longkv {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581

// SentencePiece's BPE merges into normal, user-defined and unused pieces only
// (its `pieces_` map); control, unknown and byte pieces are reserved and can
// never be formed from text. `undefined` is treated as normal because some
// converters leave the type array at 0.
bool mergeable(TokenType t) {
  return t == TokenType::normal || t == TokenType::user_defined || t == TokenType::unused ||
         t == TokenType::undefined;
}

// "<0xNN>" (upper- or lower-case hex) -> NN, else -1.
int parse_byte_piece(std::string_view p) {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// A character's bytes (1..4) as an integer, zero-padded. Unique per
// character: continuation bytes are never zero, so the highest non-zero
// byte gives the length (and NUL alone maps to 0).
uint32_t char_key(const uint8_t* p, size_t len) {
  uint32_t k = 0;
  std::memcpy(&k, p, len);
  return k;
}

struct Symbol {
  uint32_t start;
  uint32_t len;  // 0 once merged into its left neighbour
  int32_t prev;
  int32_t next;
  bool freeze;  // a user-defined piece: never merged
};

struct Candidate {
  float score;
  int32_t left;
  int32_t right;
  uint32_t size;
};

// Highest score first; on ties the leftmost pair (as SentencePiece).
struct CandidateOrder {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

std::string decode_piece(const Vocab& v, int32_t id, bool strip_leading_space) {
  LONGKV_CHECK(id >= 0 && id < v.size(), "tokenizer: token id %d out of range [0, %d)", id, v.size());
  std::string_view p = v.pieces[id];
  switch (v.types[id]) {
    case TokenType::control: return {};
    case TokenType::unknown: return " \xE2\x81\x87 ";  // SentencePiece's unk surface " ⁇ "
    case TokenType::byte: {
      // Raw byte, not validated as UTF-8: streaming output concatenates bytes
      // of a multi-byte character across tokens.
      const int b = parse_byte_piece(p);
      if (b >= 0) return std::string(1, static_cast<char>(b));
      break;
    }
    default: break;
  }
  if (strip_leading_space && p.starts_with(kSpaceSymbol)) p.remove_prefix(kSpaceSymbol.size());
  std::string s;
  s.reserve(p.size());
  for (size_t i = 0; i < p.size();) {
    if (p.compare(i, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
      s.push_back(' ');
      i += kSpaceSymbol.size();
    } else {
      s.push_back(p[i++]);
    }
  }
  return s;
}

}  // namespace

SpmTokenizer::SpmTokenizer(Vocab vocab) : vocab_(std::move(vocab)) {
  const size_t n = vocab_.pieces.size();
  LONGKV_CHECK(n > 0, "tokenizer: empty vocabulary");
  LONGKV_CHECK(n < static_cast<size_t>(INT32_MAX), "tokenizer: vocabulary too large (%zu)", n);
  LONGKV_CHECK(vocab_.scores.size() == n && vocab_.types.size() == n,
               "tokenizer: %zu pieces but %zu scores and %zu types", n, vocab_.scores.size(),
               vocab_.types.size());
  for (const auto& [name, id] : {std::pair{"bos", vocab_.bos}, {"eos", vocab_.eos}, {"unk", vocab_.unk}}) {
    LONGKV_CHECK(id >= 0 && id < vocab_.size(), "tokenizer: %s id %d out of range [0, %d)", name, id,
                 vocab_.size());
  }

  for (size_t i = 0; i < n; ++i) {
    // A NaN would break the strict weak ordering of the merge queue.
    LONGKV_CHECK(!std::isnan(vocab_.scores[i]), "tokenizer: score of token %zu is NaN", i);
  }

  std::fill(std::begin(byte_tokens_), std::end(byte_tokens_), -1);
  piece_to_id_.reserve(n);
  for (int32_t id = 0; id < vocab_.size(); ++id) {
    const std::string& p = vocab_.pieces[id];
    const TokenType t = vocab_.types[id];
    piece_to_id_.emplace(p, id);  // first id wins for duplicate pieces
    if (mergeable(t)) max_piece_len_ = std::max(max_piece_len_, p.size());
    if (t == TokenType::byte) {
      const int b = parse_byte_piece(p);
      if (b >= 0 && byte_tokens_[b] < 0) {
        byte_tokens_[b] = id;
        byte_fallback_ = true;
      }
    }
    if (mergeable(t)) {
      if (t == TokenType::unused) segment_ = false;
      const auto* b = reinterpret_cast<const uint8_t*>(p.data());
      uint32_t prev_key = 0;
      for (size_t i = 0; i < p.size();) {
        const size_t len = utf8_char_len(b + i, p.size() - i);
        const uint32_t key = char_key(b + i, len);
        if (i > 0) char_pairs_.insert(uint64_t{prev_key} << 32 | key);
        prev_key = key;
        i += len;
      }
    }
    if (t == TokenType::user_defined && !p.empty()) {
      if (user_trie_.empty()) user_trie_.emplace_back();
      size_t node = 0;
      for (unsigned char c : p) {
        auto& next = user_trie_[node].next;
        auto it = std::find_if(next.begin(), next.end(), [c](const auto& e) { return e.first == c; });
        if (it == next.end()) {
          next.emplace_back(c, static_cast<int32_t>(user_trie_.size()));
          node = user_trie_.size();
          user_trie_.emplace_back();
        } else {
          node = static_cast<size_t>(it->second);
        }
      }
      if (user_trie_[node].id < 0) user_trie_[node].id = id;
    }
  }
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos) out.push_back(vocab_.bos);
  if (text.empty()) return out;
  // Symbol offsets and indices are 32-bit and escaping a space triples it;
  // inputs beyond 512 MiB are not a tokenizer use.
  LONGKV_CHECK(text.size() <= (size_t{1} << 29), "tokenizer: input of %zu bytes is too long (max 512 MiB)",
               text.size());

  // Normalization of the Llama models (identity rules): escape spaces and add
  // the dummy prefix.
  std::string norm;
  norm.reserve(text.size() + text.size() / 2 + 3);
  if (vocab_.add_space_prefix) norm.append(kSpaceSymbol);
  for (char c : text) {
    if (c == ' ') norm.append(kSpaceSymbol);
    else norm.push_back(c);
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(norm.data());

  // Unused pieces take part in merging but are split again at the end into
  // the pair that last proposed them (SentencePiece's rev_merge, keyed by the
  // piece text: later proposals overwrite earlier ones).
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  std::vector<Symbol> sym;      // the current segment
  std::vector<Candidate> heap;  // reused across segments
  sym.reserve(segment_ ? 256 : norm.size());

  auto view = [&](const Symbol& s) { return std::string_view(norm.data() + s.start, s.len); };
  auto propose = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0 || sym[l].freeze || sym[r].freeze) return;
    const size_t size = size_t{sym[l].len} + sym[r].len;
    if (size > max_piece_len_) return;
    const std::string_view piece(norm.data() + sym[l].start, size);
    const auto it = piece_to_id_.find(piece);
    if (it == piece_to_id_.end()) return;
    const TokenType t = vocab_.types[it->second];
    if (!mergeable(t)) return;
    heap.push_back({vocab_.scores[it->second], l, r, static_cast<uint32_t>(size)});
    std::push_heap(heap.begin(), heap.end(), CandidateOrder{});
    if (t == TokenType::unused) rev_merge[piece] = {view(sym[l]), view(sym[r])};
  };

  // Emit ids. Unknown symbols become byte tokens when the vocabulary has them,
  // else UNK, with a run of unknown symbols collapsed into one UNK as
  // SentencePiece does.
  bool prev_unk = false;
  auto emit_piece = [&](auto&& self, std::string_view w) -> void {
    const auto it = piece_to_id_.find(w);
    if (it != piece_to_id_.end()) {
      const int32_t id = it->second;
      if (vocab_.types[id] == TokenType::unused) {
        const auto rm = rev_merge.find(w);
        if (rm != rev_merge.end()) {
          self(self, rm->second.first);
          self(self, rm->second.second);
          return;
        }
      }
      if (vocab_.types[id] != TokenType::unknown) {
        out.push_back(id);
        prev_unk = false;
        return;
      }
    }
    if (byte_fallback_) {
      for (unsigned char b : w) out.push_back(byte_tokens_[b] >= 0 ? byte_tokens_[b] : vocab_.unk);
    } else if (!prev_unk) {
      out.push_back(vocab_.unk);
    }
    prev_unk = true;
  };

  // BPE over one segment: repeatedly merge the best adjacent pair.
  auto run_segment = [&] {
    if (sym.empty()) return;
    sym.back().next = -1;
    heap.clear();
    for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) propose(i - 1, i);
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), CandidateOrder{});
      const Candidate c = heap.back();
      heap.pop_back();
      Symbol& l = sym[c.left];
      Symbol& r = sym[c.right];
      // Stale: one side was merged away or grew since this pair was proposed.
      if (l.len == 0 || r.len == 0 || l.len + r.len != c.size) continue;
      l.len += r.len;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = c.left;
      r.len = 0;
      propose(l.prev, c.left);
      propose(c.left, l.next);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) emit_piece(emit_piece, view(sym[i]));
    sym.clear();
  };

  // Initial symbols: a user-defined piece (longest match) or one UTF-8
  // character; an invalid byte is its own symbol.
  uint32_t prev_key = 0;
  for (size_t pos = 0; pos < norm.size();) {
    size_t len = 0;
    if (!user_trie_.empty()) {
      size_t node = 0;
      for (size_t i = pos; i < norm.size(); ++i) {
        const auto& next = user_trie_[node].next;
        auto it = std::find_if(next.begin(), next.end(),
                               [c = bytes[i]](const auto& e) { return e.first == c; });
        if (it == next.end()) break;
        node = static_cast<size_t>(it->second);
        if (user_trie_[node].id >= 0) len = i + 1 - pos;
      }
    }
    const bool freeze = len > 0;
    if (!freeze) len = utf8_char_len(bytes + pos, norm.size() - pos);
    const uint32_t key = freeze ? 0 : char_key(bytes + pos, len);
    if (segment_ && !sym.empty() &&
        (freeze || sym.back().freeze || !char_pairs_.contains(uint64_t{prev_key} << 32 | key))) {
      run_segment();
    }
    const auto idx = static_cast<int32_t>(sym.size());
    sym.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len), idx - 1, idx + 1, freeze});
    prev_key = key;
    pos += len;
  }
  run_segment();
  return out;
}

std::string SpmTokenizer::decode_token(int32_t prev, int32_t id) const {
  return decode_piece(vocab_, id, vocab_.add_space_prefix && prev == vocab_.bos);
}

std::string SpmTokenizer::decode(std::span<const int32_t> ids) const {
  // As SentencePiece: the dummy-prefix space is removed from the first
  // token that is not a control token (BOS), and only from that one, so
  // encode(" x") = [▁, ▁x] decodes back to " x".
  std::string out;
  bool first = vocab_.add_space_prefix;
  for (int32_t id : ids) {
    out += decode_piece(vocab_, id, first);
    if (vocab_.types[id] != TokenType::control) first = false;
  }
  return out;
}

}  // namespace longkv

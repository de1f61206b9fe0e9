// UTF-8 character boundaries for the tokenizer (RFC 3629 well-formedness:
// no overlongs, no surrogates, nothing above U+10FFFF).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace longkv {

// Length in bytes of the well-formed UTF-8 character at p[0..n), or 1 when
// the bytes there are not one (a lone continuation byte, a truncated or
// overlong sequence, 0xC0/0xC1/0xF5..0xFF): the tokenizer then treats that
// single byte as a character of its own. Requires n >= 1.
inline size_t utf8_char_len(const uint8_t* p, size_t n) {
  const uint8_t c = p[0];
  if (c < 0x80) return 1;
  auto cont = [&](size_t i, uint8_t lo = 0x80, uint8_t hi = 0xBF) {
    return i < n && p[i] >= lo && p[i] <= hi;
  };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 1;
  if (c >= 0xE0 && c <= 0xEF) {
    // E0 needs A0.. (no overlong), ED needs ..9F (no surrogates).
    const uint8_t lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return cont(1, lo, hi) && cont(2) ? 3 : 1;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    // F0 needs 90.. (no overlong), F4 needs ..8F (<= U+10FFFF).
    const uint8_t lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 1;
  }
  return 1;
}

// True when every character of s is well-formed UTF-8.
inline bool utf8_is_valid(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_char_len(p + i, s.size() - i);
    if (len == 1 && p[i] >= 0x80) return false;
    i += len;
  }
  return true;
}

}  // namespace longkv

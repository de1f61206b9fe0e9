// Internal to src/formats: the reference conversions of the formats defined
// outside weight_types.cpp, and the block helpers both files use. Callers
// elsewhere reach every format through weight_traits() (weight_types.h).
#pragma once

#include <cstdint>
#include <cstring>

#include "formats/weight_types.h"

namespace longkv::weight_refs {

// Blocks are read and written through memcpy into a local struct because a
// 34-byte Q8_0 block (or an 18-byte Q4_0 block) has no useful alignment.
template <typename Block>
Block load_block(const void* base, int64_t i) {
  Block b;
  std::memcpy(&b, static_cast<const uint8_t*>(base) + i * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
  return b;
}
template <typename Block>
void store_block(void* base, int64_t i, const Block& b) {
  std::memcpy(static_cast<uint8_t*>(base) + i * static_cast<int64_t>(sizeof(Block)), &b, sizeof(Block));
}

// weight_types_q32.cpp: Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS.
void q4_1_to_float(const void* src, float* dst, int64_t n);
void q4_1_from_float(const float* src, void* dst, int64_t n);
void q5_0_to_float(const void* src, float* dst, int64_t n);
void q5_0_from_float(const float* src, void* dst, int64_t n);
void q5_1_to_float(const void* src, float* dst, int64_t n);
void q5_1_from_float(const float* src, void* dst, int64_t n);
void iq4_nl_to_float(const void* src, float* dst, int64_t n);
void iq4_nl_from_float(const float* src, void* dst, int64_t n);
void iq4_xs_to_float(const void* src, float* dst, int64_t n);
void iq4_xs_from_float(const float* src, void* dst, int64_t n);

}  // namespace longkv::weight_refs

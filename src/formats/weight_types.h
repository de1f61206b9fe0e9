// Weight storage formats: one place that describes every block layout.
//
// Enum values are the GGUF `ggml_type` ids so a tensor's type field maps
// directly. Quantized types store a row of `n` elements as n / block_size
// blocks; a row of `n` elements takes row_bytes(type, n) bytes. Layouts
// follow ggml (see ../shared/FORMATS.md) so GGUF files are read in place.
// CPU and CUDA code include this header; nothing here depends on a backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/fp16.h"

namespace longkv {

enum class WeightType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  IQ4_NL = 20,
  IQ4_XS = 23,
  BF16 = 30,
};

// Position of t in every per-type table (weight_traits() here,
// cpu_weight_kernels() in the CPU backend): the tables list the types in
// this order and check it at compile time. No default case, and -Wswitch an
// error here: a type added to the enum and not here does not compile.
#pragma GCC diagnostic push
#pragma GCC diagnostic error "-Wswitch"
constexpr int weight_type_index(WeightType t) {
  switch (t) {
    case WeightType::F32: return 0;
    case WeightType::F16: return 1;
    case WeightType::BF16: return 2;
    case WeightType::Q8_0: return 3;
    case WeightType::Q4_0: return 4;
    case WeightType::Q4_1: return 5;
    case WeightType::Q5_0: return 6;
    case WeightType::Q5_1: return 7;
    case WeightType::IQ4_NL: return 8;
    case WeightType::Q2_K: return 9;
    case WeightType::Q3_K: return 10;
    case WeightType::Q4_K: return 11;
    case WeightType::Q5_K: return 12;
    case WeightType::Q6_K: return 13;
    case WeightType::IQ4_XS: return 14;
  }
  return -1;
}
#pragma GCC diagnostic pop

constexpr int kQK = 32;   // elements per Q8_0 / Q4_0 block
constexpr int kQKK = 256; // elements per K-quant super-block

// Q8_0: 32 elements, x = d * qs[i].
struct BlockQ8_0 {
  f16_t d;
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

// Q4_0: 32 elements; element j (j < 16) = (qs[j] & 0xF) - 8, element j + 16 =
// (qs[j] >> 4) - 8; x = d * q.
struct BlockQ4_0 {
  f16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_0) == 18);

// The 32-element formats below keep Q4_0's nibble order: element j (j < 16)
// is the low nibble of qs[j], element j + 16 its high nibble.
// Q4_1: unsigned codes 0..15; x = d * q + m.
struct BlockQ4_1 {
  f16_t d;
  f16_t m;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

// Q5_0 and Q5_1: Q4_0's / Q4_1's nibbles plus a fifth bit: bit j of the
// little-endian uint32 qh is bit 4 of element j's code (j < 32).
// Q5_0: x = d * (q - 16); Q5_1: x = d * q + m.
struct BlockQ5_0 {
  f16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_0) == 22);
struct BlockQ5_1 {
  f16_t d;
  f16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

// IQ4_NL and IQ4_XS: 4-bit codes index a fixed non-uniform table of int8
// values (denser near zero, where weights are); x = step * kIq4Values[q].
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};
// IQ4_NL: 32 elements in Q4_0's nibble order; x = d * kIq4Values[q].
struct BlockIQ4_NL {
  f16_t d;
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockIQ4_NL) == 18);

// Q2_K and Q3_K: 256 elements as 16 sub-blocks of 16 with 2-bit codes in
// qs[64]: byte 32h + l (half h = 0, 1; l < 32) holds the codes of elements
// 128h + 32j + l for j = 0..3 at bits 2j..2j+1, so sub-block s = e / 16 of
// element e = 128h + 32j + l is 8h + 2j + l / 16.
// Q2_K: x = d * (scales[s] & 0xF) * q - dmin * (scales[s] >> 4), q = 0..3.
struct BlockQ2_K {
  uint8_t scales[kQKK / 16];
  uint8_t qs[kQKK / 4];
  f16_t d;
  f16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84);

// Q3_K: Q2_K's codes with a third bit, bit 4h + j of hmask[l] for element
// 128h + 32j + l; the signed code is (q | third bit << 2) - 4, so -4..3 (a
// clear bit subtracts 4). 6-bit scales offset by 32 in scales[12]: sub-block
// s has low 4 bits (scales[s % 8] >> (4 * (s / 8))) & 0xF and high 2 bits
// (scales[8 + s % 4] >> (2 * (s / 4))) & 3; x = d * (scale - 32) * code.
struct BlockQ3_K {
  uint8_t hmask[kQKK / 8];
  uint8_t qs[kQKK / 4];
  uint8_t scales[12];
  f16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110);

// Q4_K: 256 elements as 8 sub-blocks of 32 with 6-bit (scale, min) pairs
// packed in `scales` (see FORMATS.md for the bit layout); per 64-element
// chunk c: first 32 = d*sc[2c]*(q & 0xF) - dmin*m[2c], next 32 use q >> 4
// and sub-block 2c+1; qs advances 32 bytes per chunk.
struct BlockQ4_K {
  f16_t d;
  f16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);

// Q5_K: Q4_K's sub-blocks, scales and chunks with a fifth code bit from qh:
// in chunk c, element 64c + l (l < 32) has code (qs[32c + l] & 0xF) + 16 *
// bit 2c of qh[l], element 64c + 32 + l has (qs[32c + l] >> 4) + 16 * bit
// 2c + 1 of qh[l]; x = d*sc*q - dmin*m with sub-block 2c / 2c + 1's pair.
struct BlockQ5_K {
  f16_t d;
  f16_t dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockQ5_K) == 176);

// Q6_K: 256 elements as 16 sub-blocks of 16; 6-bit codes split into the low
// 4 bits (ql) and high 2 bits (qh), int8 sub-block scales, one fp16 d;
// x = d * scales[s] * (q - 32).
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  f16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210);

// IQ4_XS: 256 elements as 8 sub-blocks of 32; sub-block ib's codes are
// qs[16 ib .. 16 ib + 15] in IQ4_NL's nibble order, and its 6-bit scale ls
// has low 4 bits (scales_l[ib / 2] >> 4 (ib % 2)) & 0xF and high 2 bits
// (scales_h >> 2 ib) & 3; x = d * (ls - 32) * kIq4Values[q].
struct BlockIQ4_XS {
  f16_t d;
  uint16_t scales_h;
  uint8_t scales_l[kQKK / 64];
  uint8_t qs[kQKK / 2];
};
static_assert(sizeof(BlockIQ4_XS) == 136);

// Reference (scalar, obviously-correct) conversions. `n` must be a multiple
// of the block size. from_float may be null for types we do not produce.
using ToFloatFn = void (*)(const void* src, float* dst, int64_t n);
using FromFloatFn = void (*)(const float* src, void* dst, int64_t n);

struct WeightTypeTraits {
  WeightType type;
  const char* name;
  int block_size;    // elements per block (1 for F32/F16/BF16)
  int block_bytes;   // bytes per block
  ToFloatFn to_float_ref;
  FromFloatFn from_float_ref;
};

// Traits for a supported type, or nullptr for an id we cannot handle.
const WeightTypeTraits* weight_type_traits(uint32_t ggml_type_id);
// Traits for a supported type (asserts it is supported).
const WeightTypeTraits& weight_traits(WeightType t);
// Name of any ggml type id, including ones we do not support ("Q5_K"), or "type#N".
const char* ggml_type_name(uint32_t ggml_type_id);
// Block geometry of any ggml type id the GGUF spec knows (supported or not),
// so a reader can validate tensor sizes of types it cannot compute with.
// Returns false for unknown/removed ids.
bool ggml_type_block(uint32_t ggml_type_id, int* block_size, int* block_bytes);
// Parse "q8_0", "F16", ...; returns false if unknown or unsupported.
bool parse_weight_type(std::string_view name, WeightType* out);

// Bytes of a row of n elements (n a multiple of the block size).
size_t row_bytes(WeightType t, int64_t n);

// A non-owning view of a 2-D weight matrix stored row-major: `rows` rows
// (output features) of `cols` elements (input features), each row
// row_bytes(type, cols) bytes, rows contiguous.
struct WeightView {
  WeightType type = WeightType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  const uint8_t* data = nullptr;

  size_t row_stride() const { return row_bytes(type, cols); }
  size_t nbytes() const { return row_stride() * static_cast<size_t>(rows); }
  const uint8_t* row(int64_t r) const { return data + row_stride() * static_cast<size_t>(r); }
  explicit operator bool() const { return data != nullptr; }
};

}  // namespace longkv

#include "formats/weight_types.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <type_traits>

#include "core/error.h"
#include "formats/weight_fit_k.h"
#include "formats/weight_refs.h"


namespace longkv {
namespace {

// ---------------------------------------------------------------------------
// Plain floats.

void f32_to_float(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}
void f32_from_float(const float* src, void* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

// memcpy per element: rows inside a GGUF file are only 2-byte aligned in the
// worst case and the reference must not depend on alignment.
void f16_to_float(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    f16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    dst[i] = f16_to_f32(h);
  }
}
void f16_from_float(const float* src, void* dst, int64_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const f16_t h = f32_to_f16(src[i]);
    std::memcpy(p + 2 * i, &h, 2);
  }
}

void bf16_to_float(const void* src, float* dst, int64_t n) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    bf16_t b;
    std::memcpy(&b, p + 2 * i, 2);
    dst[i] = bf16_to_f32(b);
  }
}
void bf16_from_float(const float* src, void* dst, int64_t n) {
  auto* p = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const bf16_t b = f32_to_bf16(src[i]);
    std::memcpy(p + 2 * i, &b, 2);
  }
}

// The block helpers and the formats of weight_types_q32.cpp.
using namespace weight_refs;

// ---------------------------------------------------------------------------
// Q8_0

void q8_0_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const auto b = load_block<BlockQ8_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = d * static_cast<float>(b.qs[j]);
  }
}

// ggml's rule: d = amax / 127, q = round(x * (1/d)) with the float d (the
// stored fp16 d is only used when decoding).
void q8_0_from_float(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* x = src + i * kQK;
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 b;
    b.d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) b.qs[j] = static_cast<int8_t>(std::round(x[j] * id));
    store_block(dst, i, b);
  }
}

// ---------------------------------------------------------------------------
// Q4_0

void q4_0_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const auto b = load_block<BlockQ4_0>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < kQK / 2; ++j) {
      dst[i * kQK + j] = d * static_cast<float>((b.qs[j] & 0xF) - 8);
      dst[i * kQK + j + kQK / 2] = d * static_cast<float>((b.qs[j] >> 4) - 8);
    }
  }
}

// ggml's rule: the element of largest magnitude maps exactly to code 0
// (d = max / -8), so the opposite side clips at +7.
void q4_0_from_float(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* x = src + i * kQK;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_0 b;
    b.d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int q1 =
          std::min(15, static_cast<int>(static_cast<int8_t>(x[j + kQK / 2] * id + 8.5f)));
      b.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
    store_block(dst, i, b);
  }
}

// ---------------------------------------------------------------------------
// Q4_K

// 6-bit (scale, min) of sub-block j from the 12 packed bytes (FORMATS.md).
void q4_k_scale_min(const uint8_t* s, int j, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

void q4_k_pack_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t s[12]) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}

// Q4_K and Q5_K share sub-blocks, scales and chunk order; Q5_K adds a
// fifth code bit per element from qh (bit 2c of qh[l] for the low nibbles of
// chunk c, bit 2c + 1 for the high ones).
template <typename Block>
void k_affine_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const auto b = load_block<Block>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    float* y = dst + i * kQKK;
    for (int c = 0; c < 4; ++c) {
      uint8_t sc0, m0, sc1, m1;
      q4_k_scale_min(b.scales, 2 * c, &sc0, &m0);
      q4_k_scale_min(b.scales, 2 * c + 1, &sc1, &m1);
      const float d0 = d * sc0, o0 = dmin * m0, d1 = d * sc1, o1 = dmin * m1;
      const uint8_t* q = b.qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        int lo = q[l] & 0xF, hi = q[l] >> 4;
        if constexpr (std::is_same_v<Block, BlockQ5_K>) {
          lo += 16 * ((b.qh[l] >> (2 * c)) & 1);
          hi += 16 * ((b.qh[l] >> (2 * c + 1)) & 1);
        }
        y[64 * c + l] = d0 * static_cast<float>(lo) - o0;
        y[64 * c + 32 + l] = d1 * static_cast<float>(hi) - o1;
      }
    }
  }
}

// The searched fit (weight_fit_k.h) of 8 sub-blocks of 32, codes 0..15
// (Q5_K: 0..31), 6-bit scales and mins. Codes in element order into Q4_K's /
// Q5_K's chunks: sub-block j = 2c (+1) is chunk c's low (high) nibbles, and
// Q5_K's fifth bit goes to qh bit j.
template <typename Block>
void k_affine_from_float(const float* src, void* dst, int64_t n) {
  constexpr bool kFive = std::is_same_v<Block, BlockQ5_K>;
  for (int64_t i = 0; i < n / kQKK; ++i) {
    Block b;
    KAffineFit f;
    k_affine_fit(src + i * kQKK, 8, 32, kFive ? 31 : 15, 63, f);
    b.d = f.d;
    b.dmin = f.dmin;
    q4_k_pack_scales(f.sc, f.m, b.scales);
    const uint8_t* codes = f.codes;
    std::memset(b.qs, 0, sizeof(b.qs));
    if constexpr (kFive) std::memset(b.qh, 0, sizeof(b.qh));
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) {
        const int q = codes[32 * j + l];
        uint8_t& byte = b.qs[32 * (j / 2) + l];
        byte = static_cast<uint8_t>(byte | (j % 2 == 0 ? (q & 0xF) : (q & 0xF) << 4));
        if constexpr (kFive) b.qh[l] = static_cast<uint8_t>(b.qh[l] | ((q >> 4) << j));
      }
    }
    store_block(dst, i, b);
  }
}

// ---------------------------------------------------------------------------
// Q2_K and Q3_K: 2-bit codes of element e = 128h + 32j + l at bits 2j of
// qs[32h + l]; sub-block e / 16.

int low2_code(const uint8_t* qs, int e) {
  const int h = e / 128, j = (e % 128) / 32, l = e % 32;
  return (qs[32 * h + l] >> (2 * j)) & 3;
}
void put_low2_code(uint8_t* qs, int e, int q) {
  const int h = e / 128, j = (e % 128) / 32, l = e % 32;
  qs[32 * h + l] = static_cast<uint8_t>(qs[32 * h + l] | ((q & 3) << (2 * j)));
}

void q2_k_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const auto b = load_block<BlockQ2_K>(src, i);
    const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
    for (int e = 0; e < kQKK; ++e) {
      const uint8_t s = b.scales[e / 16];
      dst[i * kQKK + e] = d * (s & 0xF) * static_cast<float>(low2_code(b.qs, e)) - dmin * (s >> 4);
    }
  }
}

// The searched fit (weight_fit_k.h): 16 sub-blocks of 16, codes 0..3, 4-bit
// scales and mins.
void q2_k_from_float(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    KAffineFit f;
    k_affine_fit(src + i * kQKK, 16, 16, 3, 15, f);
    BlockQ2_K b{};
    b.d = f.d;
    b.dmin = f.dmin;
    for (int s = 0; s < 16; ++s) b.scales[s] = static_cast<uint8_t>(f.sc[s] | (f.m[s] << 4));
    for (int e = 0; e < kQKK; ++e) put_low2_code(b.qs, e, f.codes[e]);
    store_block(dst, i, b);
  }
}

// Sub-block s's 6-bit scale of a Q3_K block (0..63; the value is scale - 32).
int q3_k_scale(const uint8_t* sc, int s) {
  return ((sc[s % 8] >> (4 * (s / 8))) & 0xF) | (((sc[8 + s % 4] >> (2 * (s / 4))) & 3) << 4);
}

void q3_k_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const auto b = load_block<BlockQ3_K>(src, i);
    const float d = f16_to_f32(b.d);
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, j = (e % 128) / 32, l = e % 32;
      const int code = low2_code(b.qs, e) + 4 * ((b.hmask[l] >> (4 * h + j)) & 1) - 4;
      dst[i * kQKK + e] = d * static_cast<float>(q3_k_scale(b.scales, e / 16) - 32) * static_cast<float>(code);
    }
  }
}

// The searched fit (weight_fit_k.h): codes -4..3, scales -32..31.
void q3_k_from_float(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    KSymmetricFit f;
    k_symmetric_fit(src + i * kQKK, 3, -32, 31, f);
    BlockQ3_K b{};
    b.d = f.d;
    for (int s = 0; s < 16; ++s) {
      const int sc = f.l[s] + 32;
      b.scales[s % 8] = static_cast<uint8_t>(b.scales[s % 8] | ((sc & 0xF) << (4 * (s / 8))));
      b.scales[8 + s % 4] = static_cast<uint8_t>(b.scales[8 + s % 4] | ((sc >> 4) << (2 * (s / 4))));
    }
    for (int e = 0; e < kQKK; ++e) {
      const int code = f.codes[e] + 4;
      put_low2_code(b.qs, e, code & 3);
      const int h = e / 128, j = (e % 128) / 32;
      b.hmask[e % 32] = static_cast<uint8_t>(b.hmask[e % 32] | ((code >> 2) << (4 * h + j)));
    }
    store_block(dst, i, b);
  }
}

// ---------------------------------------------------------------------------
// Q6_K

void q6_k_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const auto b = load_block<BlockQ6_K>(src, i);
    const float d = f16_to_f32(b.d);
    float* y = dst + i * kQKK;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b.ql + 64 * h;
      const uint8_t* qh = b.qh + 32 * h;
      const int8_t* sc = b.scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q0 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[128 * h + l] = d * sc[is] * static_cast<float>(q0);
        y[128 * h + l + 32] = d * sc[is + 2] * static_cast<float>(q1);
        y[128 * h + l + 64] = d * sc[is + 4] * static_cast<float>(q2);
        y[128 * h + l + 96] = d * sc[is + 6] * static_cast<float>(q3);
      }
    }
  }
}

// The searched fit (weight_fit_k.h): codes -32..31, scales -128..127.
void q6_k_from_float(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    KSymmetricFit f;
    k_symmetric_fit(src + i * kQKK, 31, -128, 127, f);
    BlockQ6_K b;
    b.d = f.d;
    for (int s = 0; s < 16; ++s) b.scales[s] = static_cast<int8_t>(f.l[s]);
    uint8_t q[kQKK];
    for (int e = 0; e < kQKK; ++e) q[e] = static_cast<uint8_t>(f.codes[e] + 32);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* qq = q + 128 * h;
      for (int l = 0; l < 32; ++l) {
        b.ql[64 * h + l] = static_cast<uint8_t>((qq[l] & 0xF) | ((qq[l + 64] & 0xF) << 4));
        b.ql[64 * h + l + 32] = static_cast<uint8_t>((qq[l + 32] & 0xF) | ((qq[l + 96] & 0xF) << 4));
        b.qh[32 * h + l] = static_cast<uint8_t>((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) |
                                                ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
      }
    }
    store_block(dst, i, b);
  }
}

// ---------------------------------------------------------------------------
// The traits table.

constexpr WeightTypeTraits kTraits[] = {
    {.type = WeightType::F32, .name = "F32", .block_size = 1, .block_bytes = 4,
     .to_float_ref = f32_to_float, .from_float_ref = f32_from_float},
    {.type = WeightType::F16, .name = "F16", .block_size = 1, .block_bytes = 2,
     .to_float_ref = f16_to_float, .from_float_ref = f16_from_float},
    {.type = WeightType::BF16, .name = "BF16", .block_size = 1, .block_bytes = 2,
     .to_float_ref = bf16_to_float, .from_float_ref = bf16_from_float},
    {.type = WeightType::Q8_0, .name = "Q8_0", .block_size = kQK,
     .block_bytes = sizeof(BlockQ8_0), .to_float_ref = q8_0_to_float,
     .from_float_ref = q8_0_from_float},
    {.type = WeightType::Q4_0, .name = "Q4_0", .block_size = kQK,
     .block_bytes = sizeof(BlockQ4_0), .to_float_ref = q4_0_to_float,
     .from_float_ref = q4_0_from_float},
    {.type = WeightType::Q4_1, .name = "Q4_1", .block_size = kQK,
     .block_bytes = sizeof(BlockQ4_1), .to_float_ref = q4_1_to_float,
     .from_float_ref = q4_1_from_float},
    {.type = WeightType::Q5_0, .name = "Q5_0", .block_size = kQK,
     .block_bytes = sizeof(BlockQ5_0), .to_float_ref = q5_0_to_float,
     .from_float_ref = q5_0_from_float},
    {.type = WeightType::Q5_1, .name = "Q5_1", .block_size = kQK,
     .block_bytes = sizeof(BlockQ5_1), .to_float_ref = q5_1_to_float,
     .from_float_ref = q5_1_from_float},
    {.type = WeightType::IQ4_NL, .name = "IQ4_NL", .block_size = kQK,
     .block_bytes = sizeof(BlockIQ4_NL), .to_float_ref = iq4_nl_to_float,
     .from_float_ref = iq4_nl_from_float},
    {.type = WeightType::Q2_K, .name = "Q2_K", .block_size = kQKK,
     .block_bytes = sizeof(BlockQ2_K), .to_float_ref = q2_k_to_float,
     .from_float_ref = q2_k_from_float},
    {.type = WeightType::Q3_K, .name = "Q3_K", .block_size = kQKK,
     .block_bytes = sizeof(BlockQ3_K), .to_float_ref = q3_k_to_float,
     .from_float_ref = q3_k_from_float},
    {.type = WeightType::Q4_K, .name = "Q4_K", .block_size = kQKK,
     .block_bytes = sizeof(BlockQ4_K), .to_float_ref = k_affine_to_float<BlockQ4_K>,
     .from_float_ref = k_affine_from_float<BlockQ4_K>},
    {.type = WeightType::Q5_K, .name = "Q5_K", .block_size = kQKK,
     .block_bytes = sizeof(BlockQ5_K), .to_float_ref = k_affine_to_float<BlockQ5_K>,
     .from_float_ref = k_affine_from_float<BlockQ5_K>},
    {.type = WeightType::Q6_K, .name = "Q6_K", .block_size = kQKK,
     .block_bytes = sizeof(BlockQ6_K), .to_float_ref = q6_k_to_float,
     .from_float_ref = q6_k_from_float},
    {.type = WeightType::IQ4_XS, .name = "IQ4_XS", .block_size = kQKK,
     .block_bytes = sizeof(BlockIQ4_XS), .to_float_ref = iq4_xs_to_float,
     .from_float_ref = iq4_xs_from_float},
};

constexpr bool traits_table_consistent() {
  for (int i = 0; i < static_cast<int>(std::size(kTraits)); ++i) {
    if (weight_type_index(kTraits[i].type) != i) return false;
    if (kTraits[i].to_float_ref == nullptr) return false;
  }
  return true;
}
static_assert(traits_table_consistent(), "kTraits order must match weight_type_index()");

// Every id in ggml's enum: name and block geometry (ggml-common.h). Ids that
// were removed from GGUF (4, 5, 31-33, 36-38) have no entry.
struct GgmlTypeInfo {
  uint32_t id;
  const char* name;
  int block_size;   // 0: known name, geometry not confirmed
  int block_bytes;
};

constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
    {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},      {10, "Q2_K", 256, 84},
    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66},
    {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
    {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},  {22, "IQ2_S", 256, 82},
    {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},
    {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
    {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
    // NVFP4: 4 UE4M3 sub-block scales + 32 code bytes per 64 elements.
    {40, "NVFP4", 64, 36},
    // Q1_0: fp16 d + 128 sign bits.
    {41, "Q1_0", 128, 18},
    // Q2_0: forks disagree on the group size (64 in ggml master, 128 with
    // 34-byte blocks elsewhere) under the same id, so we do not claim one.
    {42, "Q2_0", 0, 0},
};

const GgmlTypeInfo* find_ggml_type(uint32_t id) {
  for (const auto& t : kGgmlTypes)
    if (t.id == id) return &t;
  return nullptr;
}

bool ieq(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

}  // namespace

const WeightTypeTraits* weight_type_traits(uint32_t ggml_type_id) {
  for (const auto& t : kTraits)
    if (static_cast<uint32_t>(t.type) == ggml_type_id) return &t;
  return nullptr;
}

const WeightTypeTraits& weight_traits(WeightType t) {
  const int i = weight_type_index(t);
  LONGKV_ASSERT(i >= 0);
  return kTraits[i];
}

const char* ggml_type_name(uint32_t ggml_type_id) {
  if (const GgmlTypeInfo* t = find_ggml_type(ggml_type_id)) return t->name;
  // A small per-thread ring so a caller can format a few names in one
  // printf without the later ones overwriting the earlier.
  thread_local char ring[4][24];
  thread_local int next = 0;
  char* buf = ring[next];
  next = (next + 1) % 4;
  std::snprintf(buf, sizeof(ring[0]), "type#%u", ggml_type_id);
  return buf;
}

bool ggml_type_block(uint32_t ggml_type_id, int* block_size, int* block_bytes) {
  const GgmlTypeInfo* t = find_ggml_type(ggml_type_id);
  if (t == nullptr || t->block_size == 0) return false;
  *block_size = t->block_size;
  *block_bytes = t->block_bytes;
  return true;
}

bool parse_weight_type(std::string_view name, WeightType* out) {
  for (const auto& t : kTraits) {
    if (ieq(name, t.name)) {
      *out = t.type;
      return true;
    }
  }
  return false;
}

size_t row_bytes(WeightType t, int64_t n) {
  const WeightTypeTraits& tr = weight_traits(t);
  LONGKV_ASSERT(n >= 0 && n % tr.block_size == 0);
  return static_cast<size_t>(n / tr.block_size) * static_cast<size_t>(tr.block_bytes);
}

}  // namespace longkv

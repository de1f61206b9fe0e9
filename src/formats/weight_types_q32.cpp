// Reference conversions of the 32-element block formats beside Q4_0 (Q4_1,
// Q5_0, Q5_1, IQ4_NL) and of IQ4_XS, IQ4_NL's 256-element form. Layouts:
// formats/weight_types.h. Q4_1, Q5_0 and Q5_1 quantize by ggml's rules, so
// their bytes equal those of gguf-py's quantize() (tests/test_weight_types.cpp
// holds them); the IQ4 fits are our own.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "formats/weight_refs.h"

namespace longkv::weight_refs {
namespace {

// Element j's fifth bit (Q5_0, Q5_1): bit j of the little-endian qh word.
uint32_t load_qh(const uint8_t (&qh)[4]) {
  uint32_t w;
  std::memcpy(&w, qh, 4);
  return w;
}

// Code of element j (0..31) of a 32-element block in Q4_0's nibble order.
int nibble(const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4; }
// Q5_0's / Q5_1's code of element j: the nibble and bit j of qh as bit 4.
int code5(const uint8_t* qs, uint32_t qh, int j) { return nibble(qs, j) | static_cast<int>((qh >> j & 1) << 4); }

// Packs 32 codes (0..31) into Q4_0's nibble order and, for five bits, qh.
void pack_codes(const int (&q)[kQK], uint8_t* qs, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < kQK / 2; ++j) qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
  for (int j = 0; j < kQK; ++j) h |= static_cast<uint32_t>(q[j] >> 4 & 1) << j;
  if (qh != nullptr) std::memcpy(qh, &h, 4);
}

// ggml's affine rule (Q4_1, Q5_1): d = (max - min) / top, codes
// trunc((x - min) / d + 0.5) clipped to top. The product is rounded to float
// before the half is added (in double, so no FMA can fuse the two), as
// gguf-py and ggml's reference do.
void affine_block(const float* x, int top, float& d, float& mn, int (&q)[kQK]) {
  mn = x[0];
  float mx = x[0];
  for (int j = 1; j < kQK; ++j) {
    mn = std::min(mn, x[j]);
    mx = std::max(mx, x[j]);
  }
  d = (mx - mn) / static_cast<float>(top);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK; ++j) {
    const float p = (x[j] - mn) * id;
    q[j] = std::min(top, static_cast<int>(static_cast<double>(p) + 0.5));
  }
}

// Q4_1 and Q5_1 (their qh, if any, from the codes' bit 4).
template <typename Block>
void affine_from_float(const float* src, void* dst, int64_t n) {
  constexpr bool kFive = std::is_same_v<Block, BlockQ5_1>;
  for (int64_t i = 0; i < n / kQK; ++i) {
    float d, mn;
    int q[kQK];
    affine_block(src + i * kQK, kFive ? 31 : 15, d, mn, q);
    Block b;
    b.d = f32_to_f16(d);
    b.m = f32_to_f16(mn);
    if constexpr (kFive) pack_codes(q, b.qs, b.qh);
    else pack_codes(q, b.qs, nullptr);
    store_block(dst, i, b);
  }
}

// ---------------------------------------------------------------------------
// IQ4: the nearest table value and a searched step.

// Index of the table value nearest v. The midpoints between neighbouring
// values are multiples of 1/2, so the nearest value is constant on each
// [k/2, (k + 1)/2): a table over floor(2v) answers in one load (beyond the
// table's range, the end values; a tie falls to the upper value).
struct Iq4Nearest {
  static constexpr int kHalf = 512;  // floor(2v) in [-512, 511]
  int8_t idx[2 * kHalf];
  Iq4Nearest() {
    for (int k = -kHalf; k < kHalf; ++k) {
      const float v = 0.5f * static_cast<float>(k) + 0.25f;  // inside [k/2, (k + 1)/2)
      int best = 0;
      for (int i = 1; i < 16; ++i)
        if (std::fabs(v - kIq4Values[i]) < std::fabs(v - kIq4Values[best])) best = i;
      idx[k + kHalf] = static_cast<int8_t>(best);
    }
  }
  int operator()(float v) const {
    const float h = std::floor(2.0f * std::clamp(v, -256.0f, 255.0f));
    return idx[static_cast<int>(h) + kHalf];
  }
};
const Iq4Nearest kIq4Nearest;

// Codes of n elements for step s (x ~ s * value); s == 0 gives the code of
// the value nearest 0.
void iq4_codes(const float* x, int n, float s, uint8_t* codes) {
  const float inv = s != 0.0f ? 1.0f / s : 0.0f;
  for (int j = 0; j < n; ++j) codes[j] = static_cast<uint8_t>(kIq4Nearest(x[j] * inv));
}

// Not ggml's search: the step of a 32-element group, tried with the element
// of largest magnitude near either end of the table (it is asymmetric,
// -127..113) at a few stretches; for each the codes, then the least-squares
// step for those codes, whose squared error is sum x^2 - (x.t)^2 / (t.t);
// the candidate with the smallest error wins.
float iq4_fit(const float* x, int n) {
  float amax = 0.0f, mx = 0.0f;
  for (int j = 0; j < n; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      mx = x[j];
    }
  if (amax == 0.0f) return 0.0f;
  float best = 0.0f;
  double best_gain = -1.0;  // (x.t)^2 / (t.t): the larger, the smaller the error
  for (const float end : {static_cast<float>(kIq4Values[0]), static_cast<float>(kIq4Values[15])}) {
    for (const float stretch : {0.96f, 1.0f, 1.04f, 1.08f}) {
      const float inv = end * stretch / mx;
      float xt = 0.0f, tt = 0.0f;
      for (int j = 0; j < n; ++j) {
        const float t = kIq4Values[kIq4Nearest(x[j] * inv)];
        xt += x[j] * t;
        tt += t * t;
      }
      const double gain = static_cast<double>(xt) * xt / tt;
      if (gain > best_gain) {
        best_gain = gain;
        best = xt / tt;
      }
    }
  }
  return best;
}

}  // namespace

// ---------------------------------------------------------------------------
// Q4_1

void q4_1_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const auto b = load_block<BlockQ4_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = d * static_cast<float>(nibble(b.qs, j)) + m;
  }
}

void q4_1_from_float(const float* src, void* dst, int64_t n) { affine_from_float<BlockQ4_1>(src, dst, n); }

// ---------------------------------------------------------------------------
// Q5_0 and Q5_1

void q5_0_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const auto b = load_block<BlockQ5_0>(src, i);
    const float d = f16_to_f32(b.d);
    const uint32_t qh = load_qh(b.qh);
    for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = d * static_cast<float>(code5(b.qs, qh, j) - 16);
  }
}

// ggml's rule, as Q4_0's: the element of largest magnitude maps to code 0
// (d = max / -16), the other side clips at 31. The code is trunc(x / d +
// 16.5) with the product and the sum in double (exact product, one rounding:
// what gguf-py computes, and what ggml's C gives when it fuses the two).
void q5_0_from_float(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* x = src + i * kQK;
    float amax = 0.0f, mx = 0.0f;
    for (int j = 0; j < kQK; ++j)
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        mx = x[j];
      }
    const float d = mx / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int q[kQK];
    for (int j = 0; j < kQK; ++j)
      q[j] = std::min(31, static_cast<int>(static_cast<double>(x[j]) * static_cast<double>(id) + 16.5));
    BlockQ5_0 b;
    b.d = f32_to_f16(d);
    pack_codes(q, b.qs, b.qh);
    store_block(dst, i, b);
  }
}

void q5_1_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const auto b = load_block<BlockQ5_1>(src, i);
    const float d = f16_to_f32(b.d), m = f16_to_f32(b.m);
    const uint32_t qh = load_qh(b.qh);
    for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = d * static_cast<float>(code5(b.qs, qh, j)) + m;
  }
}

void q5_1_from_float(const float* src, void* dst, int64_t n) { affine_from_float<BlockQ5_1>(src, dst, n); }

// ---------------------------------------------------------------------------
// IQ4_NL and IQ4_XS

void iq4_nl_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const auto b = load_block<BlockIQ4_NL>(src, i);
    const float d = f16_to_f32(b.d);
    for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = d * static_cast<float>(kIq4Values[nibble(b.qs, j)]);
  }
}

// The searched step, rounded to fp16, then the codes for the stored step.
void iq4_nl_from_float(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* x = src + i * kQK;
    BlockIQ4_NL b;
    b.d = f32_to_f16(iq4_fit(x, kQK));
    uint8_t c[kQK];
    iq4_codes(x, kQK, f16_to_f32(b.d), c);
    int q[kQK];
    for (int j = 0; j < kQK; ++j) q[j] = c[j];
    pack_codes(q, b.qs, nullptr);
    store_block(dst, i, b);
  }
}

namespace {
int iq4_xs_scale(const BlockIQ4_XS& b, int ib) {
  return ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b.scales_h >> (2 * ib)) & 3) << 4);
}
}  // namespace

void iq4_xs_to_float(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const auto b = load_block<BlockIQ4_XS>(src, i);
    const float d = f16_to_f32(b.d);
    for (int ib = 0; ib < 8; ++ib) {
      const float dl = d * static_cast<float>(iq4_xs_scale(b, ib) - 32);
      for (int j = 0; j < kQK; ++j)
        dst[i * kQKK + kQK * ib + j] = dl * static_cast<float>(kIq4Values[nibble(b.qs + 16 * ib, j)]);
    }
  }
}

// Each sub-block's searched step becomes an integer multiple l (-32..31) of
// d, with the step of largest magnitude at l = -32; then the codes for the
// stored steps d * l.
void iq4_xs_from_float(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float* x = src + i * kQKK;
    float s[8], big = 0.0f;
    for (int ib = 0; ib < 8; ++ib) {
      s[ib] = iq4_fit(x + kQK * ib, kQK);
      if (std::fabs(s[ib]) > std::fabs(big)) big = s[ib];
    }
    BlockIQ4_XS b{};
    b.d = f32_to_f16(big / -32.0f);
    const float d = f16_to_f32(b.d);
    for (int ib = 0; ib < 8; ++ib) {
      const float lf = d != 0.0f ? std::nearbyint(s[ib] / d) : 0.0f;
      const int l = static_cast<int>(std::clamp(lf, -32.0f, 31.0f)), ls = l + 32;
      b.scales_l[ib / 2] = static_cast<uint8_t>(b.scales_l[ib / 2] | (ls & 0xF) << (4 * (ib % 2)));
      b.scales_h = static_cast<uint16_t>(b.scales_h | (ls >> 4) << (2 * ib));
      uint8_t c[kQK];
      iq4_codes(x + kQK * ib, kQK, d * static_cast<float>(l), c);
      for (int j = 0; j < kQK / 2; ++j) b.qs[16 * ib + j] = static_cast<uint8_t>(c[j] | c[j + 16] << 4);
    }
    store_block(dst, i, b);
  }
}

}  // namespace longkv::weight_refs

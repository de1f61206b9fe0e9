// IEEE half and bfloat16 <-> float conversions, scalar and bulk.
//
// Scalar versions are exact bit manipulations (no intrinsics) so they work in
// constexpr-free contexts everywhere; the bulk versions use F16C when the
// compiler targets it. Rounding: float -> half/bf16 is round-to-nearest-even.
#pragma once

#include <cstdint>
#include <cstring>

namespace longkv {

using f16_t = uint16_t;   // IEEE 754 binary16 bit pattern
using bf16_t = uint16_t;  // bfloat16 bit pattern

inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float f16_to_f32(f16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return f32_from_bits(sign);
    // subnormal: value = mant * 2^-24
    float f = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -f : f;
  }
  if (exp == 31) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
  return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

inline f16_t f32_to_f16(float f) {
  const uint32_t x = f32_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<f16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
  if (ax >= 0x477ff000u) return static_cast<f16_t>(sign | 0x7c00u);  // overflow -> inf
  if (ax < 0x38800000u) {
    // subnormal or zero in half: round(ax_value / 2^-24)
    const float v = f32_from_bits(ax) * 16777216.0f;
    // nearbyint with ties-to-even via the float add trick
    const float r = (v + 12582912.0f) - 12582912.0f;
    return static_cast<f16_t>(sign | static_cast<uint32_t>(r));
  }
  const uint32_t mant_odd = (ax >> 13) & 1u;
  const uint32_t rounded = ax + 0xfffu + mant_odd;
  return static_cast<f16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

inline float bf16_to_f32(bf16_t b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }

inline bf16_t f32_to_bf16(float f) {
  uint32_t x = f32_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<bf16_t>(x >> 16);
}

// Bulk conversions (SIMD where available).
void f16_to_f32_n(const f16_t* src, float* dst, int64_t n);
void f32_to_f16_n(const float* src, f16_t* dst, int64_t n);
void bf16_to_f32_n(const bf16_t* src, float* dst, int64_t n);

}  // namespace longkv

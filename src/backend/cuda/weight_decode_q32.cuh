// The 32-element weight formats beside Q4_0 -- Q4_1, Q5_0, Q5_1, IQ4_NL --
// and IQ4_XS (IQ4_NL's codes in 256-element blocks, a scale per 32) on the
// GPU: their row layout, element decode and GEMV units (Slab). Stored
// layouts: formats/weight_types.h. weight_decode.cuh includes this header at
// its end; it builds on that one's helpers (XI8, dot4, dp4a_u8s8, ...).
//
// GPU row layout (upload_weight; a row's bytes, only moved): the blocks'
// 16-byte-aligned code bodies, then their tails, as Q4_0's:
//   Q4_1    qs[16]   | d, m                          (20 bytes a block)
//   Q5_1    qs[16]   | d, m, qh'                     (24)
//   Q5_0    qs[16]   | qh' | d                       (22: three parts, all
//           blocks' qs, then all their qh' words, then all their d, so that
//           each is an aligned load)
//   IQ4_NL  qs'[16]  | d                             (18)
//   IQ4_XS  qs'[128] | d, scales_h, scales_l[4]      (136: the header as stored)
// qs: Q4_0's nibble order, as stored (byte k: element k low, k + 16 high).
// qh' (Q5): the block's 32 fifth bits reordered (q5_hbit_pos) so that qs word
// j's eight codes take theirs with one shift and two masks: bit 8k + 4 + j
// is element 4j + k's (the word's low nibbles), bit 8k + j element
// 16 + 4j + k's (its high nibbles); a shift by j puts them at bits 4 and 0 of
// byte k. qs' (IQ4): each 32 codes' 16 bytes as 4 words, nibble n of word j
// element 16 (n / 4) + 4j + n % 4 (iq4_nibble_pos), so a word's low half is
// the PRMT selector of elements 4j..4j+3 and its high half of 16 + 4j..;
// each code is stored as iq4_gpu_code(index), so that the int8 table values
// come from 2 PRMTs and an XOR per 4 codes (iq4_word_bytes).
// A unit (the GEMV) is a block, IQ4_XS's a 32-element sub-block; its x is
// the 32 elements in order, XI8's order (quantize_x_i8).
#pragma once

#include "backend/cuda/weight_decode.cuh"

namespace longkv::cuda {

// Bit of qh' holding element e's fifth bit (Q5_0, Q5_1; e < 32).
__host__ __device__ constexpr int q5_hbit_pos(int e) {
  return e < 16 ? 8 * (e % 4) + 4 + e / 4 : 8 * (e % 4) + (e - 16) / 4;
}
// Nibble of a qs' unit (IQ4_NL block, IQ4_XS sub-block) holding element e's code.
__host__ __device__ constexpr int iq4_nibble_pos(int e) { return 8 * (e % 16 / 4) + 4 * (e / 16) + e % 4; }
// The code stored on the GPU for table index c (and back: bits 2 and 3
// swapped, an involution). Slot n & 7 of a stored code n then holds two
// values of one sign: slots 0-3 the negative ones (indices 0-7), slots 4-7
// the positive ones (8-15); iq4_word_bytes needs that.
__host__ __device__ constexpr int iq4_gpu_code(int c) { return (c & 3) | (c & 4) << 1 | (c & 8) >> 1; }

// PTX prmt.b32's generic form (PTX ISA, prmt): byte i of the result is
// byte (c >> 4i) & 7 of b:a, or, where bit 4i + 3 of c is set, that byte's
// sign bit replicated; c's upper 16 bits are ignored. The host form checks
// the tables below at compile time.
constexpr uint32_t prmt_ref(uint32_t a, uint32_t b, uint32_t c) {
  const uint64_t src = static_cast<uint64_t>(b) << 32 | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t sel = (c >> (4 * i)) & 0xF;
    uint32_t byte = static_cast<uint32_t>(src >> (8 * (sel & 7))) & 0xFF;
    if (sel & 8) byte = byte & 0x80 ? 0xFF : 0;
    r |= byte << (8 * i);
  }
  return r;
}
// The device form with constant sources (immediates: ptxas places them
// without holding registers through a loop). Not __byte_perm: its
// documented selector is 3 bits a byte.
template <uint32_t A, uint32_t B>
__device__ __forceinline__ uint32_t prmt(uint32_t c) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "n"(A), "n"(B), "r"(c));
  return r;
}

// The IQ4 lookup in two PRMTs and an XOR per 4 codes (milestone 65; before,
// three PRMTs and the selectors' masks). With stored codes n (iq4_gpu_code),
// slot s = n & 7 and h = n >> 3, A_s, B_s the values of n = s and s + 8:
//   P = prmt(T, n):      h = 0: T[s];  h = 1: T[s]'s sign, 0x00 or 0xFF
//   Q = prmt(U, n ^ 8):  h = 0: U[s]'s sign;  h = 1: U[s]
// T[s] = A_s; U[s] = B_s (s >= 4, both positive) or ~B_s (s < 4, A_s and B_s
// negative). Then U's bytes are all positive, so for h = 0 P ^ Q = A_s, and
// for h = 1 P ^ Q = B_s (s >= 4: 0 ^ B_s; s < 4: 0xFF ^ ~B_s). Bias 128 (the
// unsigned bytes of dot4<128>) XORs 0x80 into each byte, in the same LOP3.
constexpr uint8_t iq4_slot_value(int n) { return static_cast<uint8_t>(kIq4Values[iq4_gpu_code(n)]); }
constexpr uint32_t iq4_table_word(bool second, int k) {
  uint32_t w = 0;
  for (int i = 0; i < 4; ++i) {
    const int s = 4 * k + i;
    const uint8_t a = iq4_slot_value(s), b = iq4_slot_value(s + 8);
    const uint8_t v = !second ? a : s < 4 ? static_cast<uint8_t>(~b) : b;
    w |= static_cast<uint32_t>(v) << (8 * i);
  }
  return w;
}
struct Iq4Table {
  static constexpr uint32_t t0 = iq4_table_word(false, 0), t1 = iq4_table_word(false, 1),
                            u0 = iq4_table_word(true, 0), u1 = iq4_table_word(true, 1);
};
// The four bytes (bias added) of the codes in selector c's low 16 bits, the
// host form: what iq4_word_bytes computes.
constexpr uint32_t iq4_lookup_ref(uint32_t c, int bias) {
  return prmt_ref(Iq4Table::t0, Iq4Table::t1, c) ^ prmt_ref(Iq4Table::u0, Iq4Table::u1, c ^ 0x8888u) ^
         (bias ? 0x80808080u : 0u);
}
constexpr bool iq4_lookup_ok() {
  for (int c = 0; c < 16; ++c)
    for (int bias : {0, 128}) {
      const uint32_t sel = static_cast<uint32_t>(iq4_gpu_code(c)) * 0x1111u;
      const uint8_t want = static_cast<uint8_t>(kIq4Values[c] + bias);
      if (iq4_lookup_ref(sel, bias) != want * 0x01010101u) return false;
    }
  return true;
}
static_assert(iq4_lookup_ok(), "IQ4 lookup: every stored code gives its table value, in every byte");

// Table bytes of a qs' word's 8 codes: a = elements 4j..4j+3 (the low
// half's nibbles), b = 16 + 4j.. (the high half's).
template <int Bias>
__device__ __forceinline__ void iq4_word_bytes(uint32_t w, uint32_t& a, uint32_t& b) {
  using Tb = Iq4Table;
  constexpr uint32_t kB = Bias ? 0x80808080u : 0u;
  const uint32_t f = w ^ 0x88888888u, wh = w >> 16, fh = f >> 16;
  a = prmt<Tb::t0, Tb::t1>(w) ^ prmt<Tb::u0, Tb::u1>(f) ^ kB;
  b = prmt<Tb::t0, Tb::t1>(wh) ^ prmt<Tb::u0, Tb::u1>(fh) ^ kB;
}
// kIq4Values[c] of a stored code n = iq4_gpu_code(c) (n < 16).
__device__ __forceinline__ float iq4_value(int n) {
  using Tb = Iq4Table;
  const uint32_t v = prmt<Tb::t0, Tb::t1>(n) ^ prmt<Tb::u0, Tb::u1>(n ^ 8);
  return static_cast<float>(static_cast<int8_t>(v & 0xFF));
}

// The two f16 halves of a word (d | m << 16): x = d, y = m.
__device__ __forceinline__ float2 f16_pair(uint32_t w) {
  return __half22float2(*reinterpret_cast<const __half2*>(&w));
}

// Element i of a GPU row of `nb` blocks (decode_elem's part for these formats).
template <WeightType T>
__device__ __forceinline__ float decode_elem_q32(const uint8_t* row, int64_t i, int64_t nb) {
  const int64_t u = i / kQK;  // the unit: block, or IQ4_XS's sub-block (16 bytes of codes each)
  const int e = static_cast<int>(i % kQK);
  if constexpr (T == WeightType::IQ4_NL || T == WeightType::IQ4_XS) {
    const int p = iq4_nibble_pos(e);
    const float v = iq4_value((row[16 * u + p / 2] >> (4 * (p % 2))) & 0xF);
    if constexpr (T == WeightType::IQ4_NL) {
      return ld_f16(row + 16 * nb + 2 * u) * v;
    } else {
      const uint8_t* h = row + 128 * nb + 8 * (u / 8);
      const int ib = static_cast<int>(u % 8);
      const int ls = ((h[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((h[2 + ib / 4] >> (2 * (ib % 4))) & 3) << 4);
      return ld_f16(h) * static_cast<float>(ls - 32) * v;
    }
  } else {
    const uint8_t* qs = row + 16 * u;
    int c = e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4;
    if constexpr (T == WeightType::Q4_1) {
      const uint8_t* t = row + 16 * nb + 4 * u;
      return ld_f16(t) * static_cast<float>(c) + ld_f16(t + 2);
    } else if constexpr (T == WeightType::Q5_1) {
      const uint8_t* t = row + 16 * nb + 8 * u;
      c |= ((*reinterpret_cast<const uint32_t*>(t + 4) >> q5_hbit_pos(e)) & 1) << 4;
      return ld_f16(t) * static_cast<float>(c) + ld_f16(t + 2);
    } else {  // Q5_0
      c |= ((*reinterpret_cast<const uint32_t*>(row + 16 * nb + 4 * u) >> q5_hbit_pos(e)) & 1) << 4;
      return ld_f16(row + 20 * nb + 2 * u) * static_cast<float>(c - 16);
    }
  }
}

// A unit's 32 activations in order, with the halves' sums (Q4_1's and Q5_1's mins).
__device__ __forceinline__ void load_x32_sums(const float* x, int u, Slab<WeightType::Q4_K>::X& xr) {
  ldx(x + 32 * u, xr.v, 32);
  xr.sum_lo = xr.sum_hi = 0;
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    xr.sum_lo += xr.v[i];
    xr.sum_hi += xr.v[16 + i];
  }
}

// Q4_1: Q4_0's unit with d and m (one word); x = d q + m, so a unit's product
// is d sum(q x) + m sum(x), the sums of x made once with the unit's x.
template <>
struct Slab<WeightType::Q4_1> {
  static constexpr int kUnitsPerBlock = 1, kXElems = 32, kRB = 8;
  struct Unit { uint4 q; uint32_t dm; };  // dm: d | m << 16 (f16 bits)
  using X = Slab<WeightType::Q4_K>::X;
  __device__ static void load_x(const float* x, int u, X& xr) { load_x32_sums(x, u, xr); }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    return {ldg16(row + 16 * u), __ldg(reinterpret_cast<const uint32_t*>(row + 16 * nb + 4 * u))};
  }
  __device__ static float dot(const Unit& w, const X& xr, int) {
    const float2 dm = f16_pair(w.dm);
    return dm.x * nibble_dot<0>(w.q, xr.v) + dm.y * (xr.sum_lo + xr.sum_hi);
  }
  // dx (d sum(code q) + m sum(q)): Q4_0's two nibble sums, both integers exact.
  __device__ static float dot_i8(const Unit& w, const XI8& x, int) {
    int s, s16;
    dot_q4_0_nibbles(w.q, x.q, s, s16);
    const float2 dm = f16_pair(w.dm);
    return x.dx * (dm.x * static_cast<float>(s + (s16 >> 4)) + dm.y * static_cast<float>(x.s_lo + x.s_hi));
  }
};

// Q5_0 / Q5_1 codes 0..31 a byte each: lo of the words' low nibbles
// (elements 4j..4j+3), hi of their high ones (16 + 4j..), with qh''s bits.
__device__ __forceinline__ void q5_codes(const uint4& qs, uint32_t qh, uint32_t (&lo)[4], uint32_t (&hi)[4]) {
  const uint32_t q[4] = {qs.x, qs.y, qs.z, qs.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t t = qh >> j;
    lo[j] = (q[j] & 0x0F0F0F0Fu) | (t & 0x10101010u);
    hi[j] = ((q[j] >> 4) & 0x0F0F0F0Fu) | ((t << 4) & 0x10101010u);
  }
}
// sum(code q) of a unit's codes against int8 x (exact: 31 * 127 * 32 < 2^24).
__device__ __forceinline__ int q5_dot_i8(const uint32_t (&lo)[4], const uint32_t (&hi)[4], const XI8& x) {
  int s = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    s = __dp4a(static_cast<int>(lo[j]), x.q[j], s);
    s = __dp4a(static_cast<int>(hi[j]), x.q[4 + j], s);
  }
  return s;
}

// Q5_0: x = d (code - 16). 6 registers a unit (as Q3_K's), 8 rows a batch.
template <>
struct Slab<WeightType::Q5_0> {
  static constexpr int kUnitsPerBlock = 1, kXElems = 32, kRB = 8;
  struct Unit { uint4 q; uint32_t qh; float d; };
  struct X { float v[32]; };
  __device__ static void load_x(const float* x, int u, X& xr) { ldx(x + 32 * u, xr.v, 32); }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    return {ldg16(row + 16 * u), __ldg(reinterpret_cast<const uint32_t*>(row + 16 * nb + 4 * u)),
            ld_f16(row + 20 * nb + 2 * u)};
  }
  __device__ static float dot(const Unit& w, const X& xr, int) {
    uint32_t lo[4], hi[4];
    q5_codes(w.q, w.qh, lo, hi);
    float s = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s = dot4<16>(lo[j], xr.v + 4 * j, s);
      s = dot4<16>(hi[j], xr.v + 16 + 4 * j, s);
    }
    return w.d * s;
  }
  // d dx sum((code - 16) q); XI8's off is 8 sum(q).
  __device__ static float dot_i8(const Unit& w, const XI8& x, int) {
    uint32_t lo[4], hi[4];
    q5_codes(w.q, w.qh, lo, hi);
    return w.d * x.dx * static_cast<float>(q5_dot_i8(lo, hi, x) - 2 * x.off);
  }
};

// Q5_1: x = d code + m, Q4_1's form with Q5_0's codes.
template <>
struct Slab<WeightType::Q5_1> {
  static constexpr int kUnitsPerBlock = 1, kXElems = 32, kRB = 8;
  struct Unit { uint4 q; uint2 t; };  // t.x: d | m << 16 (f16 bits); t.y: qh'
  using X = Slab<WeightType::Q4_K>::X;
  __device__ static void load_x(const float* x, int u, X& xr) { load_x32_sums(x, u, xr); }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    return {ldg16(row + 16 * u), __ldg(reinterpret_cast<const uint2*>(row + 16 * nb + 8 * u))};
  }
  __device__ static float dot(const Unit& w, const X& xr, int) {
    uint32_t lo[4], hi[4];
    q5_codes(w.q, w.t.y, lo, hi);
    float s = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s = dot4<0>(lo[j], xr.v + 4 * j, s);
      s = dot4<0>(hi[j], xr.v + 16 + 4 * j, s);
    }
    const float2 dm = f16_pair(w.t.x);
    return dm.x * s + dm.y * (xr.sum_lo + xr.sum_hi);
  }
  __device__ static float dot_i8(const Unit& w, const XI8& x, int) {
    uint32_t lo[4], hi[4];
    q5_codes(w.q, w.t.y, lo, hi);
    const float2 dm = f16_pair(w.t.x);
    return x.dx * (dm.x * static_cast<float>(q5_dot_i8(lo, hi, x)) + dm.y * static_cast<float>(x.s_lo + x.s_hi));
  }
};

// A qs' unit's table values against f32 x (sum(value x)) and int8 x
// (sum(value q), exact: 127 * 127 * 32 < 2^24): iq4_words hands each word's
// four table bytes to acc with their 4-element group k (elements 4k..4k+3;
// a word's low half is group j, its high half group 4 + j), in one order
// for both forms.
template <int Bias, typename T, typename Acc>
__device__ __forceinline__ T iq4_words(const uint4& qs, T s, Acc acc) {
  const uint32_t q[4] = {qs.x, qs.y, qs.z, qs.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t a, b;
    iq4_word_bytes<Bias>(q[j], a, b);
    s = acc(a, j, s);
    s = acc(b, 4 + j, s);
  }
  return s;
}
__device__ __forceinline__ float iq4_dot(const uint4& qs, const float (&v)[32]) {
  return iq4_words<128>(qs, 0.0f, [&](uint32_t w, int k, float s) { return dot4<128>(w, v + 4 * k, s); });
}
__device__ __forceinline__ int iq4_dot_i8(const uint4& qs, const XI8& x) {
  return iq4_words<0>(qs, 0, [&](uint32_t w, int k, int s) { return __dp4a(static_cast<int>(w), x.q[k], s); });
}

// IQ4_NL: Q4_0's unit, x and loads (the same split row, qs' | d); x = d value.
template <>
struct Slab<WeightType::IQ4_NL> : Slab<WeightType::Q4_0> {
  __device__ static float dot(const Unit& w, const X& xr, int) { return w.d * iq4_dot(w.q, xr.v); }
  __device__ static float dot_i8(const Unit& w, const XI8& x, int) {
    return w.d * x.dx * static_cast<float>(iq4_dot_i8(w.q, x));
  }
};

// IQ4_XS: unit u = sub-block u % 8 of block u / 8, its 16 code bytes and the
// block's 8-byte header (d | scales_h << 16, scales_l); x = d (ls - 32) value.
template <>
struct Slab<WeightType::IQ4_XS> {
  static constexpr int kUnitsPerBlock = 8, kXElems = 32, kRB = 8;
  struct Unit { uint4 q; uint2 h; };
  struct X { float v[32]; };
  __device__ static void load_x(const float* x, int u, X& xr) { ldx(x + 32 * u, xr.v, 32); }
  __device__ static Unit load(const uint8_t* row, int u, int nb) {
    return {ldg16(row + 16 * u), __ldg(reinterpret_cast<const uint2*>(row + 128 * nb + 8 * (u / 8)))};
  }
  // d (ls - 32): ls's low 4 bits are bits 4 ib.. of scales_l (as a word), its
  // high 2 bits 2 ib.. of scales_h.
  __device__ static float scale(const uint2& h, int u) {
    const int ib = u % 8;
    const int ls = static_cast<int>(((h.y >> (4 * ib)) & 0xF) | ((h.x >> (16 + 2 * ib)) & 3) << 4);
    return __half2float(__ushort_as_half(static_cast<uint16_t>(h.x & 0xFFFF))) * static_cast<float>(ls - 32);
  }
  __device__ static float dot(const Unit& w, const X& xr, int u) { return scale(w.h, u) * iq4_dot(w.q, xr.v); }
  __device__ static float dot_i8(const Unit& w, const XI8& x, int u) {
    return scale(w.h, u) * x.dx * static_cast<float>(iq4_dot_i8(w.q, x));
  }
};

}  // namespace longkv::cuda

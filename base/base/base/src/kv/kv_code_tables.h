// 2-bit and 1-bit code words through 16-entry tables (AVX-512; kv_codec_simd.cpp's
// key and value kernels take these for every 2-bit and 1-bit plane).
//
// Why: the fused decode loop over low-bit codes is bound by its FMAs, one per
// code and query head (docs/benchmarks.md, issue 3), while the core's add and
// shuffle pipes sit idle. Four adjacent bits of a code word -- two 2-bit
// fields or four 1-bit fields -- index a 16-entry table of what those codes
// contribute, T[i] = sum_f m_f field_f(i), and one vpermps looks up 16 lanes at
// once. So a head's 2 (or 4) codes cost one shuffle and one add instead of 2
// (or 4) FMAs, and the table (F = 2 or 4 multiply-adds) is shared: by the 2
// token vectors of a key tile, or by the 2+ channel vectors of a value channel
// group. On Zen 4, 8 FMAs take as long as 8 FMAs beside 8 (shuffle, add) pairs
// take 1.27 times that. Not for 4-bit codes: a table would cover one field, and
// two lookups per multiply lose to two FMAs (k4v4 measured 45% slower).
//
// Exactness: the multipliers hold 2^-(PB k) for field k below the top one
// (kv_codec.h: the field stays in place); the tables' constant factors hold
// 2^(PB k) back, so an entry is a float sum of the unweighted products a_f c_f,
// and a score or output a float sum of entries: float rounding of the same
// products, in another order.
//
// Layouts (kv_codec.h): keys, word (j, t) holds channels n j .. n j + n - 1 of
// token t (lanes = tokens); values, word (j, c) holds tokens n j .. of channel
// c (lanes = channels); n = 32 / PB fields a word. Table p of a word covers
// bits 4p .. 4p + 3, i.e. fields F p .. F p + F - 1 (F = 4 / PB), and its
// index is the word shifted right by 4p: vpermps reads only the low 4 bits.
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace longkv::code_tables {

// c[p][f] lane i = field f of index i, times 2^(PB (F p + f)) (the top field
// of the word: 2^0): table p's constant factors.
template <int PB>
struct Consts {
  static constexpr int F = 4 / PB;
  alignas(64) float c[8][F][16];
};
template <int PB>
inline const Consts<PB>& consts() {
  static const Consts<PB> k = [] {
    Consts<PB> t{};
    constexpr int F = 4 / PB, n = 32 / PB;
    for (int p = 0; p < 8; ++p)
      for (int f = 0; f < F; ++f) {
        const int field = F * p + f;
        const float w = field == n - 1 ? 1.0f : static_cast<float>(1u << (PB * field));
        for (int i = 0; i < 16; ++i) t.c[p][f][i] = static_cast<float>((i >> (PB * f)) & ((1 << PB) - 1)) * w;
      }
    return t;
  }();
  return k;
}

// T = sum_f m[f] c[f], the multipliers broadcast inside the instructions (one
// macro-op each; the compiler would hoist a separate broadcast per use).
template <int F>
inline __m512 table(const float* m, const __m512 (&c)[F]) {
  __m512 t;
  __asm__("vmulps %[m]%{1to16%}, %[c], %[t]" : [t] "=v"(t) : [c] "v"(c[0]), [m] "m"(m[0]));
  for (int f = 1; f < F; ++f)
    __asm__("vfmadd231ps %[m]%{1to16%}, %[c], %[t]" : [t] "+v"(t) : [c] "v"(c[f]), [m] "m"(m[f]));
  return t;
}

// acc + T[idx] lane by lane, as one statement: written as two intrinsics,
// GCC hoisted the lookups of a whole table ahead of their adds and spilled
// them (~300 spills a call, slower than the FMA kernels).
inline __m512 add_lookup(__m512 acc, __m512i idx, __m512 t) {
  __m512 tmp;
  __asm__("vpermps %[t], %[idx], %[tmp]\n\tvaddps %[tmp], %[acc], %[acc]"
          : [acc] "+v"(acc), [tmp] "=&v"(tmp)
          : [t] "v"(t), [idx] "v"(idx));
  return acc;
}

template <int P>
inline __m512i table_index(__m512i w) {
  if constexpr (P == 0) return w;
  else return _mm512_srli_epi32(w, 4 * P);
}

// Compile-time loop over P = 0 .. 7 (the tables of a word).
template <int P = 0, typename G>
inline void for_tables(G&& g) {
  if constexpr (P < 8) {
    g(std::integral_constant<int, P>{});
    for_tables<P + 1>(g);
  }
}

template <int PB, int P>
inline void load_consts(const Consts<PB>& k, __m512 (&c)[4 / PB]) {
  for (int f = 0; f < 4 / PB; ++f) c[f] = _mm512_load_ps(k.c[P][f]);
}

// acc[h][i] += sum over the plane's channels of qk[h][c] code[c][t0 + 16 i + lane]
// (kv_codec_simd.cpp's key_plane<PB, H>, the same sums by tables).
template <int PB, int H>
[[gnu::always_inline]] inline void key_plane(const uint32_t* words, int group, int d, int t0, const float* qk,
                                             int ldq, __m512 (&acc)[H][2]) {
  constexpr int F = 4 / PB, n = 32 / PB;
  const Consts<PB>& k = consts<PB>();
  for (int j = 0; j < d / n; ++j) {
    const __m512i w0 = _mm512_loadu_si512(words + static_cast<size_t>(j) * group + t0);
    const __m512i w1 = _mm512_loadu_si512(words + static_cast<size_t>(j) * group + t0 + 16);
    const float* qc[H];
    for (int h = 0; h < H; ++h) qc[h] = qk + static_cast<size_t>(h) * ldq + j * n;
    for_tables([&](auto pc) {
      constexpr int p = decltype(pc)::value;
      const __m512i i0 = table_index<p>(w0), i1 = table_index<p>(w1);
      __m512 c[F];
      load_consts<PB, p>(k, c);
      for (int h = 0; h < H; ++h) {
        const __m512 t = table<F>(&qc[h][F * p], c);
        acc[h][0] = add_lookup(acc[h][0], i0, t);
        acc[h][1] = add_lookup(acc[h][1], i1, t);
      }
    });
  }
}

// acc[h][i] += sum over the plane's tokens of wk[h][t] code[t][c0 + 16 i + lane],
// every VPG consecutive vectors one channel group (kv_codec_simd.cpp's
// value_plane<PB, H, CV, VPG>, the same sums by tables).
template <int PB, int H, int CV, int VPG>
[[gnu::always_inline]] inline void value_plane(const uint32_t* words, int group, int d, int c0, const float* wk,
                                               int ldw, __m512 (&acc)[H][CV]) {
  constexpr int F = 4 / PB, n = 32 / PB, NG = CV / VPG;
  static_assert(CV % VPG == 0);
  const Consts<PB>& k = consts<PB>();
  for (int j = 0; j < group / n; ++j) {
    const uint32_t* wj = words + static_cast<size_t>(j) * d + c0;
    const float* wt[H][NG];
    for (int h = 0; h < H; ++h)
      for (int g = 0; g < NG; ++g) wt[h][g] = wk + static_cast<size_t>(h) * ldw + g * group + j * n;
    for_tables([&](auto pc) {
      constexpr int p = decltype(pc)::value;
      __m512 c[F];
      load_consts<PB, p>(k, c);
      // A channel group's words are loaded again for every table (L1 hits),
      // not held across the tables beside the 16 accumulators.
      for (int g = 0; g < NG; ++g) {
        __m512i idx[VPG];
        for (int i = 0; i < VPG; ++i) idx[i] = table_index<p>(_mm512_loadu_si512(wj + (g * VPG + i) * 16));
        for (int h = 0; h < H; ++h) {
          const __m512 t = table<F>(&wt[h][g][F * p], c);
          for (int i = 0; i < VPG; ++i) acc[h][g * VPG + i] = add_lookup(acc[h][g * VPG + i], idx[i], t);
        }
      }
    });
  }
}

}  // namespace longkv::code_tables
#endif

// 2-bit code words through pair tables (AVX-512; kv_codec_simd.cpp's key and
// value kernels take these for every 2-bit plane).
//
// Why: the fused decode loop over 2-bit codes is bound by its FMAs, one per
// code and query head (docs/benchmarks.md, issue 3), while the core's add and
// shuffle pipes sit idle. Two adjacent fields of a word, 4 bits, index a
// 16-entry table T[i] = m0 (i & 3) + m1 (i >> 2) of the two multipliers, and
// one vpermps looks up 16 lanes at once. So a head's pair of codes costs one
// shuffle and one add instead of two FMAs, and the table (one multiply and one
// FMA) is shared: by the 2 token vectors of a key tile, or by the 2 channel
// vectors of a value channel group. On Zen 4, 8 FMAs take as long as 8 FMAs
// beside 8 (shuffle, add) pairs take 1.27 times that.
//
// Exactness: the multipliers hold 2^-(2k) for field k < 15 (kv_codec.h: the
// field stays in place); the tables' constant factors hold 2^(2k) back, so an
// entry is fl(fl(a0 c0) + a1 c1) of the unweighted multipliers a, and a score
// or output is a float sum of those entries: float rounding of the same
// products, in another order.
//
// Layouts (kv_codec.h): keys, word (j, t) holds channels 16j .. 16j + 15 of
// token t (lanes = tokens); values, word (j, c) holds tokens 16j .. 16j + 15
// of channel c (lanes = channels). The index of fields (2p, 2p + 1) is the
// word shifted right by 4p: vpermps reads only the low 4 bits of a lane.
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace longkv::pair_tables {

// lo[p] lane i = (i & 3) 2^(4p), hi[p] lane i = (i >> 2) 2^(4p + 2) (top
// field 15: 2^0): a table's constant factors for fields 2p and 2p + 1.
struct Consts {
  alignas(64) float lo[8][16];
  alignas(64) float hi[8][16];
};
inline const Consts& consts() {
  static const Consts c = [] {
    Consts k{};
    for (int p = 0; p < 8; ++p)
      for (int i = 0; i < 16; ++i) {
        k.lo[p][i] = static_cast<float>(i & 3) * static_cast<float>(1u << (4 * p));
        k.hi[p][i] = static_cast<float>(i >> 2) * (p == 7 ? 1.0f : static_cast<float>(1u << (4 * p + 2)));
      }
    return k;
  }();
  return c;
}

// T = m0 lo + m1 hi, the multipliers broadcast inside the instructions (one
// macro-op each; the compiler would hoist a separate broadcast per use).
inline __m512 table(const float* m0, const float* m1, __m512 lo, __m512 hi) {
  __m512 t;
  __asm__("vmulps %[m]%{1to16%}, %[lo], %[t]" : [t] "=v"(t) : [lo] "v"(lo), [m] "m"(*m0));
  __asm__("vfmadd231ps %[m]%{1to16%}, %[hi], %[t]" : [t] "+v"(t) : [hi] "v"(hi), [m] "m"(*m1));
  return t;
}

// acc + T[idx] lane by lane, as one statement: written as two intrinsics,
// GCC hoisted the lookups of a whole pair ahead of their adds and spilled
// them (~300 spills a call, slower than the FMA kernels).
inline __m512 add_lookup(__m512 acc, __m512i idx, __m512 t) {
  __m512 tmp;
  __asm__("vpermps %[t], %[idx], %[tmp]\n\tvaddps %[tmp], %[acc], %[acc]"
          : [acc] "+v"(acc), [tmp] "=&v"(tmp)
          : [t] "v"(t), [idx] "v"(idx));
  return acc;
}

template <int P>
inline __m512i pair_index(__m512i w) {
  if constexpr (P == 0) return w;
  else return _mm512_srli_epi32(w, 4 * P);
}

// Compile-time loop over P = 0 .. 7 (the pairs of a 2-bit word).
template <int P = 0, typename F>
inline void for_pairs(F&& f) {
  if constexpr (P < 8) {
    f(std::integral_constant<int, P>{});
    for_pairs<P + 1>(f);
  }
}

// acc[h][i] += sum over the plane's channels of qk[h][c] code[c][t0 + 16 i + lane]
// (kv_codec_simd.cpp's key_plane<2, H>, the same sums by tables).
template <int H>
[[gnu::always_inline]] inline void key_plane(const uint32_t* words, int group, int d, int t0, const float* qk,
                                             int ldq, __m512 (&acc)[H][2]) {
  const Consts& k = consts();
  for (int j = 0; j < d / 16; ++j) {
    const __m512i w0 = _mm512_loadu_si512(words + static_cast<size_t>(j) * group + t0);
    const __m512i w1 = _mm512_loadu_si512(words + static_cast<size_t>(j) * group + t0 + 16);
    const float* qc[H];
    for (int h = 0; h < H; ++h) qc[h] = qk + static_cast<size_t>(h) * ldq + j * 16;
    for_pairs([&](auto pc) {
      constexpr int p = decltype(pc)::value;
      const __m512i i0 = pair_index<p>(w0), i1 = pair_index<p>(w1);
      const __m512 lo = _mm512_load_ps(k.lo[p]), hi = _mm512_load_ps(k.hi[p]);
      for (int h = 0; h < H; ++h) {
        const __m512 t = table(&qc[h][2 * p], &qc[h][2 * p + 1], lo, hi);
        acc[h][0] = add_lookup(acc[h][0], i0, t);
        acc[h][1] = add_lookup(acc[h][1], i1, t);
      }
    });
  }
}

// acc[h][i] += sum over the plane's tokens of wk[h][t] code[t][c0 + 16 i + lane],
// every VPG consecutive vectors one channel group (kv_codec_simd.cpp's
// value_plane<2, H, CV, VPG>, the same sums by tables).
template <int H, int CV, int VPG>
[[gnu::always_inline]] inline void value_plane(const uint32_t* words, int group, int d, int c0, const float* wk,
                                               int ldw, __m512 (&acc)[H][CV]) {
  constexpr int NG = CV / VPG;
  static_assert(CV % VPG == 0);
  const Consts& k = consts();
  for (int j = 0; j < group / 16; ++j) {
    const uint32_t* wj = words + static_cast<size_t>(j) * d + c0;
    const float* wt[H][NG];
    for (int h = 0; h < H; ++h)
      for (int g = 0; g < NG; ++g) wt[h][g] = wk + static_cast<size_t>(h) * ldw + g * group + j * 16;
    for_pairs([&](auto pc) {
      constexpr int p = decltype(pc)::value;
      const __m512 lo = _mm512_load_ps(k.lo[p]), hi = _mm512_load_ps(k.hi[p]);
      // A channel group's words are loaded again for every pair (L1 hits),
      // not held across the pairs beside the 16 accumulators.
      for (int g = 0; g < NG; ++g) {
        __m512i idx[VPG];
        for (int i = 0; i < VPG; ++i) idx[i] = pair_index<p>(_mm512_loadu_si512(wj + (g * VPG + i) * 16));
        for (int h = 0; h < H; ++h) {
          const __m512 t = table(&wt[h][g][2 * p], &wt[h][g][2 * p + 1], lo, hi);
          for (int i = 0; i < VPG; ++i)
            acc[h][g * VPG + i] = add_lookup(acc[h][g * VPG + i], idx[i], t);
        }
      }
    });
  }
}

}  // namespace longkv::pair_tables
#endif

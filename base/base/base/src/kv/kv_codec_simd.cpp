// Fast kernels over scalar KV codes (layouts in kv_codec.h): key scores and
// value accumulation straight from the code words, for up to four query
// vectors per pass so each word is read once per KV group's heads, plus the
// fused decode loop (kv_attend_groups) that keeps the running softmax and
// every per-group constant out of memory round trips.
// AVX-512 (16 lanes), AVX2 (8 lanes) or scalar, chosen at compile time; the
// kernels are written once against the small vector layer below.
// GCC 12 flags the _mm512_undefined_* inside its own intrinsic headers.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "kv/kv_codec.h"
#include "kv/kv_code_tables.h"

namespace longkv {
namespace {

// ---- vector layer ---------------------------------------------------------
#if defined(__AVX512F__) && defined(__AVX512BW__)
constexpr int W = 16;
using vf = __m512;
using vi = __m512i;
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vset1(float x) { return _mm512_set1_ps(x); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, vf x) { _mm512_storeu_ps(p, x); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
inline float vsum(vf a) { return _mm512_reduce_add_ps(a); }
inline float vhmax(vf a) { return _mm512_reduce_max_ps(a); }
inline bool vany_gt(vf a, float m) { return _mm512_cmp_ps_mask(a, _mm512_set1_ps(m), _CMP_GT_OQ) != 0; }
inline vi viload(const uint32_t* p) { return _mm512_loadu_si512(p); }
inline vi viand(vi a, uint32_t m) { return _mm512_and_si512(a, _mm512_set1_epi32(static_cast<int>(m))); }
template <int S>
inline vi visrl(vi a) { return _mm512_srli_epi32(a, S); }
inline vf vcvt(vi a) { return _mm512_cvtepi32_ps(a); }
inline vf vload_f16(const f16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }

inline vf vexp(vf x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const vf n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
  vf r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  vf p = _mm512_set1_ps(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(p, n);
}

#elif defined(__AVX2__) && defined(__FMA__)
constexpr int W = 8;
using vf = __m256;
using vi = __m256i;
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vset1(float x) { return _mm256_set1_ps(x); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, vf x) { _mm256_storeu_ps(p, x); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
inline float vsum(vf a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
inline float vhmax(vf a) {
  float l[8];
  _mm256_storeu_ps(l, a);
  float m = l[0];
  for (float x : l) m = x > m ? x : m;
  return m;
}
inline bool vany_gt(vf a, float m) { return _mm256_movemask_ps(_mm256_cmp_ps(a, _mm256_set1_ps(m), _CMP_GT_OQ)) != 0; }
inline vi viload(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline vi viand(vi a, uint32_t m) { return _mm256_and_si256(a, _mm256_set1_epi32(static_cast<int>(m))); }
template <int S>
inline vi visrl(vi a) { return _mm256_srli_epi32(a, S); }
inline vf vcvt(vi a) { return _mm256_cvtepi32_ps(a); }
inline vf vload_f16(const f16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

inline vf vexp(vf x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const vf n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  vf r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  vf p = _mm256_set1_ps(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

#else
constexpr int W = 1;
using vf = float;
using vi = uint32_t;
inline vf vzero() { return 0.0f; }
inline vf vset1(float x) { return x; }
inline vf vload(const float* p) { return *p; }
inline void vstore(float* p, vf x) { *p = x; }
inline vf vfma(vf a, vf b, vf c) { return a * b + c; }
inline vf vadd(vf a, vf b) { return a + b; }
inline vf vmul(vf a, vf b) { return a * b; }
inline vf vsub(vf a, vf b) { return a - b; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }
inline float vsum(vf a) { return a; }
inline float vhmax(vf a) { return a; }
inline bool vany_gt(vf a, float m) { return a > m; }
inline vi viload(const uint32_t* p) { return *p; }
inline vi viand(vi a, uint32_t m) { return a & m; }
template <int S>
inline vi visrl(vi a) { return a >> S; }
inline vf vcvt(vi a) { return static_cast<float>(static_cast<int32_t>(a)); }
inline vf vload_f16(const f16_t* p) { return f16_to_f32(*p); }
inline vf vexp(vf x) { return std::exp(x); }
#endif

constexpr int kMaxH = 4;        // query vectors per pass over the codes
// Groups ahead that kv_attend_groups prefetches (into L2: a group's records
// are 3-5 KiB, and L1 also holds the per-group scratch).
constexpr int kPrefetchGroups = 8;

// Software prefetch of later groups' records, issued a few lines at a time
// between the compute steps of a span: a burst of ~100 prefetches fills the
// core's miss buffers and stalls the core on the prefetch instructions
// themselves (perf showed most of kv_attend_groups' own samples there).
class SpreadPrefetch {
 public:
  void add(const uint8_t* p, size_t bytes) {
    if (n_ < kMaxRanges) r_[n_++] = {reinterpret_cast<const char*>(p), bytes};
  }
  // Issues up to `lines` more 64-byte lines (into L2: L1 holds the scratch).
  void step(int lines) {
    for (; lines > 0 && i_ < n_; ++i_, off_ = 0) {
      for (; lines > 0 && off_ < r_[i_].bytes; off_ += 64, --lines) __builtin_prefetch(r_[i_].p + off_, 0, 2);
      if (off_ < r_[i_].bytes) return;
    }
  }
  void rest() { step(1 << 30); }

 private:
  static constexpr int kMaxRanges = 8;  // K and V records of up to 4 groups
  struct Range {
    const char* p;
    size_t bytes;
  } r_[kMaxRanges];
  int n_ = 0, i_ = 0;
  size_t off_ = 0;
};
constexpr int kTokTile = 2 * W;  // key tokens per pass (2 vectors x 4 heads accumulators)
static_assert(kKvCodeBlock % kTokTile == 0);
// Channel vectors per value pass: 4 x 4 heads = 16 accumulators of AVX-512's
// 32 registers; AVX2 (16 registers) takes 2.
constexpr int kValueCV = W == 16 ? 4 : 2;

// acc + (*m broadcast) * x. AVX-512: the FMA's embedded broadcast, one
// macro-op, where the compiler would hoist a separate broadcast per use.
inline vf vfma_bcast(const float* m, vf x, vf acc) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  __asm__("vfmadd231ps %[m]%{1to16%}, %[x], %[acc]" : [acc] "+v"(acc) : [x] "v"(x), [m] "m"(*m));
  return acc;
#else
  return vfma(vset1(*m), x, acc);
#endif
}

// ---- code words -------------------------------------------------------------

// Field K of words of PB-bit codes as floats, times 2^(PB*K) for K below the
// top field (an AND keeps the field in place; the caller's multiplier holds
// the exact 2^-(PB*K)); the top field is shifted down (no AND, and it keeps
// the value below 2^31 for the signed convert).
template <int PB, int K>
inline vf field(vi w) {
  constexpr int n = 32 / PB;
  if constexpr (K == n - 1) {
    return vcvt(visrl<PB * K>(w));
  } else {
    return vcvt(viand(w, ((1u << PB) - 1) << (PB * K)));
  }
}
// The multiplier that undoes field()'s in-place weight.
inline float field_weight(int pb, int k) {
  return k == 32 / pb - 1 ? 1.0f : std::ldexp(1.0f, -pb * k);
}

// The planes of a b-bit record: (plane bits, code multiplier, byte offset).
struct Plane {
  int pb;
  float mult;
  size_t offset;
};
inline int planes_of(int bits, int elems, Plane* p) {
  if (bits == 3) {
    p[0] = {2, 1.0f, 0};
    p[1] = {1, 4.0f, static_cast<size_t>(elems) / 4};
    return 2;
  }
  p[0] = {bits, 1.0f, 0};
  return 1;
}

// Compile-time loop over K = 0 .. N-1.
template <int K, int N, typename F>
inline void static_for(F&& f) {
  if constexpr (K < N) {
    f(std::integral_constant<int, K>{});
    static_for<K + 1, N>(f);
  }
}

// ---- key scores ---------------------------------------------------------------

// acc[h][i] += sum over the plane's channels of qk[h][c] * code[c][t0 + i*W + lane];
// words: the plane [d/n][G]; qk[h]: [d] multipliers (q * scale * weight).
template <int PB, int H>
inline void key_plane(const uint32_t* words, int group, int d, int t0, const float* qk, int ldq, vf (&acc)[H][2]) {
  constexpr int n = 32 / PB;
  for (int j = 0; j < d / n; ++j) {
    const vi w0 = viload(words + static_cast<size_t>(j) * group + t0);
    const vi w1 = viload(words + static_cast<size_t>(j) * group + t0 + W);
    // One pointer per head keeps every broadcast a register + immediate.
    const float* qc[H];
    for (int h = 0; h < H; ++h) qc[h] = qk + static_cast<size_t>(h) * ldq + j * n;
    static_for<0, n>([&](auto kc) {
      constexpr int k = decltype(kc)::value;
      const vf x0 = field<PB, k>(w0), x1 = field<PB, k>(w1);
      for (int h = 0; h < H; ++h) {
        acc[h][0] = vfma_bcast(&qc[h][k], x0, acc[h][0]);
        acc[h][1] = vfma_bcast(&qc[h][k], x1, acc[h][1]);
      }
    });
  }
}

template <int H>
inline void key_plane_any(const Plane& pl, const uint8_t* codes, int group, int d, int t0, const float* qk, int ldq,
                          vf (&acc)[H][2]) {
  const uint32_t* words = reinterpret_cast<const uint32_t*>(codes + pl.offset);
  switch (pl.pb) {
    case 8: key_plane<8, H>(words, group, d, t0, qk, ldq, acc); break;
    case 4: key_plane<4, H>(words, group, d, t0, qk, ldq, acc); break;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    case 2: code_tables::key_plane<2, H>(words, group, d, t0, qk, ldq, acc); break;  // kv_code_tables.h
    default: code_tables::key_plane<1, H>(words, group, d, t0, qk, ldq, acc); break;
#else
    case 2: key_plane<2, H>(words, group, d, t0, qk, ldq, acc); break;
    default: key_plane<1, H>(words, group, d, t0, qk, ldq, acc); break;
#endif
  }
}

// scores[h][t] = sum_c qk . code + qz[h] for all t < G; qk: [planes][H][d].
template <int H>
void key_scores_h(const uint8_t* codes, const Plane* pl, int np, int group, int d, const float* qk, int ldq,
                  size_t plane_stride, const float* qz, float* scores, int lds) {
  for (int t0 = 0; t0 < group; t0 += kTokTile) {
    vf acc[H][2];
    for (int h = 0; h < H; ++h) acc[h][0] = acc[h][1] = vset1(qz[h]);
    for (int p = 0; p < np; ++p) key_plane_any<H>(pl[p], codes, group, d, t0, qk + p * plane_stride, ldq, acc);
    for (int h = 0; h < H; ++h) {
      vstore(scores + static_cast<size_t>(h) * lds + t0, acc[h][0]);
      vstore(scores + static_cast<size_t>(h) * lds + t0 + W, acc[h][1]);
    }
  }
}

void key_scores_any(int h, const uint8_t* codes, const Plane* pl, int np, int group, int d, const float* qk, int ldq,
                    size_t plane_stride, const float* qz, float* scores, int lds) {
  switch (h) {
    case 1: key_scores_h<1>(codes, pl, np, group, d, qk, ldq, plane_stride, qz, scores, lds); break;
    case 2: key_scores_h<2>(codes, pl, np, group, d, qk, ldq, plane_stride, qz, scores, lds); break;
    case 3: key_scores_h<3>(codes, pl, np, group, d, qk, ldq, plane_stride, qz, scores, lds); break;
    default: key_scores_h<4>(codes, pl, np, group, d, qk, ldq, plane_stride, qz, scores, lds); break;
  }
}

// Per-channel weights of a plane of key codes: wgt[c] = mult * field_weight(c % n).
void plane_weights(const Plane& pl, int len, float* wgt) {
  const int n = 32 / pl.pb;
  for (int i = 0; i < len; ++i) wgt[i] = pl.mult * field_weight(pl.pb, i % n);
}

// qw[p][v][c] = q[v][c] * kw[p][c]: the group-invariant part of qk (kw is a
// power of two times 1 or 4, so qw * s rounds exactly like q * s * kw).
void key_query_weights(const float* q, int nv, int d, int np, const float* kw, float* qw) {
  for (int p = 0; p < np; ++p)
    for (int v = 0; v < nv; ++v)
      for (int c = 0; c < d; c += W)
        vstore(qw + (static_cast<size_t>(p) * nv + v) * d + c,
               vmul(vload(q + static_cast<size_t>(v) * d + c), vload(kw + static_cast<size_t>(p) * d + c)));
}

// Calls f with the plane count and vector count as compile-time constants
// (0 = not specialized: f reads the run-time values) for the fused decode
// loop's shapes (1 or 2 planes, 1..4 vectors): the per-group set-up
// functions then keep their pointers and accumulators in registers.
template <typename F>
inline void with_fixed_shape(int np, int nv, F&& f) {
  const auto pick = [&](auto npc) {
    switch (nv) {
      case 1: f(npc, std::integral_constant<int, 1>{}); break;
      case 2: f(npc, std::integral_constant<int, 2>{}); break;
      case 3: f(npc, std::integral_constant<int, 3>{}); break;
      case 4: f(npc, std::integral_constant<int, 4>{}); break;
      default: f(npc, std::integral_constant<int, 0>{}); break;
    }
  };
  if (np == 1) pick(std::integral_constant<int, 1>{});
  else pick(std::integral_constant<int, 2>{});
}

// qk[p][v][c] = qw[p][v][c] * s[c], qz[v] = q[v] . z; the group's scales and
// zeros are converted once per four vectors.
template <int NP, int NV>
void key_prep_n(const uint8_t* rec, const KvGroupLayout& l, int np_rt, const float* qw, const float* q, int nv_rt,
                float* qk, float* qz) {
  const int np = NP ? NP : np_rt, nv = NV ? NV : nv_rt;
  const int d = l.head_dim;
  const f16_t* sh = reinterpret_cast<const f16_t*>(rec + l.scale_offset);
  const f16_t* zh = reinterpret_cast<const f16_t*>(rec + l.zero_offset);
  for (int v0 = 0; v0 < nv; v0 += kMaxH) {
    const int n = std::min(kMaxH, nv - v0);
    vf zacc[kMaxH];
    for (int v = 0; v < n; ++v) zacc[v] = vzero();
    for (int c = 0; c < d; c += W) {
      const vf sc = vload_f16(sh + c), zc = vload_f16(zh + c);
      for (int v = v0; v < v0 + n; ++v) {
        zacc[v - v0] = vfma(vload(q + static_cast<size_t>(v) * d + c), zc, zacc[v - v0]);
        for (int p = 0; p < np; ++p) {
          const size_t i = (static_cast<size_t>(p) * nv + v) * d + c;
          vstore(qk + i, vmul(vload(qw + i), sc));
        }
      }
    }
    for (int v = 0; v < n; ++v) qz[v0 + v] = vsum(zacc[v]);
  }
}
void key_prep(const uint8_t* rec, const KvGroupLayout& l, int np, const float* qw, const float* q, int nv, float* qk,
              float* qz) {
  with_fixed_shape(np, nv, [&](auto npc, auto nvc) {
    key_prep_n<decltype(npc)::value, decltype(nvc)::value>(rec, l, np, qw, q, nv, qk, qz);
  });
}

// tile[c][.] += code[c][t0 + .] * m[c] over one plane's channels (32 tokens),
// m = scale * mult * field weight.
template <int PB>
void tile_plane(const uint32_t* words, int group, int d, int t0, const float* m, float* tile) {
  constexpr int n = 32 / PB, NT = kKvCodeBlock / W;
  for (int j = 0; j < d / n; ++j) {
    vi w[NT];
    for (int i = 0; i < NT; ++i) w[i] = viload(words + static_cast<size_t>(j) * group + t0 + i * W);
    static_for<0, n>([&](auto kc) {
      constexpr int k = decltype(kc)::value;
      const int c = j * n + k;
      const vf mb = vset1(m[c]);
      float* tc = tile + c * kKvCodeBlock;
      for (int i = 0; i < NT; ++i) vstore(tc + i * W, vfma(mb, field<PB, k>(w[i]), vload(tc + i * W)));
    });
  }
}

// Dequantizes tokens t0 .. t0+31 of a key group into tile [d][32]; kw: the
// per-plane field weights (key_weights), m: [d] scratch.
void dequant_key_tile(const uint8_t* rec, const KvGroupLayout& l, int t0, const float* kw, float* m, float* tile) {
  const int d = l.head_dim, G = l.group;
  const f16_t* sh = reinterpret_cast<const f16_t*>(rec + l.scale_offset);
  const f16_t* zh = reinterpret_cast<const f16_t*>(rec + l.zero_offset);
  Plane pl[2];
  const int np = planes_of(l.bits, G * d, pl);
  for (int c = 0; c < d; ++c) {
    const vf z = vset1(f16_to_f32(zh[c]));
    for (int i = 0; i < kKvCodeBlock; i += W) vstore(tile + c * kKvCodeBlock + i, z);
  }
  for (int p = 0; p < np; ++p) {
    for (int c = 0; c < d; c += W) vstore(m + c, vmul(vload_f16(sh + c), vload(kw + static_cast<size_t>(p) * d + c)));
    const uint32_t* words = reinterpret_cast<const uint32_t*>(rec + pl[p].offset);
    switch (pl[p].pb) {
      case 8: tile_plane<8>(words, G, d, t0, m, tile); break;
      case 4: tile_plane<4>(words, G, d, t0, m, tile); break;
      case 2: tile_plane<2>(words, G, d, t0, m, tile); break;
      default: tile_plane<1>(words, G, d, t0, m, tile); break;
    }
  }
}

// ---- value accumulation ---------------------------------------------------------

// acc[h][i] += sum over the plane's tokens of wk[h][t] * code[t][c0 + i*W + lane]
// for channels c0 .. c0 + CV*W - 1; every VPG consecutive vectors share a
// channel group (chunk vector i takes the multipliers of channel group
// i / VPG, G floats further per group). words: the plane [G/n][d]; wk[h]:
// the chunk's first channel group's [G] multipliers (p * scale * weight).
// 64-channel chunks over two G = 32 channel groups keep 16 accumulators.
// Always inlined: out of line, acc would live in memory behind the reference.
template <int PB, int H, int CV, int VPG>
[[gnu::always_inline]] inline void value_plane(const uint32_t* words, int group, int d, int c0, const float* wk, int ldw, vf (&acc)[H][CV]) {
  constexpr int n = 32 / PB, NG = CV / VPG;
  static_assert(CV % VPG == 0);
  for (int j = 0; j < group / n; ++j) {
    vi w[CV];
    for (int i = 0; i < CV; ++i) w[i] = viload(words + static_cast<size_t>(j) * d + c0 + i * W);
    const float* wt[H][NG];
    for (int h = 0; h < H; ++h)
      for (int g = 0; g < NG; ++g) wt[h][g] = wk + static_cast<size_t>(h) * ldw + g * group + j * n;
    static_for<0, n>([&](auto kc) {
      constexpr int k = decltype(kc)::value;
      vf x[CV];
      for (int i = 0; i < CV; ++i) x[i] = field<PB, k>(w[i]);
      for (int h = 0; h < H; ++h)
        for (int g = 0; g < NG; ++g)
          for (int i = g * VPG; i < (g + 1) * VPG; ++i) acc[h][i] = vfma_bcast(&wt[h][g][k], x[i], acc[h][i]);
    });
  }
}

// One value group record of a multi-record pass: its codes and multipliers.
struct ValueRec {
  const uint8_t* codes;
  const float* wk;  // [planes][nv][d]
};

// out[h][c0 .. c0 + CV*W) += the records' value sums; the accumulators stay
// in registers across all nrec records (one load/store of out per pass).
template <int H, int CV, int VPG>
void value_chunk(const ValueRec* recs, int nrec, const Plane* pl, int np, int group, int d, int c0, int ldw,
                 size_t plane_stride, float* out) {
  vf acc[H][CV];
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < CV; ++i) acc[h][i] = vload(out + static_cast<size_t>(h) * d + c0 + i * W);
  const int goff = c0 / group * group;  // the chunk's first channel group, times G
  for (int r = 0; r < nrec; ++r)
    for (int p = 0; p < np; ++p) {
      const uint32_t* words = reinterpret_cast<const uint32_t*>(recs[r].codes + pl[p].offset);
      const float* wp = recs[r].wk + p * plane_stride + goff;
      switch (pl[p].pb) {
        case 8: value_plane<8, H, CV, VPG>(words, group, d, c0, wp, ldw, acc); break;
        case 4: value_plane<4, H, CV, VPG>(words, group, d, c0, wp, ldw, acc); break;
#if defined(__AVX512F__) && defined(__AVX512BW__)
        case 2: code_tables::value_plane<2, H, CV, VPG>(words, group, d, c0, wp, ldw, acc); break;  // kv_code_tables.h
        default: code_tables::value_plane<1, H, CV, VPG>(words, group, d, c0, wp, ldw, acc); break;
#else
        case 2: value_plane<2, H, CV, VPG>(words, group, d, c0, wp, ldw, acc); break;
        default: value_plane<1, H, CV, VPG>(words, group, d, c0, wp, ldw, acc); break;
#endif
      }
    }
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < CV; ++i) vstore(out + static_cast<size_t>(h) * d + c0 + i * W, acc[h][i]);
}

// Chunks of kValueCV * W channels: inside one channel group when G allows,
// else (AVX-512, G = 32) across two whole channel groups; 2 * W otherwise.
template <int H>
void value_accum_h(const ValueRec* recs, int nrec, const Plane* pl, int np, int group, int d, int ldw,
                   size_t plane_stride, float* out) {
  constexpr int CW = kValueCV * W;
  if (group >= CW) {
    for (int c0 = 0; c0 < d; c0 += CW)
      value_chunk<H, kValueCV, kValueCV>(recs, nrec, pl, np, group, d, c0, ldw, plane_stride, out);
  } else if (group * 2 == CW && d % CW == 0) {
    for (int c0 = 0; c0 < d; c0 += CW)
      value_chunk<H, kValueCV, kValueCV / 2>(recs, nrec, pl, np, group, d, c0, ldw, plane_stride, out);
  } else {
    static_assert(kKvCodeBlock % (2 * W) == 0);
    for (int c0 = 0; c0 < d; c0 += 2 * W)
      value_chunk<H, 2, 2>(recs, nrec, pl, np, group, d, c0, ldw, plane_stride, out);
  }
}

void value_accum_any(int h, const ValueRec* recs, int nrec, const Plane* pl, int np, int group, int d, int ldw,
                     size_t plane_stride, float* out) {
  switch (h) {
    case 1: value_accum_h<1>(recs, nrec, pl, np, group, d, ldw, plane_stride, out); break;
    case 2: value_accum_h<2>(recs, nrec, pl, np, group, d, ldw, plane_stride, out); break;
    case 3: value_accum_h<3>(recs, nrec, pl, np, group, d, ldw, plane_stride, out); break;
    default: value_accum_h<4>(recs, nrec, pl, np, group, d, ldw, plane_stride, out); break;
  }
}

// Per-(channel group, token) weights of a plane of value codes, [d/G][G]:
// mult * field_weight(t % n).
void value_plane_weights(const Plane& pl, int group, int ng, float* wgt) {
  const int n = 32 / pl.pb;
  for (int gi = 0; gi < ng; ++gi)
    for (int t = 0; t < group; ++t) wgt[gi * group + t] = pl.mult * field_weight(pl.pb, t % n);
}

// Value multipliers and zero terms of one group for nv probability rows
// p [nv][ldp]: wk[pl][v][gi*G + t] = p[v][t] * s[gi][t] * vw[pl][gi*G + t],
// zacc[v][gi*G + t] += p[v][t] * z[gi][t] (reduced per channel group by
// add_zero_terms). Each scale/zero vector is converted once for all rows.
template <int NP, int NV>
void value_prep_n(const uint8_t* rec, const KvGroupLayout& l, int np_rt, const float* vw, const float* p, int ldp,
                  int nv_rt, float* wk, float* zacc) {
  const int np = NP ? NP : np_rt, nv = NV ? NV : nv_rt;
  const int G = l.group, d = l.head_dim;
  const f16_t* sh = reinterpret_cast<const f16_t*>(rec + l.scale_offset);
  const f16_t* zh = reinterpret_cast<const f16_t*>(rec + l.zero_offset);
  for (int i = 0; i < d; i += W) {
    const vf z = vload_f16(zh + i), s = vload_f16(sh + i);
    vf sw[2];
    for (int pl = 0; pl < np; ++pl) sw[pl] = vmul(s, vload(vw + static_cast<size_t>(pl) * d + i));
    for (int v = 0; v < nv; ++v) {
      const vf x = vload(p + static_cast<size_t>(v) * ldp + i % G);
      float* za = zacc + static_cast<size_t>(v) * d + i;
      vstore(za, vfma(x, z, vload(za)));
      for (int pl = 0; pl < np; ++pl) vstore(wk + (static_cast<size_t>(pl) * nv + v) * d + i, vmul(x, sw[pl]));
    }
  }
}
void value_prep(const uint8_t* rec, const KvGroupLayout& l, int np, const float* vw, const float* p, int ldp,
                int nv, float* wk, float* zacc) {
  with_fixed_shape(np, nv, [&](auto npc, auto nvc) {
    value_prep_n<decltype(npc)::value, decltype(nvc)::value>(rec, l, np, vw, p, ldp, nv, wk, zacc);
  });
}

// Per-thread scratch (kernels are called from pool threads).
struct Scratch {
  std::vector<float> kw, vw, qw, qk, qz, wk, zacc, sw, tile, sc, lv, qT, ck, pT, cv;
  int kw_key = -1, vw_key = -1;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}
// Weight tables depend only on (bits, G, d): rebuilt when those change.
const float* key_weights(Scratch& sc, int bits, int group, int d) {
  const int key = (bits * 4096 + group) * 4096 + d;
  if (sc.kw_key != key) {
    Plane pl[2];
    const int np = planes_of(bits, group * d, pl);
    sc.kw.resize(static_cast<size_t>(np) * d);
    for (int p = 0; p < np; ++p) plane_weights(pl[p], d, &sc.kw[static_cast<size_t>(p) * d]);
    sc.kw_key = key;
  }
  return sc.kw.data();
}
const float* value_weights(Scratch& sc, int bits, int group, int d) {
  const int key = (bits * 4096 + group) * 4096 + d;
  if (sc.vw_key != key) {
    Plane pl[2];
    const int np = planes_of(bits, group * d, pl);
    const int n = d;  // G * (d / G)
    sc.vw.resize(static_cast<size_t>(np) * n);
    for (int p = 0; p < np; ++p) value_plane_weights(pl[p], group, d / group, &sc.vw[static_cast<size_t>(p) * n]);
    sc.vw_key = key;
  }
  return sc.vw.data();
}

// Adds the lane-wise zero accumulators zacc[v][d] to out[v][d] (slot
// gi*G + t feeds channel group gi).
void add_zero_terms(const float* zacc, int nv, int group, int d, float* out) {
  const int ng = d / group, n = group * ng;
  for (int v = 0; v < nv; ++v) {
    float zs[32] = {};
    const float* za = zacc + static_cast<size_t>(v) * n;
    for (int i = 0; i < n; ++i) zs[i / group] += za[i];
    float* o = out + static_cast<size_t>(v) * d;
    for (int gi = 0; gi < ng; ++gi) {
      const vf zb = vset1(zs[gi]);
      for (int c = gi * group; c < (gi + 1) * group; c += W) vstore(o + c, vadd(vload(o + c), zb));
    }
  }
}

// Outlier corrections (kv_codec.h, Outliers) after the dense pass: a few
// scalar FMAs per entry.
inline float outlier_delta(uint32_t e) {
#if defined(__F16C__)
  return _cvtsh_ss(static_cast<unsigned short>(e >> 16));
#else
  return f16_to_f32(static_cast<f16_t>(e >> 16));
#endif
}
// Keys: s[v][t] += q[v][c] * delta (Keys; acc = scores rows ld_acc apart,
// src = queries rows d apart); values: out[v][c] += p[v][t] * delta (acc =
// out rows d apart, src = probabilities rows ld_src apart).
template <bool Keys>
void outliers_rows(const uint8_t* rec, const KvGroupLayout& l, const float* src, int ld_src, int nv, float* acc,
                   int ld_acc) {
  const uint32_t* e = kv_outliers(rec, l);
  for (int i = 0; i < l.outliers; ++i) {
    const int t = (e[i] >> 8) & 0xff, c = e[i] & 0xff;
    const int a = Keys ? t : c, b = Keys ? c : t;
    const float delta = outlier_delta(e[i]);
    for (int v = 0; v < nv; ++v)
      acc[static_cast<size_t>(v) * ld_acc + a] += src[static_cast<size_t>(v) * ld_src + b] * delta;
  }
}
// The fused loop's form: all (up to 4) query vectors of an entry in one SSE
// operation on head-interleaved copies. qT: [d][4] queries; acc: [n][4]
// (acc[t] for keys, acc[c] for values), src: [n][4] (qT for keys, pT for
// values), i.e. acc[a(e)] += src[b(e)] * delta.
template <bool Keys>
void outliers_x4(const uint8_t* rec, const KvGroupLayout& l, int t_off, const float* src, float* acc) {
  const uint32_t* e = kv_outliers(rec, l);
  for (int i = 0; i < l.outliers; ++i) {
    const int t = static_cast<int>((e[i] >> 8) & 0xff) + t_off, c = static_cast<int>(e[i] & 0xff);
    const int a = Keys ? t : c, b = Keys ? c : t;
    const __m128 x = _mm_mul_ps(_mm_loadu_ps(src + 4 * b), _mm_set1_ps(outlier_delta(e[i])));
    _mm_storeu_ps(acc + 4 * a, _mm_add_ps(_mm_loadu_ps(acc + 4 * a), x));
  }
}

}  // namespace

void kv_key_scores(const uint8_t* rec, int group, int d, int bits, const float* q, int nv, float* scores,
                   int outliers) {
  const KvGroupLayout l = kv_group_layout(group, d, bits, outliers);
  Scratch& sc = scratch();
  Plane pl[2];
  const int np = planes_of(bits, group * d, pl);
  const float* kw = key_weights(sc, bits, group, d);
  sc.qk.resize(static_cast<size_t>(np) * nv * d);
  sc.qw.resize(sc.qk.size());
  sc.qz.resize(nv);
  key_query_weights(q, nv, d, np, kw, sc.qw.data());
  key_prep(rec, l, np, sc.qw.data(), q, nv, sc.qk.data(), sc.qz.data());
  for (int v0 = 0; v0 < nv; v0 += kMaxH)
    key_scores_any(std::min(kMaxH, nv - v0), rec, pl, np, group, d, sc.qk.data() + static_cast<size_t>(v0) * d, d,
                   static_cast<size_t>(nv) * d, sc.qz.data() + v0, scores + static_cast<size_t>(v0) * group, group);
  outliers_rows<true>(rec, l, q, d, nv, scores, group);
}

namespace {
// scores[h][0..31] = q[h] . tile[.][token] for a float tile [d][32]: 32 tokens
// x H heads of accumulators, each tile row loaded once for all heads.
template <int H>
void tile_scores(const float* tile, int d, const float* q, float* scores, int lds) {
  constexpr int NT = kKvCodeBlock / W;
  vf acc[H][NT];
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < NT; ++i) acc[h][i] = vzero();
  for (int c = 0; c < d; ++c) {
    vf x[NT];
    for (int i = 0; i < NT; ++i) x[i] = vload(tile + c * kKvCodeBlock + i * W);
    for (int h = 0; h < H; ++h) {
      const vf qb = vset1(q[static_cast<size_t>(h) * d + c]);
      for (int i = 0; i < NT; ++i) acc[h][i] = vfma(qb, x[i], acc[h][i]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < NT; ++i) vstore(scores + static_cast<size_t>(h) * lds + i * W, acc[h][i]);
}
}  // namespace

void kv_key_scores_rope(const uint8_t* rec, int group, int d, int bits, const KvRopeAngles& rot, const double* blk_cos,
                        const double* blk_sin, const float* q, int nv, float* scores, int outliers) {
  const KvGroupLayout l = kv_group_layout(group, d, bits, outliers);
  const RopeTable& rope = *rot.rope;
  const int half = rot.half;
  Scratch& sc = scratch();
  sc.tile.resize(static_cast<size_t>(d) * kKvCodeBlock);
  sc.sw.resize(d);
  const float* kw = key_weights(sc, bits, group, d);
  float* tile = sc.tile.data();
  for (int j = 0; j < group / kKvCodeBlock; ++j) {
    dequant_key_tile(rec, l, j * kKvCodeBlock, kw, sc.sw.data(), tile);
    // Outliers of these 32 tokens, before the rotation (they are pre-RoPE).
    const uint32_t* oe = kv_outliers(rec, l);
    for (int i = 0; i < l.outliers; ++i) {
      const KvOutlier o = kv_outlier_entry(oe[i]);
      const int tt = o.t - j * kKvCodeBlock;
      if (tt >= 0 && tt < kKvCodeBlock) tile[o.c * kKvCodeBlock + tt] += o.delta;
    }
    // Rotate the tile: angles of the 32 tokens from the block start (double,
    // rounded once) and the fixed in-block offsets.
    const double* c0 = blk_cos + static_cast<size_t>(j) * half;
    const double* s0 = blk_sin + static_cast<size_t>(j) * half;
    for (int i = 0; i < half; ++i) {
      const int ia = rope.style == RopeStyle::interleaved ? 2 * i : i;
      const int ib = rope.style == RopeStyle::interleaved ? 2 * i + 1 : i + half;
      const vf bc = vset1(static_cast<float>(c0[i])), bs = vset1(static_cast<float>(s0[i]));
      float* ta = tile + ia * kKvCodeBlock;
      float* tb = tile + ib * kKvCodeBlock;
      for (int k = 0; k < kKvCodeBlock; k += W) {
        const vf oc = vload(&rot.off_cos[i * kKvCodeBlock + k]), os = vload(&rot.off_sin[i * kKvCodeBlock + k]);
        const vf cs = vsub(vmul(bc, oc), vmul(bs, os)), sn = vfma(bs, oc, vmul(bc, os));
        const vf a = vload(ta + k), b = vload(tb + k);
        vstore(ta + k, vsub(vmul(a, cs), vmul(b, sn)));
        vstore(tb + k, vfma(a, sn, vmul(b, cs)));
      }
    }
    for (int v0 = 0; v0 < nv; v0 += kMaxH) {
      const float* qv = q + static_cast<size_t>(v0) * d;
      float* sv = scores + static_cast<size_t>(v0) * group + j * kKvCodeBlock;
      switch (std::min(kMaxH, nv - v0)) {
        case 1: tile_scores<1>(tile, d, qv, sv, group); break;
        case 2: tile_scores<2>(tile, d, qv, sv, group); break;
        case 3: tile_scores<3>(tile, d, qv, sv, group); break;
        default: tile_scores<4>(tile, d, qv, sv, group); break;
      }
    }
  }
}

void kv_value_accum(const uint8_t* rec, int group, int d, int bits, const float* p, int nv, float* out,
                    int outliers) {
  const KvGroupLayout l = kv_group_layout(group, d, bits, outliers);
  Scratch& sc = scratch();
  Plane pl[2];
  const int np = planes_of(bits, group * d, pl);
  const float* vw = value_weights(sc, bits, group, d);
  sc.wk.resize(static_cast<size_t>(np) * nv * d);
  sc.zacc.assign(static_cast<size_t>(nv) * d, 0.0f);
  value_prep(rec, l, np, vw, p, group, nv, sc.wk.data(), sc.zacc.data());
  add_zero_terms(sc.zacc.data(), nv, group, d, out);
  outliers_rows<false>(rec, l, p, group, nv, out, d);
  for (int v0 = 0; v0 < nv; v0 += kMaxH)
  {
    const ValueRec r{rec, sc.wk.data() + static_cast<size_t>(v0) * d};
    value_accum_any(std::min(kMaxH, nv - v0), &r, 1, pl, np, group, d, d, static_cast<size_t>(nv) * d,
                    out + static_cast<size_t>(v0) * d);
  }
}

void kv_attend_groups(const uint8_t* krec, size_t kstride, const uint8_t* vrec, size_t vstride, int n_groups,
                      int group, int d, int kbits, int vbits, const float* q, int nv, float* out, float* m_out,
                      float* l_out, int k_outliers, int v_outliers) {
  LONGKV_ASSERT(nv >= 1 && nv <= kMaxH);
  // Groups per pass: the softmax bookkeeping and the value accumulators'
  // load/store are paid once per span of up to kSpan groups (64 tokens).
  constexpr int kSpan = 2;
  const KvGroupLayout kl = kv_group_layout(group, d, kbits, k_outliers), vl = kv_group_layout(group, d, vbits, v_outliers);
  Scratch& sc = scratch();
  Plane kp[2], vp[2];
  const int knp = planes_of(kbits, group * d, kp), vnp = planes_of(vbits, group * d, vp);
  const float* kw = key_weights(sc, kbits, group, d);
  const float* vw = value_weights(sc, vbits, group, d);
  const size_t qk_n = static_cast<size_t>(knp) * nv * d, wk_n = static_cast<size_t>(vnp) * nv * d;
  sc.qk.resize(qk_n);
  sc.qw.resize(qk_n);
  key_query_weights(q, nv, d, knp, kw, sc.qw.data());
  sc.qz.resize(nv);
  const int lds = kSpan * group;  // score row stride: one span
  sc.sc.resize(static_cast<size_t>(nv) * lds);
  sc.wk.resize(kSpan * wk_n);
  sc.zacc.assign(static_cast<size_t>(nv) * d, 0.0f);
  sc.lv.assign(static_cast<size_t>(nv) * W, 0.0f);
  std::fill(out, out + static_cast<size_t>(nv) * d, 0.0f);
  float m[kMaxH];
  for (int v = 0; v < nv; ++v) m[v] = -INFINITY;
  float* s = sc.sc.data();
  // Prefetch slices: a span's later records over its 3 * kSpan + 1 steps.
  const int pf_lines = static_cast<int>((kl.bytes + vl.bytes + 63) / 64 * kSpan / (3 * kSpan + 1)) + 1;
  // Outliers: head-interleaved copies (outliers_x4); ck: a span's key score
  // corrections [t][4]; pT: its probabilities [t][4]; cv: value corrections
  // [c][4] (rescaled with out).
  const bool ko = kl.outliers > 0, vo = vl.outliers > 0;
  if (ko) {
    sc.qT.assign(static_cast<size_t>(d) * 4, 0.0f);
    for (int v = 0; v < nv; ++v)
      for (int c = 0; c < d; ++c) sc.qT[static_cast<size_t>(c) * 4 + v] = q[static_cast<size_t>(v) * d + c];
    sc.ck.resize(static_cast<size_t>(lds) * 4);
  }
  if (vo) {
    sc.cv.assign(static_cast<size_t>(d) * 4, 0.0f);
    sc.pT.assign(static_cast<size_t>(lds) * 4, 0.0f);
  }
  for (int grp0 = 0; grp0 < n_groups; grp0 += kSpan) {
    const int span = std::min(kSpan, n_groups - grp0), ns = span * group;
    ValueRec recs[kSpan];
    // Pull later groups' records in while this span computes: K and V
    // streams interleave, which the hardware prefetcher follows late.
    SpreadPrefetch pf;
    for (int grp = grp0 + kPrefetchGroups; grp < std::min(n_groups, grp0 + span + kPrefetchGroups); ++grp) {
      pf.add(krec + grp * kstride, kl.bytes);
      pf.add(vrec + grp * vstride, vl.bytes);
    }
    for (int r = 0; r < span; ++r) {
      const int grp = grp0 + r;
      const uint8_t* kr = krec + grp * kstride;
      pf.step(pf_lines);
      key_prep(kr, kl, knp, sc.qw.data(), q, nv, sc.qk.data(), sc.qz.data());
      pf.step(pf_lines);
      key_scores_any(nv, kr, kp, knp, group, d, sc.qk.data(), d, static_cast<size_t>(nv) * d, sc.qz.data(),
                     s + r * group, lds);
      if (ko) {
        if (r == 0) std::fill(sc.ck.begin(), sc.ck.begin() + static_cast<size_t>(ns) * 4, 0.0f);
        outliers_x4<true>(kr, kl, r * group, sc.qT.data(), sc.ck.data());
      }
      recs[r] = {vrec + grp * vstride, sc.wk.data() + r * wk_n};
    }
    pf.step(pf_lines);
    if (ko)
      for (int v = 0; v < nv; ++v)
        for (int t = 0; t < ns; ++t) s[static_cast<size_t>(v) * lds + t] += sc.ck[static_cast<size_t>(t) * 4 + v];
    for (int v = 0; v < nv; ++v) {
      float* sv = s + static_cast<size_t>(v) * lds;
      vf mx = vload(sv);
      for (int t = W; t < ns; t += W) mx = vmax(mx, vload(sv + t));
      // The horizontal max only when some score beats the running max
      // (rare once the span has seen its largest scores).
      if (vany_gt(mx, m[v])) {
        const float mg = vhmax(mx);
        // Rescale everything accumulated under the old maximum.
        const vf f = vset1(std::exp(m[v] - mg));
        float* o = out + static_cast<size_t>(v) * d;
        float* za = sc.zacc.data() + static_cast<size_t>(v) * d;
        for (int c = 0; c < d; c += W) {
          vstore(o + c, vmul(vload(o + c), f));
          vstore(za + c, vmul(vload(za + c), f));
        }
        float* lv = sc.lv.data() + static_cast<size_t>(v) * W;
        vstore(lv, vmul(vload(lv), f));
        if (vo) {
          const float fs = std::exp(m[v] - mg);
          for (int c = 0; c < d; ++c) sc.cv[static_cast<size_t>(c) * 4 + v] *= fs;
        }
        m[v] = mg;
      }
      const vf mv = vset1(m[v]);
      vf lsum = vload(sc.lv.data() + static_cast<size_t>(v) * W);
      for (int t = 0; t < ns; t += W) {
        const vf e = vexp(vsub(vload(sv + t), mv));
        vstore(sv + t, e);
        lsum = vadd(lsum, e);
      }
      vstore(sc.lv.data() + static_cast<size_t>(v) * W, lsum);
    }
    for (int r = 0; r < span; ++r) {
      pf.step(pf_lines);
      value_prep(recs[r].codes, vl, vnp, vw, s + r * group, lds, nv, sc.wk.data() + r * wk_n, sc.zacc.data());
    }
    pf.rest();
    if (vo) {
      for (int v = 0; v < nv; ++v)
        for (int t = 0; t < ns; ++t) sc.pT[static_cast<size_t>(t) * 4 + v] = s[static_cast<size_t>(v) * lds + t];
      for (int r = 0; r < span; ++r) outliers_x4<false>(recs[r].codes, vl, r * group, sc.pT.data(), sc.cv.data());
    }
    value_accum_any(nv, recs, span, vp, vnp, group, d, d, static_cast<size_t>(nv) * d, out);
  }
  add_zero_terms(sc.zacc.data(), nv, group, d, out);
  if (vo)
    for (int v = 0; v < nv; ++v)
      for (int c = 0; c < d; ++c) out[static_cast<size_t>(v) * d + c] += sc.cv[static_cast<size_t>(c) * 4 + v];
  for (int v = 0; v < nv; ++v) {
    const float l = vsum(vload(sc.lv.data() + static_cast<size_t>(v) * W));
    m_out[v] = m[v];
    l_out[v] = l;
    if (l > 0) {
      const vf inv = vset1(1.0f / l);
      float* o = out + static_cast<size_t>(v) * d;
      for (int c = 0; c < d; c += W) vstore(o + c, vmul(vload(o + c), inv));
    }
  }
}

float kv_max(const float* s, int n) {
  int i = 0;
  float m = -INFINITY;
  if (n >= W) {
    vf acc = vload(s);
    for (i = W; i + W <= n; i += W) acc = vmax(acc, vload(s + i));
    m = vhmax(acc);
  }
  for (; i < n; ++i) m = s[i] > m ? s[i] : m;
  return m;
}

float kv_exp_sum(float* s, int n, float m) {
  int i = 0;
  vf acc = vzero();
  const vf mv = vset1(m);
  for (; i + W <= n; i += W) {
    const vf e = vexp(vsub(vload(s + i), mv));
    vstore(s + i, e);
    acc = vadd(acc, e);
  }
  float sum = vsum(acc);
  for (; i < n; ++i) {
    s[i] = std::exp(s[i] - m);
    sum += s[i];
  }
  return sum;
}

}  // namespace longkv

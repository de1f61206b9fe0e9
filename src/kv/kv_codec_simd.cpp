// Fast kernels over scalar KV codes (layouts in kv_codec.h): key scores and
// value accumulation straight from the packed 32-code blocks, for up to four
// query vectors per pass so each block is unpacked once per KV group's heads.
// AVX-512 (16 lanes), AVX2 (8 lanes) or scalar, chosen at compile time; the
// kernels are written once against the small vector layer below.
// GCC 12 flags the _mm512_undefined_* inside its own intrinsic headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kv/kv_codec.h"

namespace longkv {
namespace {

// ---- vector layer ---------------------------------------------------------
#if defined(__AVX512F__) && defined(__AVX512BW__)
constexpr int W = 16;
using vf = __m512;
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

inline vf cvt16(__m128i bytes) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)); }
inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline __m128i load8(const uint8_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }
inline uint32_t load32u(const uint8_t* p) {
  uint32_t m;
  std::memcpy(&m, p, 4);
  return m;
}

template <int B>
inline void unpack32(const uint8_t* p, vf* x);
template <>
inline void unpack32<8>(const uint8_t* p, vf* x) {
  x[0] = cvt16(load16(p));
  x[1] = cvt16(load16(p + 16));
}
template <>
inline void unpack32<4>(const uint8_t* p, vf* x) {
  const __m128i v = load16(p), m = _mm_set1_epi8(15);
  x[0] = cvt16(_mm_and_si128(v, m));
  x[1] = cvt16(_mm_and_si128(_mm_srli_epi16(v, 4), m));
}
template <>
inline void unpack32<2>(const uint8_t* p, vf* x) {
  const __m128i v = load8(p), m = _mm_set1_epi8(3);
  x[0] = cvt16(_mm_and_si128(_mm_unpacklo_epi64(v, _mm_srli_epi16(v, 2)), m));
  x[1] = cvt16(_mm_and_si128(_mm_unpacklo_epi64(_mm_srli_epi16(v, 4), _mm_srli_epi16(v, 6)), m));
}
template <>
inline void unpack32<1>(const uint8_t* p, vf* x) {
  const uint32_t m = load32u(p);
  const vf one = _mm512_set1_ps(1.0f);
  x[0] = _mm512_maskz_mov_ps(static_cast<__mmask16>(m & 0xffffu), one);
  x[1] = _mm512_maskz_mov_ps(static_cast<__mmask16>(m >> 16), one);
}
template <>
inline void unpack32<3>(const uint8_t* p, vf* x) {
  unpack32<2>(p, x);
  const uint32_t m = load32u(p + 8);
  const vf four = _mm512_set1_ps(4.0f);
  x[0] = _mm512_mask_add_ps(x[0], static_cast<__mmask16>(m & 0xffffu), x[0], four);
  x[1] = _mm512_mask_add_ps(x[1], static_cast<__mmask16>(m >> 16), x[1], four);
}

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

inline vf cvt8(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }
inline __m128i load8(const uint8_t* p) { return _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)); }
inline uint32_t load32u(const uint8_t* p) {
  uint32_t m;
  std::memcpy(&m, p, 4);
  return m;
}
// 8 bits of m -> 8 lanes of 0.0 / `val`.
inline vf bits8(uint32_t m, vf val) {
  const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i t = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m & 0xffu)), sel), sel);
  return _mm256_and_ps(_mm256_castsi256_ps(t), val);
}

template <int B>
inline void unpack32(const uint8_t* p, vf* x);
template <>
inline void unpack32<8>(const uint8_t* p, vf* x) {
  for (int i = 0; i < 4; ++i) x[i] = cvt8(load8(p + 8 * i));
}
template <>
inline void unpack32<4>(const uint8_t* p, vf* x) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), m = _mm_set1_epi8(15);
  const __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
  x[0] = cvt8(lo);
  x[1] = cvt8(_mm_srli_si128(lo, 8));
  x[2] = cvt8(hi);
  x[3] = cvt8(_mm_srli_si128(hi, 8));
}
template <>
inline void unpack32<2>(const uint8_t* p, vf* x) {
  const __m128i v = load8(p), m = _mm_set1_epi8(3);
  x[0] = cvt8(_mm_and_si128(v, m));
  x[1] = cvt8(_mm_and_si128(_mm_srli_epi16(v, 2), m));
  x[2] = cvt8(_mm_and_si128(_mm_srli_epi16(v, 4), m));
  x[3] = cvt8(_mm_and_si128(_mm_srli_epi16(v, 6), m));
}
template <>
inline void unpack32<1>(const uint8_t* p, vf* x) {
  const uint32_t m = load32u(p);
  const vf one = _mm256_set1_ps(1.0f);
  for (int i = 0; i < 4; ++i) x[i] = bits8(m >> (8 * i), one);
}
template <>
inline void unpack32<3>(const uint8_t* p, vf* x) {
  unpack32<2>(p, x);
  const uint32_t m = load32u(p + 8);
  const vf four = _mm256_set1_ps(4.0f);
  for (int i = 0; i < 4; ++i) x[i] = _mm256_add_ps(x[i], bits8(m >> (8 * i), four));
}

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
template <int B>
inline void unpack32(const uint8_t* p, vf* x) {
  uint8_t c[kKvCodeBlock];
  kv_unpack_block(p, B, c);
  for (int i = 0; i < kKvCodeBlock; ++i) x[i] = c[i];
}
inline vf vexp(vf x) { return std::exp(x); }
#endif

constexpr int NV = kKvCodeBlock / W;  // vectors per 32-code block
constexpr int kMaxH = 4;              // query vectors per pass over the codes
// Channel blocks per value pass: 2 blocks x 4 heads x 2 = 16 accumulators
// fit AVX-512's 32 registers; AVX2 (16 registers) does one block at a time.
constexpr int kValueCB = W == 16 ? 2 : 1;

// ---- key scores -------------------------------------------------------------

// Sources of a channel's 32 token values for the score loop.
template <int B>
struct CodeSrc {
  const uint8_t* p;  // block j of the group: [d][4B]
  void load(int c, vf* x) const { unpack32<B>(p + static_cast<size_t>(c) * (4 * B), x); }
};
struct TileSrc {
  const float* t;  // [d][32] floats
  void load(int c, vf* x) const {
    for (int i = 0; i < NV; ++i) x[i] = vload(t + c * kKvCodeBlock + i * W);
  }
};

// scores[h][0..31] = sum_c qs[h][c] x[c][.] + qz[h]
template <int H, typename Src>
void scores_block(const Src& src, int d, const float* qs, int ldq, const float* qz, float* scores, int lds) {
  vf acc[H][NV];
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < NV; ++i) acc[h][i] = vzero();
  for (int c = 0; c < d; ++c) {
    vf x[NV];
    src.load(c, x);
    for (int h = 0; h < H; ++h) {
      const vf qb = vset1(qs[static_cast<size_t>(h) * ldq + c]);
      for (int i = 0; i < NV; ++i) acc[h][i] = vfma(qb, x[i], acc[h][i]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < NV; ++i) vstore(scores + static_cast<size_t>(h) * lds + i * W, vadd(acc[h][i], vset1(qz[h])));
}

template <typename Src>
void scores_block_any(int h, const Src& src, int d, const float* qs, int ldq, const float* qz, float* scores, int lds) {
  switch (h) {
    case 1: scores_block<1>(src, d, qs, ldq, qz, scores, lds); break;
    case 2: scores_block<2>(src, d, qs, ldq, qz, scores, lds); break;
    case 3: scores_block<3>(src, d, qs, ldq, qz, scores, lds); break;
    default: scores_block<4>(src, d, qs, ldq, qz, scores, lds); break;
  }
}

template <int B>
void key_scores_codes(const uint8_t* rec, int group, int d, const float* qs, int nv, const float* qz, float* scores) {
  for (int j = 0; j < group / kKvCodeBlock; ++j) {
    const CodeSrc<B> src{rec + static_cast<size_t>(j) * d * (4 * B)};
    for (int v0 = 0; v0 < nv; v0 += kMaxH)
      scores_block_any(std::min(kMaxH, nv - v0), src, d, qs + static_cast<size_t>(v0) * d, d, qz + v0,
                       scores + static_cast<size_t>(v0) * group + j * kKvCodeBlock, group);
  }
}

// Dequantizes block j of a key group into tile [d][32].
template <int B>
void dequant_key_tile(const uint8_t* codes_j, int d, const float* s, const float* z, float* tile) {
  for (int c = 0; c < d; ++c) {
    vf x[NV];
    unpack32<B>(codes_j + static_cast<size_t>(c) * (4 * B), x);
    const vf sc = vset1(s[c]), zc = vset1(z[c]);
    for (int i = 0; i < NV; ++i) vstore(tile + c * kKvCodeBlock + i * W, vfma(sc, x[i], zc));
  }
}

void dequant_key_tile_any(int bits, const uint8_t* codes_j, int d, const float* s, const float* z, float* tile) {
  switch (bits) {
    case 8: dequant_key_tile<8>(codes_j, d, s, z, tile); break;
    case 4: dequant_key_tile<4>(codes_j, d, s, z, tile); break;
    case 3: dequant_key_tile<3>(codes_j, d, s, z, tile); break;
    case 2: dequant_key_tile<2>(codes_j, d, s, z, tile); break;
    case 1: dequant_key_tile<1>(codes_j, d, s, z, tile); break;
    default: LONGKV_ASSERT(false);
  }
}

// ---- value accumulation -----------------------------------------------------

// out[h][32*cb0 .. 32*(cb0+CB)) += sum_t w[h][t][gi] x[t][c] for the H
// vectors; w = p * scale, gi = the channel group of each block.
template <int B, int H, int CB>
void value_chunk(const uint8_t* codes, int group, int nb, int cb0, const float* w, int ng, float* out, int d) {
  vf acc[H][CB * NV];
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < CB * NV; ++i) acc[h][i] = vload(out + static_cast<size_t>(h) * d + cb0 * kKvCodeBlock + i * W);
  const int bb = 4 * B;
  for (int t = 0; t < group; ++t) {
    const uint8_t* p = codes + (static_cast<size_t>(t) * nb + cb0) * bb;
    for (int cb = 0; cb < CB; ++cb) {
      vf x[NV];
      unpack32<B>(p + cb * bb, x);
      const int gi = (cb0 + cb) * kKvCodeBlock / group;
      for (int h = 0; h < H; ++h) {
        const vf wb = vset1(w[(static_cast<size_t>(h) * group + t) * ng + gi]);
        for (int i = 0; i < NV; ++i) acc[h][cb * NV + i] = vfma(wb, x[i], acc[h][cb * NV + i]);
      }
    }
  }
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < CB * NV; ++i) vstore(out + static_cast<size_t>(h) * d + cb0 * kKvCodeBlock + i * W, acc[h][i]);
}

template <int B, int H>
void value_accum_h(const uint8_t* codes, int group, int d, const float* w, int ng, float* out) {
  const int nb = d / kKvCodeBlock;
  int cb0 = 0;
  for (; cb0 + kValueCB <= nb; cb0 += kValueCB) value_chunk<B, H, kValueCB>(codes, group, nb, cb0, w, ng, out, d);
  for (; cb0 < nb; ++cb0) value_chunk<B, H, 1>(codes, group, nb, cb0, w, ng, out, d);
}

template <int B>
void value_accum_codes(const uint8_t* codes, int group, int d, const float* w, int nv, int ng, float* out) {
  for (int v0 = 0; v0 < nv; v0 += kMaxH) {
    const float* wv = w + static_cast<size_t>(v0) * group * ng;
    float* o = out + static_cast<size_t>(v0) * d;
    switch (std::min(kMaxH, nv - v0)) {
      case 1: value_accum_h<B, 1>(codes, group, d, wv, ng, o); break;
      case 2: value_accum_h<B, 2>(codes, group, d, wv, ng, o); break;
      case 3: value_accum_h<B, 3>(codes, group, d, wv, ng, o); break;
      default: value_accum_h<B, 4>(codes, group, d, wv, ng, o); break;
    }
  }
}

// Per-thread scratch (kernels are called from pool threads).
struct Scratch {
  std::vector<float> a, b, c, e, tile;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

void f16_span(const uint8_t* p, size_t n, std::vector<float>& dst) {
  dst.resize(n);
  f16_to_f32_n(reinterpret_cast<const f16_t*>(p), dst.data(), static_cast<int64_t>(n));
}

}  // namespace

void kv_key_scores(const uint8_t* rec, int group, int d, int bits, const float* q, int nv, float* scores) {
  const KvGroupLayout l = kv_group_layout(group, d, bits);
  Scratch& sc = scratch();
  f16_span(rec + l.scale_offset, d, sc.a);
  f16_span(rec + l.zero_offset, d, sc.b);
  // Fold the per-channel scale into the query and the zero into one dot
  // product per vector: score_t = (q*s) . code_t + q . z.
  sc.c.resize(static_cast<size_t>(nv) * d);
  sc.e.resize(nv);
  for (int v = 0; v < nv; ++v) {
    const float* qv = q + static_cast<size_t>(v) * d;
    float* qs = &sc.c[static_cast<size_t>(v) * d];
    vf zacc = vzero();
    for (int c = 0; c < d; c += W) {
      const vf x = vload(qv + c);
      vstore(qs + c, vmul(x, vload(&sc.a[c])));
      zacc = vfma(x, vload(&sc.b[c]), zacc);
    }
    sc.e[v] = vsum(zacc);
  }
  switch (bits) {
    case 8: key_scores_codes<8>(rec, group, d, sc.c.data(), nv, sc.e.data(), scores); break;
    case 4: key_scores_codes<4>(rec, group, d, sc.c.data(), nv, sc.e.data(), scores); break;
    case 3: key_scores_codes<3>(rec, group, d, sc.c.data(), nv, sc.e.data(), scores); break;
    case 2: key_scores_codes<2>(rec, group, d, sc.c.data(), nv, sc.e.data(), scores); break;
    case 1: key_scores_codes<1>(rec, group, d, sc.c.data(), nv, sc.e.data(), scores); break;
    default: LONGKV_ASSERT(false);
  }
}

void kv_key_scores_rope(const uint8_t* rec, int group, int d, int bits, const KvRopeAngles& rot, const double* blk_cos,
                        const double* blk_sin, const float* q, int nv, float* scores) {
  const KvGroupLayout l = kv_group_layout(group, d, bits);
  const RopeTable& rope = *rot.rope;
  const int half = rot.half;
  Scratch& sc = scratch();
  f16_span(rec + l.scale_offset, d, sc.a);
  f16_span(rec + l.zero_offset, d, sc.b);
  sc.tile.resize(static_cast<size_t>(d) * kKvCodeBlock);
  sc.e.assign(nv, 0.0f);
  float* tile = sc.tile.data();
  for (int j = 0; j < group / kKvCodeBlock; ++j) {
    dequant_key_tile_any(bits, rec + static_cast<size_t>(j) * d * kv_code_block_bytes(bits), d, sc.a.data(),
                         sc.b.data(), tile);
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
      for (int k = 0; k < NV; ++k) {
        const vf oc = vload(&rot.off_cos[i * kKvCodeBlock + k * W]), os = vload(&rot.off_sin[i * kKvCodeBlock + k * W]);
        const vf cs = vsub(vmul(bc, oc), vmul(bs, os)), sn = vfma(bs, oc, vmul(bc, os));
        const vf a = vload(ta + k * W), b = vload(tb + k * W);
        vstore(ta + k * W, vsub(vmul(a, cs), vmul(b, sn)));
        vstore(tb + k * W, vfma(a, sn, vmul(b, cs)));
      }
    }
    const TileSrc src{tile};
    for (int v0 = 0; v0 < nv; v0 += kMaxH)
      scores_block_any(std::min(kMaxH, nv - v0), src, d, q + static_cast<size_t>(v0) * d, d, sc.e.data() + v0,
                       scores + static_cast<size_t>(v0) * group + j * kKvCodeBlock, group);
  }
}

void kv_value_accum(const uint8_t* rec, int group, int d, int bits, const float* p, int nv, float* out) {
  const KvGroupLayout l = kv_group_layout(group, d, bits);
  const int ng = d / group;
  Scratch& sc = scratch();
  f16_span(rec + l.scale_offset, static_cast<size_t>(group) * ng, sc.a);
  f16_span(rec + l.zero_offset, static_cast<size_t>(group) * ng, sc.b);
  // w[v][t][gi] = p[v][t] * scale[t][gi]; the zeros add sum_t p_t z_tg per
  // channel group. p is expanded to the [t][gi] layout of the scales so
  // both are plain vector loops (a per-group serial sum costs more than the
  // codes themselves).
  const int n = group * ng;
  sc.c.resize(static_cast<size_t>(nv) * n);
  sc.e.resize(n);
  const float* __restrict sa = sc.a.data();
  const float* __restrict sb = sc.b.data();
  float* __restrict pe = sc.e.data();
  for (int v = 0; v < nv; ++v) {
    const float* pv = p + static_cast<size_t>(v) * group;
    float* __restrict wv = sc.c.data() + static_cast<size_t>(v) * n;
    if (ng == 1) {
      std::copy_n(pv, group, pe);
    } else {
      for (int t = 0; t < group; ++t)
        for (int gi = 0; gi < ng; ++gi) pe[t * ng + gi] = pv[t];
    }
    float zsum[32] = {};  // ng = d / group <= 32 (checked by the cache)
    if (W % ng == 0) {
      vf zacc = vzero();
      for (int i = 0; i < n; i += W) {
        const vf pw = vload(pe + i);
        vstore(wv + i, vmul(pw, vload(sa + i)));
        zacc = vfma(pw, vload(sb + i), zacc);
      }
      float lanes[W];
      vstore(lanes, zacc);
      for (int i = 0; i < W; ++i) zsum[i % ng] += lanes[i];
    } else {
      for (int i = 0; i < n; ++i) {
        wv[i] = pe[i] * sa[i];
        zsum[i % ng] += pe[i] * sb[i];
      }
    }
    float* o = out + static_cast<size_t>(v) * d;
    for (int gi = 0; gi < ng; ++gi) {
      const vf zb = vset1(zsum[gi]);
      for (int c = gi * group; c < (gi + 1) * group; c += W) vstore(o + c, vadd(vload(o + c), zb));
    }
  }
  switch (bits) {
    case 8: value_accum_codes<8>(rec, group, d, sc.c.data(), nv, ng, out); break;
    case 4: value_accum_codes<4>(rec, group, d, sc.c.data(), nv, ng, out); break;
    case 3: value_accum_codes<3>(rec, group, d, sc.c.data(), nv, ng, out); break;
    case 2: value_accum_codes<2>(rec, group, d, sc.c.data(), nv, ng, out); break;
    case 1: value_accum_codes<1>(rec, group, d, sc.c.data(), nv, ng, out); break;
    default: LONGKV_ASSERT(false);
  }
}

float kv_max(const float* s, int n) {
  int i = 0;
  float m = -INFINITY;
  if (n >= W) {
    vf acc = vload(s);
    for (i = W; i + W <= n; i += W) acc = vmax(acc, vload(s + i));
    float lanes[W];
    vstore(lanes, acc);
    for (float x : lanes) m = x > m ? x : m;
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

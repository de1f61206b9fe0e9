// Scalar KV codes (KIVI / KVQuant style): THE description of every code
// layout of the quantized KV cache. CPU and CUDA include this header; the
// reference functions below (kv_codec.cpp) are the oracle for every kernel.
//
// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------
// A group of elements shares an fp16 scale s and an fp16 zero z; element x is
// stored as an unsigned b-bit code q (b in {8, 4, 3, 2, 1}) and read back as
//     x^ = s * q + z                     (both modes use this one formula)
// Asymmetric (default):
//     s = f16_up((max - min) / (2^b - 1)),  z = f16(min)
//     q = clamp(round((x - z) / s), 0, 2^b - 1)
//   f16_up rounds to fp16 and bumps one ulp if z + (2^b - 1) s < max, so the
//   top of the range is always representable: |x - x^| <= s/2 + |min - z|.
// Symmetric (":sym"): mid = 2^(b-1), codes q - mid in [-(mid-1), mid-1]
//     s = f16_up(amax / (mid - 1)),  z = -mid * s (exact in fp16: mid is a
//     power of two), q = clamp(round(x / s) + mid, 0, 2^b - 1)
//   |x - x^| <= s/2. The zero is stored anyway so both modes share every
//   kernel; the bit accounting counts it. 1-bit symmetric is rejected by the
//   mode parser (it cannot represent 0).
// Asymmetric with fit=mse: (s, z) start as above, then are refitted by least
//   squares to the codes they give (x ~ z + s q, both rounded to fp16) while
//   the group's squared error falls; elements beyond the final range
//   saturate at code 0 or 2^b - 1, the others keep |x - x^| <= s/2. Same
//   record, same kernels: only the two fp16 numbers differ.
// max == min (or amax == 0) gives s = 0 and every x^ = z.
//
// ---------------------------------------------------------------------------
// The code word: the unit every layout is built from
// ---------------------------------------------------------------------------
// A little-endian uint32 word holds n = 32/b codes of b bits (b in 8, 4, 2,
// 1): field k (k = 0..n-1) at bits [b*k, b*k + b). A "plane" of b-bit codes
// is a row-major array of words [rows][cols]. b = 3 is two planes, the b=2
// plane of (q & 3) followed by the b=1 plane of (q >> 2) (96 bits per 32
// codes).
// Why words: a SIMD lane holds one word, so field k of 16 words is one AND
// (or, for the top field, one shift) and one exact int->float convert; the
// field's 2^(b*k) weight is folded into the broadcast multiplier instead
// (an exact power-of-two scaling, at most 2^-30: it leaves float rounding
// unchanged unless query * scale is below ~2^-96), so no shuffles or
// widening are needed.
//
// ---------------------------------------------------------------------------
// Key group record (one KV head, G consecutive tokens; per-CHANNEL groups)
// ---------------------------------------------------------------------------
//   codes : plane words [d/n][G]: word (j, t) holds channels n*j .. n*j+n-1
//           of token t (field k = channel n*j + k)         d*G*b/8 bytes
//   scale : f16 [d]     one per channel                        2d bytes
//   zero  : f16 [d]                                            2d bytes
// Lanes are tokens: for each channel, one field extract gives 16 tokens'
// codes, FMA'd with the broadcast (query * scale) of every query head of the
// KV group; scores live in registers, no horizontal sums (KIVI packs along
// tokens for the same reason). The zero folds into one dot(q, z) per group.
//
// ---------------------------------------------------------------------------
// Value group record (one KV head, the same G tokens; per-TOKEN groups)
// ---------------------------------------------------------------------------
//   codes : plane words [G/n][d]: word (j, c) holds tokens n*j .. n*j+n-1 of
//           channel c (field k = token n*j + k)            G*d*b/8 bytes
//   scale : f16 [d/G channel groups][G tokens]                 2d bytes
//   zero  : f16 [d/G][G tokens]                                2d bytes
// Lanes are channels: out[c] += (p_t s_gt) q_tc, one field extract per 16
// channels and token, one FMA per query head; sum_t p_t z_gt is added once
// per channel group. Scales run along tokens so p_t s_gt and p_t z_gt are
// plain vector products.
//
// ---------------------------------------------------------------------------
// Outliers (":o<pct>", KVQuant's dense-and-sparse split), keys and values
// ---------------------------------------------------------------------------
// A record may end with a fixed number n_o = kv_outlier_count(pct, G, d) of
// 32-bit entries (the same n_o for every record of a cache):
//   outliers : uint32 [n_o]   c | t << 8 | f16(delta) << 16
// and element (t, c) of a listed entry reads back as s*q + z + delta. They are
// chosen before the ranges are fitted, greedily: repeatedly take the smallest
// or the largest remaining element of one range group (a key channel over the
// G tokens; a value token's G channels) whose removal shrinks that group's
// squared range the most (ties: the first group, the low end first; a group
// keeps at least 4 elements). The ranges are then fitted to what is left, the
// listed elements get their clamped codes as usual and delta = f16(x - x^) (x^ = fma(s, q, z))
// carries the rest. Entries are sorted by (t, c); unused ones are 0 (t = c =
// 0, delta +0: adding them changes nothing). Byte fields, not t*d + c: no
// division in the kernels. Kernels add q[c]*delta to score t
// (keys) or p[t]*delta to output channel c (values) after the dense pass.
//
// Constraints: G % 32 == 0 and d % G == 0 (so d % 32 == 0); with outliers
// G <= 256 and d <= 256 (byte fields).
// Bits per element, codes + scales + zeros + outliers: b + 32/G + 32 n_o/(G d).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/fp16.h"
#include "core/rope.h"

namespace longkv {

constexpr int kKvCodeBlock = 32;  // G, d and kernel tiles are multiples of this

// Codes per 32-bit word of a plane of b-bit codes (b in 8, 4, 2, 1).
constexpr int kv_codes_per_word(int plane_bits) { return 32 / plane_bits; }
// Bytes of the codes of G x d elements at b bits (b = 3: both planes).
constexpr size_t kv_codes_bytes(int group, int head_dim, int bits) {
  return static_cast<size_t>(head_dim) * group * bits / 8;
}
static_assert(kv_codes_per_word(2) == 16 && kv_codes_bytes(32, 128, 3) == 32 * 128 * 2 / 8 + 32 * 128 / 8);

// Byte offsets of one group record (keys or values: same sizes).
struct KvGroupLayout {
  int group = 0, head_dim = 0, bits = 0;
  int outliers = 0;           // n_o entries at the end
  size_t codes_bytes = 0;     // d*G*b/8
  size_t scale_offset = 0;    // = codes_bytes
  size_t zero_offset = 0;     // = codes_bytes + 2d
  size_t outlier_offset = 0;  // = codes_bytes + 4d
  size_t bytes = 0;           // codes_bytes + 4d + 4 n_o
};
constexpr KvGroupLayout kv_group_layout(int group, int head_dim, int bits, int outliers = 0) {
  KvGroupLayout l;
  l.group = group;
  l.head_dim = head_dim;
  l.bits = bits;
  l.outliers = outliers;
  l.codes_bytes = static_cast<size_t>(head_dim) * group * bits / 8;
  l.scale_offset = l.codes_bytes;
  l.zero_offset = l.codes_bytes + 2 * static_cast<size_t>(head_dim);
  l.outlier_offset = l.codes_bytes + 4 * static_cast<size_t>(head_dim);
  l.bytes = l.outlier_offset + 4 * static_cast<size_t>(outliers);
  return l;
}
// Entries per record for an outlier share of pct percent (at least 1 when
// pct > 0).
int kv_outlier_count(double pct, int group, int head_dim);
// Unpacks an outlier entry (see Outliers).
struct KvOutlier {
  int t, c;
  float delta;
};
inline KvOutlier kv_outlier_entry(uint32_t e) {
  return {static_cast<int>((e >> 8) & 0xffu), static_cast<int>(e & 0xffu), f16_to_f32(static_cast<f16_t>(e >> 16))};
}
inline const uint32_t* kv_outliers(const uint8_t* rec, const KvGroupLayout& l) {
  return reinterpret_cast<const uint32_t*>(rec + l.outlier_offset);
}
// llama3-8b head, G = 32, 4 bits: 2 KiB of codes + 512 B of scales/zeros.
static_assert(kv_group_layout(32, 128, 4).bytes == 2048 + 512);
static_assert(kv_group_layout(32, 128, 3).codes_bytes == 1536);
static_assert(kv_group_layout(64, 128, 2).zero_offset == 2048 + 256);
static_assert(kv_group_layout(32, 64, 2, 41).bytes == 512 + 256 + 164);

// Bytes a scalar-quantized cache holds (the CPU QuantKvCache and its GPU
// twin count alike): n_groups key and value records of krec / vrec bytes per
// KV head plus exact_tokens fp16 tokens (sinks + window); bits per element
// over the n_tokens held, or, for an empty cache, what a long one costs per
// element (records only).
struct KvQuantBytes {
  size_t k = 0, v = 0;
  double k_bits = 0, v_bits = 0;
};
inline KvQuantBytes kv_quant_bytes(size_t n_kv, int head_dim, int group, size_t n_groups, size_t krec, size_t vrec,
                                   size_t exact_tokens, int64_t n_tokens) {
  KvQuantBytes b;
  const size_t kvd = n_kv * static_cast<size_t>(head_dim), exact = exact_tokens * kvd * 2;
  b.k = n_kv * n_groups * krec + exact;
  b.v = n_kv * n_groups * vrec + exact;
  const double per_elem = n_tokens > 0 ? static_cast<double>(n_tokens) * kvd : static_cast<double>(group) * head_dim;
  b.k_bits = 8.0 * (n_tokens > 0 ? b.k : krec) / per_elem;
  b.v_bits = 8.0 * (n_tokens > 0 ? b.v : vrec) / per_elem;
  return b;
}

bool kv_bits_supported(int bits);  // 8, 4, 3, 2, 1

// ---- reference codec (kv_codec.cpp) --------------------------------------

// Fits (scale, zero) to x[0], x[stride], ... x[(n-1)*stride] (see Numbers).
// mse (asymmetric codes; KvMode fit=mse): then refined to lower the squared
// error of the group, letting a few extreme elements saturate.
void kv_fit_range(const float* x, int n, int stride, int bits, bool symmetric, f16_t* scale, f16_t* zero,
                  bool mse = false);
// Code of x for (scale, zero): clamp(round((x - z)/s), 0, 2^b - 1).
uint8_t kv_encode(float x, float scale, float zero, int bits);

// Code of (token t, channel c) in the codes of a key / value record, and
// its setter (the record's codes must start zeroed before the first set).
int kv_key_code(const uint8_t* rec, int group, int head_dim, int bits, int t, int c);
int kv_value_code(const uint8_t* rec, int group, int head_dim, int bits, int t, int c);
void kv_set_key_code(uint8_t* rec, int group, int head_dim, int bits, int t, int c, int code);
void kv_set_value_code(uint8_t* rec, int group, int head_dim, int bits, int t, int c, int code);

// Keys of one head: k is [G][ld] (token t, channel c at k[t*ld + c]).
// `outliers`: n_o of the record (0: none); mse_fit: kv_fit_range's mse.
void kv_quantize_keys(const float* k, int ld, int group, int head_dim, int bits, bool symmetric, uint8_t* rec,
                      int outliers = 0, bool mse_fit = false);
void kv_dequantize_keys(const uint8_t* rec, int group, int head_dim, int bits, float* k, int ld, int outliers = 0);
// Values of one head: v is [G][ld].
void kv_quantize_values(const float* v, int ld, int group, int head_dim, int bits, bool symmetric, uint8_t* rec,
                        int outliers = 0, bool mse_fit = false);
void kv_dequantize_values(const uint8_t* rec, int group, int head_dim, int bits, float* v, int ld, int outliers = 0);

// ---- attention kernels over a group record --------------------------------
// nv query vectors of length d (e.g. the g heads of a KV group, times rows).
//
// Key scores, post-RoPE keys:
//   scores[v][t] = sum_c q[v][c] * k^[t][c]   (t < G)
// Value accumulation:
//   out[v][c] += sum_t p[v][t] * v^[t][c]
// Fast kernels (kv_codec_simd.cpp, AVX-512 / AVX2 / scalar) work from the
// codes; *_ref twins dequantize with the reference and use plain loops.
// `outliers` is the record's n_o everywhere below.
void kv_key_scores(const uint8_t* rec, int group, int head_dim, int bits, const float* q, int nv, float* scores,
                   int outliers = 0);
void kv_key_scores_ref(const uint8_t* rec, int group, int head_dim, int bits, const float* q, int nv,
                       float* scores, int outliers = 0);
void kv_value_accum(const uint8_t* rec, int group, int head_dim, int bits, const float* p, int nv, float* out,
                    int outliers = 0);
void kv_value_accum_ref(const uint8_t* rec, int group, int head_dim, int bits, const float* p, int nv, float* out,
                        int outliers = 0);

// Fused decode over n_groups consecutive post-RoPE groups of one KV head
// (key record g at krec + g*kstride, value record at vrec + g*vstride), every
// token visible: the running softmax of nv <= 4 query vectors q [nv][d]
// (already scaled by 1/sqrt(d)) over their scores. out [nv][d] ends
// normalized; m_out/l_out [nv] get the merge state (max, sum of exp).
// Equal, to float rounding, to attention over the dequantized records.
void kv_attend_groups(const uint8_t* krec, size_t kstride, const uint8_t* vrec, size_t vstride, int n_groups,
                      int group, int head_dim, int kbits, int vbits, const float* q, int nv, float* out, float* m_out,
                      float* l_out, int k_outliers = 0, int v_outliers = 0);

// Pre-RoPE keys: token t of the group sits at position pos0 + t and is
// rotated before the dot product: scores[v][t] = q[v] . rope(k^[t], pos0+t).
// The fast kernel dequantizes and rotates the key tile 32 tokens at a time
// into L1 (channel-planar, so the rotation is vector math over tokens:
// cos((p+j)w) = cos(pw)cos(jw) - sin(pw)sin(jw), with the j-table fixed per
// cache and cos/sin(pw) of each block start given in double), then scores it
// like post-RoPE keys. blk_cos/blk_sin: [G/32][rope_dim/2], the angles of
// positions pos0, pos0+32, ... (see KvRopeWalker).
struct KvRopeAngles {
  const RopeTable* rope = nullptr;
  int half = 0;                       // rope_dim / 2
  std::vector<float> off_cos, off_sin;  // cos/sin(j * w_i), [half][32]
  void init(const RopeTable& r);
};
void kv_key_scores_rope(const uint8_t* rec, int group, int head_dim, int bits, const KvRopeAngles& rot,
                        const double* blk_cos, const double* blk_sin, const float* q, int nv, float* scores,
                        int outliers = 0);
void kv_key_scores_rope_ref(const uint8_t* rec, int group, int head_dim, int bits, const RopeTable& rope,
                            int64_t pos0, const float* q, int nv, float* scores, int outliers = 0);

// cos/sin(pos * w_i) along positions pos0, pos0 + step, ... without one
// sincos per (position, frequency): exact (double sincos) at pos0, then the
// angle-addition recurrence in double (drift ~1e-16 per step, far below the
// float rounding rope_apply itself has).
class KvRopeWalker {
 public:
  void start(const RopeTable& rope, int64_t pos0, int step);
  void next();
  const double* cos() const { return c_.data(); }
  const double* sin() const { return s_.data(); }

 private:
  std::vector<double> c_, s_, step_c_, step_s_;
};
// Rotates one head vector x[d] by the angles cs/sn[rope_dim/2] with
// rope_apply's pairing (interleaved (2i, 2i+1) or neox (i, i + half)).
void kv_rope_rotate(const RopeTable& rope, const double* cs, const double* sn, float* x);

// Softmax helper: s[i] = exp(s[i] - m) for i < n, returns the sum (vector
// exp, relative error ~2e-7).
float kv_exp_sum(float* s, int n, float m);
// max(s[0..n)), -inf for n = 0.
float kv_max(const float* s, int n);

}  // namespace longkv

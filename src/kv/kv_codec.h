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
// max == min (or amax == 0) gives s = 0 and every x^ = z.
//
// ---------------------------------------------------------------------------
// The 32-code block: the unit every layout is built from (4*b bytes)
// ---------------------------------------------------------------------------
// Codes c[0..31] of one block are packed so a SIMD unpack yields them in
// order with a shift, a mask and a widening convert, no shuffles:
//   b = 8: byte i = c[i]
//   b = 4: byte i (0..15): bits 0-3 = c[i], bits 4-7 = c[i + 16]
//   b = 2: byte i (0..7):  bits 2k..2k+1 = c[i + 8k], k = 0..3
//   b = 1: bit i of the little-endian uint32 (byte i/8, bit i%8) = c[i]
//   b = 3: bytes 0..7 = the b=2 block of (c & 3); bytes 8..11 = the b=1
//          block of (c >> 2)  (12 bytes: 32 codes in 96 bits)
// (AVX-512: b=4 -> and/shift + 2x vpmovzxbd; b=2 -> 2 shifts combined into
// 16 bytes; b=1 -> the uint32 is two 16-bit masks for masked moves.)
//
// ---------------------------------------------------------------------------
// Key group record (one KV head, G consecutive tokens; per-CHANNEL groups)
// ---------------------------------------------------------------------------
//   codes : [G/32 blocks][d channels] 32-code blocks (block j of channel c
//           holds tokens 32j .. 32j+31 of that channel)        d*G*b/8 bytes
//   scale : f16 [d]     one per channel                        2d bytes
//   zero  : f16 [d]                                            2d bytes
// Channel-planar blocks make the decode kernel a pure FMA stream: for each
// channel, unpack 32 tokens' codes once into 2 vectors and FMA them with the
// broadcast (query * scale) of every query head of the KV group; scores of
// 32 tokens live in registers, no horizontal sums (KIVI packs along tokens
// for the same reason). The zero folds into one dot(q, z) per group.
//
// ---------------------------------------------------------------------------
// Value group record (one KV head, the same G tokens; per-TOKEN groups)
// ---------------------------------------------------------------------------
//   codes : [G tokens][d/32 blocks] 32-code blocks (block j of token t holds
//           channels 32j .. 32j+31)                            G*d*b/8 bytes
//   scale : f16 [G tokens][d/G channel groups]                 2d bytes
//   zero  : f16 [G tokens][d/G]                                2d bytes
// A token's codes are contiguous: out[c] += (p_t s_tg) q_tc, one FMA per
// code per query head; sum_t p_t z_tg is added once per channel group.
//
// Constraints: G % 32 == 0 and d % G == 0 (so d % 32 == 0).
// Bits per element, codes + scales + zeros: b + 32/G for keys and values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/fp16.h"
#include "core/rope.h"

namespace longkv {

constexpr int kKvCodeBlock = 32;  // codes per block

constexpr int kv_code_block_bytes(int bits) { return 4 * bits; }
static_assert(kv_code_block_bytes(1) * 8 == kKvCodeBlock * 1 && kv_code_block_bytes(3) * 8 == kKvCodeBlock * 3 &&
              kv_code_block_bytes(8) == kKvCodeBlock);

// Byte offsets of one group record (keys or values: same sizes).
struct KvGroupLayout {
  int group = 0, head_dim = 0, bits = 0;
  size_t codes_bytes = 0;   // d*G*b/8
  size_t scale_offset = 0;  // = codes_bytes
  size_t zero_offset = 0;   // = codes_bytes + 2d
  size_t bytes = 0;         // codes_bytes + 4d
};
constexpr KvGroupLayout kv_group_layout(int group, int head_dim, int bits) {
  KvGroupLayout l;
  l.group = group;
  l.head_dim = head_dim;
  l.bits = bits;
  l.codes_bytes = static_cast<size_t>(head_dim) * group * bits / 8;
  l.scale_offset = l.codes_bytes;
  l.zero_offset = l.codes_bytes + 2 * static_cast<size_t>(head_dim);
  l.bytes = l.codes_bytes + 4 * static_cast<size_t>(head_dim);
  return l;
}
// llama3-8b head, G = 32, 4 bits: 2 KiB of codes + 512 B of scales/zeros.
static_assert(kv_group_layout(32, 128, 4).bytes == 2048 + 512);
static_assert(kv_group_layout(32, 128, 3).codes_bytes == 1536);
static_assert(kv_group_layout(64, 128, 2).zero_offset == 2048 + 256);

bool kv_bits_supported(int bits);  // 8, 4, 3, 2, 1

// ---- reference codec (kv_codec.cpp) --------------------------------------

// Fits (scale, zero) to x[0], x[stride], ... x[(n-1)*stride] (see Numbers).
void kv_fit_range(const float* x, int n, int stride, int bits, bool symmetric, f16_t* scale, f16_t* zero);
// Code of x for (scale, zero): clamp(round((x - z)/s), 0, 2^b - 1).
uint8_t kv_encode(float x, float scale, float zero, int bits);

void kv_pack_block(const uint8_t codes[kKvCodeBlock], int bits, uint8_t* dst);
void kv_unpack_block(const uint8_t* src, int bits, uint8_t codes[kKvCodeBlock]);

// Keys of one head: k is [G][ld] (token t, channel c at k[t*ld + c]).
void kv_quantize_keys(const float* k, int ld, int group, int head_dim, int bits, bool symmetric, uint8_t* rec);
void kv_dequantize_keys(const uint8_t* rec, int group, int head_dim, int bits, float* k, int ld);
// Values of one head: v is [G][ld].
void kv_quantize_values(const float* v, int ld, int group, int head_dim, int bits, bool symmetric, uint8_t* rec);
void kv_dequantize_values(const uint8_t* rec, int group, int head_dim, int bits, float* v, int ld);

// ---- attention kernels over a group record --------------------------------
// nv query vectors of length d (e.g. the g heads of a KV group, times rows).
//
// Key scores, post-RoPE keys:
//   scores[v][t] = sum_c q[v][c] * k^[t][c]   (t < G)
// Value accumulation:
//   out[v][c] += sum_t p[v][t] * v^[t][c]
// Fast kernels (kv_codec_simd.cpp, AVX-512 / AVX2 / scalar) work from the
// codes; *_ref twins dequantize with the reference and use plain loops.
void kv_key_scores(const uint8_t* rec, int group, int head_dim, int bits, const float* q, int nv, float* scores);
void kv_key_scores_ref(const uint8_t* rec, int group, int head_dim, int bits, const float* q, int nv,
                       float* scores);
void kv_value_accum(const uint8_t* rec, int group, int head_dim, int bits, const float* p, int nv, float* out);
void kv_value_accum_ref(const uint8_t* rec, int group, int head_dim, int bits, const float* p, int nv, float* out);

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
                        const double* blk_cos, const double* blk_sin, const float* q, int nv, float* scores);
void kv_key_scores_rope_ref(const uint8_t* rec, int group, int head_dim, int bits, const RopeTable& rope,
                            int64_t pos0, const float* q, int nv, float* scores);

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

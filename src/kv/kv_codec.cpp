// Reference scalar KV codec: the oracle for the fast kernels and for CUDA.
// Plain loops, no intrinsics; layouts are described in kv_codec.h.
#include "kv/kv_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kv/kv_codec_fit.h"

namespace longkv {

bool kv_bits_supported(int bits) { return bits == 8 || bits == 4 || bits == 3 || bits == 2 || bits == 1; }

// Smallest fp16 >= the f16 rounding of s that satisfies covers(f16); the
// bump keeps the top of the range representable after rounding the scale.
template <typename Covers>
static f16_t f16_scale_up(float s, Covers covers) {
  f16_t h = f32_to_f16(s);
  for (int i = 0; i < 4 && !covers(f16_to_f32(h)) && h < 0x7bffu; ++i) ++h;
  return h;
}

void kv_fit_range(const float* x, int n, int stride, int bits, bool symmetric, f16_t* scale, f16_t* zero, bool mse) {
  LONGKV_ASSERT(n > 0 && kv_bits_supported(bits));
  float mn = x[0], mx = x[0];
  for (int i = 1; i < n; ++i) {
    const float v = x[static_cast<size_t>(i) * stride];
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  if (symmetric) {
    LONGKV_ASSERT(bits > 1);
    const float amax = std::fmax(std::fabs(mn), std::fabs(mx));
    const int top = (1 << (bits - 1)) - 1;
    const f16_t s = amax > 0 ? f16_scale_up(amax / top, [&](float f) { return f * top >= amax; }) : 0;
    *scale = s;
    *zero = f32_to_f16(-static_cast<float>(1 << (bits - 1)) * f16_to_f32(s));
    return;
  }
  const int levels = (1 << bits) - 1;
  *zero = f32_to_f16(mn);
  const float z = f16_to_f32(*zero);
  const float span = mx - z;
  *scale = span > 0 ? f16_scale_up(span / levels, [&](float f) { return z + f * levels >= mx; }) : 0;
  if (mse) kv_refine_range_mse(x, n, stride, bits, scale, zero);  // kv_codec_fit.cpp
}

uint8_t kv_encode(float x, float scale, float zero, int bits) {
  if (!(scale > 0)) return 0;
  const float v = std::floor((x - zero) / scale + 0.5f);  // round half up
  const float top = static_cast<float>((1 << bits) - 1);
  return static_cast<uint8_t>(v < 0 ? 0 : (v > top ? top : v));
}

// One b-bit field of a plane of words [rows][cols]: `packed` is the index
// that runs along a word's fields, `col` the word's column.
static uint32_t* plane_word(uint8_t* plane, int pb, int cols, int packed, int col) {
  return reinterpret_cast<uint32_t*>(plane) + static_cast<size_t>(packed / kv_codes_per_word(pb)) * cols + col;
}
static int plane_get(const uint8_t* plane, int pb, int cols, int packed, int col) {
  uint32_t w;
  std::memcpy(&w, plane_word(const_cast<uint8_t*>(plane), pb, cols, packed, col), 4);
  return static_cast<int>((w >> (pb * (packed % kv_codes_per_word(pb)))) & ((1u << pb) - 1));
}
static void plane_set(uint8_t* plane, int pb, int cols, int packed, int col, int code) {
  uint32_t w;
  uint8_t* at = reinterpret_cast<uint8_t*>(plane_word(plane, pb, cols, packed, col));
  std::memcpy(&w, at, 4);
  const int sh = pb * (packed % kv_codes_per_word(pb));
  w = (w & ~(((1u << pb) - 1) << sh)) | (static_cast<uint32_t>(code) & ((1u << pb) - 1)) << sh;
  std::memcpy(at, &w, 4);
}
// b = 3 splits into the 2-bit plane (rows x cols x 2 bits) then the 1-bit one.
static int rec_get(const uint8_t* rec, int bits, int elems, int cols, int packed, int col) {
  if (bits != 3) return plane_get(rec, bits, cols, packed, col);
  return plane_get(rec, 2, cols, packed, col) | plane_get(rec + elems / 4, 1, cols, packed, col) << 2;
}
static void rec_set(uint8_t* rec, int bits, int elems, int cols, int packed, int col, int code) {
  if (bits != 3) return plane_set(rec, bits, cols, packed, col, code);
  plane_set(rec, 2, cols, packed, col, code & 3);
  plane_set(rec + elems / 4, 1, cols, packed, col, code >> 2);
}

int kv_key_code(const uint8_t* rec, int group, int d, int bits, int t, int c) {
  return rec_get(rec, bits, group * d, group, c, t);
}
int kv_value_code(const uint8_t* rec, int group, int d, int bits, int t, int c) {
  return rec_get(rec, bits, group * d, d, t, c);
}
void kv_set_key_code(uint8_t* rec, int group, int d, int bits, int t, int c, int code) {
  rec_set(rec, bits, group * d, group, c, t, code);
}
void kv_set_value_code(uint8_t* rec, int group, int d, int bits, int t, int c, int code) {
  rec_set(rec, bits, group * d, d, t, c, code);
}

static f16_t* rec_scale(uint8_t* rec, const KvGroupLayout& l) { return reinterpret_cast<f16_t*>(rec + l.scale_offset); }
static f16_t* rec_zero(uint8_t* rec, const KvGroupLayout& l) { return reinterpret_cast<f16_t*>(rec + l.zero_offset); }
static const f16_t* rec_scale(const uint8_t* rec, const KvGroupLayout& l) {
  return reinterpret_cast<const f16_t*>(rec + l.scale_offset);
}
static const f16_t* rec_zero(const uint8_t* rec, const KvGroupLayout& l) {
  return reinterpret_cast<const f16_t*>(rec + l.zero_offset);
}

int kv_outlier_count(double pct, int group, int d) {
  if (!(pct > 0)) return 0;
  const long n = std::lround(pct / 100.0 * group * d);
  return static_cast<int>(std::max(1L, std::min(n, static_cast<long>(group) * d)));
}

namespace {

// The record's outliers (kv_select_outliers over its runs) as entry
// indices t << 8 | c, sorted; index(r, i) maps a run's element to its entry.
template <typename Index>
std::vector<int> select_outliers(const float* x, int runs, size_t run_stride, int n, size_t elem_stride, int count,
                                 Index index, std::vector<uint8_t>& mask) {
  std::vector<int> picked;
  for (const auto& [r, i] : kv_select_outliers(x, runs, run_stride, n, elem_stride, count, mask))
    picked.push_back(index(r, i));
  std::sort(picked.begin(), picked.end());
  return picked;
}

// Range of the unmasked elements of one group (all of them when none is).
void fit_unmasked(const float* x, int n, size_t stride, const uint8_t* mask, int bits, bool symmetric, bool mse,
                  f16_t* s, f16_t* z) {
  float buf[2048];
  LONGKV_ASSERT(n <= 2048);
  int m = 0;
  for (int i = 0; i < n; ++i)
    if (!mask[i]) buf[m++] = x[i * stride];
  kv_fit_range(buf, m, 1, bits, symmetric, s, z, mse);
}

void write_outliers(uint8_t* rec, const KvGroupLayout& l, const std::vector<int>& picked, const float* exact) {
  uint32_t* e = reinterpret_cast<uint32_t*>(rec + l.outlier_offset);
  for (int i = 0; i < l.outliers; ++i) {
    uint32_t w = 0;
    if (i < static_cast<int>(picked.size()))
      w = static_cast<uint32_t>(picked[i]) | static_cast<uint32_t>(f32_to_f16(exact[i])) << 16;
    std::memcpy(e + i, &w, 4);
  }
}

// Adds the outlier deltas of a record to a dequantized [G][ld] tile.
void add_outliers(const uint8_t* rec, const KvGroupLayout& l, float* x, int ld) {
  const uint32_t* e = kv_outliers(rec, l);
  for (int i = 0; i < l.outliers; ++i) {
    uint32_t w;
    std::memcpy(&w, e + i, 4);
    const KvOutlier o = kv_outlier_entry(w);
    x[static_cast<size_t>(o.t) * ld + o.c] += o.delta;
  }
}

}  // namespace

void kv_quantize_keys(const float* k, int ld, int group, int d, int bits, bool symmetric, uint8_t* rec,
                      int outliers, bool mse_fit) {
  const KvGroupLayout l = kv_group_layout(group, d, bits, outliers);
  LONGKV_ASSERT(outliers == 0 || (group <= 256 && d <= 256));
  std::memset(rec, 0, l.codes_bytes);
  // Runs are channels (G tokens each): mask index c*G + t.
  std::vector<uint8_t> mask(static_cast<size_t>(group) * d, 0);
  const std::vector<int> picked = select_outliers(k, d, 1, group, static_cast<size_t>(ld), outliers,
                                                  [&](int c, int t) { return t << 8 | c; }, mask);
  for (int c = 0; c < d; ++c) {
    f16_t s, z;
    fit_unmasked(k + c, group, ld, &mask[static_cast<size_t>(c) * group], bits, symmetric, mse_fit, &s, &z);
    rec_scale(rec, l)[c] = s;
    rec_zero(rec, l)[c] = z;
    for (int t = 0; t < group; ++t)
      kv_set_key_code(rec, group, d, bits, t, c,
                      kv_encode(k[static_cast<size_t>(t) * ld + c], f16_to_f32(s), f16_to_f32(z), bits));
  }
  if (outliers == 0) return;
  std::vector<float> delta(picked.size());
  for (size_t i = 0; i < picked.size(); ++i) {
    const int t = picked[i] >> 8, c = picked[i] & 0xff;
    const float x = k[static_cast<size_t>(t) * ld + c];
    const float xq = std::fma(f16_to_f32(rec_scale(rec, l)[c]),
                              static_cast<float>(kv_key_code(rec, group, d, bits, t, c)), f16_to_f32(rec_zero(rec, l)[c]));
    delta[i] = x - xq;  // x^ in one FMA, as the dequantizers and the GPU quantizer read it
  }
  write_outliers(rec, l, picked, delta.data());
}

void kv_dequantize_keys(const uint8_t* rec, int group, int d, int bits, float* k, int ld, int outliers) {
  const KvGroupLayout l = kv_group_layout(group, d, bits, outliers);
  for (int c = 0; c < d; ++c) {
    const float s = f16_to_f32(rec_scale(rec, l)[c]), z = f16_to_f32(rec_zero(rec, l)[c]);
    for (int t = 0; t < group; ++t)
      k[static_cast<size_t>(t) * ld + c] = s * static_cast<float>(kv_key_code(rec, group, d, bits, t, c)) + z;
  }
  add_outliers(rec, l, k, ld);
}

void kv_quantize_values(const float* v, int ld, int group, int d, int bits, bool symmetric, uint8_t* rec,
                        int outliers, bool mse_fit) {
  const KvGroupLayout l = kv_group_layout(group, d, bits, outliers);
  LONGKV_ASSERT(outliers == 0 || (group <= 256 && d <= 256));
  const int ng = d / group;
  std::memset(rec, 0, l.codes_bytes);
  // Runs are (token, channel group) pairs r = t*ng + gi of G channels: the
  // run's elements are contiguous in v, runs of a token G apart.
  std::vector<uint8_t> mask(static_cast<size_t>(group) * d, 0);
  std::vector<float> flat(static_cast<size_t>(group) * d);
  for (int t = 0; t < group; ++t)
    std::memcpy(&flat[static_cast<size_t>(t) * d], v + static_cast<size_t>(t) * ld, sizeof(float) * d);
  const std::vector<int> picked = select_outliers(flat.data(), group * ng, group, group, 1, outliers,
                                                  [&](int r, int i) { return (r / ng) << 8 | ((r % ng) * group + i); },
                                                  mask);
  for (int t = 0; t < group; ++t) {
    const float* x = v + static_cast<size_t>(t) * ld;
    for (int gi = 0; gi < ng; ++gi) {
      f16_t s, z;
      fit_unmasked(x + gi * group, group, 1, &mask[static_cast<size_t>(t) * d + gi * group], bits, symmetric, mse_fit, &s,
                   &z);
      rec_scale(rec, l)[gi * group + t] = s;
      rec_zero(rec, l)[gi * group + t] = z;
      for (int i = 0; i < group; ++i)
        kv_set_value_code(rec, group, d, bits, t, gi * group + i,
                          kv_encode(x[gi * group + i], f16_to_f32(s), f16_to_f32(z), bits));
    }
  }
  if (outliers == 0) return;
  std::vector<float> delta(picked.size());
  for (size_t i = 0; i < picked.size(); ++i) {
    const int t = picked[i] >> 8, c = picked[i] & 0xff, gi = c / group;
    const float x = v[static_cast<size_t>(t) * ld + c];
    const float xq = std::fma(f16_to_f32(rec_scale(rec, l)[gi * group + t]),
                              static_cast<float>(kv_value_code(rec, group, d, bits, t, c)),
                              f16_to_f32(rec_zero(rec, l)[gi * group + t]));
    delta[i] = x - xq;
  }
  write_outliers(rec, l, picked, delta.data());
}

void kv_dequantize_values(const uint8_t* rec, int group, int d, int bits, float* v, int ld, int outliers) {
  const KvGroupLayout l = kv_group_layout(group, d, bits, outliers);
  for (int t = 0; t < group; ++t)
    for (int c = 0; c < d; ++c) {
      const int gi = c / group;
      v[static_cast<size_t>(t) * ld + c] =
          f16_to_f32(rec_scale(rec, l)[gi * group + t]) * static_cast<float>(kv_value_code(rec, group, d, bits, t, c)) +
          f16_to_f32(rec_zero(rec, l)[gi * group + t]);
    }
  add_outliers(rec, l, v, ld);
}

void kv_key_scores_ref(const uint8_t* rec, int group, int d, int bits, const float* q, int nv, float* scores,
                       int outliers) {
  std::vector<float> k(static_cast<size_t>(group) * d);
  kv_dequantize_keys(rec, group, d, bits, k.data(), d, outliers);
  for (int v = 0; v < nv; ++v)
    for (int t = 0; t < group; ++t) {
      double acc = 0;
      for (int c = 0; c < d; ++c) acc += static_cast<double>(q[static_cast<size_t>(v) * d + c]) * k[static_cast<size_t>(t) * d + c];
      scores[static_cast<size_t>(v) * group + t] = static_cast<float>(acc);
    }
}

void kv_value_accum_ref(const uint8_t* rec, int group, int d, int bits, const float* p, int nv, float* out,
                        int outliers) {
  std::vector<float> x(static_cast<size_t>(group) * d);
  kv_dequantize_values(rec, group, d, bits, x.data(), d, outliers);
  for (int v = 0; v < nv; ++v)
    for (int c = 0; c < d; ++c) {
      double acc = 0;
      for (int t = 0; t < group; ++t) acc += static_cast<double>(p[static_cast<size_t>(v) * group + t]) * x[static_cast<size_t>(t) * d + c];
      out[static_cast<size_t>(v) * d + c] += static_cast<float>(acc);
    }
}

void kv_key_scores_rope_ref(const uint8_t* rec, int group, int d, int bits, const RopeTable& rope, int64_t pos0,
                            const float* q, int nv, float* scores, int outliers) {
  std::vector<float> k(static_cast<size_t>(group) * d);
  kv_dequantize_keys(rec, group, d, bits, k.data(), d, outliers);
  for (int t = 0; t < group; ++t) rope_apply(rope, &k[static_cast<size_t>(t) * d], 1, pos0 + t);
  for (int v = 0; v < nv; ++v)
    for (int t = 0; t < group; ++t) {
      double acc = 0;
      for (int c = 0; c < d; ++c) acc += static_cast<double>(q[static_cast<size_t>(v) * d + c]) * k[static_cast<size_t>(t) * d + c];
      scores[static_cast<size_t>(v) * group + t] = static_cast<float>(acc);
    }
}

// ---- RoPE angles ----------------------------------------------------------

void KvRopeAngles::init(const RopeTable& r) {
  rope = &r;
  half = r.rope_dim / 2;
  off_cos.resize(static_cast<size_t>(half) * kKvCodeBlock);
  off_sin.resize(off_cos.size());
  for (int i = 0; i < half; ++i)
    for (int j = 0; j < kKvCodeBlock; ++j) {
      const double a = static_cast<double>(j) * r.inv_freq[i];
      off_cos[i * kKvCodeBlock + j] = static_cast<float>(std::cos(a));
      off_sin[i * kKvCodeBlock + j] = static_cast<float>(std::sin(a));
    }
}

void KvRopeWalker::start(const RopeTable& rope, int64_t pos0, int step) {
  const int half = rope.rope_dim / 2;
  c_.resize(half);
  s_.resize(half);
  step_c_.resize(half);
  step_s_.resize(half);
  for (int i = 0; i < half; ++i) {
    const double w = rope.inv_freq[i];
    c_[i] = std::cos(static_cast<double>(pos0) * w);
    s_[i] = std::sin(static_cast<double>(pos0) * w);
    step_c_[i] = std::cos(static_cast<double>(step) * w);
    step_s_[i] = std::sin(static_cast<double>(step) * w);
  }
}

void KvRopeWalker::next() {
  for (size_t i = 0; i < c_.size(); ++i) {
    const double c = c_[i] * step_c_[i] - s_[i] * step_s_[i];
    const double s = s_[i] * step_c_[i] + c_[i] * step_s_[i];
    c_[i] = c;
    s_[i] = s;
  }
}

void kv_rope_rotate(const RopeTable& rope, const double* cs, const double* sn, float* x) {
  const int half = rope.rope_dim / 2;
  for (int i = 0; i < half; ++i) {
    const int ia = rope.style == RopeStyle::interleaved ? 2 * i : i;
    const int ib = rope.style == RopeStyle::interleaved ? 2 * i + 1 : i + half;
    const float c = static_cast<float>(cs[i]), s = static_cast<float>(sn[i]);
    const float a = x[ia], b = x[ib];
    x[ia] = a * c - b * s;
    x[ib] = a * s + b * c;
  }
}

}  // namespace longkv

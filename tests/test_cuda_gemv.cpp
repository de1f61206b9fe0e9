// The CUDA decode GEMVs against the CPU oracle: every weight format and
// kernel variant on random rows of odd sizes, the activations made in their
// loads, RoPE and SwiGLU in their stores, the accumulating residual GEMVs and
// the int8 x link between two of them; and two speed reports (not pass/fail).
// Without a GPU (or in a build without CUDA) each test reports SKIPPED with
// the reason. (Split from test_cuda.cpp in milestone 37.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cuda/cuda_backend.h"
#include "core/fp16.h"
#include "core/rope.h"
#include "test_cuda_util.h"
#include "test_util.h"

namespace longkv {
namespace {

// Random stored rows of type t (through the reference quantizer).
std::vector<uint8_t> random_weight(WeightType t, int rows, int cols, uint32_t seed) {
  const size_t rb = row_bytes(t, cols);
  std::vector<uint8_t> data(rb * rows);
  const auto f = test::random_floats(static_cast<size_t>(rows) * cols, seed);
  if (t == WeightType::F32) {
    std::memcpy(data.data(), f.data(), data.size());
  } else {
    for (int r = 0; r < rows; ++r)
      weight_traits(t).from_float_ref(&f[static_cast<size_t>(r) * cols], data.data() + rb * r, cols);
  }
  return data;
}

// The int8 activation rule of every slab GEMV (weight_decode.cuh,
// quantize_x_i8): per 32 activations amax, dx = amax / 127, q =
// round-half-even(x * (127 / amax)).
void x_i8_ref(const float* v, int (&q)[32], float& dx) {
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
  dx = amax / 127.0f;
  const float inv = amax > 0 ? 127.0f / amax : 0.0f;
  for (int i = 0; i < 32; ++i) q[i] = static_cast<int>(std::nearbyint(v[i] * inv));
}

// The Q4_0 and Q8_0 GEMVs with int8 activations (CudaTuning::gemv_i8x),
// written from their documented rule (weight_decode.cuh): per 32 activations
// amax, dx = amax / 127, q = round-half-even(x * (127 / amax)), and the
// block's product d * dx * sum w q with the integer sum exact (w = n - 8 for
// Q4_0's nibbles, Q8_0's int8 values); summed in double.
template <typename Block, typename Value>
double dot_blocks_i8x_ref(const void* row, const float* x, int cols, Value value) {
  const auto* b = static_cast<const Block*>(row);
  double s = 0;
  for (int k = 0; k < cols / kQK; ++k) {
    int q[32];
    float dx;
    x_i8_ref(x + kQK * k, q, dx);
    int64_t dot = 0;
    for (int i = 0; i < kQK; ++i) dot += static_cast<int64_t>(value(b[k], i)) * q[i];
    s += static_cast<double>(f16_to_f32(b[k].d) * dx) * static_cast<double>(dot);
  }
  return s;
}
double dot_q4_0_i8x_ref(const void* row, const float* x, int cols) {
  return dot_blocks_i8x_ref<BlockQ4_0>(row, x, cols, [](const BlockQ4_0& b, int i) {
    return (i < 16 ? (b.qs[i] & 0xF) : (b.qs[i - 16] >> 4)) - 8;
  });
}
double dot_q8_0_i8x_ref(const void* row, const float* x, int cols) {  // milestone 64, Slab<Q8_0>::dot_i8
  return dot_blocks_i8x_ref<BlockQ8_0>(row, x, cols, [](const BlockQ8_0& b, int i) { return int{b.qs[i]}; });
}

// Q4_K / Q5_K with int8 activations (milestone 61; weight_decode.cuh,
// Slab<Q4_K>::dot_sums_i8), from the same rule: a unit is chunk c's 16
// positions from 16p of a block, its 32 activations the low codes' elements
// (256b + 64c + 16p ..) then the high codes' (+ 32), quantized as above, and
// its product dx * (d * sum sc code q - dmin * sum m q) with sub-blocks 2c
// and 2c + 1's 6-bit scales and mins (unpacked here from the FORMATS.md
// layout); summed in double.
double dot_q6_k_i8x_ref(const uint8_t* row, const float* x, int cols);
double dot_low_bit_i8x_ref(WeightType t, const uint8_t* row, const float* x, int cols);
double dot_k_i8x_ref(WeightType t, const uint8_t* row, const float* x, int cols) {
  if (t == WeightType::Q6_K) return dot_q6_k_i8x_ref(row, x, cols);
  if (t == WeightType::Q2_K || t == WeightType::Q3_K) return dot_low_bit_i8x_ref(t, row, x, cols);
  const bool five = t == WeightType::Q5_K;
  const int bytes = five ? 176 : 144, qs_at = five ? 48 : 16;
  auto f16 = [](const uint8_t* p) {
    f16_t h;
    std::memcpy(&h, p, 2);
    return f16_to_f32(h);
  };
  auto six = [](const uint8_t* s, int j, int* sc, int* m) {
    *sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  };
  double s = 0;
  for (int b = 0; b < cols / kQKK; ++b) {
    const uint8_t* blk = row + b * bytes;
    const float d = f16(blk), dmin = f16(blk + 2);
    for (int c = 0; c < 4; ++c) {
      int sc[2], m[2];
      six(blk + 4, 2 * c, &sc[0], &m[0]);
      six(blk + 4, 2 * c + 1, &sc[1], &m[1]);
      for (int p = 0; p < 2; ++p) {
        float v[32];
        const int e0 = kQKK * b + 64 * c + 16 * p;
        for (int i = 0; i < 16; ++i) {
          v[i] = x[e0 + i];
          v[16 + i] = x[e0 + 32 + i];
        }
        int qx[32];
        float dx;
        x_i8_ref(v, qx, dx);
        int64_t dot[2] = {0, 0}, sum[2] = {0, 0};
        for (int i = 0; i < 32; ++i) {
          const int h = i / 16, j = 16 * p + i % 16;  // h: the high codes; j: position in the chunk
          const uint8_t byte = blk[qs_at + 32 * c + j];
          int code = h ? byte >> 4 : byte & 0xF;
          if (five) code += 16 * ((blk[16 + j] >> (2 * c + h)) & 1);
          dot[h] += code * qx[i];
          sum[h] += qx[i];
        }
        s += static_cast<double>(dx) * (static_cast<double>(d) * static_cast<double>(sc[0] * dot[0] + sc[1] * dot[1]) -
                                        static_cast<double>(dmin) * static_cast<double>(m[0] * sum[0] + m[1] * sum[1]));
      }
    }
  }
  return s;
}

// The 32 activations of unit u (half h, 16 positions from 16 lh, quarters
// qa and qa + 2) of block b, as Q6_K's, Q2_K's and Q3_K's slabs take them:
// the first quarter's elements (256b + 128h + 32qa + 16lh ..) then the
// other's (+ 64), quantized by the rule above: q and dx.
void quarter_pair_x_i8(const float* x, int b, int u, int (&q)[32], float& dx) {
  const int h = u / 4, lh = (u / 2) % 2, qa = u % 2;
  float v[32];
  for (int i = 0; i < 32; ++i) v[i] = x[kQKK * b + 128 * h + 32 * qa + 16 * lh + (i < 16 ? i : 64 + i - 16)];
  x_i8_ref(v, q, dx);
}

// Q6_K with int8 activations (Slab<Q6_K>::dot_i8): a unit is half h, 16
// positions from 16 lh and quarters qa and qa + 2 of a block; its 32
// activations the first quarter's elements (256b + 128h + 32qa + 16lh ..)
// then the other's (+ 64), quantized by the rule above, and its product
// dx * sum d sc (code - 32) q, the scale of each 16 positions of a quarter
// (FORMATS.md: sc[8h + lh + 2k] for quarter k); summed in double.
double dot_q6_k_i8x_ref(const uint8_t* row, const float* x, int cols) {
  double s = 0;
  for (int b = 0; b < cols / kQKK; ++b) {
    const uint8_t* blk = row + 210 * b;
    f16_t dh;
    std::memcpy(&dh, blk + 208, 2);
    const float d = f16_to_f32(dh);
    for (int u = 0; u < 8; ++u) {
      const int h = u / 4, lh = (u / 2) % 2, qa = u % 2;
      int q[32];
      float dx;
      quarter_pair_x_i8(x, b, u, q, dx);
      for (int half = 0; half < 2; ++half) {
        const int k = qa + 2 * half;  // the quarter
        int64_t dot = 0;
        for (int i = 0; i < 16; ++i) {
          const int l = 16 * lh + i;
          const uint8_t lo = blk[64 * h + l + 32 * (k & 1)];
          const int code = ((k < 2 ? lo & 0xF : lo >> 4) | (((blk[128 + 32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
          dot += code * q[16 * half + i];
        }
        const int8_t sc = static_cast<int8_t>(blk[192 + 8 * h + lh + 2 * k]);
        s += static_cast<double>(dx) * static_cast<double>(d * sc) * static_cast<double>(dot);
      }
    }
  }
  return s;
}

// Q2_K / Q3_K with int8 activations (Slab<Q2_K>::dot_i8, Slab<Q3_K>::dot_i8):
// Q6_K's units (half h, 16 positions from 16 lh, quarters p and p + 2) and
// activations, the codes from the FORMATS.md layout (bits 2j of
// qs[32h + l], Q3_K's third bit at bit 4h + j of hmask[l]); the product
//   Q2_K: dx * sum_k (d (sc_k & 15) dot_k - dmin (sc_k >> 4) sum_k)
//   Q3_K: dx * sum_k d (scale_k - 32) (dot_k - 4 sum_k), dot over codes 0..7;
// summed in double.
double dot_low_bit_i8x_ref(WeightType t, const uint8_t* row, const float* x, int cols) {
  const bool q3 = t == WeightType::Q3_K;
  const int bytes = q3 ? 110 : 84, qs_at = q3 ? 32 : 16;
  auto f16 = [](const uint8_t* p) {
    f16_t h;
    std::memcpy(&h, p, 2);
    return f16_to_f32(h);
  };
  double s = 0;
  for (int b = 0; b < cols / kQKK; ++b) {
    const uint8_t* blk = row + bytes * b;
    const float d = f16(blk + (q3 ? 108 : 80)), dmin = q3 ? 0.0f : f16(blk + 82);
    for (int u = 0; u < 8; ++u) {
      const int h = u / 4, lh = (u / 2) % 2, p = u % 2;
      int xq[32];
      float dx;
      quarter_pair_x_i8(x, b, u, xq, dx);
      for (int half = 0; half < 2; ++half) {
        const int j = p + 2 * half, sub = 8 * h + 2 * j + lh;
        int64_t dot = 0, sum = 0;
        for (int i = 0; i < 16; ++i) {
          const int l = 16 * lh + i;
          int code = (blk[qs_at + 32 * h + l] >> (2 * j)) & 3;
          if (q3) code |= ((blk[l] >> (4 * h + j)) & 1) << 2;
          dot += code * xq[16 * half + i];
          sum += xq[16 * half + i];
        }
        if (q3) {
          const uint8_t* sc = blk + 96;
          const int scale = ((sc[sub % 8] >> (4 * (sub / 8))) & 0xF) | (((sc[8 + sub % 4] >> (2 * (sub / 4))) & 3) << 4);
          s += static_cast<double>(dx) * static_cast<double>(d * static_cast<float>(scale - 32)) *
               static_cast<double>(dot - 4 * sum);
        } else {
          const int sm = blk[sub];
          s += static_cast<double>(dx) * (static_cast<double>(d) * static_cast<double>((sm & 0xF) * dot) -
                                          static_cast<double>(dmin) * static_cast<double>((sm >> 4) * sum));
        }
      }
    }
  }
  return s;
}

// Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS with int8 activations
// (weight_decode_q32.cuh), from the same rule: per 32 elements (a block;
// IQ4_XS's sub-block) the activations quantized as above, the codes'
// integer sums exact, and the product
//   Q4_1, Q5_1: dx (d sum(code q) + m sum(q))   Q5_0: dx d sum((code - 16) q)
//   IQ4_NL: dx d sum(T[code] q)                 IQ4_XS: dx d (ls - 32) sum(T[code] q)
// with the codes and scales read from the stored layouts (formats/weight_types.h,
// T = kIq4Values); summed in double.
bool q32_format(WeightType t) {
  return t == WeightType::Q4_1 || t == WeightType::Q5_0 || t == WeightType::Q5_1 || t == WeightType::IQ4_NL ||
         t == WeightType::IQ4_XS;
}
double dot_q32_i8x_ref(WeightType t, const uint8_t* row, const float* x, int cols) {
  auto f16 = [](f16_t h) { return static_cast<double>(f16_to_f32(h)); };
  auto nib = [](const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4; };
  auto bit5 = [](const uint8_t* qh, int j) {
    uint32_t h;
    std::memcpy(&h, qh, 4);
    return static_cast<int>((h >> j) & 1) << 4;
  };
  double s = 0;
  for (int g = 0; g < cols / kQK; ++g) {
    int qx[32];
    float dx;
    x_i8_ref(x + kQK * g, qx, dx);
    double d = 0, m = 0;
    int v[kQK];
    if (t == WeightType::Q4_1 || t == WeightType::Q5_1) {
      const bool five = t == WeightType::Q5_1;
      const auto* b5 = reinterpret_cast<const BlockQ5_1*>(row) + g;
      const auto* b4 = reinterpret_cast<const BlockQ4_1*>(row) + g;
      d = f16(five ? b5->d : b4->d);
      m = f16(five ? b5->m : b4->m);
      for (int j = 0; j < kQK; ++j) v[j] = five ? nib(b5->qs, j) | bit5(b5->qh, j) : nib(b4->qs, j);
    } else if (t == WeightType::Q5_0) {
      const auto* b = reinterpret_cast<const BlockQ5_0*>(row) + g;
      d = f16(b->d);
      for (int j = 0; j < kQK; ++j) v[j] = (nib(b->qs, j) | bit5(b->qh, j)) - 16;
    } else if (t == WeightType::IQ4_NL) {
      const auto* b = reinterpret_cast<const BlockIQ4_NL*>(row) + g;
      d = f16(b->d);
      for (int j = 0; j < kQK; ++j) v[j] = kIq4Values[nib(b->qs, j)];
    } else {
      const auto* b = reinterpret_cast<const BlockIQ4_XS*>(row) + g / 8;
      const int ib = g % 8;
      const int ls = ((b->scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b->scales_h >> (2 * ib)) & 3) << 4);
      d = f16(b->d) * (ls - 32);
      for (int j = 0; j < kQK; ++j) v[j] = kIq4Values[nib(b->qs + 16 * ib, j)];
    }
    int64_t dot = 0, sum = 0;
    for (int j = 0; j < kQK; ++j) {
      dot += v[j] * qx[j];
      sum += qx[j];
    }
    s += static_cast<double>(dx) * (d * static_cast<double>(dot) + m * static_cast<double>(sum));
  }
  return s;
}

// The formats whose slab GEMV takes int8 activations when gemv_i8x is on.
bool int8_format(WeightType t) {
  return t == WeightType::Q4_0 || t == WeightType::Q8_0 || t == WeightType::Q2_K || t == WeightType::Q3_K ||
         t == WeightType::Q4_K || t == WeightType::Q5_K || t == WeightType::Q6_K || q32_format(t);
}
// The int8 formats with Q4_0's 16-row batches and its narrow kernel
// (CudaTuning::gemv_prefetch); the others take their 8-row ones only.
bool rb16_format(WeightType t) {
  return t == WeightType::Q4_0 || t == WeightType::Q4_1 || t == WeightType::IQ4_NL;
}

// The f16 batch GEMV's rule (gemv_batch_h16.cu): each weight d (n - 8)
// rounded to f16 (the f32 product of an f16 and a small integer is exact,
// then one rounding, as the GPU's f16 multiply), x rounded to f16, their
// exact products summed in double.
double dot_q4_0_h16_ref(const void* row, const float* x, int cols) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  double s = 0;
  for (int k = 0; k < cols / kQK; ++k) {
    const float d = f16_to_f32(b[k].d);
    for (int i = 0; i < kQK; ++i) {
      const int n = i < 16 ? (b[k].qs[i] & 0xF) : (b[k].qs[i - 16] >> 4);
      s += static_cast<double>(f16_to_f32(f32_to_f16(d * static_cast<float>(n - 8)))) *
           f16_to_f32(f32_to_f16(x[kQK * k + i]));
    }
  }
  return s;
}

// What the single-token GEMV should give for row r: the exact product of the
// dequantized weights (dot_row_ref), or for the int8 formats through the
// slab kernel with int8 activations the rules above.
float gemv_ref(const WeightView& w, int r, const float* x, bool i8x) {
  const int cols = static_cast<int>(w.cols);
  if (i8x && w.type == WeightType::Q4_0) return static_cast<float>(dot_q4_0_i8x_ref(w.row(r), x, cols));
  if (i8x && w.type == WeightType::Q8_0) return static_cast<float>(dot_q8_0_i8x_ref(w.row(r), x, cols));
  if (i8x && q32_format(w.type)) return static_cast<float>(dot_q32_i8x_ref(w.type, w.row(r), x, cols));
  if (i8x && int8_format(w.type)) return static_cast<float>(dot_k_i8x_ref(w.type, w.row(r), x, cols));
  return dot_row_ref(w.type, w.row(r), x, w.cols);
}

// Tolerance of a GEMV against gemv_ref: float rounding, or with int8
// activations made from an activation the GPU computed itself (RMSNorm,
// SwiGLU: last-bit differences from the host's) one int8 value off now and
// then, each moving every row by ~1e-4 relative (exact vs int8: ~3e-5).
double gemv_tol(WeightType t, bool i8x, int act) { return i8x && int8_format(t) && act != 0 ? 1e-6 : 1e-10; }

struct MatmulCase {
  WeightType type;
  int rows, cols;
};

// GEMV (1 token) and GEMM (7 tokens, f32 and f16) against dot_row_ref. The
// f32 paths differ from the reference only in summation order; the f16 GEMM
// rounds weights and activations to 11-bit mantissas (~2^-11 per product,
// averaging down over the sum), hence 1e-5 normalized squared error.
TEST(Cuda, MatmulMatchesReferenceEveryFormat) {
  LONGKV_REQUIRE_CUDA();
  const MatmulCase cases[] = {
      {WeightType::F32, 17, 96},   {WeightType::F16, 97, 264},  {WeightType::BF16, 33, 136},
      {WeightType::Q8_0, 97, 1056}, {WeightType::Q4_0, 101, 544}, {WeightType::Q4_K, 37, 1280},
      {WeightType::Q6_K, 19, 768}, {WeightType::Q8_0, 5, 32},   {WeightType::Q4_K, 3, 256},
      // Rows past one GEMV slice (512 units: 16384 Q8_0 or Q4_0 columns)
      // take two accumulating passes; odd block counts leave lanes idle.
      {WeightType::Q8_0, 13, 16416}, {WeightType::Q4_0, 9, 16416}, {WeightType::Q6_K, 7, 4352},
      {WeightType::Q4_K, 11, 4352},
      // Q5_K: one slice (40 units), 17 blocks, and two slices (520 units)
      {WeightType::Q5_K, 37, 1280}, {WeightType::Q5_K, 11, 4352}, {WeightType::Q5_K, 5, 16640},
      // Q2_K / Q3_K: one slice, 17 blocks, and two slices (520 units)
      {WeightType::Q2_K, 37, 1280}, {WeightType::Q2_K, 11, 4352}, {WeightType::Q2_K, 5, 16640},
      {WeightType::Q3_K, 37, 1280}, {WeightType::Q3_K, 11, 4352}, {WeightType::Q3_K, 5, 16640},
      // Q4_1, Q5_0, Q5_1, IQ4_NL: one slice, and two (513 units); IQ4_XS:
      // one slice, 17 blocks, two slices (520 units)
      {WeightType::Q4_1, 101, 544}, {WeightType::Q4_1, 9, 16416}, {WeightType::Q5_0, 97, 1056},
      {WeightType::Q5_0, 9, 16416}, {WeightType::Q5_1, 33, 544},  {WeightType::Q5_1, 7, 16416},
      {WeightType::IQ4_NL, 37, 1056}, {WeightType::IQ4_NL, 9, 16416}, {WeightType::IQ4_XS, 37, 1280},
      {WeightType::IQ4_XS, 11, 4352}, {WeightType::IQ4_XS, 5, 16640},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(weight_traits(c.type).name) + " " + std::to_string(c.rows) + "x" +
                 std::to_string(c.cols));
    const auto data = random_weight(c.type, c.rows, c.cols, 11 + c.rows);
    WeightView w{c.type, c.rows, c.cols, data.data()};
    for (int n_tok : {1, 7}) {
      const auto x = test::random_floats(static_cast<size_t>(n_tok) * c.cols, 5 + n_tok);
      for (bool i8x : {false, true}) {
        if (i8x && (n_tok > 1 || !int8_format(c.type))) continue;  // int8 x: the GEMV of these formats only
        std::vector<float> ref(static_cast<size_t>(n_tok) * c.rows), exact(ref.size());
        for (int t = 0; t < n_tok; ++t)
          for (int r = 0; r < c.rows; ++r) {
            const float* xt = &x[static_cast<size_t>(t) * c.cols];
            ref[static_cast<size_t>(t) * c.rows + r] = gemv_ref(w, r, xt, i8x);
            exact[static_cast<size_t>(t) * c.rows + r] = dot_row_ref(c.type, w.row(r), xt, c.cols);
          }
        for (CudaGemm g : {CudaGemm::f32, CudaGemm::f16}) {
          if (n_tok == 1 && g == CudaGemm::f16) continue;  // GEMV is always f32
          std::vector<float> y(ref.size());
          cuda_tuning().gemv_i8x = i8x;
          cuda_check_matmul(w, x.data(), n_tok, y.data(), g);
          cuda_tuning() = CudaTuning{};
          const double err = test::nmse(y.data(), ref.data(), ref.size());
          const double tol = g == CudaGemm::f16 && n_tok > 1 ? 1e-5 : 1e-10;
          EXPECT_LT(err, tol) << "n_tok " << n_tok << " gemm " << cuda_gemm_name(g) << " i8x " << i8x;
          // The int8 activations' own error, against the exact product
          // (~1e-5 to 3e-5; over a few rows one output near 0 can dominate:
          // Q4_K 3x256 measured 2.2e-4 on the H200, milestone 61).
          const double err_exact = test::nmse(y.data(), exact.data(), exact.size());
          if (i8x) {
            EXPECT_LT(err_exact, c.rows >= 8 ? 1e-4 : 1e-3);
            // x loaded lane by lane instead of a warp at a time: the same bits.
            std::vector<float> y_lane(ref.size());
            cuda_tuning().gemv_i8x = true;
            cuda_tuning().gemv_x_coalesced = false;
            cuda_check_matmul(w, x.data(), n_tok, y_lane.data(), g);
            cuda_tuning() = CudaTuning{};
            EXPECT_EQ(std::memcmp(y.data(), y_lane.data(), sizeof(float) * y.size()), 0)
                << "coalesced and per-lane x loads differ";
          }
          RecordProperty(std::string("nmse_") + weight_traits(c.type).name + "_n" + std::to_string(n_tok) + "_" +
                             cuda_gemm_name(g) + (i8x ? "_i8x" : ""),
                         std::to_string(err));
          std::printf("matmul %-5s %4dx%-5d n_tok %d %s%s: nmse %.3g (vs exact product %.3g)\n",
                      weight_traits(c.type).name, c.rows, c.cols, n_tok, cuda_gemm_name(g), i8x ? " int8 x" : "",
                      err, err_exact);
        }
      }
    }
  }
}

// The int8 activations' rounding on ties: every unit's largest |x| is 127,
// so 127 / amax is exactly 1 and the other elements, k + 0.5 for random k,
// are halfway cases that must round to even as the rule says (quantize_x_i8
// rounds by adding 1.5 * 2^23, not by a conversion instruction). One tie
// rounded the other way moves its row by ~1e-3 relative, far past 1e-10.
TEST(Cuda, Int8ActivationsRoundTiesToEven) {
  LONGKV_REQUIRE_CUDA();
  const int rows = 37, cols = 2048;
  const auto data = random_weight(WeightType::Q4_0, rows, cols, 23);
  WeightView w{WeightType::Q4_0, rows, cols, data.data()};
  std::mt19937 rng(5);
  std::vector<float> x(cols);
  int ties = 0;
  for (int i = 0; i < cols; ++i) {
    const int k = static_cast<int>(rng() % 253) - 126;  // -126 .. 126: k + 0.5 stays within +-127
    x[i] = i % kQK == (i / kQK) % kQK ? ((i / kQK) % 2 ? -127.0f : 127.0f) : static_cast<float>(k) + 0.5f;
    ties += std::fabs(x[i]) != 127.0f;
  }
  std::vector<float> ref(rows), y(rows);
  for (int r = 0; r < rows; ++r) ref[r] = gemv_ref(w, r, x.data(), true);
  cuda_tuning().gemv_i8x = true;
  cuda_check_matmul(w, x.data(), 1, y.data(), CudaGemm::f32);
  cuda_tuning() = CudaTuning{};
  const double err = test::nmse(y.data(), ref.data(), rows);
  EXPECT_LT(err, 1e-10);
  std::printf("int8 activations, %d ties: nmse %.3g against round-half-even\n", ties, err);
}

// The GEMV's activation on the host: 0 = x, 1 = RMSNorm(x) * norm,
// 2 = SwiGLU (silu(x) * up), as the fused kernels make it in their load.
std::vector<float> host_act(int act, const std::vector<float>& x, const std::vector<float>& norm,
                            const std::vector<float>& up, float eps) {
  const int n = static_cast<int>(x.size());
  std::vector<float> xa(n);
  if (act == 1) {
    rmsnorm(xa.data(), x.data(), norm.data(), n, eps);
  } else {
    for (int i = 0; i < n; ++i) xa[i] = act == 2 ? x[i] / (1.0f + std::exp(-x[i])) * up[i] : x[i];
  }
  return xa;
}

// A case's random rows (seed ws) and the activation's inputs: x in [-2, 2]
// (seed xs), RMSNorm's weight (xs + 1) and SwiGLU's up (xs + 2); act(k)
// is activation k made on the host from them (host_act, RMSNorm's eps).
struct ActCase {
  static constexpr float eps = 1e-5f;
  std::vector<uint8_t> data;
  WeightView w;
  std::vector<float> x, norm, up;
  ActCase(const MatmulCase& c, uint32_t ws, uint32_t xs)
      : data(random_weight(c.type, c.rows, c.cols, ws)),
        w{c.type, c.rows, c.cols, data.data()},
        x(test::random_floats(c.cols, xs, -2, 2)),
        norm(test::random_floats(c.cols, xs + 1)),
        up(test::random_floats(c.cols, xs + 2)) {}
  std::vector<float> act(int k) const { return host_act(k, x, norm, up, eps); }
  // The same activation made in the device GEMV's load, y = W . act(k).
  void gemv_on_device(int k, float* y) const { cuda_check_gemv_act(w, k, x.data(), norm.data(), eps, up.data(), y); }
};

// The decode step's GEMV with RMSNorm / SwiGLU made inside its activation
// load (milestone 5), and the same through the separate kernels and the
// milestone-2 slab GEMV, against act() on the host + dot_row_ref. Only the
// sum of squares and the dot products are ordered differently.
TEST(Cuda, FusedActivationGemvMatchesReference) {
  LONGKV_REQUIRE_CUDA();
  const MatmulCase cases[] = {
      {WeightType::Q4_0, 97, 4096}, {WeightType::Q4_0, 17, 14336}, {WeightType::Q8_0, 1000, 544},
      {WeightType::Q4_K, 37, 1280}, {WeightType::Q6_K, 19, 768},   {WeightType::F16, 33, 264},
      {WeightType::Q5_K, 29, 1536}, {WeightType::Q2_K, 29, 1536}, {WeightType::Q3_K, 31, 1280},
      {WeightType::Q4_1, 37, 1056}, {WeightType::Q5_0, 29, 1536}, {WeightType::Q5_1, 31, 1280},
      {WeightType::IQ4_NL, 33, 4096}, {WeightType::IQ4_XS, 29, 1536},
      {WeightType::Q4_0, 9001, 96},  // > 8192 rows: 4 rows per warp
      {WeightType::Q8_0, 23, 18432},  // 576 units: the slab kernel runs two column slices
  };
  struct Variant {
    bool rows, fuse;
  };
  for (const auto& c : cases) {
    const ActCase in(c, 3 + c.rows, 21);
    for (int act = 0; act < 3; ++act) {
      const std::vector<float> xa = in.act(act);
      std::vector<float> ref(c.rows), y(c.rows);
      for (Variant vr : {Variant{true, true}, Variant{false, true}, Variant{false, false}, Variant{true, false}}) {
        const bool i8x = !vr.rows && CudaTuning{}.gemv_i8x;  // the slab kernel's default for the int8 formats
        for (int r = 0; r < c.rows; ++r) ref[r] = gemv_ref(in.w, r, xa.data(), i8x);
        cuda_tuning().gemv_rows = vr.rows;
        cuda_tuning().fuse_activation = vr.fuse;
        in.gemv_on_device(act, y.data());
        cuda_tuning() = CudaTuning{};
        const double err = test::nmse(y.data(), ref.data(), ref.size());
        EXPECT_LT(err, gemv_tol(c.type, i8x, act)) << weight_traits(c.type).name << " " << c.rows << "x" << c.cols << " act " << act
                              << " rows-kernel " << vr.rows << " fused " << vr.fuse;
        std::printf("gemv act %d %-5s %5dx%-5d rows %d fused %d: nmse %.3g\n", act, weight_traits(c.type).name,
                    c.rows, c.cols, vr.rows, vr.fuse, err);
      }
    }
  }
}

// The residual GEMVs (wo, down) add to the row they write: y = y0 + W . o
// through the step's kernels (int8 activations), against the host's rule,
// on shapes where a block takes one 16-row batch (wo), one or two (down: 14
// warps, one block an SM), and one 8-row batch (1504 rows). Since
// milestone 37 the row added to is requested at the batch's top.
TEST(Cuda, AccumulatingGemvMatchesReference) {
  LONGKV_REQUIRE_CUDA();
  const MatmulCase cases[] = {{WeightType::Q4_0, 4096, 4096}, {WeightType::Q4_0, 4096, 14336},
                              {WeightType::Q4_0, 1504, 4096}};
  for (const auto& c : cases) {
    const auto wd = random_weight(c.type, c.rows, c.cols, 101 + c.cols), rd = random_weight(c.type, 16, c.rows, 102);
    const WeightView w{c.type, c.rows, c.cols, wd.data()}, reader{c.type, 16, c.rows, rd.data()};
    const auto o = test::random_floats(c.cols, 103, -2, 2), y0 = test::random_floats(c.rows, 104, -2, 2),
               norm = test::random_floats(c.rows, 105);
    std::vector<float> y(c.rows, std::nanf("")), yr(16), ref(c.rows), add(c.rows);
    cuda_check_gemv_x8_chain(w, reader, o.data(), y0.data(), norm.data(), 1e-5f, false, y.data(), yr.data());
    const bool i8x = CudaTuning{}.gemv_i8x;
    for (int r = 0; r < c.rows; ++r) {
      add[r] = gemv_ref(w, r, o.data(), i8x);
      ref[r] = y0[r] + add[r];
    }
    const double err = test::nmse(y.data(), ref.data(), ref.size());
    EXPECT_LT(err, gemv_tol(c.type, i8x, 0)) << c.rows << "x" << c.cols;
    std::printf("accumulating gemv %5dx%-5d: nmse %.3g against y0 + the host's products\n", c.rows, c.cols, err);
  }
}

// Milestone 37: the int8 x link (CudaTuning::gemv_x8) through the narrow
// kernel (4-warp blocks, every row requested before the PDL wait) where the
// default step takes it: llama3-8b's wo writing, its q|k|v (RoPE in the
// store) reading. The narrow and 16-row kernels give the same bits (the same
// dots and sums), the writer the bits of the step without the link, the
// reader its int8 rounding of the exact products; the launch counts say
// which kernels ran.
TEST(Cuda, Int8XLinkNarrowKernelMatchesWide) {
  LONGKV_REQUIRE_CUDA();
  const int dim = 4096, qkv = 6144, rope_heads = 40;
  const auto wd = random_weight(WeightType::Q4_0, dim, dim, 91), rd = random_weight(WeightType::Q4_0, qkv, dim, 92);
  const WeightView wo{WeightType::Q4_0, dim, dim, wd.data()}, wqkv{WeightType::Q4_0, qkv, dim, rd.data()};
  const auto o = test::random_floats(dim, 93, -2, 2), y0 = test::random_floats(dim, 94, -2, 2),
             norm = test::random_floats(dim, 95);
  const float eps = 1e-5f;
  const RopeTable t(128, 128, 500000.0f, RopeStyle::interleaved);
  const int64_t pos = 131071;
  std::vector<float> yw[3], yr[3];  // without the link, the link by the 16-row kernels, by the narrow ones
  for (int v = 0; v < 3; ++v) {
    yw[v].assign(dim, std::nanf(""));
    yr[v].assign(qkv, std::nanf(""));
    cuda_tuning().gemv_prefetch = v != 1;
    const int64_t all = cuda_gemv_x8_launches(), narrow = cuda_gemv_x8_launches(true);
    cuda_check_gemv_x8_chain(wo, wqkv, o.data(), y0.data(), norm.data(), eps, v > 0, yw[v].data(), yr[v].data(), &t,
                             rope_heads, pos);
    cuda_tuning() = CudaTuning{};
    EXPECT_EQ(cuda_gemv_x8_launches() - all, v > 0 ? 2 : 0) << "form " << v;
    EXPECT_EQ(cuda_gemv_x8_launches(true) - narrow, v == 2 ? 2 : 0) << "form " << v;
  }
  EXPECT_EQ(std::memcmp(yw[0].data(), yw[1].data(), sizeof(float) * dim), 0);
  EXPECT_EQ(std::memcmp(yw[0].data(), yw[2].data(), sizeof(float) * dim), 0);
  EXPECT_EQ(std::memcmp(yr[1].data(), yr[2].data(), sizeof(float) * qkv), 0);
  const std::vector<float> xa = host_act(1, yw[0], norm, {}, eps);
  std::vector<float> ref(qkv);
  for (int r = 0; r < qkv; ++r) ref[r] = gemv_ref(wqkv, r, xa.data(), false);
  rope_apply(t, ref.data(), rope_heads, pos);
  const double e_link = test::nmse(yr[2].data(), ref.data(), qkv), e_own = test::nmse(yr[0].data(), ref.data(), qkv);
  EXPECT_LT(e_link, 1e-4);
  std::printf("int8 x link, wo 4096x4096 -> q|k|v 6144x4096 (RoPE): narrow bits as 16-row %s; nmse vs exact products: "
              "link %.3g, the reader's own int8 x %.3g\n",
              std::memcmp(yr[1].data(), yr[2].data(), sizeof(float) * qkv) == 0 ? "yes" : "NO", e_link, e_own);
}

// Not a pass/fail speed test: prints what one GEMV streams (8B shapes) and
// the host cost of a launch, for docs/cuda-notes.md.
TEST(Cuda, GemvSpeedReport) {
  LONGKV_REQUIRE_CUDA();
  for (WeightType t : {WeightType::Q4_0, WeightType::Q8_0, WeightType::Q2_K, WeightType::Q3_K, WeightType::Q4_K,
                       WeightType::Q5_K, WeightType::Q6_K, WeightType::Q4_1, WeightType::Q5_0, WeightType::Q5_1,
                       WeightType::IQ4_NL, WeightType::IQ4_XS, WeightType::F16, WeightType::BF16}) {
    for (auto [rows, cols] : {std::pair{4096, 4096}, std::pair{6144, 4096}, std::pair{1024, 4096},
                             std::pair{14336, 4096}, std::pair{28672, 4096}, std::pair{4096, 14336},
                             std::pair{128256, 4096}}) {
      for (bool rows_kernel : {true, false}) {
        if (!rows_kernel && !int8_format(t)) continue;  // the slab kernel (the engine's) for the int8 formats
        cuda_tuning().gemv_rows = rows_kernel;
        const CudaGemvSpeed sp = cuda_bench_gemv(t, rows, cols);
        cuda_tuning() = CudaTuning{};
        EXPECT_GT(sp.gbs, 0);
        std::printf("gemv %-5s %6dx%-5d %s: %7.1f us %7.0f GB/s  (launch %.1f us)\n", weight_traits(t).name, rows,
                    cols, rows_kernel ? "rows" : "slab", sp.us_per_call, sp.gbs, sp.launch_us);
      }
    }
  }
}

// Milestone 8: the slab GEMV in milestone 2's order and pipelined, each
// launched plainly and with PDL, on shapes where a block walks several row
// batches (rows > resident blocks x 8), so the batch-ahead loads and the two
// alternating reduction buffers are exercised; with each activation made in
// the load. Against act() on the host + dot_row_ref, like the tests above.
TEST(Cuda, SlabGemvVariantsMatchReference) {
  LONGKV_REQUIRE_CUDA();
  const MatmulCase cases[] = {
      {WeightType::Q4_0, 6000, 4096},  // 4 warps a block: one pass of 16-row batches (gemv_prefetch: the narrow kernel)
      {WeightType::Q4_0, 1500, 14336},  // 14 warps, 1 block per SM: ~1.4 batches each
      {WeightType::Q4_0, 40000, 64},   // 1 warp, 2 of 3 lanes idle
      {WeightType::Q8_0, 6000, 2048},  {WeightType::Q4_K, 6000, 4096}, {WeightType::Q6_K, 999, 1024},
      {WeightType::Q5_K, 6000, 4096}, {WeightType::Q2_K, 6000, 4096}, {WeightType::Q3_K, 999, 1024},
      // 4 warps, one pass of 16-row batches (gemv_prefetch: the narrow kernel)
      {WeightType::Q4_1, 2999, 4096}, {WeightType::IQ4_NL, 2999, 4096},
      {WeightType::Q5_0, 999, 1024},  {WeightType::Q5_1, 2001, 2048}, {WeightType::IQ4_XS, 1001, 4096},
  };
  for (const auto& c : cases) {
    const ActCase in(c, 7 + c.rows, 31);
    for (int act = 0; act < 3; ++act) {
      const std::vector<float> xa = in.act(act);
      std::vector<float> ref(c.rows);
      for (int v = 0; v < 16; ++v) {
        const bool pipe = v & 1, pdl = v & 2, i8x = !(v & 4), pre = v & 8;
        if (!i8x && !int8_format(c.type)) continue;  // the setting only changes these formats
        if (pre && !(i8x && rb16_format(c.type))) continue;  // likewise (int8, 16-row batches only)
        for (int r = 0; r < c.rows; ++r) ref[r] = gemv_ref(in.w, r, xa.data(), i8x);
        std::vector<float> y(c.rows, std::nanf(""));
        cuda_tuning().gemv_rows = false;
        cuda_tuning().gemv_pipe = pipe;
        cuda_tuning().pdl = pdl;
        cuda_tuning().gemv_i8x = i8x;
        cuda_tuning().gemv_prefetch = pre;
        in.gemv_on_device(act, y.data());
        cuda_tuning() = CudaTuning{};
        const double err = test::nmse(y.data(), ref.data(), ref.size());
        EXPECT_LT(err, gemv_tol(c.type, i8x, act)) << weight_traits(c.type).name << " " << c.rows << "x" << c.cols
                                                   << " act " << act << " pipe " << pipe << " pdl " << pdl
                                                   << " i8x " << i8x << " prefetch " << pre;
        std::printf("slab gemv act %d %-5s %5dx%-5d pipe %d pdl %d i8x %d prefetch %d: nmse %.3g\n", act,
                    weight_traits(c.type).name, c.rows, c.cols, pipe, pdl, i8x, pre, err);
      }
    }
  }
}

// Milestone 17: SwiGLU in the gate|up GEMV's store (GemvAct::glu, over rows
// uploaded interleaved) gives a feed-forward block the same bits as the
// stacked GEMV with SwiGLU in w_down's load, and both match the host model
// (act() + gemv_ref, silu in double); the interleaved upload's views feed the
// prefill GEMM the same bits as plain uploads.
TEST(Cuda, GluStoreMatchesSwigluLoad) {
  LONGKV_REQUIRE_CUDA();
  struct Case {
    WeightType type;
    int ffn, dim;
  };
  const Case cases[] = {
      {WeightType::Q4_0, 1408, 4096},  // int8 activations, 16-row batches (176 blocks)
      {WeightType::Q4_0, 96, 1024},    // 8-row batches (24 blocks)
      {WeightType::Q8_0, 1280, 512},   // the evaluation model's shape
      {WeightType::Q4_K, 512, 2048},   // int8 x, 8-row batches, pipelined (milestone 61)
      {WeightType::Q6_K, 256, 768},
      {WeightType::Q5_K, 1280, 512},  // the evaluation model's shape
      {WeightType::Q2_K, 1280, 512},  {WeightType::Q3_K, 1280, 512},
      {WeightType::Q4_1, 1280, 512},  {WeightType::Q5_0, 1280, 512}, {WeightType::Q5_1, 1280, 512},
      {WeightType::IQ4_NL, 1280, 512}, {WeightType::IQ4_XS, 1280, 512},
  };
  for (const auto& c : cases) {
    const auto gd = random_weight(c.type, c.ffn, c.dim, 61 + c.ffn), ud = random_weight(c.type, c.ffn, c.dim, 62),
               dd = random_weight(c.type, c.dim, c.ffn, 63);
    const WeightView gate{c.type, c.ffn, c.dim, gd.data()}, up{c.type, c.ffn, c.dim, ud.data()},
        down{c.type, c.dim, c.ffn, dd.data()};
    const auto x = test::random_floats(c.dim, 64, -2, 2), norm = test::random_floats(c.dim, 65);
    const float eps = 1e-5f;
    std::vector<float> y_glu(c.dim), y_plain(c.dim);
    cuda_check_ffn_glu(gate, up, down, x.data(), norm.data(), eps, y_glu.data(), y_plain.data());
    EXPECT_EQ(std::memcmp(y_glu.data(), y_plain.data(), sizeof(float) * c.dim), 0) << weight_traits(c.type).name;
    // Host model: h = silu(g) u over the GPU's activation rule, then down . h.
    const bool i8x = int8_format(c.type) && cuda_tuning().gemv_i8x;
    const std::vector<float> xa = host_act(1, x, norm, x, eps);
    std::vector<float> h(c.ffn), ref(c.dim);
    for (int i = 0; i < c.ffn; ++i) {
      const double g = gemv_ref(gate, i, xa.data(), i8x), u = gemv_ref(up, i, xa.data(), i8x);
      h[i] = static_cast<float>(g / (1 + std::exp(-g)) * u);
    }
    for (int r = 0; r < c.dim; ++r) ref[r] = gemv_ref(down, r, h.data(), i8x);
    const double err = test::nmse(y_glu.data(), ref.data(), ref.size());
    EXPECT_LT(err, i8x ? 1e-4 : 1e-9) << weight_traits(c.type).name << " " << c.ffn << "x" << c.dim;
    std::printf("glu store %-5s ffn %5d dim %5d: bits as the SwiGLU load %s, nmse vs host %.3g\n",
                weight_traits(c.type).name, c.ffn, c.dim,
                std::memcmp(y_glu.data(), y_plain.data(), sizeof(float) * c.dim) == 0 ? "yes" : "NO", err);
    const int n_tok = 3;
    const auto x3 = test::random_floats(static_cast<size_t>(n_tok) * c.dim, 66);
    std::vector<float> yp(2 * n_tok * c.ffn), yq(2 * n_tok * c.ffn);
    cuda_check_interleaved_gemm(gate, up, x3.data(), n_tok, yp.data(), yq.data());
    EXPECT_EQ(std::memcmp(yp.data(), yq.data(), sizeof(float) * yp.size()), 0) << weight_traits(c.type).name;
  }
}

// Milestone 8b: interleaved RoPE made in the q|k|v GEMV's store
// (CudaTuning::gemv_rope) gives the same bits as the GEMV followed by
// rope_kernel, and both match act() + dot_row_ref + rope_apply on the host;
// NeoX (and a two-slice row) falls back to rope_kernel, same bits again.
// Positions come from device memory, as in a decode step.
TEST(Cuda, GemvRopeMatchesSeparateKernel) {
  LONGKV_REQUIRE_CUDA();
  struct Case {
    WeightType type;
    int rows, cols, head_dim, rope_dim, rope_heads;
  };
  const Case cases[] = {
      {WeightType::Q4_0, 6144, 4096, 128, 128, 40},  // llama3-8b q|k|v: 32 + 8 heads rotated, v not
      {WeightType::Q8_0, 390, 2048, 64, 32, 5},      // partial rotary, 70 rows of v, last batch short
      {WeightType::F16, 322, 264, 64, 64, 4},        // dense kernel (2 rows a block)
      {WeightType::Q4_K, 1536, 1024, 128, 128, 10},  // slab kernel, int8 x, pipelined (milestone 61)
      {WeightType::Q5_K, 768, 512, 64, 64, 10},      // the evaluation model's q|k|v
      {WeightType::Q2_K, 768, 512, 64, 64, 10},      {WeightType::Q3_K, 768, 512, 64, 64, 10},
      {WeightType::Q4_1, 768, 512, 64, 64, 10},      {WeightType::Q5_0, 768, 512, 64, 64, 10},
      {WeightType::Q5_1, 768, 512, 64, 64, 10},      {WeightType::IQ4_NL, 768, 512, 64, 64, 10},
      {WeightType::IQ4_XS, 768, 512, 64, 64, 10},
      {WeightType::Q4_0, 130, 16416, 64, 64, 2},     // two column slices: rope_kernel after
  };
  for (const auto& c : cases) {
    const auto data = random_weight(c.type, c.rows, c.cols, 41 + c.rows);
    WeightView w{c.type, c.rows, c.cols, data.data()};
    const auto x = test::random_floats(c.cols, 51, -2, 2), norm = test::random_floats(c.cols, 52);
    const float eps = 1e-5f;
    for (int act : {0, 1}) {
      const std::vector<float> xa = host_act(act, x, norm, {}, eps);
      std::vector<float> y0(c.rows);
      for (int r = 0; r < c.rows; ++r) y0[r] = gemv_ref(w, r, xa.data(), CudaTuning{}.gemv_i8x);
      for (RopeStyle st : {RopeStyle::interleaved, RopeStyle::neox}) {
        const RopeTable t(c.head_dim, c.rope_dim, 500000.0f, st);
        for (int64_t pos : {int64_t{0}, int64_t{5}, int64_t{131071}, int64_t{1000003}}) {
          std::vector<float> ref = y0;
          rope_apply(t, ref.data(), c.rope_heads, pos);
          std::vector<float> y[2];
          for (int fused = 0; fused < 2; ++fused) {
            y[fused].assign(c.rows, std::nanf(""));
            cuda_tuning().gemv_rope = fused;
            cuda_check_gemv_act(w, act, x.data(), norm.data(), eps, nullptr, y[fused].data(), &t, c.rope_heads, pos);
            cuda_tuning() = CudaTuning{};
          }
          int differ = 0;
          for (int r = 0; r < c.rows; ++r) differ += std::memcmp(&y[0][r], &y[1][r], sizeof(float)) != 0;
          const double err = test::nmse(y[1].data(), ref.data(), ref.size());
          EXPECT_EQ(differ, 0) << weight_traits(c.type).name << " " << c.rows << "x" << c.cols << " act " << act
                               << " " << rope_style_name(st) << " pos " << pos;
          EXPECT_LT(err, gemv_tol(c.type, CudaTuning{}.gemv_i8x, act))
              << weight_traits(c.type).name << " " << c.rows << "x" << c.cols << " act " << act << " "
              << rope_style_name(st) << " pos " << pos;
          std::printf("gemv rope %-5s %5dx%-5d act %d %-11s pos %7lld: nmse %.3g, %d rows differ from rope_kernel\n",
                      weight_traits(c.type).name, c.rows, c.cols, act, rope_style_name(st),
                      static_cast<long long>(pos), err, differ);
        }
      }
    }
  }
}

// The batched decode's GEMV (gemv_batch, milestone 50): n tokens at once,
// each against gemv_ref (the int8 rule, or exact products with gemv_i8x
// off; plain x, so only summation order differs). 33 and 513 units leave a
// lane's second unit of the last pass cut; odd row counts leave a warp's
// second row past the end; 1..32 tokens cover its four accumulator widths.
// Then a token's result alone equals its row of the 32-token batch, bit for
// bit (the batched model test relies on it).
TEST(Cuda, GemvBatchMatchesReference) {
  LONGKV_REQUIRE_CUDA();
  const MatmulCase cases[] = {{WeightType::Q4_0, 77, 1056},
                              {WeightType::Q4_0, 5, 16416},
                              {WeightType::Q4_0, 130, 4096},
                              {WeightType::Q4_0, 300, 96}};  // f16: one chunk of 3 units, so one slice
  for (const auto& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols));
    const auto data = random_weight(c.type, c.rows, c.cols, 29 + c.rows);
    WeightView w{c.type, c.rows, c.cols, data.data()};
    const auto x = test::random_floats(static_cast<size_t>(32) * c.cols, 41);
    // The three rules: exact products, int8 x (the default), f16 x (gbh for
    // every matrix, gbhd=0; its 3-stage form must give the 2-stage form's
    // bits); then gbh by shape (the default gbhd): f16 x for 5 x 16416 only.
    const bool wide = std::max(c.rows, c.cols) >= CudaTuning{}.gemv_batch_h16_dim;
    for (const char* rule : {"exact", "int8", "f16", "f16 by shape"}) {
      const bool i8x = rule[0] != 'e', by_shape = rule[3] == ' ', h16 = rule[0] == 'f' && (!by_shape || wide);
      cuda_tuning().gemv_i8x = i8x;
      cuda_tuning().gemv_batch_h16 = rule[0] == 'f' ? 2 : 0;
      if (!by_shape) cuda_tuning().gemv_batch_h16_dim = 0;
      for (int n_tok : {1, 2, 7, 8, 9, 16, 23, 32}) {
        SCOPED_TRACE("tokens " + std::to_string(n_tok) + " " + rule);
        std::vector<float> y(static_cast<size_t>(n_tok) * c.rows), ref(y.size());
        cuda_check_gemv_batch(w, x.data(), n_tok, y.data());
        for (int t = 0; t < n_tok; ++t)
          for (int r = 0; r < c.rows; ++r) {
            const float* xt = &x[static_cast<size_t>(t) * c.cols];
            ref[static_cast<size_t>(t) * c.rows + r] =
                h16 ? static_cast<float>(dot_q4_0_h16_ref(w.row(r), xt, static_cast<int>(c.cols)))
                    : gemv_ref(w, r, xt, i8x);
          }
        EXPECT_LT(test::nmse(y.data(), ref.data(), y.size()), 1e-10);
        if (h16 && !by_shape) {
          std::vector<float> y3(y.size(), -1.0f);
          cuda_tuning().gemv_batch_h16 = 3;
          cuda_check_gemv_batch(w, x.data(), n_tok, y3.data());
          cuda_tuning().gemv_batch_h16 = 2;
          EXPECT_EQ(std::memcmp(y3.data(), y.data(), sizeof(float) * y.size()), 0) << "gbh=3 against gbh=2";
        }
      }
      std::vector<float> all(static_cast<size_t>(32) * c.rows), one(c.rows);
      cuda_check_gemv_batch(w, x.data(), 32, all.data());
      for (int t : {0, 13, 31}) {
        cuda_check_gemv_batch(w, &x[static_cast<size_t>(t) * c.cols], 1, one.data());
        EXPECT_EQ(std::memcmp(one.data(), &all[static_cast<size_t>(t) * c.rows], sizeof(float) * c.rows), 0)
            << "token " << t << " " << rule;
      }
      cuda_tuning() = CudaTuning{};
    }
  }
}

// Milestone 58: the batch GEMV's converter makes RMSNorm and SwiGLU itself
// (BatchAct). Against rmsnorm_kernel / swiglu_kernel before a plain call, in
// each of the three rules: SwiGLU has their per-element arithmetic, so the
// same bits; RMSNorm sums its squares in another order, so within the rule's
// rounding (exact f32 products 1e-12; int8 or f16 x, where a rounding step may
// move by one, 1e-6). 257 units leave the RMSNorm of a row over three
// converter blocks; 5 x 16416 takes the f16 form by shape. Then token t alone
// equals its row of the 32-token batch, bit for bit.
TEST(Cuda, GemvBatchActivationsInTheConverter) {
  LONGKV_REQUIRE_CUDA();
  const MatmulCase cases[] = {{WeightType::Q4_0, 77, 1056}, {WeightType::Q4_0, 130, 4096},
                              {WeightType::Q4_0, 40, 8224}, {WeightType::Q4_0, 5, 16416}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols));
    const auto data = random_weight(c.type, c.rows, c.cols, 37 + c.rows);
    WeightView w{c.type, c.rows, c.cols, data.data()};
    const auto x = test::random_floats(static_cast<size_t>(32) * 2 * c.cols, 47);
    const auto norm = test::random_floats(static_cast<size_t>(c.cols), 53);
    for (const char* rule : {"exact", "int8", "f16"}) {
      cuda_tuning().gemv_i8x = rule[0] != 'e';
      cuda_tuning().gemv_batch_h16 = rule[0] == 'f' ? 2 : 0;
      if (rule[0] == 'f') cuda_tuning().gemv_batch_h16_dim = 0;
      for (int act = 1; act <= 3; ++act) {
        const size_t in = static_cast<size_t>(c.cols) * (act == 1 ? 1 : 2);  // a token's input floats
        for (int n_tok : {1, 7, 9, 32}) {
          SCOPED_TRACE(std::string(rule) + ", act " + std::to_string(act) + ", tokens " + std::to_string(n_tok));
          std::vector<float> yf(static_cast<size_t>(n_tok) * c.rows), ys(yf.size());
          cuda_check_gemv_batch_act(w, act, x.data(), norm.data(), 1e-5f, n_tok, yf.data(), ys.data());
          if (act == 1) {
            EXPECT_LT(test::nmse(yf.data(), ys.data(), yf.size()), rule[0] == 'e' ? 1e-12 : 1e-6);
          } else {
            EXPECT_EQ(std::memcmp(yf.data(), ys.data(), sizeof(float) * yf.size()), 0);
          }
          if (n_tok != 32) continue;
          std::vector<float> one(c.rows), unused(c.rows);
          for (int t : {0, 13, 31}) {
            cuda_check_gemv_batch_act(w, act, &x[t * in], norm.data(), 1e-5f, 1, one.data(), unused.data());
            EXPECT_EQ(std::memcmp(one.data(), &yf[static_cast<size_t>(t) * c.rows], sizeof(float) * c.rows), 0)
                << "token " << t;
          }
        }
      }
      cuda_tuning() = CudaTuning{};
    }
  }
}

// Milestone 51's forms (CudaTuning::gemv_batch_stages: the ring, and the
// register form with streamed weights) fold the same chunks in the same order
// as milestone 50's form, so they must give the same bits, whatever the
// ring's depth, however many row tiles a block walks and whether x comes
// through the ring (odd row counts leave the last tile cut; 33 units leave
// warps without a chunk and the last chunk with one unit).
TEST(Cuda, GemvBatchRingEqualsRegisterForm) {
  LONGKV_REQUIRE_CUDA();
  const MatmulCase cases[] = {
      {WeightType::Q4_0, 77, 1056}, {WeightType::Q4_0, 5, 16416}, {WeightType::Q4_0, 1030, 4096},
      {WeightType::Q4_0, 8200, 1056}};  // gbr: >= 8192 rows or columns (5 x 16416, and 8200 rows: a cut last tile)
  for (const auto& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols));
    const auto data = random_weight(c.type, c.rows, c.cols, 31 + c.rows);
    WeightView w{c.type, c.rows, c.cols, data.data()};
    const auto x = test::random_floats(static_cast<size_t>(32) * c.cols, 43);
    // row: milestone 53's row-split form (gbr; 9-32 tokens, else the form of gbs).
    const struct {
      int stages, tiles;
      bool x_smem;
      int row;
    } forms[] = {{1, 0, true, 0},  {2, 0, true, 0},  {2, 0, false, 0}, {3, 1, true, 0}, {3, 2, false, 0},
                 {4, 0, true, 0},  {6, 3, true, 0},  {0, 0, true, 2},  {2, 0, true, 3}};
    for (int n_tok : {1, 5, 8, 13, 17, 24, 32}) {
      std::vector<float> ref(static_cast<size_t>(n_tok) * c.rows), y(ref.size());
      cuda_tuning().gemv_batch_stages = 0;
      cuda_tuning().gemv_batch_row_stages = 0;  // milestone 50's form throughout
      cuda_check_gemv_batch(w, x.data(), n_tok, ref.data());
      for (const auto& f : forms) {
        cuda_tuning().gemv_batch_stages = f.stages;
        cuda_tuning().gemv_batch_tiles = f.tiles;
        cuda_tuning().gemv_batch_x_smem = f.x_smem;
        cuda_tuning().gemv_batch_row_stages = f.row;
        std::fill(y.begin(), y.end(), -1.0f);
        cuda_check_gemv_batch(w, x.data(), n_tok, y.data());
        EXPECT_EQ(std::memcmp(y.data(), ref.data(), sizeof(float) * y.size()), 0)
            << "tokens " << n_tok << ", gbs=" << f.stages << ", gbt=" << f.tiles << ", gbx=" << f.x_smem
            << ", gbr=" << f.row;
      }
      cuda_tuning() = CudaTuning{};
    }
  }
}

// Not a pass/fail speed test: the batched decode's Q4_0 GEMV (milestone 50)
// per llama3-8b shape and token count, the weights read once (GB/s of them);
// 28672 x 4096 is gate|up stacked (a batched step's one GEMV since milestone 58).
TEST(Cuda, GemvBatchSpeedReport) {
  LONGKV_REQUIRE_CUDA();
  for (auto [rows, cols] : {std::pair{6144, 4096}, std::pair{4096, 4096}, std::pair{14336, 4096},
                           std::pair{28672, 4096}, std::pair{4096, 14336}, std::pair{128256, 4096}})
    for (int n : {1, 2, 4, 8, 16, 24, 32}) {
      const CudaGemvSpeed sp = cuda_bench_gemv(WeightType::Q4_0, rows, cols, n);
      EXPECT_GT(sp.gbs, 0);
      std::printf("gemv_batch q4_0 %6dx%-5d tokens %2d: %8.1f us %7.0f GB/s\n", rows, cols, n, sp.us_per_call, sp.gbs);
    }
}

// Not a pass/fail speed test: Q4_0 GEMV per 8B shape in milestone 2's order,
// pipelined, and pipelined with PDL (back-to-back launches, as in a decode
// step), for docs/cuda-notes.md milestone 8; f32 products except "i8x"
// (int8 activations, milestone 13).
TEST(Cuda, GemvPipelineSpeedReport) {
  LONGKV_REQUIRE_CUDA();
  struct Variant {
    const char* name;
    bool pipe, pdl, i8x;
  };
  for (auto [rows, cols] : {std::pair{4096, 4096}, std::pair{6144, 4096}, std::pair{1024, 4096},
                           std::pair{14336, 4096}, std::pair{28672, 4096}, std::pair{4096, 14336},
                           std::pair{128256, 4096}}) {
    for (Variant v : {Variant{"m2", false, false, false}, Variant{"pipe", true, false, false},
                      Variant{"m2+pdl", false, true, false}, Variant{"pipe+pdl", true, true, false},
                      Variant{"i8x", true, true, true}}) {
      cuda_tuning().gemv_pipe = v.pipe;
      cuda_tuning().pdl = v.pdl;
      cuda_tuning().gemv_i8x = v.i8x;
      const CudaGemvSpeed sp = cuda_bench_gemv(WeightType::Q4_0, rows, cols);
      cuda_tuning() = CudaTuning{};
      EXPECT_GT(sp.gbs, 0);
      std::printf("gemv q4_0 %6dx%-5d %-8s: %7.1f us %7.0f GB/s\n", rows, cols, v.name, sp.us_per_call, sp.gbs);
    }
  }
}

}  // namespace
}  // namespace longkv

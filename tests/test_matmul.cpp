// CPU matrix kernels against their references: the fast dot/dequantize
// against the scalar reference twins, and matvec/matmul against a
// double-precision product of the reference-dequantized weights. Errors are
// normalized by sum |w*x|, the scale float rounding error grows with.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/matmul.h"
#include "backend/cpu/weight_kernels.h"
#include "formats/weight_types.h"
#include "test_util.h"

namespace longkv {
namespace {

constexpr WeightType kAllTypes[] = {WeightType::F32,    WeightType::F16,   WeightType::BF16, WeightType::Q8_0,
                                    WeightType::Q4_0,   WeightType::Q4_1,  WeightType::Q5_0, WeightType::Q5_1,
                                    WeightType::IQ4_NL, WeightType::Q2_K,  WeightType::Q3_K, WeightType::Q4_K,
                                    WeightType::Q5_K,   WeightType::Q6_K,  WeightType::IQ4_XS};
constexpr WeightType kBlockTypes[] = {WeightType::Q8_0, WeightType::Q4_0, WeightType::Q4_1,   WeightType::Q5_0,
                                      WeightType::Q5_1, WeightType::IQ4_NL, WeightType::Q2_K, WeightType::Q3_K,
                                      WeightType::Q4_K, WeightType::Q5_K, WeightType::Q6_K, WeightType::IQ4_XS};

// Byte offsets of a block's fp16 d and (-1: none) dmin.
int d_offset(WeightType t) {
  return t == WeightType::Q6_K ? 208 : t == WeightType::Q2_K ? 80 : t == WeightType::Q3_K ? 108 : 0;
}
int dmin_offset(WeightType t) {
  return t == WeightType::Q2_K                                                                       ? 82
         : t == WeightType::Q4_K || t == WeightType::Q5_K || t == WeightType::Q4_1 || t == WeightType::Q5_1 ? 2
                                                                                                            : -1;
}
// Decodes whose d*sc*q - dmin*m may be one fused multiply-add: one rounding from the reference.
bool affine_type(WeightType t) { return dmin_offset(t) >= 0; }

// Odd sizes per block size: partial SIMD tails for the float types, odd
// block counts (and a single block) for the quantized ones. 4352 and 8960
// (17 and 35 super-blocks) cross the runs of 16 super-blocks whose scales
// the K-quant kernels decode ahead.
std::vector<int64_t> sizes_for(WeightType t) {
  switch (weight_traits(t).block_size) {
    case 1: return {1, 17, 97, 1001, 4103};
    case 32: return {32, 96, 992, 4192};
    default: return {256, 768, 2816, 4352, 8960};
  }
}

// A matrix of `rows` rows stored in type t, placed `misalign` bytes past an
// allocation start so kernels see the unaligned rows a GGUF mapping gives.
struct StoredMatrix {
  WeightType type;
  int64_t rows, cols;
  std::vector<uint8_t> storage;
  size_t misalign;
  std::vector<float> deq;  // reference-dequantized weights, rows x cols

  StoredMatrix(WeightType t, int64_t r, int64_t c, uint32_t seed)
      : type(t), rows(r), cols(c), misalign(t == WeightType::F32 ? 4 : 1) {
    const std::vector<float> src = test::random_floats(static_cast<size_t>(r * c), seed, -2.0f, 2.0f);
    const size_t stride = row_bytes(t, c);
    storage.assign(misalign + stride * static_cast<size_t>(r), 0);
    weight_traits(t).from_float_ref(src.data(), data(), r * c);
    deq.resize(static_cast<size_t>(r * c));
    weight_traits(t).to_float_ref(data(), deq.data(), r * c);
  }
  uint8_t* data() { return storage.data() + misalign; }
  WeightView view() { return WeightView{type, rows, cols, data()}; }
};

// sum w*x in double and sum |w*x| for the tolerance.
void exact_dot(const float* w, const float* x, int64_t n, double* dot, double* abs_sum) {
  double s = 0, a = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double p = static_cast<double>(w[i]) * x[i];
    s += p;
    a += std::fabs(p);
  }
  *dot = s;
  *abs_sum = a;
}

TEST(MatmulKernels, IsaMatchesCompileTarget) {
  const std::string isa = cpu_weight_kernels_isa();
#if defined(__AVX512F__)
  EXPECT_EQ(isa, "avx512");
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  EXPECT_EQ(isa, "avx2");
#else
  EXPECT_EQ(isa, "scalar");
#endif
  for (WeightType t : kAllTypes) EXPECT_EQ(cpu_weight_kernels(t).type, t);
}

TEST(MatmulDot, FastMatchesReference) {
  uint32_t seed = 100;
  for (WeightType t : kAllTypes) {
    for (int64_t n : sizes_for(t)) {
      StoredMatrix w(t, 1, n, seed++);
      // x one float past an aligned start: unaligned vector loads
      std::vector<float> xbuf = test::random_floats(static_cast<size_t>(n) + 1, seed++);
      const float* x = xbuf.data() + 1;
      const float fast = dot_row(t, w.data(), x, n);
      const float ref = dot_row_ref(t, w.data(), x, n);
      double exact, abs_sum;
      exact_dot(w.deq.data(), x, n, &exact, &abs_sum);
      const double tol = 1e-5 * abs_sum + 1e-30;
      EXPECT_LE(std::fabs(fast - ref), tol) << weight_traits(t).name << " n=" << n;
      EXPECT_LE(std::fabs(ref - exact), tol) << weight_traits(t).name << " n=" << n;
      EXPECT_LE(std::fabs(fast - exact), tol) << weight_traits(t).name << " n=" << n;
    }
  }
}

// A wrong code or scale in one block moves the dot by far more than the
// tolerance, so it must fail: flip one block's scale and check.
TEST(MatmulDot, DetectsCorruptedBlock) {
  for (WeightType t : kBlockTypes) {
    const int64_t n = weight_traits(t).block_size * 3;
    StoredMatrix w(t, 1, n, 7);
    std::vector<float> x(static_cast<size_t>(n), 1.0f);
    for (int64_t i = 0; i < n; ++i) x[i] = w.deq[i] > 0 ? 1.0f : -1.0f;  // sum |w|
    const float before = dot_row(t, w.data(), x.data(), n);
    const size_t off = static_cast<size_t>(d_offset(t));
    const f16_t doubled = f32_to_f16(2.0f * [&] {
      f16_t h;
      std::memcpy(&h, w.data() + off, 2);
      return f16_to_f32(h);
    }());
    std::memcpy(w.data() + off, &doubled, 2);
    const float after = dot_row(t, w.data(), x.data(), n);
    EXPECT_NEAR(dot_row_ref(t, w.data(), x.data(), n), after, 1e-5 * std::fabs(after))
        << weight_traits(t).name;
    EXPECT_GT(std::fabs(after - before), 0.05f * std::fabs(before)) << weight_traits(t).name;
  }
}

// Our quantizers emit a narrow set of codes and scales (Q6_K scales are
// positive, Q4_K scales never 0); GGUF files from other tools use every bit
// pattern. Random bytes with finite fp16 factors reach the rest: negative
// and -128 Q6_K scales, 6-bit Q4_K / Q5_K scales and mins of 63, all codes.
TEST(MatmulDot, MatchesReferenceOnRandomBlockBits) {
  std::mt19937 rng(1234);
  for (WeightType t : kBlockTypes) {
    const WeightTypeTraits& tr = weight_traits(t);
    for (int64_t n : sizes_for(t)) {
      const int64_t nb = n / tr.block_size;
      std::vector<uint8_t> buf(1 + static_cast<size_t>(nb * tr.block_bytes));
      uint8_t* row = buf.data() + 1;  // odd address, as blocks in a GGUF row are
      for (auto& b : buf) b = static_cast<uint8_t>(rng());
      std::uniform_real_distribution<float> scale(-0.05f, 0.05f);
      for (int64_t i = 0; i < nb; ++i) {
        uint8_t* blk = row + i * tr.block_bytes;
        const f16_t d = f32_to_f16(scale(rng)), dmin = f32_to_f16(scale(rng));
        std::memcpy(blk + d_offset(t), &d, 2);
        if (dmin_offset(t) >= 0) std::memcpy(blk + dmin_offset(t), &dmin, 2);
      }
      std::vector<float> deq(static_cast<size_t>(n));
      tr.to_float_ref(row, deq.data(), n);
      const std::vector<float> x = test::random_floats(static_cast<size_t>(n), static_cast<uint32_t>(n));
      double exact, abs_sum;
      exact_dot(deq.data(), x.data(), n, &exact, &abs_sum);
      EXPECT_LE(std::fabs(dot_row(t, row, x.data(), n) - exact), 1e-5 * abs_sum + 1e-30)
          << tr.name << " n=" << n;
      std::vector<float> fast(static_cast<size_t>(n));
      dequantize_row(t, row, fast.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_LE(std::fabs(fast[i] - deq[i]), 4e-7f * (std::fabs(deq[i]) + 1.0f)) << tr.name << " i=" << i;
    }
  }
}

TEST(MatmulDequantize, FastMatchesReference) {
  uint32_t seed = 300;
  for (WeightType t : kAllTypes) {
    for (int64_t n : sizes_for(t)) {
      StoredMatrix w(t, 1, n, seed++);
      std::vector<float> fast(static_cast<size_t>(n) + 1, -12345.0f);
      dequantize_row(t, w.data(), fast.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const float ref = w.deq[i];
        ASSERT_LE(std::fabs(fast[i] - ref), 4e-7f * (std::fabs(ref) + 1.0f))
            << weight_traits(t).name << " n=" << n << " i=" << i;
        if (!affine_type(t)) {
          ASSERT_EQ(fast[i], ref) << weight_traits(t).name << " i=" << i;
        }
      }
      EXPECT_EQ(fast[n], -12345.0f) << "wrote past the row";
    }
  }
}

TEST(MatmulGetRow, CopiesOneRow) {
  for (WeightType t : kAllTypes) {
    const int64_t cols = weight_traits(t).block_size == 1 ? 97 : 512;
    StoredMatrix w(t, 5, cols, 41);
    std::vector<float> row(static_cast<size_t>(cols));
    get_row(w.view(), 3, row.data());
    for (int64_t i = 0; i < cols; ++i)
      ASSERT_NEAR(row[i], w.deq[3 * cols + i], 4e-7f * (std::fabs(w.deq[3 * cols + i]) + 1.0f))
          << weight_traits(t).name;
  }
}

int64_t cols_for(WeightType t) {
  switch (weight_traits(t).block_size) {
    case 1: return 1001;
    case 32: return 992;
    default: return 768;
  }
}

// Y = X W^T against double precision; also returns the per-entry tolerance
// scale sum |w*x|.
void reference_product(const StoredMatrix& w, const std::vector<float>& x, int64_t ldx, int64_t n_tok,
                       std::vector<double>* y, std::vector<double>* abs_sum) {
  y->assign(static_cast<size_t>(n_tok * w.rows), 0.0);
  abs_sum->assign(y->size(), 0.0);
  for (int64_t i = 0; i < n_tok; ++i)
    for (int64_t r = 0; r < w.rows; ++r)
      exact_dot(w.deq.data() + r * w.cols, x.data() + i * ldx, w.cols, &(*y)[i * w.rows + r],
                &(*abs_sum)[i * w.rows + r]);
}

TEST(MatmulMatvec, MatchesDoubleAndIsThreadCountInvariant) {
  ThreadPool pool1(1), pool3(3);
  uint32_t seed = 500;
  for (WeightType t : kAllTypes) {
    const int64_t rows = 97, cols = cols_for(t);
    StoredMatrix w(t, rows, cols, seed++);
    const std::vector<float> x = test::random_floats(static_cast<size_t>(cols), seed++);
    std::vector<float> y1(rows + 1, -7.0f), y3(rows + 1, -7.0f);
    matvec(w.view(), x.data(), y1.data(), pool1);
    matvec(w.view(), x.data(), y3.data(), pool3);
    std::vector<double> expect, abs_sum;
    reference_product(w, x, cols, 1, &expect, &abs_sum);
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_LE(std::fabs(y1[r] - expect[r]), 1e-5 * abs_sum[r]) << weight_traits(t).name << " row " << r;
      ASSERT_EQ(y1[r], y3[r]) << weight_traits(t).name << " row " << r;
    }
    EXPECT_EQ(y1[rows], -7.0f);
    EXPECT_EQ(y3[rows], -7.0f);
  }
}

TEST(MatmulMatmul, MatchesDoubleAndIsThreadCountInvariant) {
  ThreadPool pool1(1), pool3(3);
  uint32_t seed = 700;
  for (WeightType t : kAllTypes) {
    const int64_t rows = 97, cols = cols_for(t);
    StoredMatrix w(t, rows, cols, seed++);
    for (int64_t n_tok : {1, 3, 17, 97}) {
      // padded strides: ldx and ldy larger than the rows they hold
      const int64_t ldx = cols + 3, ldy = rows + 5;
      const std::vector<float> x = test::random_floats(static_cast<size_t>(n_tok * ldx), seed++);
      std::vector<float> y1(static_cast<size_t>(n_tok * ldy), -7.0f), y3 = y1;
      matmul(w.view(), x.data(), ldx, y1.data(), ldy, n_tok, pool1);
      matmul(w.view(), x.data(), ldx, y3.data(), ldy, n_tok, pool3);
      std::vector<double> expect, abs_sum;
      reference_product(w, x, ldx, n_tok, &expect, &abs_sum);
      for (int64_t i = 0; i < n_tok; ++i) {
        for (int64_t r = 0; r < ldy; ++r) {
          const float got = y1[i * ldy + r];
          ASSERT_EQ(got, y3[i * ldy + r]) << weight_traits(t).name << " tok " << i << " row " << r;
          if (r >= rows) {
            ASSERT_EQ(got, -7.0f) << "wrote into the ldy padding";
            continue;
          }
          const size_t k = static_cast<size_t>(i * rows + r);
          ASSERT_LE(std::fabs(got - expect[k]), 1e-5 * abs_sum[k])
              << weight_traits(t).name << " n_tok " << n_tok << " tok " << i << " row " << r;
        }
      }
    }
  }
}

// matmul for one token must agree with matvec (the decode path) exactly.
TEST(MatmulMatmul, SingleTokenEqualsMatvec) {
  ThreadPool pool(2);
  for (WeightType t : kAllTypes) {
    StoredMatrix w(t, 33, cols_for(t), 900);
    const std::vector<float> x = test::random_floats(static_cast<size_t>(w.cols), 901);
    std::vector<float> a(33), b(33);
    matvec(w.view(), x.data(), a.data(), pool);
    matmul(w.view(), x.data(), w.cols, b.data(), 33, 1, pool);
    for (int r = 0; r < 33; ++r) ASSERT_EQ(a[r], b[r]) << weight_traits(t).name;
  }
}

}  // namespace
}  // namespace longkv

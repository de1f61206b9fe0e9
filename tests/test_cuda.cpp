// CUDA backend against the CPU oracle: every kernel path on random inputs of
// odd sizes, and the evaluation model's logits. Without a GPU (or in a build
// without CUDA) each test reports SKIPPED with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "backend/cpu/matmul.h"
#include "backend/cpu/ops.h"
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/fp16.h"
#include "core/thread_pool.h"
#include "kv/dense_attention.h"
#include "kv/kv_codec.h"
#include "kv/kv_mode.h"
#include "kv/quant_cache.h"
#include "kv/rotated_cache.h"
#include "model/llama_model.h"
#include "model/model_loader.h"
#include "runtime/sampler.h"
#include "test_cuda_util.h"
#include "test_util.h"
#include "tokenizer/spm_tokenizer.h"

namespace longkv {
namespace {

TEST(Cuda, UnavailableReasonIsOneClearLine) {
  std::string why;
  if (cuda_available(&why)) GTEST_SKIP() << "a CUDA device is present";
#ifdef LONGKV_HAVE_CUDA
  EXPECT_NE(why.find("no CUDA device: "), std::string::npos) << why;
#else
  EXPECT_EQ(why, "longkv was built without CUDA (-DLONGKV_CUDA=ON)");
#endif
}

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

// The Q4_0 GEMV with int8 activations (CudaTuning::gemv_i8x), written from
// its documented rule (weight_decode.cuh): per 32 activations amax, dx =
// amax / 127, q = round-half-even(x * (127 / amax)), and the block's product
// d * dx * sum (n - 8) q with the integer sum exact; summed in double.
double dot_q4_0_i8x_ref(const void* row, const float* x, int cols) {
  const auto* b = static_cast<const BlockQ4_0*>(row);
  double s = 0;
  for (int k = 0; k < cols / kQK; ++k) {
    const float* xb = x + kQK * k;
    float amax = 0;
    for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float dx = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
    int64_t dot = 0;
    for (int i = 0; i < kQK; ++i) {
      const int n = i < 16 ? (b[k].qs[i] & 0xF) : (b[k].qs[i - 16] >> 4);
      dot += static_cast<int64_t>(n - 8) * static_cast<int>(std::nearbyint(xb[i] * inv));
    }
    s += static_cast<double>(f16_to_f32(b[k].d) * dx) * static_cast<double>(dot);
  }
  return s;
}

// What the single-token GEMV should give for row r: the exact product of the
// dequantized weights (dot_row_ref), or for Q4_0 through the slab kernel with
// int8 activations the rule above.
float gemv_ref(const WeightView& w, int r, const float* x, bool i8x) {
  return i8x && w.type == WeightType::Q4_0 ? static_cast<float>(dot_q4_0_i8x_ref(w.row(r), x, static_cast<int>(w.cols)))
                                            : dot_row_ref(w.type, w.row(r), x, w.cols);
}

// Tolerance of a GEMV against gemv_ref: float rounding, or with int8
// activations made from an activation the GPU computed itself (RMSNorm,
// SwiGLU: last-bit differences from the host's) one int8 value off now and
// then, each moving every row by ~1e-4 relative (exact vs int8: ~3e-5).
double gemv_tol(WeightType t, bool i8x, int act) { return i8x && t == WeightType::Q4_0 && act != 0 ? 1e-6 : 1e-10; }

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
      // Rows past one GEMV slice (512 units: 8192 Q8_0 columns, 16384 Q4_0)
      // take two accumulating passes; odd block counts leave lanes idle.
      {WeightType::Q8_0, 13, 8224}, {WeightType::Q4_0, 9, 16416}, {WeightType::Q6_K, 7, 4352},
      {WeightType::Q4_K, 11, 4352},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(weight_traits(c.type).name) + " " + std::to_string(c.rows) + "x" +
                 std::to_string(c.cols));
    const auto data = random_weight(c.type, c.rows, c.cols, 11 + c.rows);
    WeightView w{c.type, c.rows, c.cols, data.data()};
    for (int n_tok : {1, 7}) {
      const auto x = test::random_floats(static_cast<size_t>(n_tok) * c.cols, 5 + n_tok);
      for (bool i8x : {false, true}) {
        if (i8x && (n_tok > 1 || c.type != WeightType::Q4_0)) continue;  // int8 x: the Q4_0 GEMV only
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
          // The int8 activations' own error, against the exact product.
          const double err_exact = test::nmse(y.data(), exact.data(), exact.size());
          if (i8x) {
            EXPECT_LT(err_exact, 1e-4);
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

// The decode step's GEMV with RMSNorm / SwiGLU made inside its activation
// load (milestone 5), and the same through the separate kernels and the
// milestone-2 slab GEMV, against act() on the host + dot_row_ref. Only the
// sum of squares and the dot products are ordered differently.
TEST(Cuda, FusedActivationGemvMatchesReference) {
  LONGKV_REQUIRE_CUDA();
  const MatmulCase cases[] = {
      {WeightType::Q4_0, 97, 4096}, {WeightType::Q4_0, 17, 14336}, {WeightType::Q8_0, 1000, 544},
      {WeightType::Q4_K, 37, 1280}, {WeightType::Q6_K, 19, 768},   {WeightType::F16, 33, 264},
      {WeightType::Q4_0, 9001, 96},  // > 8192 rows: 4 rows per warp
      {WeightType::Q8_0, 23, 9216},  // 576 units: the slab kernel runs two column slices
  };
  struct Variant {
    bool rows, fuse;
  };
  for (const auto& c : cases) {
    const auto data = random_weight(c.type, c.rows, c.cols, 3 + c.rows);
    WeightView w{c.type, c.rows, c.cols, data.data()};
    const auto x = test::random_floats(c.cols, 21, -2, 2), norm = test::random_floats(c.cols, 22),
               up = test::random_floats(c.cols, 23);
    const float eps = 1e-5f;
    for (int act = 0; act < 3; ++act) {
      const std::vector<float> xa = host_act(act, x, norm, up, eps);
      std::vector<float> ref(c.rows), y(c.rows);
      for (Variant vr : {Variant{true, true}, Variant{false, true}, Variant{false, false}, Variant{true, false}}) {
        const bool i8x = !vr.rows && CudaTuning{}.gemv_i8x;  // the slab kernel's default for Q4_0
        for (int r = 0; r < c.rows; ++r) ref[r] = gemv_ref(w, r, xa.data(), i8x);
        cuda_tuning().gemv_rows = vr.rows;
        cuda_tuning().fuse_activation = vr.fuse;
        cuda_check_gemv_act(w, act, x.data(), norm.data(), eps, up.data(), y.data());
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

TEST(Cuda, RmsnormMatchesCpu) {
  LONGKV_REQUIRE_CUDA();
  const int rows = 3, dim = 1000;
  const auto x = test::random_floats(static_cast<size_t>(rows) * dim, 1, -3, 3);
  const auto w = test::random_floats(dim, 2);
  std::vector<float> ref(x.size()), y(x.size());
  for (int r = 0; r < rows; ++r) rmsnorm(&ref[r * dim], &x[r * dim], w.data(), dim, 1e-5f);
  cuda_check_rmsnorm(x.data(), w.data(), rows, dim, 1e-5f, y.data());
  EXPECT_LT(test::nmse(y.data(), ref.data(), ref.size()), 1e-12);
}

TEST(Cuda, RopeMatchesCpuBothStylesFarPositions) {
  LONGKV_REQUIRE_CUDA();
  for (RopeStyle st : {RopeStyle::interleaved, RopeStyle::neox}) {
    RopeTable t(64, 64, 500000.0f, st);
    const int n_tok = 5, n_heads = 3;
    const int64_t pos0 = 1000003;
    auto x = test::random_floats(static_cast<size_t>(n_tok) * n_heads * 64, 3);
    auto ref = x;
    for (int i = 0; i < n_tok; ++i) rope_apply(t, &ref[static_cast<size_t>(i) * n_heads * 64], n_heads, pos0 + i);
    cuda_check_rope(t, x.data(), n_tok, n_heads, pos0);
    EXPECT_LT(test::nmse(x.data(), ref.data(), ref.size()), 1e-12) << rope_style_name(st);
  }
}

// Decode (1 query, split-K) and prefill (several rows, causal) against the
// double-precision reference on the f16-rounded keys and values.
TEST(Cuda, AttentionMatchesReference) {
  LONGKV_REQUIRE_CUDA();
  struct Case {
    int n_heads, n_kv, d, n_ctx, n_q, chunk;
  };
  const Case cases[] = {{8, 2, 64, 1, 1, 1},     {8, 2, 64, 97, 1, 13},     {32, 8, 128, 4099, 1, 1000},
                        {28, 4, 128, 777, 1, 777}, {8, 2, 64, 300, 37, 100}, {32, 8, 128, 1100, 129, 550},
                        // many splits (a partial last tile in each), d64 tiles of 16 tokens
                        {32, 8, 128, 20011, 1, 5000}, {8, 2, 64, 4099, 1, 4099}};
  for (const auto& c : cases) {
    SCOPED_TRACE("heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv) + " d " + std::to_string(c.d) +
                 " ctx " + std::to_string(c.n_ctx) + " n_q " + std::to_string(c.n_q));
    const KvShape s = test::kv_shape(c.n_heads, c.n_kv, c.d, c.n_ctx + 3);
    const size_t kv = static_cast<size_t>(c.n_ctx) * s.kv_dim();
    const auto k = test::random_floats(kv, 21, -2, 2), v = test::random_floats(kv, 22);
    const auto q = test::random_floats(static_cast<size_t>(c.n_q) * s.q_dim(), 23, -2, 2);
    // Reference over f16-rounded K/V in [token][d] per KV head.
    std::vector<f16_t> kh(kv), vh(kv);
    for (size_t i = 0; i < kv; ++i) {
      kh[i] = f32_to_f16(k[i]);
      vh[i] = f32_to_f16(v[i]);
    }
    std::vector<float> ref(q.size());
    for (int r = 0; r < c.n_q; ++r) {
      const size_t off = static_cast<size_t>(r) * s.q_dim();
      test::attend_heads_reference(s, &q[off], kh.data(), vh.data(), c.n_ctx - c.n_q + r + 1, &ref[off]);
    }
    for (CudaGemm g : {CudaGemm::f32, CudaGemm::f16}) {
      if (c.n_q == 1 && g == CudaGemm::f16) continue;
      // Decode: both split-kernel depths (token steps per tile).
      for (int steps : {8, 4}) {
        if (c.n_q > 1 && steps == 4) continue;
        cuda_tuning().dense_decode_steps = steps;
        std::vector<float> out(q.size());
        cuda_check_attention(s, "f16", k.data(), v.data(), c.n_ctx, c.chunk, q.data(), c.n_q, out.data(), g);
        cuda_tuning() = CudaTuning{};
        const double err = test::nmse(out.data(), ref.data(), ref.size());
        // f16 path: queries and probabilities rounded to f16.
        EXPECT_LT(err, g == CudaGemm::f16 && c.n_q > 1 ? 1e-5 : 1e-10) << cuda_gemm_name(g) << " steps " << steps;
        std::printf("attention h%d/%d d%d ctx %d n_q %d %s steps %d: nmse %.3g\n", c.n_heads, c.n_kv, c.d, c.n_ctx,
                    c.n_q, cuda_gemm_name(g), steps, err);
      }
    }
  }
}

TEST(Cuda, UnsupportedKvModeIsOneClearError) {
  LONGKV_REQUIRE_CUDA();
  const KvShape s = test::kv_shape(8, 2, 64, 4);
  std::vector<float> k(s.kv_dim()), q(s.q_dim()), out(s.q_dim());
  for (const char* mode : {"k4v2:rope=pre", "f32", "k2v2:o2", "k2v2:rot:o2", "k4v4:a1"}) {
    SCOPED_TRACE(mode);
    try {
      cuda_check_attention(s, mode, k.data(), k.data(), 1, 1, q.data(), 1, out.data(), CudaGemm::f32);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not available on the CUDA backend"), std::string::npos) << e.what();
    }
  }
}

// Records of a GPU cache dump that differ from the reference codec
// (kv_quantize_keys / kv_quantize_values) applied to the same tokens of k / v
// ([token][n_kv][d]) rounded to f16 as the window holds them — rotated by
// hadamard_rotate first for ":rot", as RotatedKvCache stores them.
struct RecordDiff {
  int keys = 0, values = 0, first = -1;  // first: index of the first differing record
};
static RecordDiff diff_records(const CudaKvDump& dump, const std::vector<float>& k, const std::vector<float>& v,
                               const KvShape& s, const KvMode& mode) {
  const int d = s.head_dim, kvd = s.kv_dim(), G = mode.group;
  RecordDiff r;
  std::vector<float> tile(static_cast<size_t>(G) * d);
  std::vector<uint8_t> rec(std::max(dump.k_rec, dump.v_rec));
  for (int h = 0; h < s.n_kv_heads; ++h)
    for (int grp = 0; grp < dump.n_groups; ++grp)
      for (int which = 0; which < 2; ++which) {
        const auto& src = which == 0 ? k : v;
        const int tok0 = dump.n_sinks + grp * G;
        for (int t = 0; t < G; ++t) {
          float* row = &tile[static_cast<size_t>(t) * d];
          for (int ch = 0; ch < d; ++ch) row[ch] = src[static_cast<size_t>(tok0 + t) * kvd + h * d + ch];
          if (mode.rotate) hadamard_rotate(row, d);
          for (int ch = 0; ch < d; ++ch) row[ch] = f16_to_f32(f32_to_f16(row[ch]));
        }
        const size_t at = static_cast<size_t>(h) * dump.max_groups + grp;
        bool differs;
        if (which == 0) {
          kv_quantize_keys(tile.data(), d, G, d, mode.k_bits, mode.symmetric, rec.data());
          differs = std::memcmp(rec.data(), &dump.k_codes[at * dump.k_rec], dump.k_rec) != 0;
          r.keys += differs;
        } else {
          kv_quantize_values(tile.data(), d, G, d, mode.v_bits, mode.symmetric, rec.data());
          differs = std::memcmp(rec.data(), &dump.v_codes[at * dump.v_rec], dump.v_rec) != 0;
          r.values += differs;
        }
        if (differs && r.first < 0) r.first = static_cast<int>(at);
      }
  return r;
}

// The quantized GPU cache against the CPU QuantKvCache fed the same tokens
// in the same append chunks: (1) every stored key/value group record equal,
// byte for byte, to kv_quantize_keys/values of the f16-rounded tokens (the
// reference codec: the CPU cache quantizes its f16 window the same way), and
// the sink/group/window counts equal; (2) decode attention from the codes
// within float rounding of the CPU attend (both read the same codes; exp and
// summation order differ: ~1e-7 relative, so nmse 1e-9); (3) for some cases
// prefill rows (dequantized to f16 scratch on the GPU: one more f16 rounding
// of each element, ~2^-12 relative, so nmse 1e-6).
TEST(CudaQuant, DecodeFromCodesMatchesCpuCache) {
  LONGKV_REQUIRE_CUDA();
  struct Case {
    const char* mode;
    int n_heads, n_kv, d, n_ctx, chunk, n_q_prefill;
  };
  const Case cases[] = {
      {"k8v8", 32, 8, 128, 1000, 1000, 0},     {"k4v4", 32, 8, 128, 4099, 1000, 7},
      {"k2v2", 32, 8, 128, 4099, 4099, 0},     {"k2v2", 32, 8, 128, 1000, 1, 0},
      {"k4v2", 28, 4, 128, 777, 100, 5},       {"k8v4:sym", 8, 2, 64, 1001, 13, 3},
      {"k2v8", 8, 2, 64, 4099, 512, 0},        {"k4v4:r0:s0", 32, 8, 128, 1024, 512, 0},
      {"k4v4:r40:s3", 32, 8, 128, 1001, 37, 9}, {"k2v2", 32, 8, 128, 150, 150, 0},
      {"k4v4", 32, 8, 128, 3, 1, 0},
      // 8 query heads per KV head (two n8 tiles on the tensor-core path),
      // d64 and d128; many splits of several groups each.
      {"k2v4", 16, 2, 64, 2000, 700, 0},       {"k4v8", 64, 8, 128, 3000, 3000, 0},
      {"k2v2", 32, 8, 128, 20011, 5000, 0},
      // The formats only the generic kernel (kv_quant_decode_any.cu) reads:
      // 3- and 1-bit codes (two planes / 32 codes a word), G = 64 and 128
      // (several 32-token blocks per group, value scales per channel group),
      // mixed widths, symmetric, token-by-token appends.
      {"k3v3", 32, 8, 128, 4099, 1000, 5},     {"k1v1", 8, 2, 64, 1001, 13, 0},
      {"k4v3:g64", 32, 8, 128, 3001, 512, 3},  {"k2v1:g128", 32, 8, 128, 2000, 2000, 0},
      {"k3v2:g64:sym", 8, 2, 64, 777, 100, 0}, {"k8v3:g128:r0:s0", 28, 4, 128, 1500, 1, 0},
      {"k1v2:g64", 16, 2, 64, 2000, 700, 0},   {"k2v2:g64", 32, 8, 128, 20011, 5000, 0},
  };
  ThreadPool pool(2);
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.mode) + " heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv) + " d " +
                 std::to_string(c.d) + " ctx " + std::to_string(c.n_ctx) + " chunk " + std::to_string(c.chunk));
    const KvShape s = test::kv_shape(c.n_heads, c.n_kv, c.d, c.n_ctx + 5);
    const KvMode mode = parse_kv_mode(c.mode);
    const int kvd = s.kv_dim(), d = c.d, G = mode.group;
    const size_t kv = static_cast<size_t>(c.n_ctx) * kvd;
    auto k = test::random_floats(kv, 31, -2, 2), v = test::random_floats(kv, 32);
    // Channel-dependent ranges, as real keys have.
    for (size_t i = 0; i < kv; ++i) k[i] *= 1.0f + static_cast<float>(i % d) / 16.0f;
    for (int n_q : {1, c.n_q_prefill}) {
      if (n_q == 0) continue;
      const auto q = test::random_floats(static_cast<size_t>(n_q) * s.q_dim(), 33 + n_q, -1, 1);
      std::vector<float> out(q.size()), ref(q.size());
      QuantKvCache cpu(mode, s, pool);
      for (int p = 0; p < c.n_ctx; p += c.chunk)
        cpu.append(&k[static_cast<size_t>(p) * kvd], &v[static_cast<size_t>(p) * kvd], std::min(c.chunk, c.n_ctx - p));
      cpu.attend(q.data(), n_q, ref.data(), nullptr);
      CudaKvDump dump;
      // Decode: the tensor-core kernels (milestone 7's v2 capped for 3 and 4
      // blocks per SM; milestone 4's, the default) and the format-generic FMA kernel
      // (kv_quant_decode_any.cu, milestone 3's loop; the only one for 3/1 bits and G != 32).
      // All read the same codes, so all stay within float rounding; the
      // tensor-core variants differ only in load layout and must agree
      // exactly with each other.
      struct Kern {
        bool mma;
        int v2;
        bool v3;
        const char* name;
        bool pdl = false;  // CudaTuning::decode_pdl
        int stages = 0;    // CudaTuning::quant_decode_stages
      };
      const Kern kerns[] = {{true, 3, false, "tensor cores v2/3"},   {true, 4, false, "tensor cores v2/4"},
                            {true, 0, false, "tensor cores m4"},     {false, 0, false, "FMA"},
                            {true, 0, true, "tensor cores v3 (m9)"}, {true, 0, true, "v3, PDL", true},
                            {true, 0, true, "v3, 2 stages, PDL", true, 2}};
      constexpr int kKerns = sizeof(kerns) / sizeof(kerns[0]);
      double errs[kKerns];
      std::vector<float> out_first;
      for (int ki = 0; ki < kKerns; ++ki) {
        const Kern& kn = kerns[ki];
        errs[ki] = -1;
        if (n_q > 1 && ki > 0) continue;
        cuda_tuning().quant_decode_mma = kn.mma;
        cuda_tuning().quant_decode_v2 = kn.v2;
        cuda_tuning().quant_decode_v3 = kn.v3;
        cuda_tuning().decode_pdl = kn.pdl;
        cuda_tuning().quant_decode_stages = kn.stages;
        cuda_check_attention(s, c.mode, k.data(), v.data(), c.n_ctx, c.chunk, q.data(), n_q, out.data(),
                             CudaGemm::f32, ki == 0 ? &dump : nullptr);
        cuda_tuning() = CudaTuning{};
        const double e = test::nmse(out.data(), ref.data(), ref.size());
        // Float summation error grows with the context (both kernels measured
        // 6-8e-9 at 20011 tokens): 1e-9 up to 4096 tokens, quadratic beyond.
        // v3 rounds each value weight p s 2^(10 - pos) to f16 once (relative
        // 2^-11 per p s code term): measured 1.7e-9 .. 2.5e-8 on H100
        // (milestone 9), so 1e-7 (the bar is 1e-6).
        const double tol1 = kn.v3 ? 1e-7 : 1e-9 * std::max(1.0, std::pow(c.n_ctx / 4096.0, 2));
        EXPECT_LT(e, n_q == 1 ? tol1 : 1e-6) << "n_q " << n_q << " " << kn.name << " kernel";
        errs[ki] = e;
        // Same products per split; only the split count (from each
        // kernel's resident warps) may differ, i.e. the merge's rounding.
        if (ki == 0) {
          out_first = out;
        } else if (kn.mma && !kn.v3) {
          EXPECT_LT(test::nmse(out.data(), out_first.data(), out.size()), 1e-11)
              << kn.name << " differs from " << kerns[0].name;
        }
      }
      const double err = errs[0];
      ASSERT_EQ(dump.n_groups * G, cpu.n_quantized());
      ASSERT_EQ(dump.n_sinks, cpu.n_sinks());
      ASSERT_EQ(dump.n_window, cpu.n_window());
      RecordDiff bad;
      if (n_q == 1) {
        bad = diff_records(dump, k, v, s, mode);
        EXPECT_EQ(bad.keys, 0) << "first differing record " << bad.first;
        EXPECT_EQ(bad.values, 0) << "first differing record " << bad.first;
      }
      std::printf("quant %-12s h%d/%d d%d ctx %5d chunk %4d n_q %d: %d groups x %d heads, records differing K %d V %d, "
                  "nmse vs CPU %.3g (v2/4 %.3g, m4 %.3g, generic FMA %.3g, v3 %.3g, v3+PDL %.3g, v3 2 stages %.3g)\n",
                  c.mode, c.n_heads, c.n_kv, c.d, c.n_ctx, c.chunk, n_q, dump.n_groups, c.n_kv, bad.keys, bad.values, err,
                  errs[1], errs[2], errs[3], errs[4], errs[5], errs[6]);
    }
  }
}

// ":rot" on the GPU against the CPU's RotatedKvCache: the stored records
// byte-equal to kv_quantize of the CPU-rotated (hadamard_rotate) f16 tiles —
// the GPU butterfly must round exactly like the CPU's, or 2-bit codes flip —
// and decode / prefill outputs (rotated back) within float rounding.
TEST(CudaQuant, RotatedMatchesCpuCache) {
  LONGKV_REQUIRE_CUDA();
  struct Case {
    const char* mode;
    int n_heads, n_kv, d, n_ctx, chunk, n_q_prefill;
  };
  const Case cases[] = {{"k2v2:rot", 32, 8, 128, 3001, 1000, 4},
                        {"k4v2:rot:g64", 8, 2, 64, 1001, 1, 0},
                        {"k3v3:rot:r0:s0", 28, 4, 128, 700, 64, 3}};
  ThreadPool pool(2);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.mode);
    const KvShape s = test::kv_shape(c.n_heads, c.n_kv, c.d, c.n_ctx + 5);
    const KvMode mode = parse_kv_mode(c.mode);
    const int kvd = s.kv_dim(), d = c.d;
    const size_t kv = static_cast<size_t>(c.n_ctx) * kvd;
    auto k = test::random_floats(kv, 41, -2, 2), v = test::random_floats(kv, 42);
    for (size_t i = 0; i < kv; ++i) k[i] *= 1.0f + static_cast<float>(i % d) / 16.0f;
    for (int n_q : {1, c.n_q_prefill}) {
      if (n_q == 0) continue;
      const auto q = test::random_floats(static_cast<size_t>(n_q) * s.q_dim(), 43 + n_q, -1, 1);
      std::vector<float> out(q.size()), ref(q.size());
      auto cpu = make_kv_cache(c.mode, s, pool);
      for (int p = 0; p < c.n_ctx; p += c.chunk)
        cpu->append(&k[static_cast<size_t>(p) * kvd], &v[static_cast<size_t>(p) * kvd], std::min(c.chunk, c.n_ctx - p));
      cpu->attend(q.data(), n_q, ref.data(), nullptr);
      CudaKvDump dump;
      cuda_check_attention(s, c.mode, k.data(), v.data(), c.n_ctx, c.chunk, q.data(), n_q, out.data(), CudaGemm::f32,
                           n_q == 1 ? &dump : nullptr);
      const double err = test::nmse(out.data(), ref.data(), ref.size());
      EXPECT_LT(err, n_q == 1 ? 1e-7 : 1e-6) << "n_q " << n_q;
      int bad = 0;
      if (n_q == 1) {
        ASSERT_GT(dump.n_groups, 0);
        const RecordDiff r = diff_records(dump, k, v, s, mode);  // against the CPU-rotated codec
        bad = r.keys + r.values;
        EXPECT_EQ(bad, 0) << "first differing record " << r.first;
      }
      std::printf("rot %-16s h%d/%d d%d ctx %d chunk %d n_q %d: %d groups, records differing %d, nmse vs CPU %.3g\n",
                  c.mode, c.n_heads, c.n_kv, c.d, c.n_ctx, c.chunk, n_q, dump.n_groups, bad, err);
    }
  }
}

// cut=attend (the default) on the GPU against the CPU cache, streamed as a
// model streams a prompt: every chunk appended, then its own rows attended.
// Prefill chunks and single decode steps across group boundaries (one
// append that no attend follows is in cuda_check_attention's cases). The
// rows of each chunk read its tokens exactly on both sides, so outputs
// within the prefill's f16 staging (nmse 1e-6, as DecodeFromCodesMatchesCpuCache)
// and every record equal to the reference codec, with the same counts. The
// same run with cut=append must differ from cut=attend (the test could
// not tell them apart otherwise) and match the CPU's cut=append.
TEST(CudaQuant, CutAfterAttentionMatchesCpuCache) {
  LONGKV_REQUIRE_CUDA();
  std::vector<int> chunks = {100, 37, 300, 64};
  chunks.insert(chunks.end(), 70, 1);
  chunks.push_back(50);
  int total = 0;
  for (int c : chunks) total += c;
  ThreadPool pool(2);
  const KvShape s = test::kv_shape(32, 8, 128, total + 5);
  const int kvd = s.kv_dim(), d = s.head_dim;
  auto k = test::random_floats(static_cast<size_t>(total) * kvd, 51, -2, 2), v = test::random_floats(k.size(), 52);
  for (size_t i = 0; i < k.size(); ++i) k[i] *= 1.0f + static_cast<float>(i % d) / 16.0f;
  const auto q = test::random_floats(static_cast<size_t>(total) * s.q_dim(), 53, -1, 1);
  for (const char* base : {"k2v2:r32", "k4v2:g64:r16:s1", "k2v2:rot:r32"}) {
    std::vector<float> attend_out;
    for (const char* cut : {"", ":cut=append"}) {
      const std::string mode = std::string(base) + cut;
      SCOPED_TRACE(mode);
      auto cpu = make_kv_cache(mode, s, pool);
      std::vector<float> ref(q.size()), out(q.size());
      int p = 0;
      for (int n : chunks) {
        cpu->append(&k[static_cast<size_t>(p) * kvd], &v[static_cast<size_t>(p) * kvd], n);
        cpu->attend(&q[static_cast<size_t>(p) * s.q_dim()], n, &ref[static_cast<size_t>(p) * s.q_dim()], nullptr);
        p += n;
      }
      CudaKvDump dump;
      cuda_check_chunked_attention(s, mode, k.data(), v.data(), q.data(), chunks, out.data(), &dump);
      const double err = test::nmse(out.data(), ref.data(), ref.size());
      EXPECT_LT(err, 1e-6);
      const KvMode m = parse_kv_mode(mode);
      ASSERT_GT(dump.n_groups, 0);
      EXPECT_EQ(dump.n_groups * m.group, total - dump.n_sinks - dump.n_window);
      EXPECT_LT(dump.n_window, m.residual + m.group);
      const RecordDiff r = diff_records(dump, k, v, s, m);
      EXPECT_EQ(r.keys + r.values, 0) << "first differing record " << r.first;
      double vs = -1;
      if (*cut == 0) {
        attend_out = out;
      } else {
        vs = test::nmse(out.data(), attend_out.data(), out.size());
        EXPECT_GT(vs, 1e-4) << "cut=append and cut=attend gave the same outputs";
      }
      std::printf("chunked %-22s %d tokens in %zu appends: %d groups, window %d, records differing %d, nmse vs CPU "
                  "%.3g, vs cut=attend %.3g\n",
                  mode.c_str(), total, chunks.size(), dump.n_groups, dump.n_window, r.keys + r.values, err, vs);
    }
  }
}

// Not a pass/fail speed test: one layer's decode attention (llama3-8b head
// shape) for f16 and the quantized caches, for docs/cuda-notes.md.
TEST(CudaQuant, DecodeAttentionSpeedReport) {
  LONGKV_REQUIRE_CUDA();
  KvShape s;
  s.n_heads = 32;
  s.n_kv_heads = 8;
  s.head_dim = 128;
  struct Variant {
    const char* mode;
    bool mma;
    int v2;  // CudaTuning::quant_decode_v2 (0: milestone 4's tensor-core kernel)
    int steps;
    bool long_only;  // the previous kernels, for comparison, at the longest context only
    bool v3 = false;   // CudaTuning::quant_decode_v3 (milestone 9)
    bool pdl = false;  // CudaTuning::decode_pdl
    int stages = 0;    // CudaTuning::quant_decode_stages (v3)
  };
  const Variant variants[] = {
      {"f16", true, 0, 8, false},          {"f16", true, 0, 8, false, false, true},
      {"k8v8", true, 0, 8, false},         {"k8v8", true, 0, 8, false, true, true},
      {"k4v4", true, 0, 8, false},         {"k4v4", true, 0, 8, false, true},
      {"k4v4", true, 0, 8, false, true, true}, {"k4v4", true, 0, 8, false, true, true, 2},
      {"k2v2", true, 0, 8, false},         {"k2v2", true, 0, 8, false, false, true},
      {"k2v2", true, 0, 8, false, true},   {"k2v2", true, 0, 8, false, true, true},
      {"k2v2", true, 0, 8, false, true, true, 2}, {"k2v2", true, 3, 8, true},
      {"k2v2", false, 0, 8, true}};
  for (int ctx : {4096, 32768, 131072}) {
    double f16_us = 0;
    for (const Variant& vr : variants) {
      if (vr.long_only && ctx != 131072) continue;
      cuda_tuning().quant_decode_mma = vr.mma;
      cuda_tuning().quant_decode_v2 = vr.v2;
      cuda_tuning().quant_decode_v3 = vr.v3;
      cuda_tuning().decode_pdl = vr.pdl;
      cuda_tuning().quant_decode_stages = vr.stages;
      cuda_tuning().dense_decode_steps = vr.steps;
      const CudaAttnSpeed sp = cuda_bench_decode_attention(s, vr.mode, ctx);
      cuda_tuning() = CudaTuning{};
      EXPECT_GT(sp.us, 0);
      if (std::string(vr.mode) == "f16" && vr.steps == 8 && !vr.pdl) f16_us = sp.us;
      const std::string kernel = (std::string(vr.mode) == "f16" ? "steps " + std::to_string(vr.steps)
                                  : !vr.mma                      ? std::string("FMA (m3)")
                                  : vr.v3                        ? std::string("v3 (m9)")
                                  : vr.v2                        ? "v2/" + std::to_string(vr.v2)
                                                                 : std::string("mma (m4)")) +
                                 (vr.pdl ? " PDL" : "") + (vr.stages ? " s" + std::to_string(vr.stages) : "");
      std::printf("decode attention ctx %6d %-5s %-15s: %8.1f us/layer  KV %7.1f MB  %6.0f GB/s  (%.2fx f16 speed, "
                  "%d caches rotated)\n",
                  ctx, vr.mode, kernel.c_str(), sp.us, sp.kv_bytes / 1e6, sp.kv_bytes / (sp.us * 1e3), f16_us / sp.us,
                  sp.caches);
    }
  }
}

// The evaluation model on the GPU: top-5 logits at the last 8 positions of
// each reference prompt within 1e-3 relative of the reference (f32 GEMM
// prefill), the f16 GEMM within 2e-2, and the greedy continuation through
// the GPU decode path equal to the CPU engine's.
TEST(Cuda, EvalModelMatchesReferenceLogits) {
  LONGKV_REQUIRE_CUDA();
  constexpr const char* kModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
  constexpr const char* kRef = "models/evalmodel/reference.json";
  LONGKV_REQUIRE_SHARED(kModel);
  LONGKV_REQUIRE_SHARED(kRef);
  LoadedModel lm = load_model(test::shared_path(kModel));
  SpmTokenizer tok(*lm.vocab);
  const auto ref = nlohmann::json::parse(test::read_file(test::shared_path(kRef)));
  const int nv = lm.weights.cfg.n_vocab;
  const auto& results = ref["variants"]["q8_0_dequant_fp32"]["results"];
  for (CudaGemm g : {CudaGemm::f32, CudaGemm::f16}) {
    CudaModelOptions o;
    o.max_tokens = 1024;
    o.gemm = g;
    auto model = CudaModel::create(lm.weights, o);
    for (size_t p = 0; p < ref["prompts"].size(); ++p) {
      SCOPED_TRACE(std::string("gemm ") + cuda_gemm_name(g) + " prompt " + std::to_string(p));
      const auto ids = tok.encode(ref["prompts"][p].get<std::string>(), true);
      const int n = static_cast<int>(ids.size());
      model->clear();
      std::vector<float> logits(static_cast<size_t>(n) * nv);
      model->forward(ids.data(), n, 0, logits.data(), true);
      double worst = 0;
      for (const auto& pos : results[p]["last8_top5"]) {
        const int row = pos["pos"].get<int>();
        const auto top_ids = pos["top5_ids"].get<std::vector<int>>();
        const auto top_logits = pos["top5_logits"].get<std::vector<double>>();
        const float* lg = &logits[static_cast<size_t>(row) * nv];
        for (size_t k = 0; k < top_ids.size(); ++k)
          worst = std::max(worst, std::fabs(lg[top_ids[k]] - top_logits[k]) / std::fabs(top_logits[k]));
      }
      EXPECT_LE(worst, g == CudaGemm::f32 ? 1e-3 : 2e-2);
      std::printf("evalmodel gemm %s prompt %zu: worst top-5 relative logit error %.3g\n", cuda_gemm_name(g), p,
                  worst);
      if (g == CudaGemm::f32) {
        const auto want = results[p]["greedy32_ids"].get<std::vector<int32_t>>();
        std::vector<int32_t> got;
        int32_t next = argmax(&logits[static_cast<size_t>(n - 1) * nv], nv);
        std::vector<float> step(nv);
        for (size_t i = 0; i < want.size(); ++i) {
          got.push_back(next);
          if (i + 1 == want.size()) break;
          model->forward(&next, 1, n + static_cast<int>(i), step.data(), false);
          next = argmax(step.data(), nv);
        }
        EXPECT_EQ(got, want);
      }
    }
  }
}

// Decode steps on the GPU track the CPU engine's logits step by step.
// Decodes `steps` fixed tokens one by one on the CPU engine and a GPU model
// of the same weights (f16 KV, f32 prefill GEMM, current tuning); returns
// the worst logits nmse and how many steps agree on the argmax.
std::pair<double, int> decode_vs_cpu(const ModelWeights& w, int steps, const char* kv_mode = "f16") {
  const int nv = w.cfg.n_vocab;
  ThreadPool pool(2);
  LlamaModel cpu(w, pool);
  auto caches = cpu.make_caches(kv_mode, std::max(64, steps));
  CudaModelOptions o;
  o.max_tokens = std::max(64, steps);
  o.kv_mode = kv_mode;
  o.gemm = CudaGemm::f32;
  auto gpu = CudaModel::create(w, o);
  std::vector<float> a(nv), b(nv);
  double worst = 0;
  int top1 = 0;
  for (int i = 0; i < steps; ++i) {
    const int32_t t = static_cast<int32_t>((i * 7919 + 13) % nv);
    cpu.forward(&t, 1, i, caches, a.data(), false);
    gpu->forward(&t, 1, i, b.data(), false);
    worst = std::max(worst, test::nmse(b.data(), a.data(), a.size()));
    top1 += std::max_element(a.begin(), a.end()) - a.begin() == std::max_element(b.begin(), b.end()) - b.begin();
  }
  return {worst, top1};
}

TEST(Cuda, EvalModelDecodeMatchesCpuEngine) {
  LONGKV_REQUIRE_CUDA();
  constexpr const char* kModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
  LONGKV_REQUIRE_SHARED(kModel);
  LoadedModel lm = load_model(test::shared_path(kModel));
  const double worst = decode_vs_cpu(lm.weights, 40).first;
  // Same f16 rounding of K/V on both sides, but a 1e-7 difference before
  // rounding flips some f16 values by one ulp (~5e-4), which eight layers
  // carry into the logits; the CPU's own f16-vs-f32 check allows 1e-5.
  EXPECT_LT(worst, 1e-5);
  std::printf("evalmodel decode 40 steps GPU vs CPU (f16 KV): worst nmse %.3g\n", worst);
}

// The rotated cache's fused step (milestone 18) in the model, past its first
// group (step 164 at r128:s4), against the CPU engine with the same mode.
// Both store the same codes for the same inputs, but the inputs differ by
// float rounding, and a 4-bit code near a boundary can flip; a broken
// rotation (q or an output not rotated) gives nmse ~1. Measured on H200
// (milestone 18): worst nmse 1.3e-4 over the 200 steps, top-1 200 of 200.
TEST(Cuda, EvalModelRotatedDecodeMatchesCpuEngine) {
  LONGKV_REQUIRE_CUDA();
  constexpr const char* kModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
  LONGKV_REQUIRE_SHARED(kModel);
  LoadedModel lm = load_model(test::shared_path(kModel));
  constexpr int kSteps = 200;
  const auto [worst, top1] = decode_vs_cpu(lm.weights, kSteps, "k4v4:rot");
  EXPECT_LT(worst, 1e-3);
  EXPECT_GE(top1, kSteps - 4);
  std::printf("evalmodel decode %d steps GPU vs CPU (k4v4:rot KV): worst nmse %.3g, top-1 %d of %d\n", kSteps, worst,
              top1, kSteps);
}

// The evaluation model quantized to Q4_0 (its Q8_0 weights requantized),
// decoded on the GPU against the CPU engine: with exact f32 products
// (gemv_i8x off) as close as the Q8_0 model above; with the Q4_0 GEMV's int8
// activations (the default) each GEMV output carries ~0.4% error on random
// data (nmse ~1.6e-5 in MatmulMatchesReferenceEveryFormat), more where a
// block of 32 activations holds an outlier, and eight layers carry it into
// the logits. Measured on H200 (docs/cuda-notes.md, milestone 13): worst
// nmse 8.5e-3 over the 40 steps, top-1 40 of 40 (exact products: 1.4e-7);
// the limits leave room for other cards' summation orders, not for a broken
// packing (nmse ~1).
TEST(Cuda, EvalModelQ4_0DecodeWithInt8Activations) {
  LONGKV_REQUIRE_CUDA();
  constexpr const char* kModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
  LONGKV_REQUIRE_SHARED(kModel);
  const std::string q4 = test::temp_dir() + "/evalmodel-q4_0.gguf";
  {
    LoadedModel src = load_model(test::shared_path(kModel));
    ASSERT_TRUE(src.vocab.has_value());
    save_model_gguf(src.weights, *src.vocab, q4, WeightType::Q4_0);
  }
  LoadedModel lm = load_model(q4);
  ASSERT_EQ(lm.weights.layers[0].wq.type, WeightType::Q4_0);
  const int steps = 40;
  for (bool i8x : {false, true}) {
    cuda_tuning().gemv_i8x = i8x;
    const auto [worst, top1] = decode_vs_cpu(lm.weights, steps);
    cuda_tuning() = CudaTuning{};
    EXPECT_LT(worst, i8x ? 2e-2 : 1e-5) << "i8x " << i8x;
    if (i8x) {
      EXPECT_GE(top1, steps * 9 / 10);
    } else {
      EXPECT_GE(top1, steps - 1);  // a near tie may fall either way
    }
    std::printf("evalmodel Q4_0 decode %d steps GPU vs CPU (f16 KV), %s: worst nmse %.3g, top-1 agrees %d of %d\n",
                steps, i8x ? "int8 activations" : "f32 products", worst, top1, steps);
  }
}

// A decode step replayed as a CUDA graph gives the logits of the same step
// launched kernel by kernel: same kernels and arguments, so equal up to
// nothing (tolerance 1e-12 for safety), over 60 steps after a 20-token
// prefill, with an f16 cache and a quantized one whose groups complete at
// tokens 33 and 65 (a launch topology change inside the run).
TEST(Cuda, GraphReplayMatchesDirectDecode) {
  LONGKV_REQUIRE_CUDA();
  constexpr const char* kModel = "models/evalmodel/evalmodel-llama37m-q8_0.gguf";
  LONGKV_REQUIRE_SHARED(kModel);
  LoadedModel lm = load_model(test::shared_path(kModel));
  const int nv = lm.weights.cfg.n_vocab;
  // f16 replays one executable and crosses the split bucket at 256 tokens
  // (one more capture, the same executable updated). The quantized modes
  // replay their steady steps: k4v4:r0:s1 (1 sink, window 19 after the
  // prompt) completes a group at steps 12, 44 and 76, which run directly, and
  // each following step is captured once for the new group count; k2v2 with
  // the default window (r128:s4, window 16 after the prompt) completes its
  // first group at step 143; k4v4:rot the same through the rotated cache's
  // fused step (its scratch must keep its addresses across replays). Then a second prompt of 300 tokens, which moves
  // a quantized cache's fp16 buffers (cut=attend keeps the chunk fp16 until
  // its rows have attended; the buffers grow past the decode steps' size),
  // and 40 more steps: the replays after it must read the new buffers.
  for (const char* mode : {"f16", "k4v4:r0:s1", "k2v2", "k4v4:rot"}) {
    SCOPED_TRACE(mode);
    const bool dense = std::strcmp(mode, "f16") == 0, small = std::strcmp(mode, "k4v4:r0:s1") == 0;
    const int steps = dense ? 300 : small ? 100 : 150;
    CudaModelOptions o;
    constexpr int kMore = 300, kSteps2 = 40;
    o.max_tokens = 20 + steps + kMore + kSteps2 + 1;
    o.kv_mode = mode;
    o.gemm = CudaGemm::f32;
    o.graphs = false;
    auto direct = CudaModel::create(lm.weights, o);
    o.graphs = true;
    auto graphed = CudaModel::create(lm.weights, o);
    if (!graphed->graphs()) GTEST_SKIP() << "LONGKV_CUDA_GRAPHS=0 in the environment";
    std::vector<int32_t> prompt(20);
    for (int i = 0; i < 20; ++i) prompt[i] = static_cast<int32_t>((i * 131 + 7) % nv);
    std::vector<float> a(nv), b(nv);
    direct->forward(prompt.data(), 20, 0, a.data(), false);
    graphed->forward(prompt.data(), 20, 0, b.data(), false);
    double worst = 0;
    for (int i = 0; i < steps; ++i) {
      const int32_t t = static_cast<int32_t>((i * 7919 + 13) % nv);
      direct->forward(&t, 1, 20 + i, a.data(), false);
      graphed->forward(&t, 1, 20 + i, b.data(), false);
      worst = std::max(worst, test::nmse(b.data(), a.data(), a.size()));
    }
    EXPECT_LT(worst, 1e-12);
    if (dense) {
      EXPECT_EQ(graphed->graph_captures(), 2);
      EXPECT_EQ(graphed->graph_replays(), steps - 1 - 2);  // the first step runs directly
    } else if (small) {
      EXPECT_EQ(graphed->graph_captures(), 4);
      EXPECT_EQ(graphed->graph_replays(), steps - 1 - 3 - 4);
    } else {
      EXPECT_EQ(graphed->graph_captures(), 2);
      EXPECT_EQ(graphed->graph_replays(), steps - 1 - 1 - 2);
    }
    std::printf("graph replay vs direct decode, %s, %d steps: worst nmse %.3g, %d captures, %d replays\n", mode, steps,
                worst, graphed->graph_captures(), graphed->graph_replays());
    std::vector<int32_t> more(kMore);
    for (int i = 0; i < kMore; ++i) more[i] = static_cast<int32_t>((i * 257 + 3) % nv);
    int pos = 20 + steps;
    direct->forward(more.data(), kMore, pos, a.data(), false);
    graphed->forward(more.data(), kMore, pos, b.data(), false);
    pos += kMore;
    const int replays = graphed->graph_replays();
    double worst2 = test::nmse(b.data(), a.data(), a.size());
    for (int i = 0; i < kSteps2; ++i, ++pos) {
      const int32_t t = static_cast<int32_t>((i * 104729 + 5) % nv);
      direct->forward(&t, 1, pos, a.data(), false);
      graphed->forward(&t, 1, pos, b.data(), false);
      worst2 = std::max(worst2, test::nmse(b.data(), a.data(), a.size()));
    }
    EXPECT_LT(worst2, 1e-12);
    EXPECT_GT(graphed->graph_replays(), replays + kSteps2 / 2);
    std::printf("  then %d prompt tokens and %d steps: worst nmse %.3g, %d replays\n", kMore, kSteps2, worst2,
                graphed->graph_replays() - replays);
  }
}

// Not a pass/fail speed test: prints what one GEMV streams (8B shapes) and
// the host cost of a launch, for docs/cuda-notes.md.
TEST(Cuda, GemvSpeedReport) {
  LONGKV_REQUIRE_CUDA();
  for (WeightType t : {WeightType::Q4_0, WeightType::Q8_0, WeightType::Q4_K, WeightType::Q6_K, WeightType::F16,
                       WeightType::BF16}) {
    for (auto [rows, cols] : {std::pair{4096, 4096}, std::pair{6144, 4096}, std::pair{1024, 4096},
                             std::pair{14336, 4096}, std::pair{28672, 4096}, std::pair{4096, 14336},
                             std::pair{128256, 4096}}) {
      for (bool rows_kernel : {true, false}) {
        if (!rows_kernel && t != WeightType::Q4_0) continue;  // the slab kernel for reference, Q4_0 only
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
  };
  for (const auto& c : cases) {
    const auto data = random_weight(c.type, c.rows, c.cols, 7 + c.rows);
    WeightView w{c.type, c.rows, c.cols, data.data()};
    const auto x = test::random_floats(c.cols, 31, -2, 2), norm = test::random_floats(c.cols, 32),
               up = test::random_floats(c.cols, 33);
    const float eps = 1e-5f;
    for (int act = 0; act < 3; ++act) {
      const std::vector<float> xa = host_act(act, x, norm, up, eps);
      std::vector<float> ref(c.rows);
      for (int v = 0; v < 16; ++v) {
        const bool pipe = v & 1, pdl = v & 2, i8x = !(v & 4), pre = v & 8;
        if (!i8x && c.type != WeightType::Q4_0) continue;  // the setting only changes Q4_0
        if (pre && !(i8x && c.type == WeightType::Q4_0)) continue;  // likewise (int8 Q4_0 only)
        for (int r = 0; r < c.rows; ++r) ref[r] = gemv_ref(w, r, xa.data(), i8x);
        std::vector<float> y(c.rows, std::nanf(""));
        cuda_tuning().gemv_rows = false;
        cuda_tuning().gemv_pipe = pipe;
        cuda_tuning().pdl = pdl;
        cuda_tuning().gemv_i8x = i8x;
        cuda_tuning().gemv_prefetch = pre;
        cuda_check_gemv_act(w, act, x.data(), norm.data(), eps, up.data(), y.data());
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
      {WeightType::Q4_K, 512, 2048},   // 4-row batches, milestone 2's order
      {WeightType::Q6_K, 256, 768},
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
    const bool i8x = c.type == WeightType::Q4_0 && cuda_tuning().gemv_i8x;
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
      {WeightType::Q4_K, 1536, 1024, 128, 128, 10},  // slab kernel in milestone 2's order
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

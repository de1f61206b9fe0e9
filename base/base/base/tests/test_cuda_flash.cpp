// The FlashAttention prefill kernel (src/backend/cuda/flash_prefill.cu)
// against the double-precision reference and the cuBLAS path it replaces.
// Without a GPU (or in a build without CUDA) each test reports SKIPPED.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "core/fp16.h"
#include "kv/dense_attention.h"
#include "test_cuda_util.h"
#include "test_util.h"
#ifdef LONGKV_HAVE_CUDA
#include "backend/cuda/flash_prefill.h"
#endif

namespace longkv {
namespace {

// Sizes chosen against the kernel's tiles (128 packed query rows per block,
// 64 keys per tile): query rows and contexts that are not multiples of
// either, p0 = 0 (the whole context is the chunk) and p0 > 0, one query row
// short of a tile, g = 1, 4 and 8 (rows of a block spanning 128 / g queries),
// head_dim 64 and 128, tiny contexts. Tolerance: the kernel rounds the
// (scaled) queries and the probabilities to f16, ~2^-12 relative rms error
// per element, so nmse ~1e-7 against the reference on f16-rounded keys and
// values; 1e-5 (as for the cuBLAS f16 path) leaves 100x margin while a wrong
// row, mask or tile gives nmse of order 1e-2 .. 1.
TEST(CudaFlash, PrefillMatchesReference) {
  LONGKV_REQUIRE_CUDA();
  struct Case {
    int n_heads, n_kv, d, n_ctx, n_q, chunk;
  };
  const Case cases[] = {
      {8, 8, 64, 100, 100, 100},     // g 1, p0 = 0, one partial block
      {8, 8, 128, 1000, 333, 500},   // g 1, p0 > 0
      {32, 8, 128, 1100, 129, 550},  // g 4: 516 rows, last block partial
      {16, 4, 64, 300, 300, 100},    // g 4, p0 = 0
      {32, 4, 128, 777, 37, 777},    // g 8
      {8, 1, 64, 4099, 61, 2000},    // g 8, long context, d 64
      {8, 2, 128, 192, 64, 192},     // g 4, every size a multiple of the tiles
      {8, 2, 128, 191, 63, 191},     // ... and one short
      {4, 1, 128, 2, 2, 2},          // two tokens
      {8, 1, 128, 130, 130, 65},     // g 8, p0 = 0, d 128: 1040 rows
  };
  for (const auto& c : cases) {
    const std::string name = "heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv) + " d " +
                             std::to_string(c.d) + " ctx " + std::to_string(c.n_ctx) + " n_q " +
                             std::to_string(c.n_q);
    SCOPED_TRACE(name);
    const KvShape s = test::kv_shape(c.n_heads, c.n_kv, c.d, c.n_ctx + 5);
    const size_t kv = static_cast<size_t>(c.n_ctx) * s.kv_dim();
    const uint32_t seed = static_cast<uint32_t>(c.n_ctx * 131 + c.n_q * 7 + c.d + c.n_kv);
    const auto k = test::random_floats(kv, seed, -2, 2), v = test::random_floats(kv, seed + 1);
    const auto q = test::random_floats(static_cast<size_t>(c.n_q) * s.q_dim(), seed + 2, -2, 2);
    // Per KV head [token][d], f16-rounded (what the GPU cache holds).
    std::vector<std::vector<f16_t>> kh(c.n_kv), vh(c.n_kv);
    for (int h = 0; h < c.n_kv; ++h) {
      kh[h].resize(static_cast<size_t>(c.n_ctx) * c.d);
      vh[h].resize(kh[h].size());
      for (int t = 0; t < c.n_ctx; ++t)
        for (int i = 0; i < c.d; ++i) {
          const size_t src = (static_cast<size_t>(t) * c.n_kv + h) * c.d + i;
          kh[h][static_cast<size_t>(t) * c.d + i] = f32_to_f16(k[src]);
          vh[h][static_cast<size_t>(t) * c.d + i] = f32_to_f16(v[src]);
        }
    }
    std::vector<float> ref(q.size());
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
    for (int r = 0; r < c.n_q; ++r) {
      const int n_keys = c.n_ctx - c.n_q + r + 1;
      for (int h = 0; h < c.n_heads; ++h) {
        const int hk = h / s.group();
        const size_t off = (static_cast<size_t>(r) * c.n_heads + h) * c.d;
        double lse;
        attend_reference<f16_t>(&q[off], c.d, kh[hk].data(), vh[hk].data(), n_keys, scale, &ref[off], &lse);
      }
    }
    std::vector<float> flash(q.size()), cublas(q.size());
    cuda_check_attention(s, "f16", k.data(), v.data(), c.n_ctx, c.chunk, q.data(), c.n_q, flash.data(),
                         CudaGemm::f16);
    cuda_tuning().flash_prefill = false;
    cuda_check_attention(s, "f16", k.data(), v.data(), c.n_ctx, c.chunk, q.data(), c.n_q, cublas.data(),
                         CudaGemm::f16);
    cuda_tuning() = CudaTuning{};
    const double e_flash = test::nmse(flash.data(), ref.data(), ref.size());
    const double e_cublas = test::nmse(cublas.data(), ref.data(), ref.size());
    EXPECT_LT(e_flash, 1e-5);
    EXPECT_LT(e_cublas, 1e-5);
    std::printf("flash prefill %s: nmse vs reference %.3g (cuBLAS f16 path %.3g)\n", name.c_str(), e_flash,
                e_cublas);
  }
}

// One layer of llama3-8b's shape (32 query heads, 8 KV heads, d 128), pp512
// at 4K, 32K and 128K of context: cuBLAS path vs flash kernel on the same
// inputs, with the two outputs compared (same tolerance as above).
TEST(CudaFlash, PrefillSpeedReport) {
  LONGKV_REQUIRE_CUDA();
#ifdef LONGKV_HAVE_CUDA
  KvShape s;
  s.n_heads = 32;
  s.n_kv_heads = 8;
  s.head_dim = 128;
  const int n_q = 512;
  for (int depth : {4096, 32768, 131072}) {
    const CudaPrefillSpeed r = cuda_bench_prefill_attention(s, depth + n_q, n_q, 10);
    EXPECT_LT(r.nmse, 1e-5) << "depth " << depth;
    EXPECT_GT(r.flash_ms, 0);
    std::printf("prefill attention pp%d at depth %6d (32/8 x 128): cuBLAS %7.3f ms %6.1f TFLOP/s | flash %7.3f ms "
                "%6.1f TFLOP/s | %.2fx | nmse flash vs cuBLAS %.3g\n",
                n_q, depth, r.cublas_ms, r.flops / (r.cublas_ms * 1e9), r.flash_ms, r.flops / (r.flash_ms * 1e9),
                r.cublas_ms / r.flash_ms, r.nmse);
  }
#endif
}

}  // namespace
}  // namespace longkv

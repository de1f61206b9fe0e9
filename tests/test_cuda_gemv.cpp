// The decode GEMV's variants against gemv.cu's slab kernel and the host's
// rule (test_cuda_gemv_util.h). Without a GPU each test reports SKIPPED.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "test_cuda_gemv_util.h"
#include "test_cuda_util.h"
#include "test_util.h"

namespace longkv {
namespace {

using namespace cuda_gemv_test;

// Milestone 34: the Q4_0 int8 GEMV whose blocks make x's int8 form once for
// 2-4 row groups (CudaTuning::gemv_shared_x, gemv_shared_x.cu). Its
// quantization has quantize_x_i8's bits and its row sums gemv.cu's order, so
// a plain or accumulating GEMV must give the slab kernel's bits; with
// RMSNorm only the sum of squares is added in another order (the host rule's
// tolerance). Each comparison must have launched the kernel (its counter).
// The shapes take every form: 4 groups of 8-row batches (<= 4096 rows), 4 of
// 16 (<= 8192), 2 of 16 (longer, or rows of 8192 columns), and 1-warp groups.
TEST(Cuda, SharedXGemvMatchesSlab) {
  LONGKV_REQUIRE_CUDA();
  struct Case {
    int rows, cols;
  };
  const Case cases[] = {{97, 4096}, {4099, 4096}, {6001, 4096}, {9001, 4096}, {33, 2048}, {77, 8192}, {10, 1024}};
  const float eps = 1e-5f;
  for (const auto& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols));
    const auto data = random_weight(WeightType::Q4_0, c.rows, c.cols, 7 + c.rows);
    const WeightView w{WeightType::Q4_0, c.rows, c.cols, data.data()};
    const auto x = test::random_floats(c.cols, 31, -2, 2), norm = test::random_floats(c.cols, 32);
    auto shared_x = [&](auto&& run) {  // run() with the kernel on; whether it launched
      const uint64_t before = cuda_gemv_shared_x_launches();
      cuda_tuning().gemv_shared_x = cuda_tuning().gemv_shared_x_small = true;
      run();
      cuda_tuning() = CudaTuning{};
      return cuda_gemv_shared_x_launches() > before;
    };
    for (int act = 0; act < 2; ++act) {
      const std::vector<float> xa = host_act(act, x, norm, x, eps);
      std::vector<float> ref(c.rows), y_slab(c.rows), y_sx(c.rows);
      for (int r = 0; r < c.rows; ++r) ref[r] = gemv_ref(w, r, xa.data(), true);
      cuda_check_gemv_act(w, act, x.data(), norm.data(), eps, nullptr, y_slab.data());
      EXPECT_TRUE(shared_x([&] { cuda_check_gemv_act(w, act, x.data(), norm.data(), eps, nullptr, y_sx.data()); }));
      const double err = test::nmse(y_sx.data(), ref.data(), ref.size());
      EXPECT_LT(err, gemv_tol(WeightType::Q4_0, true, act)) << "act " << act;
      const bool same = std::memcmp(y_sx.data(), y_slab.data(), sizeof(float) * c.rows) == 0;
      if (act == 0) {
        EXPECT_TRUE(same) << "plain x: the slab kernel's bits";
      }
      std::printf("shared-x gemv act %d %5dx%-5d: nmse %.3g vs the host rule, %s the slab kernel's bits\n", act,
                  c.rows, c.cols, err, same ? "equal to" : "other than");
    }
    // Accumulating into y (the residual's wo and w_down): the slab kernel's bits.
    const auto y0 = test::random_floats(c.rows, 33);
    std::vector<float> acc_slab = y0, acc_sx = y0;
    cuda_check_gemv_accumulate(w, x.data(), acc_slab.data());
    EXPECT_TRUE(shared_x([&] { cuda_check_gemv_accumulate(w, x.data(), acc_sx.data()); }));
    EXPECT_EQ(std::memcmp(acc_sx.data(), acc_slab.data(), sizeof(float) * c.rows), 0) << "accumulate";
  }
  // SwiGLU in the store: llama3-8b's dim with a short FFN (gate|up through the
  // shared-x kernel, w_down's 1408 columns through gemv.cu's), against the
  // slab kernel's block.
  const int ffn = 1408, dim = 4096;
  const auto gd = random_weight(WeightType::Q4_0, ffn, dim, 71), ud = random_weight(WeightType::Q4_0, ffn, dim, 72),
             dd = random_weight(WeightType::Q4_0, dim, ffn, 73);
  const WeightView gate{WeightType::Q4_0, ffn, dim, gd.data()}, up{WeightType::Q4_0, ffn, dim, ud.data()},
      down{WeightType::Q4_0, dim, ffn, dd.data()};
  const auto x = test::random_floats(dim, 74, -2, 2), norm = test::random_floats(dim, 75);
  std::vector<float> glu(dim), plain(dim), glu_sx(dim), plain_sx(dim);
  cuda_check_ffn_glu(gate, up, down, x.data(), norm.data(), eps, glu.data(), plain.data());
  const uint64_t before = cuda_gemv_shared_x_launches();
  cuda_tuning().gemv_shared_x = cuda_tuning().gemv_shared_x_small = true;
  cuda_check_ffn_glu(gate, up, down, x.data(), norm.data(), eps, glu_sx.data(), plain_sx.data());
  cuda_tuning() = CudaTuning{};
  EXPECT_GT(cuda_gemv_shared_x_launches(), before);
  const double err = test::nmse(glu_sx.data(), glu.data(), dim);
  EXPECT_LT(err, 1e-6);
  std::printf("shared-x SwiGLU store, ffn %d dim %d: nmse %.3g vs the slab kernel's block\n", ffn, dim, err);
}

}  // namespace
}  // namespace longkv

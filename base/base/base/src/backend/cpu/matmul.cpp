#include "backend/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

#include "backend/cpu/weight_kernels.h"
#include "core/error.h"

namespace longkv {
namespace {

// Up to this many tokens the weights are streamed once per row and dotted
// with every token (memory bound, like decode); beyond it sgemm on decoded
// tiles wins because each decoded weight is reused n_tok times.
constexpr int64_t kMaxVecTokens = 4;
// Rows per matvec work unit: enough to amortize the pool's dispatch.
constexpr int64_t kMatvecGrain = 16;
// Rows of W decoded per sgemm call. Fixed (not derived from the thread
// count) so every output is computed by the same sgemm shapes whatever the
// pool size, which keeps results identical across thread counts.
constexpr int64_t kTileRows = 128;

// Our pool already splits W across threads; OpenBLAS threads on top would
// oversubscribe the cores, so each of our threads runs sgemm single-threaded.
void blas_single_thread_once() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

}  // namespace

float dot_row(WeightType t, const void* row, const float* x, int64_t n) {
  return cpu_weight_kernels(t).dot(row, x, n);
}

float dot_row_ref(WeightType t, const void* row, const float* x, int64_t n) {
  const WeightTypeTraits& tr = weight_traits(t);
  LONGKV_ASSERT(n % tr.block_size == 0);
  const auto* p = static_cast<const uint8_t*>(row);
  // 256 elements is a whole number of blocks of every type.
  float buf[kQKK];
  float sum = 0.0f;
  for (int64_t i = 0; i < n; i += kQKK) {
    const int64_t m = std::min<int64_t>(kQKK, n - i);
    tr.to_float_ref(p + row_bytes(t, i), buf, m);
    for (int64_t j = 0; j < m; ++j) sum += buf[j] * x[i + j];
  }
  return sum;
}

void dequantize_row(WeightType t, const void* row, float* dst, int64_t n) {
  cpu_weight_kernels(t).dequantize(row, dst, n);
}

void matvec(const WeightView& w, const float* x, float* y, ThreadPool& pool) {
  const auto dot = cpu_weight_kernels(w.type).dot;
  const size_t stride = w.row_stride();
  const int64_t cols = w.cols;
  const uint8_t* data = w.data;
  pool.parallel_for(
      w.rows,
      [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) y[r] = dot(data + stride * static_cast<size_t>(r), x, cols);
      },
      kMatvecGrain);
}

void matmul(const WeightView& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n_tok,
            ThreadPool& pool) {
  if (n_tok <= 0 || w.rows <= 0) return;
  const CpuWeightKernels& k = cpu_weight_kernels(w.type);
  const size_t stride = w.row_stride();
  const int64_t cols = w.cols;

  if (n_tok <= kMaxVecTokens) {
    // One pass over W: each row is read once and stays in L1 for all tokens.
    pool.parallel_for(
        w.rows,
        [&](int64_t r0, int64_t r1, int) {
          for (int64_t r = r0; r < r1; ++r) {
            const uint8_t* row = w.data + stride * static_cast<size_t>(r);
            for (int64_t i = 0; i < n_tok; ++i) y[i * ldy + r] = k.dot(row, x + i * ldx, cols);
          }
        },
        kMatvecGrain);
    return;
  }

  LONGKV_ASSERT(cols <= INT32_MAX && n_tok <= INT32_MAX && ldx <= INT32_MAX && ldy <= INT32_MAX);
  blas_single_thread_once();
  pool.parallel_for(
      w.rows,
      [&](int64_t r0, int64_t r1, int) {
        // Reused across calls: a pool thread keeps one tile buffer for life.
        thread_local std::vector<float> tile;
        for (int64_t t0 = r0; t0 < r1; t0 += kTileRows) {
          const int64_t nr = std::min(kTileRows, r1 - t0);
          const float* wt;
          if (w.type == WeightType::F32) {
            wt = reinterpret_cast<const float*>(w.data + stride * static_cast<size_t>(t0));
          } else {
            const size_t need = static_cast<size_t>(nr) * static_cast<size_t>(cols);
            if (tile.size() < need) tile.resize(need);
            for (int64_t r = 0; r < nr; ++r)
              k.dequantize(w.data + stride * static_cast<size_t>(t0 + r), tile.data() + r * cols, cols);
            wt = tile.data();
          }
          // Y[:, t0:t0+nr] = X · Wt^T
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n_tok),
                      static_cast<int>(nr), static_cast<int>(cols), 1.0f, x, static_cast<int>(ldx), wt,
                      static_cast<int>(cols), 0.0f, y + t0, static_cast<int>(ldy));
        }
      },
      kTileRows);
}

void get_row(const WeightView& w, int64_t r, float* dst) {
  LONGKV_ASSERT(r >= 0 && r < w.rows);
  dequantize_row(w.type, w.row(r), dst, w.cols);
}

}  // namespace longkv

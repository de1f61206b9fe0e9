// Weight kernels: single-token GEMV per stored format, dequantization to
// dense f16/f32 (the GEMM path), embedding rows, and weight upload.
//
// GEMV: a block of 8 warps owns kRows consecutive rows; the warps split the
// row's tiles between them (so a 1024-row matrix still fills every SM) and
// reduce through shared memory. Every x value a lane loads serves kRows rows
// (x reads from L1 would otherwise rival the weight stream: 4 bytes of x per
// 0.56 bytes of Q4_0). Block formats are
// staged through shared memory by 16-byte loads (rows are padded to 16-byte
// strides on upload), because their 18/34/210-byte blocks are not aligned for
// vector loads in place.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/weight_decode.cuh"

namespace longkv::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kRows = 2;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sums each row's partial dot products over the block and writes y.
__device__ __forceinline__ void block_reduce_store(const float (&acc)[kRows], int row0, int rows, float* y,
                                                   bool accumulate) {
  __shared__ float red[kRows][kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float s = warp_sum(acc[r]);
    if (lane == 0) red[r][warp] = s;
  }
  __syncthreads();
  if (threadIdx.x < kRows && row0 + static_cast<int>(threadIdx.x) < rows) {
    float s = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[threadIdx.x][w];
    float* dst = y + row0 + threadIdx.x;
    *dst = accumulate ? *dst + s : s;
  }
}

template <WeightType T>
__global__ void __launch_bounds__(kWarps * 32) gemv_block_kernel(const uint8_t* __restrict__ w, size_t ld, int rows,
                                                                  int n_blocks, const float* __restrict__ x,
                                                                  float* __restrict__ y, bool accumulate) {
  using F = GemvFormat<T>;
  constexpr int kTileBytes = F::kTile * F::kBytes;
  static_assert(kTileBytes % 16 == 0, "tiles must be whole 16-byte vectors");
  constexpr int kTileVec = kTileBytes / 16;
  constexpr int kVecPerLane = (kRows * kTileVec + 31) / 32;
  __shared__ __align__(16) uint8_t smem[kWarps][kRows][kTileBytes];

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = blockIdx.x * kRows;
  const uint8_t* rp[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) rp[r] = w + ld * static_cast<size_t>(min(row0 + r, rows - 1));

  float acc[kRows] = {};
  for (int b0 = warp * F::kTile; b0 < n_blocks; b0 += kWarps * F::kTile) {
    const int nb = min(F::kTile, n_blocks - b0);
    const int nvec = (nb * F::kBytes + 15) / 16;  // may read into the row padding
    uint4 tmp[kVecPerLane];
#pragma unroll
    for (int k = 0; k < kVecPerLane; ++k) {
      const int idx = lane + 32 * k, r = idx / kTileVec, v = idx % kTileVec;
      if (r < kRows && v < nvec)
        tmp[k] = __ldg(reinterpret_cast<const uint4*>(rp[r] + static_cast<size_t>(b0) * F::kBytes) + v);
    }
#pragma unroll
    for (int k = 0; k < kVecPerLane; ++k) {
      const int idx = lane + 32 * k, r = idx / kTileVec, v = idx % kTileVec;
      if (r < kRows && v < nvec) reinterpret_cast<uint4*>(smem[warp][r])[v] = tmp[k];
    }
    __syncwarp();
    constexpr int kPerPass = 32 / F::kLanes;
    const int part = lane % F::kLanes;
#pragma unroll
    for (int p = 0; p < F::kTile / kPerPass; ++p) {
      const int b = p * kPerPass + lane / F::kLanes;
      if (b < nb) {
        const float* xb = x + static_cast<size_t>(b0 + b) * F::kElems;
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r] += F::dot(smem[warp][r] + b * F::kBytes, part, xb);
      }
    }
    __syncwarp();
  }
  block_reduce_store(acc, row0, rows, y, accumulate);
}

// F32/F16/BF16: 16-byte loads straight from global memory, 8 elements (F16,
// BF16) or 4 (F32) per lane per step.
template <WeightType T>
__global__ void __launch_bounds__(kWarps * 32) gemv_dense_kernel(const uint8_t* __restrict__ w, size_t ld, int rows,
                                                                  int cols, const float* __restrict__ x,
                                                                  float* __restrict__ y, bool accumulate) {
  constexpr int kPer = T == WeightType::F32 ? 4 : 8;
  const int row0 = blockIdx.x * kRows;
  float acc[kRows] = {};
  const int nvec = cols / kPer;
  for (int v = threadIdx.x; v < nvec; v += kWarps * 32) {
    float xv[kPer];
#pragma unroll
    for (int k = 0; k < kPer; k += 4) {
      const float4 t = __ldg(reinterpret_cast<const float4*>(x + v * kPer + k));
      xv[k] = t.x; xv[k + 1] = t.y; xv[k + 2] = t.z; xv[k + 3] = t.w;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* rp = w + ld * static_cast<size_t>(min(row0 + r, rows - 1));
      const uint4 q = __ldg(reinterpret_cast<const uint4*>(rp) + v);
      if constexpr (T == WeightType::F32) {
        acc[r] += __uint_as_float(q.x) * xv[0] + __uint_as_float(q.y) * xv[1] + __uint_as_float(q.z) * xv[2] +
                  __uint_as_float(q.w) * xv[3];
      } else {
        const uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          float lo, hi;
          if constexpr (T == WeightType::F16) {
            const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&u[k]));
            lo = f.x; hi = f.y;
          } else {
            lo = __uint_as_float(u[k] << 16);
            hi = __uint_as_float(u[k] & 0xffff0000u);
          }
          acc[r] += lo * xv[2 * k] + hi * xv[2 * k + 1];
        }
      }
    }
  }
  // Tail elements (cols not a multiple of kPer; only F32/F16/BF16 reach here).
  for (int i = nvec * kPer + static_cast<int>(threadIdx.x); i < cols; i += kWarps * 32)
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      acc[r] += decode_elem<T>(w + ld * static_cast<size_t>(min(row0 + r, rows - 1)), i) * x[i];
  block_reduce_store(acc, row0, rows, y, accumulate);
}

template <WeightType T, typename Out>
__global__ void dequantize_kernel(const uint8_t* __restrict__ w, size_t ld, int64_t rows, int64_t cols,
                                  Out* __restrict__ dst) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float v = decode_elem<T>(w + ld * r, c);
    if constexpr (sizeof(Out) == 2) dst[i] = __float2half(v);
    else dst[i] = v;
  }
}

template <WeightType T>
__global__ void get_rows_kernel(const uint8_t* __restrict__ w, size_t ld, int64_t cols, const int32_t* ids,
                                float* __restrict__ dst) {
  const int t = blockIdx.y;
  const uint8_t* row = w + ld * static_cast<size_t>(ids[t]);
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[t * cols + c] = decode_elem<T>(row, c);
}

// Expands BODY with the compile-time type T for the runtime type `t`.
#define LONGKV_DISPATCH_WEIGHT(t, BODY)                                                              \
  switch (t) {                                                                                      \
    case WeightType::F32: { constexpr WeightType T = WeightType::F32; BODY; break; }                \
    case WeightType::F16: { constexpr WeightType T = WeightType::F16; BODY; break; }                \
    case WeightType::BF16: { constexpr WeightType T = WeightType::BF16; BODY; break; }              \
    case WeightType::Q8_0: { constexpr WeightType T = WeightType::Q8_0; BODY; break; }              \
    case WeightType::Q4_0: { constexpr WeightType T = WeightType::Q4_0; BODY; break; }              \
    case WeightType::Q4_K: { constexpr WeightType T = WeightType::Q4_K; BODY; break; }              \
    case WeightType::Q6_K: { constexpr WeightType T = WeightType::Q6_K; BODY; break; }              \
    default: fail("CUDA backend: unsupported weight type %s", ggml_type_name(static_cast<uint32_t>(t))); \
  }

template <WeightType T>
void launch_gemv(const GpuWeight& w, const float* x, float* y, bool accumulate, cudaStream_t s) {
  const int rows = static_cast<int>(w.rows);
  const int grid = (rows + kRows - 1) / kRows;
  if constexpr (T == WeightType::F32 || T == WeightType::F16 || T == WeightType::BF16) {
    gemv_dense_kernel<T><<<grid, kWarps * 32, 0, s>>>(w.data, w.ld, rows, static_cast<int>(w.cols), x, y,
                                                        accumulate);
  } else {
    const int nb = static_cast<int>(w.cols / GemvFormat<T>::kElems);
    gemv_block_kernel<T><<<grid, kWarps * 32, 0, s>>>(w.data, w.ld, rows, nb, x, y, accumulate);
  }
}

int grid_for(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 132 * 16));
}

}  // namespace

GpuWeight upload_weight(const WeightView& w, DeviceBuffer& buf, cudaStream_t s) {
  GpuWeight g;
  g.type = w.type;
  g.rows = w.rows;
  g.cols = w.cols;
  g.ld = gpu_row_stride(w.type, w.cols);
  buf.resize(g.nbytes() + kWeightPadBytes);
  LONGKV_CUDA_CHECK(cudaMemsetAsync(buf.as(), 0, buf.bytes(), s));
  LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(buf.as(), g.ld, w.data, w.row_stride(), w.row_stride(),
                                      static_cast<size_t>(w.rows), cudaMemcpyHostToDevice, s));
  g.data = buf.as<uint8_t>();
  return g;
}

void gemv(const GpuWeight& w, const float* x, float* y, bool accumulate, cudaStream_t s) {
  LONGKV_DISPATCH_WEIGHT(w.type, launch_gemv<T>(w, x, y, accumulate, s));
  LONGKV_CUDA_LAUNCHED();
}

void dequantize(const GpuWeight& w, void* dst, bool to_f16, cudaStream_t s) {
  const int grid = grid_for(w.rows * w.cols, 256);
  if (to_f16) {
    LONGKV_DISPATCH_WEIGHT(w.type, (dequantize_kernel<T, __half><<<grid, 256, 0, s>>>(
                                       w.data, w.ld, w.rows, w.cols, static_cast<__half*>(dst))));
  } else {
    LONGKV_DISPATCH_WEIGHT(w.type, (dequantize_kernel<T, float><<<grid, 256, 0, s>>>(
                                       w.data, w.ld, w.rows, w.cols, static_cast<float*>(dst))));
  }
  LONGKV_CUDA_LAUNCHED();
}

void get_rows(const GpuWeight& w, const int32_t* ids, int n, float* dst, cudaStream_t s) {
  if (n == 0) return;
  const dim3 grid(static_cast<unsigned>((w.cols + 255) / 256), static_cast<unsigned>(n));
  LONGKV_DISPATCH_WEIGHT(w.type, (get_rows_kernel<T><<<grid, 256, 0, s>>>(w.data, w.ld, w.cols, ids, dst)));
  LONGKV_CUDA_LAUNCHED();
}

void gemm(cublasHandle_t h, const GpuWeight& w, const float* x, int n, float* y, bool accumulate, CudaGemm g,
          DeviceBuffer& scratch, cudaStream_t s) {
  const bool f16 = g == CudaGemm::f16;
  const size_t esz = f16 ? 2 : 4;
  // Dequantize at most ~64M elements at a time to bound the scratch.
  const int64_t chunk_rows = std::max<int64_t>(1, std::min<int64_t>(w.rows, (int64_t(64) << 20) / w.cols));
  const size_t x_bytes = f16 ? static_cast<size_t>(n) * w.cols * 2 : 0;
  const size_t w_off = (x_bytes + 255) / 256 * 256;
  scratch.reserve(w_off + static_cast<size_t>(chunk_rows) * w.cols * esz);
  LONGKV_CUBLAS_CHECK(cublasSetStream(h, s));
  if (f16) f32_to_f16(x, scratch.as<__half>(), static_cast<size_t>(n) * w.cols, s);
  void* wd = scratch.as<uint8_t>() + w_off;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  for (int64_t r0 = 0; r0 < w.rows; r0 += chunk_rows) {
    GpuWeight part = w;
    part.rows = std::min(chunk_rows, w.rows - r0);
    part.data = w.data + w.ld * static_cast<size_t>(r0);
    dequantize(part, wd, f16, s);
    // Row-major Y[n][rows] = X W^T is column-major Y^T = W X^T with W
    // (row-major [rows][cols]) read transposed.
    const int m = static_cast<int>(part.rows), k = static_cast<int>(w.cols);
    if (f16) {
      LONGKV_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, wd, CUDA_R_16F, k,
                                       scratch.as(), CUDA_R_16F, k, &beta, y + r0, CUDA_R_32F,
                                       static_cast<int>(w.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    } else {
      LONGKV_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, static_cast<float*>(wd), k, x,
                                      k, &beta, y + r0, static_cast<int>(w.rows)));
    }
  }
}

}  // namespace longkv::cuda

// Weight kernels: single-token GEMV per format, dequantization to dense
// f16/f32 (the GEMM path), embedding rows, and weight upload (which splits
// Q4_0/Q8_0/Q6_K rows into aligned bodies + scales, weight_decode.cuh).
//
// Block-format GEMV ("slab"): a block has one warp per 32 units of the row
// (a unit = 32 elements, Q8_0 16); each lane loads its unit's activations into
// registers once and keeps them while the block walks over batches of kRB
// rows, loading kRB units of 16 bytes at once (many loads in flight, no
// shared-memory staging, no re-reads of x), decoding in registers. Per batch
// the warps' partial sums meet in shared memory. The grid is what fits on the
// GPU at once, so x is read about once per resident block. Rows with more
// than 512 units are done in column slices, accumulating. The op before the
// GEMV (RMSNorm, SwiGLU) is made in the lane's load of x (milestone 6): a
// block first sums x^2 over the whole row for RMSNorm (x is in L2), so the
// separate rmsnorm/swiglu kernels and their round trip through memory go.
//
// Block-format GEMV ("rows", milestone 5; off by default, CudaTuning: it
// measured 35-45% slower than the slab kernel on H100): each warp owns R
// whole rows and walks their units lane by lane, so the only reduction is the
// warp's own (no block barrier per batch). The activation is staged once per
// block in shared memory, and staging is where the op before the GEMV runs:
// RMSNorm (x * rsqrt(mean x^2 + eps) * norm) or SwiGLU (silu(gate) * up), so
// those kernels disappear from a decode step. The first weight loads are
// issued before the staging, hiding its latency behind theirs.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/weight_decode.cuh"

#include <cstring>
#include <vector>

namespace longkv::cuda {
namespace {

constexpr int kWarps = 8;  // dense kernels
constexpr int kRows = 2;
constexpr int kMaxSlabWarps = 16;  // 512 threads: up to 128 registers a lane


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

// inv_rms = rsqrt(mean(x^2) + eps) over the whole row of `cols`, every
// thread of the block taking part (x comes from L2: each block reads it once).
__device__ __forceinline__ float block_inv_rms(const float* __restrict__ x, int cols, float eps) {
  __shared__ float red[kMaxSlabWarps];
  float ss = 0;
  for (int i = 4 * threadIdx.x; i < cols; i += 4 * blockDim.x) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(x + i));
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  ss = warp_sum(ss);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = ss;
  __syncthreads();
  float tot = 0;
  for (int k = 0; k < static_cast<int>(blockDim.x / 32); ++k) tot += red[k];
  return rsqrtf(tot / cols + eps);
}

// The unit's activations with the op before the GEMV applied as they are
// loaded: RMSNorm scales by inv_rms * norm (norm read at the same offsets as
// x), SwiGLU takes silu(gate) * up; same per-element arithmetic as
// rmsnorm_kernel / swiglu_kernel. Q4_K's per-unit sums follow the new values.
template <WeightType T>
__device__ __forceinline__ void load_x_act(const GemvAct& a, int u, float inv_rms, typename Slab<T>::X& xr) {
  using S = Slab<T>;
  S::load_x(a.x, u, xr);
  if (a.kind == GemvAct::plain) return;
  typename S::X o;
  S::load_x(a.kind == GemvAct::rmsnorm ? a.norm : a.up, u, o);
  if (a.kind == GemvAct::rmsnorm) {
#pragma unroll
    for (int i = 0; i < S::kXElems; ++i) xr.v[i] = xr.v[i] * inv_rms * o.v[i];
  } else {
#pragma unroll
    for (int i = 0; i < S::kXElems; ++i) xr.v[i] = xr.v[i] / (1.0f + expf(-xr.v[i])) * o.v[i];
  }
  if constexpr (T == WeightType::Q4_K) {
    xr.sum_lo = xr.sum_hi = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      xr.sum_lo += xr.v[i];
      xr.sum_hi += xr.v[16 + i];
    }
  }
}

// Units [u_begin, u_begin + nu) of every row; a.x is the whole row's input
// (a.kind: the op made in the load, see load_x_act).
template <WeightType T>
__global__ void __launch_bounds__(kMaxSlabWarps * 32) gemv_slab_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                      int rows, int nb, int u_begin, int nu,
                                                                      GemvAct a, float* __restrict__ y,
                                                                      bool accumulate) {
  using S = Slab<T>;
  constexpr int RB = S::kRB;
  __shared__ float red[RB][kMaxSlabWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  const int ui = warp * 32 + lane;
  const bool valid = ui < nu;
  const int u = u_begin + (valid ? ui : 0);
  const float inv_rms = a.kind == GemvAct::rmsnorm ? block_inv_rms(a.x, nb * weight_traits_block(T), a.eps) : 1.0f;
  typename S::X xr;
  load_x_act<T>(a, u, inv_rms, xr);
  for (int r0 = blockIdx.x * RB; r0 < rows; r0 += gridDim.x * RB) {
    typename S::Unit wu[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) wu[r] = S::load(w + ld * static_cast<size_t>(min(r0 + r, rows - 1)), u, nb);
    float acc[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) acc[r] = valid ? S::dot(wu[r], xr, u) : 0.0f;
#pragma unroll
    for (int r = 0; r < RB; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < RB; ++r) red[r][warp] = acc[r];
    }
    __syncthreads();
    if (threadIdx.x < RB && r0 + static_cast<int>(threadIdx.x) < rows) {
      float s = 0;
      for (int k = 0; k < n_warps; ++k) s += red[threadIdx.x][k];
      float* dst = y + r0 + threadIdx.x;
      *dst = accumulate ? *dst + s : s;
    }
    __syncthreads();
  }
}

constexpr int kRowsWarps = 8;

// Stages the (transformed) activation in xs[cols]; every thread of the block
// takes part. Same arithmetic per element as rmsnorm_kernel / swiglu_kernel,
// the sum of squares in another order.
__device__ __forceinline__ void stage_activation(const GemvAct& a, int cols, float* xs) {
  const int tid = threadIdx.x, nt = blockDim.x;
  if (a.kind == GemvAct::swiglu) {
    for (int i = tid; i < cols; i += nt) {
      const float g = a.x[i];
      xs[i] = g / (1.0f + expf(-g)) * a.up[i];
    }
    return;
  }
  float ss = 0;
  for (int i = 4 * tid; i < cols; i += 4 * nt) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(a.x + i));
    *reinterpret_cast<float4*>(xs + i) = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  if (a.kind != GemvAct::rmsnorm) return;
  __shared__ float red[kRowsWarps];
  ss = warp_sum(ss);
  if (tid % 32 == 0) red[tid / 32] = ss;
  __syncthreads();
  float tot = 0;
  for (int k = 0; k < kRowsWarps; ++k) tot += red[k];
  const float scale = rsqrtf(tot / cols + a.eps);
  for (int i = 4 * tid; i < cols; i += 4 * nt)  // the elements this thread wrote
#pragma unroll
    for (int e = 0; e < 4; ++e) xs[i + e] = xs[i + e] * scale * a.norm[i + e];
}

// R rows per warp, kRowsWarps warps per block, U units per lane in flight per
// row (U * R loads before the first use); xs = cols floats of shared memory.
template <WeightType T, int R>
__global__ void __launch_bounds__(kRowsWarps * 32) gemv_rows_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                     int rows, int nb, GemvAct a,
                                                                     float* __restrict__ y, bool accumulate) {
  using S = Slab<T>;
  constexpr int U = S::kRB / R > 0 ? S::kRB / R : 1;
  extern __shared__ float4 xs4[];
  float* xs = reinterpret_cast<float*>(xs4);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = (blockIdx.x * kRowsWarps + warp) * R;
  const int units = nb * S::kUnitsPerBlock;
  const int cols = nb * weight_traits_block(T);
  const uint8_t* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + ld * static_cast<size_t>(min(r0 + r, rows - 1));
  typename S::Unit wu[U][R];
  auto load_batch = [&](int u0) {
#pragma unroll
    for (int j = 0; j < U; ++j)
#pragma unroll
      for (int r = 0; r < R; ++r) wu[j][r] = S::load(wr[r], min(u0 + 32 * j, units - 1), nb);
  };
  load_batch(lane);
  stage_activation(a, cols, xs);
  __syncthreads();
  if (r0 >= rows) return;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0;
  for (int u0 = lane;;) {
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int u = u0 + 32 * j;
      if (u < units) {
        typename S::X xr;
        S::load_x(xs, u, xr);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += S::dot(wu[j][r], xr, u);
      }
    }
    u0 += 32 * U;
    if (u0 >= units) break;
    load_batch(u0);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (r0 + r < rows) y[r0 + r] = accumulate ? y[r0 + r] + acc[r] : acc[r];
  }
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
      acc[r] += decode_elem<T>(w + ld * static_cast<size_t>(min(row0 + r, rows - 1)), i, 0) * x[i];
  block_reduce_store(acc, row0, rows, y, accumulate);
}

template <WeightType T, typename Out>
__global__ void dequantize_kernel(const uint8_t* __restrict__ w, size_t ld, int64_t rows, int64_t cols,
                                  Out* __restrict__ dst) {
  const int64_t nb = cols / weight_traits_block(T);
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float v = decode_elem<T>(w + ld * r, c, nb);
    if constexpr (sizeof(Out) == 2) dst[i] = __float2half(v);
    else dst[i] = v;
  }
}

template <WeightType T>
__global__ void get_rows_kernel(const uint8_t* __restrict__ w, size_t ld, int64_t cols, const int32_t* ids,
                                float* __restrict__ dst) {
  const int64_t nb = cols / weight_traits_block(T);
  const int t = blockIdx.y;
  const uint8_t* row = w + ld * static_cast<size_t>(ids[t]);
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[t * cols + c] = decode_elem<T>(row, c, nb);
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
void launch_slab(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  using S = Slab<T>;
  const int rows = static_cast<int>(w.rows);
  const int nb = static_cast<int>(w.cols / (T == WeightType::Q4_K || T == WeightType::Q6_K ? kQKK : kQK));
  const int units = nb * S::kUnitsPerBlock;
  const int slice = kMaxSlabWarps * 32;
  // Resident blocks per SM for each warp count, asked once.
  static int occ[kMaxSlabWarps + 1] = {};
  static int sms = 0;
  if (sms == 0) LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  for (int u0 = 0; u0 < units; u0 += slice) {
    const int nu = std::min(slice, units - u0);
    const int warps = (nu + 31) / 32;
    if (occ[warps] == 0)
      LONGKV_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ[warps], gemv_slab_kernel<T>, warps * 32, 0));
    const int batches = (rows + S::kRB - 1) / S::kRB;
    const int grid = std::max(1, std::min(batches, std::max(1, occ[warps]) * sms));
    gemv_slab_kernel<T><<<grid, warps * 32, 0, s>>>(w.data, w.ld, rows, nb, u0, nu, a, y, accumulate || u0 > 0);
    LONGKV_CUDA_LAUNCHED();
  }
}

// The rows kernel, if it takes this weight (block formats whose activation
// fits in shared memory); false otherwise.
template <WeightType T>
bool launch_rows(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  if constexpr (T == WeightType::F32 || T == WeightType::F16 || T == WeightType::BF16) {
    return false;
  } else {
    static int smem_max = 0;
    if (smem_max == 0) {
      LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
      smem_max -= 1024;  // the opt-in limit counts the kernel's static shared memory (the reduction) too
      LONGKV_CUDA_CHECK(cudaFuncSetAttribute(gemv_rows_kernel<T, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max));
      LONGKV_CUDA_CHECK(cudaFuncSetAttribute(gemv_rows_kernel<T, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max));
    }
    const size_t smem = sizeof(float) * static_cast<size_t>(w.cols);
    if (!cuda_tuning().gemv_rows || smem > static_cast<size_t>(smem_max)) return false;
    const int rows = static_cast<int>(w.rows);
    const int nb = static_cast<int>(w.cols / weight_traits_block(T));
    // Wide matrices (the output projection, gate|up) take 4 rows per warp:
    // fewer blocks staging x; small ones 2, for more warps in flight.
    if (rows > 8192) {
      const int grid = (rows + 4 * kRowsWarps - 1) / (4 * kRowsWarps);
      gemv_rows_kernel<T, 4><<<grid, kRowsWarps * 32, smem, s>>>(w.data, w.ld, rows, nb, a, y, accumulate);
    } else {
      const int grid = (rows + 2 * kRowsWarps - 1) / (2 * kRowsWarps);
      gemv_rows_kernel<T, 2><<<grid, kRowsWarps * 32, smem, s>>>(w.data, w.ld, rows, nb, a, y, accumulate);
    }
    LONGKV_CUDA_LAUNCHED();
    return true;
  }
}

template <WeightType T>
void launch_gemv(const GpuWeight& w, const float* x, float* y, bool accumulate, cudaStream_t s) {
  GemvAct a;
  a.x = x;
  if (launch_rows<T>(w, a, y, accumulate, s)) return;
  if constexpr (T == WeightType::F32 || T == WeightType::F16 || T == WeightType::BF16) {
    const int rows = static_cast<int>(w.rows);
    const int grid = (rows + kRows - 1) / kRows;
    gemv_dense_kernel<T><<<grid, kWarps * 32, 0, s>>>(w.data, w.ld, rows, static_cast<int>(w.cols), x, y,
                                                        accumulate);
  } else {
    launch_slab<T>(w, a, y, accumulate, s);
  }
}

// The activation made inside the GEMV (rows kernel if on, else slab): false
// for the dense formats, which take the separate kernels.
template <WeightType T>
bool launch_fused(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  if constexpr (T == WeightType::F32 || T == WeightType::F16 || T == WeightType::BF16) {
    return false;
  } else {
    if (!launch_rows<T>(w, a, y, accumulate, s)) launch_slab<T>(w, a, y, accumulate, s);
    return true;
  }
}

int grid_for(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 132 * 16));
}

}  // namespace

GpuWeight upload_weight_to(const WeightView& w, uint8_t* dst0, cudaStream_t s) {
  GpuWeight g;
  g.type = w.type;
  g.rows = w.rows;
  g.cols = w.cols;
  g.ld = gpu_row_stride(w.type, w.cols);
  g.data = dst0;
  if (w.rows == 0) return g;
  const int body = split_body_bytes(w.type);
  if (body == 0) {
    LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(dst0, g.ld, w.data, w.row_stride(), w.row_stride(),
                                        static_cast<size_t>(w.rows), cudaMemcpyHostToDevice, s));
    return g;
  }
  // Split rows: bodies first, then the f16 scales (d is at the start of a
  // Q4_0/Q8_0 block and at the end of a Q6_K block). Rows go through a host
  // buffer in ~32 MiB slices.
  const size_t bb = w.type == WeightType::Q6_K ? sizeof(BlockQ6_K) : w.type == WeightType::Q8_0 ? sizeof(BlockQ8_0)
                                                                                                  : sizeof(BlockQ4_0);
  const size_t d_off = w.type == WeightType::Q6_K ? 208 : 0, q_off = w.type == WeightType::Q6_K ? 0 : 2;
  const int64_t nb = static_cast<int64_t>(w.row_stride() / bb);
  const int64_t slice = std::max<int64_t>(1, (int64_t(32) << 20) / static_cast<int64_t>(g.ld));
  std::vector<uint8_t> tmp(static_cast<size_t>(std::min(slice, w.rows)) * g.ld, 0);
  for (int64_t r0 = 0; r0 < w.rows; r0 += slice) {
    const int64_t n = std::min(slice, w.rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      const uint8_t* src = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0 + r) * w.row_stride();
      uint8_t* dst = tmp.data() + static_cast<size_t>(r) * g.ld;
      for (int64_t b = 0; b < nb; ++b) {
        std::memcpy(dst + b * body, src + b * bb + q_off, body);
        std::memcpy(dst + nb * body + 2 * b, src + b * bb + d_off, 2);
      }
    }
    LONGKV_CUDA_CHECK(cudaMemcpyAsync(dst0 + static_cast<size_t>(r0) * g.ld, tmp.data(), static_cast<size_t>(n) * g.ld,
                                      cudaMemcpyHostToDevice, s));
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s));  // tmp is reused
  }
  return g;
}

GpuWeight upload_weight(const WeightView& w, DeviceBuffer& buf, cudaStream_t s) {
  buf.resize(gpu_row_stride(w.type, w.cols) * static_cast<size_t>(w.rows) + kWeightPadBytes);
  LONGKV_CUDA_CHECK(cudaMemsetAsync(buf.as(), 0, buf.bytes(), s));
  return upload_weight_to(w, buf.as<uint8_t>(), s);
}

bool stackable(const std::vector<const WeightView*>& ws) {
  for (const WeightView* w : ws)
    if (w->type != ws[0]->type || w->cols != ws[0]->cols) return false;
  return !ws.empty();
}

GpuWeight upload_stacked(const std::vector<const WeightView*>& ws, DeviceBuffer& buf, GpuWeight* parts,
                         cudaStream_t s) {
  LONGKV_CHECK(stackable(ws), "stacked weights need one type and one width");
  const size_t ld = gpu_row_stride(ws[0]->type, ws[0]->cols);
  int64_t rows = 0;
  for (const WeightView* w : ws) rows += w->rows;
  buf.resize(ld * static_cast<size_t>(rows) + kWeightPadBytes);
  LONGKV_CUDA_CHECK(cudaMemsetAsync(buf.as(), 0, buf.bytes(), s));
  int64_t r0 = 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    parts[i] = upload_weight_to(*ws[i], buf.as<uint8_t>() + ld * static_cast<size_t>(r0), s);
    r0 += ws[i]->rows;
  }
  GpuWeight all = parts[0];
  all.rows = rows;
  return all;
}

void gemv(const GpuWeight& w, const float* x, float* y, bool accumulate, cudaStream_t s) {
  LONGKV_DISPATCH_WEIGHT(w.type, launch_gemv<T>(w, x, y, accumulate, s));
  LONGKV_CUDA_LAUNCHED();
}

void gemv_act(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  if (a.kind == GemvAct::plain) return gemv(w, a.x, y, accumulate, s);
  if (cuda_tuning().fuse_activation) {
    bool done = false;
    LONGKV_DISPATCH_WEIGHT(w.type, done = launch_fused<T>(w, a, y, accumulate, s));
    if (done) return;
  }
  LONGKV_CHECK(a.scratch != nullptr, "CUDA GEMV: unfused activation needs a scratch buffer");
  if (a.kind == GemvAct::rmsnorm) {
    rmsnorm(a.x, a.norm, 1, static_cast<int>(w.cols), a.eps, a.scratch, s);
  } else {
    LONGKV_CHECK(a.scratch == a.x, "CUDA GEMV: SwiGLU runs in place on the gate");
    swiglu(a.scratch, a.up, static_cast<size_t>(w.cols), s);
  }
  gemv(w, a.scratch, y, accumulate, s);
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

// Elementwise and row kernels of the forward pass: RMSNorm, RoPE, SwiGLU,
// bias, conversions, and the random fill used for synthetic contexts.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope_rotate.cuh"

namespace longkv::cuda {
namespace {

// A block a row. kPer > 0 (dim % 4 == 0, dim <= 4 kPer blockDim): each
// thread holds kPer float4 of x and of the weights between the sum and the
// store, every load issued before the first is used; the weights (constant)
// are requested before the PDL wait. kPer == 0: any dim, scalar loops
// unrolled by 4. Milestone 56: the old scalar loop waited for each load in
// turn (a batched step's 24 rows of 4,096 took 9.7 us, twice a layer).
template <int kPer>
__global__ void rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, int dim, float eps,
                               float* __restrict__ y) {
  const float* xr = x + static_cast<size_t>(blockIdx.x) * dim;
  float* yr = y + static_cast<size_t>(blockIdx.x) * dim;
  float4 xv[kPer > 0 ? kPer : 1], wv[kPer > 0 ? kPer : 1];
  const int n4 = dim / 4;
  if constexpr (kPer > 0) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = threadIdx.x + k * blockDim.x;
      wv[k] = i < n4 ? reinterpret_cast<const float4*>(w)[i] : make_float4(0, 0, 0, 0);
    }
  }
  pdl_wait();  // x is the previous kernel's (a no-op in a plain launch)
  pdl_trigger();
  float ss = 0;
  if constexpr (kPer > 0) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = threadIdx.x + k * blockDim.x;
      xv[k] = i < n4 ? reinterpret_cast<const float4*>(xr)[i] : make_float4(0, 0, 0, 0);
    }
#pragma unroll
    for (int k = 0; k < kPer; ++k) ss += xv[k].x * xv[k].x + xv[k].y * xv[k].y + xv[k].z * xv[k].z + xv[k].w * xv[k].w;
  } else {
#pragma unroll 4
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  }
  __shared__ float red[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < blockDim.x / 32 ? red[threadIdx.x] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  const float scale = rsqrtf(red[0] / dim + eps);
  if constexpr (kPer > 0) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = threadIdx.x + k * blockDim.x;
      if (i < n4)
        reinterpret_cast<float4*>(yr)[i] = make_float4(xv[k].x * scale * wv[k].x, xv[k].y * scale * wv[k].y,
                                                       xv[k].z * scale * wv[k].z, xv[k].w * scale * wv[k].w);
    }
  } else {
#pragma unroll 4
    for (int i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * scale * w[i];
  }
}

// One thread per (token, head, pair); the rotation is rope_rotate.cuh's (the
// q|k GEMV's store makes the same one, CudaTuning::gemv_rope).
__global__ void rope_kernel(const float* __restrict__ inv_freq, int head_dim, int rope_dim, bool neox,
                            float* __restrict__ x, int n_tok, int n_heads, int64_t pos0, const int* dpos) {
  pdl_trigger();  // launched with PDL (CudaTuning::pdl) right behind the q|k GEMV
  pdl_wait();
  if (dpos) pos0 = *dpos;
  const int half = rope_dim / 2;
  const int64_t total = static_cast<int64_t>(n_tok) * n_heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(idx % half);
    const int64_t th = idx / half;  // token * n_heads + head
    const int t = static_cast<int>(th / n_heads);
    float cs, sn;
    rope_cos_sin(pos0 + t, inv_freq[i], cs, sn);
    float* v = x + th * head_dim;
    const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
    const float2 o = rope_rotate(v[ia], v[ib], cs, sn);
    v[ia] = o.x;
    v[ib] = o.y;
  }
}

__global__ void swiglu_kernel(float* __restrict__ g, const float* __restrict__ u, size_t n) {
  pdl_wait();  // gate and up are the GEMVs' before it (a no-op in a plain launch)
  pdl_trigger();
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float a = g[i];
    g[i] = a / (1.0f + expf(-a)) * u[i];
  }
}

__global__ void add_bias_kernel(float* __restrict__ y, const float* __restrict__ b, int n_rows, int width) {
  const size_t n = static_cast<size_t>(n_rows) * width;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    y[i] += b[i % width];
}

__global__ void f32_to_f16_kernel(const float* __restrict__ x, __half* __restrict__ y, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    y[i] = __float2half(x[i]);
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Box-Muller over a splitmix64 hash of (seed, index): reproducible and
// independent of the launch shape.
__global__ void fill_random_f16_kernel(__half* __restrict__ x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = mix64(seed * 0x9E3779B97F4A7C15ULL + i);
    const float u1 = (static_cast<float>(h >> 40) + 1.0f) * (1.0f / 16777217.0f);
    const float u2 = static_cast<float>((h >> 16) & 0xffffff) * (1.0f / 16777216.0f);
    x[i] = __float2half(sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
  }
}

int grid_for(size_t n, int threads) {
  return static_cast<int>(std::min<size_t>((n + threads - 1) / threads, 132 * 32));
}

}  // namespace

void rmsnorm(const float* x, const float* weight, int n_rows, int dim, float eps, float* y, cudaStream_t s) {
  if (n_rows == 0) return;
  // Launched with PDL (CudaTuning::pdl) where the rows are float4-aligned:
  // its weights' loads and start overlap the kernel before it.
  const bool vec = dim % 4 == 0 && dim <= 4 * 4 * 256 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(weight) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  if (vec && dim <= 4 * 256)
    launch_maybe_pdl(cuda_tuning().pdl, rmsnorm_kernel<1>, dim3(n_rows), dim3(256), 0, s, x, weight, dim, eps, y);
  else if (vec)
    launch_maybe_pdl(cuda_tuning().pdl, rmsnorm_kernel<4>, dim3(n_rows), dim3(256), 0, s, x, weight, dim, eps, y);
  else
    launch_maybe_pdl(cuda_tuning().pdl, rmsnorm_kernel<0>, dim3(n_rows), dim3(256), 0, s, x, weight, dim, eps, y);
  LONGKV_CUDA_LAUNCHED();
}

void rope(const float* inv_freq, int head_dim, int rope_dim, bool neox, float* x, int n_tok, int n_heads,
          int64_t pos0, cudaStream_t s, const int* dpos) {
  const size_t total = static_cast<size_t>(n_tok) * n_heads * (rope_dim / 2);
  if (total == 0) return;
  launch_maybe_pdl(cuda_tuning().pdl, rope_kernel, dim3(grid_for(total, 256)), dim3(256), 0, s, inv_freq, head_dim,
                   rope_dim, neox, x, n_tok, n_heads, pos0, dpos);
  LONGKV_CUDA_LAUNCHED();
}

void swiglu(float* gate, const float* up, size_t n, cudaStream_t s) {
  launch_maybe_pdl(cuda_tuning().pdl, swiglu_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, gate, up, n);
  LONGKV_CUDA_LAUNCHED();
}

void add_bias(float* y, const float* bias, int n_rows, int width, cudaStream_t s) {
  add_bias_kernel<<<grid_for(static_cast<size_t>(n_rows) * width, 256), 256, 0, s>>>(y, bias, n_rows, width);
  LONGKV_CUDA_LAUNCHED();
}

void f32_to_f16(const float* x, __half* y, size_t n, cudaStream_t s) {
  if (n == 0) return;
  f32_to_f16_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, y, n);
  LONGKV_CUDA_LAUNCHED();
}

void fill_random_f16(__half* x, size_t n, uint64_t seed, cudaStream_t s) {
  if (n == 0) return;
  fill_random_f16_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, n, seed);
  LONGKV_CUDA_LAUNCHED();
}

}  // namespace longkv::cuda

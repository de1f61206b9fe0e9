// The decode GEMV of a batch of tokens (milestone 50; CudaModel::forward_batch,
// one token of each of n sequences a step): Y[t][r] (+)= dot(W.row(r), X[t])
// for n <= kGemvBatchMax tokens, every weight byte read once for all n.
// Q4_0 (the GPU's split row layout, Slab<Q4_0>); other formats take gemm().
//
// Why not gemm(): it dequantizes each matrix to f16 in memory and reads it
// back, ~8 bytes of traffic per weight against Q4_0's 0.56 -- for a few
// tokens the step would stream ~34 GB instead of ~4.2 for llama3-8b. Why not
// n single-token GEMVs: they read the weights n times.
//
// Layout: 4-warp blocks; a warp owns kRows adjacent rows and walks their
// units (32 elements, 16 bytes of codes and an f16 scale) lane by lane, two
// units a lane at a time so four 16-byte loads are in flight, and folds each
// unit into every token's sum before the next. Per (row, token) the lanes'
// sums meet by warp_sum, so a token's result does not depend on n or on the
// other tokens of the batch (the tests compare a batch against its tokens
// one by one, bit for bit).
//
// Arithmetic, as the single-token slab kernel (CudaTuning::gemv_i8x):
//   int8 (default): each token's activations quantized once per unit by
//     quantize_x_i8 (a launch of its own before the dots: n x cols / 32
//     threads), a unit's dot the integer sums of dot_q4_0_i8 with the
//     weight nibbles masked once per row for all tokens;
//   exact (gemv_i8x off): Slab<Q4_0>::dot in f32, the CPU's products (the
//     tests' sharp comparison; ~5x the instructions).
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/weight_decode.cuh"

namespace longkv::cuda {
namespace {

constexpr int kWarps = 4;  // a block
constexpr int kRows = 2;   // rows a warp
constexpr int kUnroll = 2;  // units a lane loads before it folds them

// One token's unit in int8, as the dot kernel reads it: the 32 codes in
// XI8's order (two 16-byte words), dx, and kMagic - off as int bits: a
// unit's integer sum s + kMagic - off read as a float is 1.5 * 2^23 + s - off
// exactly (|s - off| <= 32 * 15 * 127 < 2^22), so subtracting 1.5 * 2^23
// converts it with a full-rate FADD instead of a quarter-rate I2F.
struct BatchX8 {
  int4* q;      // [n][units][2]
  float2* sc;   // [n][units]
};
constexpr int kMagic = 0x4B400000;     // the bits of 12582912.0f = 1.5 * 2^23
constexpr float kMagicF = 12582912.0f;

__global__ void quantize_batch_kernel(const float* __restrict__ x, int n, int units, BatchX8 out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n * units) return;
  float v[32];
  ldx(x + 32 * static_cast<size_t>(i), v, 32);  // token i / units, unit i % units: X is [n][32 units]
  XI8 r;
  quantize_x_i8(v, r);
  out.q[2 * i] = make_int4(r.q[0], r.q[1], r.q[2], r.q[3]);
  out.q[2 * i + 1] = make_int4(r.q[4], r.q[5], r.q[6], r.q[7]);
  out.sc[i] = make_float2(r.dx, __int_as_float(kMagic - r.off));
}

// A row's unit with its nibbles masked once for every token: lo[j] = the low
// nibbles of word j (elements 4j..4j+3), hi[j] = the high ones in place
// (16 x elements 16+4j..), as dot_q4_0_nibbles masks them.
struct MaskedUnit {
  uint32_t lo[4], hi[4];
  float d;
};
__device__ __forceinline__ MaskedUnit mask_unit(const Slab<WeightType::Q4_0>::Unit& w) {
  const uint32_t q[4] = {w.q.x, w.q.y, w.q.z, w.q.w};
  MaskedUnit m;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    m.lo[j] = q[j] & 0x0F0F0F0Fu;
    m.hi[j] = q[j] & 0xF0F0F0F0u;
  }
  m.d = w.d;
  return m;
}
// dot_q4_0_i8 of a masked unit: the same integer sums, the same float
// product d dx (s - off) (the conversion exact either way).
__device__ __forceinline__ float dot_masked(const MaskedUnit& w, const int4& a, const int4& b, float2 sc) {
  const int xq[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
  int s = 0, s16 = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    s = __dp4a(static_cast<int>(w.lo[j]), xq[j], s);
    s16 = dp4a_u8s8(w.hi[j], xq[4 + j], s16);
  }
  return w.d * sc.x * (__int_as_float(s + (s16 >> 4) + __float_as_int(sc.y)) - kMagicF);
}

// NT: tokens the accumulators hold (n <= NT); I8: int8 activations (xq) or
// exact f32 products (x).
template <int NT, bool I8>
__global__ void __launch_bounds__(kWarps * 32) gemv_batch_kernel(const uint8_t* __restrict__ w, size_t ld, int rows,
                                                                 int cols, const float* __restrict__ x, BatchX8 xq,
                                                                 int n, float* __restrict__ y, bool accumulate) {
  using S = Slab<WeightType::Q4_0>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int row0 = (blockIdx.x * kWarps + warp) * kRows;
  if (row0 >= rows) return;
  const int units = cols / 32;
  const uint8_t* wr[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) wr[r] = w + ld * static_cast<size_t>(min(row0 + r, rows - 1));
  float acc[kRows][NT] = {};
  for (int u0 = lane; u0 < units; u0 += 32 * kUnroll) {
    S::Unit wu[kUnroll][kRows];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k)
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        if (u0 + 32 * k < units) wu[k][r] = S::load(wr[r], u0 + 32 * k, units);
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int u = u0 + 32 * k;
      if (u >= units) break;
      if constexpr (I8) {
        MaskedUnit m[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) m[r] = mask_unit(wu[k][r]);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          if (t >= n) break;
          const size_t i = static_cast<size_t>(t) * units + u;
          const int4 a = __ldg(xq.q + 2 * i), b = __ldg(xq.q + 2 * i + 1);
          const float2 sc = __ldg(xq.sc + i);
#pragma unroll
          for (int r = 0; r < kRows; ++r) acc[r][t] += dot_masked(m[r], a, b, sc);
        }
      } else {
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          if (t >= n) break;
          S::X xr;
          S::load_x(x + static_cast<size_t>(t) * cols, u, xr);
#pragma unroll
          for (int r = 0; r < kRows; ++r) acc[r][t] += S::dot(wu[k][r], xr, u);
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (t >= n) break;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float v = warp_sum(acc[r][t]);
      if (lane == 0 && row0 + r < rows) {
        float* dst = y + static_cast<size_t>(t) * rows + row0 + r;
        *dst = accumulate ? *dst + v : v;
      }
    }
  }
}

template <int NT>
void launch_batch(const GpuWeight& w, const float* x, BatchX8 xq, int n, float* y, bool accumulate, bool i8,
                  cudaStream_t s) {
  const int rows = static_cast<int>(w.rows), grid = (rows + kWarps * kRows - 1) / (kWarps * kRows);
  if (i8)
    gemv_batch_kernel<NT, true><<<grid, kWarps * 32, 0, s>>>(w.data, w.ld, rows, static_cast<int>(w.cols), x, xq, n,
                                                              y, accumulate);
  else
    gemv_batch_kernel<NT, false><<<grid, kWarps * 32, 0, s>>>(w.data, w.ld, rows, static_cast<int>(w.cols), x, xq,
                                                               n, y, accumulate);
  LONGKV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool gemv_batch_supported(const GpuWeight& w) { return w.type == WeightType::Q4_0 && w.cols % 32 == 0; }

void gemv_batch(const GpuWeight& w, const float* x, int n, float* y, bool accumulate, DeviceBuffer& scratch,
                cudaStream_t s, bool same_x) {
  LONGKV_CHECK(gemv_batch_supported(w), "gemv_batch: %s rows of %lld columns are not supported",
               weight_traits(w.type).name, static_cast<long long>(w.cols));
  LONGKV_CHECK(n >= 1 && n <= kGemvBatchMax, "gemv_batch: %d tokens (1..%d)", n, kGemvBatchMax);
  const bool i8 = cuda_tuning().gemv_i8x;
  const int units = static_cast<int>(w.cols / 32);
  BatchX8 xq{nullptr, nullptr};
  if (i8) {
    const size_t cells = static_cast<size_t>(n) * units, q_bytes = cells * 2 * sizeof(int4);
    LONGKV_CHECK(!same_x || scratch.bytes() >= q_bytes + cells * sizeof(float2), "gemv_batch: no int8 x to reuse");
    scratch.reserve(q_bytes + cells * sizeof(float2));
    xq.q = scratch.as<int4>();
    xq.sc = reinterpret_cast<float2*>(scratch.as<uint8_t>() + q_bytes);
  }
  if (i8 && !same_x) {
    const size_t cells = static_cast<size_t>(n) * units;
    const int threads = 128, total = static_cast<int>(cells);
    quantize_batch_kernel<<<(total + threads - 1) / threads, threads, 0, s>>>(x, n, units, xq);
    LONGKV_CUDA_CHECK(cudaGetLastError());
  }
  if (n <= 8) launch_batch<8>(w, x, xq, n, y, accumulate, i8, s);
  else if (n <= 16) launch_batch<16>(w, x, xq, n, y, accumulate, i8, s);
  else launch_batch<32>(w, x, xq, n, y, accumulate, i8, s);
}

}  // namespace longkv::cuda

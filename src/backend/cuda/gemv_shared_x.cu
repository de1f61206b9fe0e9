// The Q4_0 int8 GEMV with its activation made once a block for several row
// groups (milestone 34, CudaTuning::gemv_shared_x, key "gsx").
//
// gemv.cu's pipelined slab kernel gives every block one row group (a warp a
// 32 units, a lane a unit): each block loads x (and RMSNorm's weight), sums
// x^2 and quantizes x to int8 before its first dot, so gate|up's 528 blocks
// do that 528 times, and a lane holds its unit's 32 floats while the first
// row batch loads (8 of the 16 rows then wait until after the activation:
// gemv.cu's kEarly). Here a block of RG row groups makes the int8 activation
// once, cooperatively -- RG threads a unit, 32 / RG elements each
// (quantize_x_i8_part: the same bits as quantize_x_i8) -- into shared
// memory, and every group reads its lanes' units from there. A thread holds
// 32 / RG floats instead of 32, so all RB rows of the first batch are
// requested before the PDL wait.
//
// bench/cuda_gemv_probe.cu ("Shared x", milestone 34, H200, µs a launch; x
// loaded after the wait in every form): wo 4.7 (RG 4, RB 8) against the
// engine's form 5.5, q|k|v 5.9 (4, 16) against 6.3, gate|up 18.7 (2, 16)
// against 20.0, the output 71.5 (2, 16) against 71.9.
//
// Takes Q4_0 rows of 32 k units (k <= 16 / RG warps a group), whole rows, the
// plain or RMSNorm activation, SwiGLU in the store (GemvAct::glu) and
// accumulation; gemv.cu's kernels keep everything else (RoPE in the store,
// SwiGLU in the load, column slices). The row sums are gemv.cu's (each row
// over its group's warps, in warp order); only RMSNorm's sum of squares is
// added in another order (each thread's 32 / RG elements, then the block).
#include "backend/cuda/gemv_shared_x.cuh"

#include <algorithm>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/weight_decode.cuh"

namespace longkv::cuda {
namespace {

constexpr int kMaxWarps = 16;   // 512 threads: 128 registers a lane
uint64_t g_launches = 0;        // cuda_gemv_shared_x_launches: the tests' proof that the kernel ran
constexpr int kMaxUnits = 512;  // x's int8 form in shared memory: 16 KB of codes

// RG row groups of nb / 32 warps; group g of block b takes row batches
// b RG + g, + gridDim RG, ...; every group runs the block's count of steps
// (the reduction's barrier is the block's), adding zeros past its last batch.
template <int RG, int RB>
__global__ void __launch_bounds__(kMaxWarps * 32, 1)
    gemv_shared_x_kernel(const uint8_t* __restrict__ w, size_t ld, int rows, int nb, GemvAct a,
                         float* __restrict__ y, bool accumulate) {
  using S = Slab<WeightType::Q4_0>;
  constexpr int kE = 32 / RG, kW = kE / 4;  // elements and code words a thread makes
  __shared__ int sq[8][kMaxUnits];          // word j of unit u at sq[j][u]: a warp's reads are consecutive
  __shared__ float sdx[kMaxUnits];
  __shared__ int soff[kMaxUnits];
  __shared__ float red[2][RG][RB][kMaxWarps];
  __shared__ float ssq[kMaxWarps];
  const int wg = nb / 32, n_warps = RG * wg;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = warp / wg, wl = warp % wg;
  const int u = wl * 32 + lane;
  const int n_batches = (rows + RB - 1) / RB, gstride = gridDim.x * RG, b0 = blockIdx.x * RG + g;
  const int n_steps = (n_batches - blockIdx.x * RG + gstride - 1) / gstride;
  S::Unit wu[RB];
  auto load_batch = [&](int b) {
#pragma unroll
    for (int r = 0; r < RB; ++r) wu[r] = S::load(w + ld * static_cast<size_t>(min(b * RB + r, rows - 1)), u, nb);
  };
  if (b0 < n_batches) load_batch(b0);
  pdl_trigger();
  pdl_wait();
  {  // x of unit t / RG, elements (t % RG) kE .. + kE (the block's threads cover the row once)
    const int xu = threadIdx.x / RG, p = threadIdx.x % RG, e0 = 32 * xu + p * kE;
    float v[kE];
#pragma unroll
    for (int i = 0; i < kE; i += 4) {
      const float4 f = *reinterpret_cast<const float4*>(a.x + e0 + i);
      v[i] = f.x, v[i + 1] = f.y, v[i + 2] = f.z, v[i + 3] = f.w;
    }
    if (a.kind == GemvAct::rmsnorm) {  // (x * norm) * inv_rms, gemv.cu's whole-row form
      float ss = 0;
#pragma unroll
      for (int i = 0; i < kE; ++i) ss += v[i] * v[i];
      ss = warp_sum(ss);
      if (lane == 0) ssq[warp] = ss;
#pragma unroll
      for (int i = 0; i < kE; i += 4) {
        const float4 o = *reinterpret_cast<const float4*>(a.norm + e0 + i);
        v[i] *= o.x, v[i + 1] *= o.y, v[i + 2] *= o.z, v[i + 3] *= o.w;
      }
      __syncthreads();
      float tot = 0;
      for (int k = 0; k < n_warps; ++k) tot += ssq[k];
      const float inv_rms = rsqrtf(tot / (32 * nb) + a.eps);
#pragma unroll
      for (int i = 0; i < kE; ++i) v[i] *= inv_rms;
    }
    int wd[kW];
    float dx;
    int off;
    quantize_x_i8_part<RG>(v, wd, dx, off);
#pragma unroll
    for (int j = 0; j < kW; ++j) sq[p * kW + j][xu] = wd[j];
    if (p == 0) {
      sdx[xu] = dx;
      soff[xu] = off;
    }
  }
  __syncthreads();
  XI8 xq;
#pragma unroll
  for (int j = 0; j < 8; ++j) xq.q[j] = sq[j][u];
  xq.dx = sdx[u];
  xq.off = soff[u];
  int buf = 0;
  for (int k = 0; k < n_steps; ++k) {
    const int b = b0 + k * gstride;
    const bool mine = b < n_batches;
    float acc[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) acc[r] = mine ? dot_q4_0_i8(wu[r].q, wu[r].d, xq) : 0.0f;
    if (b + gstride < n_batches) load_batch(b + gstride);
    publish_row_partials(acc, red[buf][g], wl, lane);
    const int t = wl * 32 + lane, r0 = b * RB;
    if (mine && t < RB && r0 + t < rows) {
      const float s = row_total(red[buf][g][t], wg);
      if (a.glu) {  // the gate row's thread: silu(gate) up, as gemv.cu's store
        if (!(t & 1)) {
          const float pu = row_total(red[buf][g][t + 1], wg);
          y[(r0 + t) / 2] = s / (1.0f + expf(-s)) * pu;
        }
      } else {
        float* dst = y + r0 + t;
        *dst = accumulate ? *dst + s : s;
      }
    }
    buf ^= 1;
  }
}

// Row groups and rows a batch by shape (the probe's best forms): up to 4096
// rows (wo) 4 groups of 8-row batches, up to 8192 (q|k|v) 4 of 16, longer
// (gate|up, the output) 2 of 16; fewer groups where 4 would pass 16 warps.
template <int RG, int RB>
bool launch_as(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  auto* k = gemv_shared_x_kernel<RG, RB>;
  const int rows = static_cast<int>(w.rows), nb = static_cast<int>(w.cols / kQK);
  // Resident blocks an SM by warps a group (asked once each).
  static int resident[kMaxWarps + 1] = {}, sms = 0;
  int& res = resident[nb / 32];
  if (res == 0) {
    LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    LONGKV_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&res, k, RG * nb, 0));
    res = std::max(1, res);
  }
  // A block for every RG batches, at most what is resident at once.
  const int batches = (rows + RB - 1) / RB;
  const int grid = std::max(1, std::min((batches + RG - 1) / RG, res * sms));
  launch_maybe_pdl(cuda_tuning().pdl, k, dim3(grid), dim3(RG * nb), 0, s, w.data, w.ld, rows, nb, a, y, accumulate);
  LONGKV_CUDA_LAUNCHED();
  ++g_launches;
  return true;
}

}  // namespace

bool gemv_shared_x_takes(const GpuWeight& w, const GemvAct& a) {
  const int64_t nb = w.cols / kQK;
  return w.type == WeightType::Q4_0 && w.cols % (32 * kQK) == 0 && nb <= kMaxUnits && nb * 2 <= kMaxWarps * 32 &&
         a.kind != GemvAct::swiglu && a.rope.inv_freq == nullptr && (!a.glu || w.rows % 2 == 0);
}

bool launch_gemv_shared_x(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  if (!cuda_tuning().gemv_shared_x || !gemv_shared_x_takes(w, a)) return false;
  if (w.rows <= 8192 && !cuda_tuning().gemv_shared_x_small) return false;
  if (a.kind != GemvAct::plain && cuda_tuning().gemv_shared_x_plain) return false;
  const int64_t nb = w.cols / kQK;
  const bool four = nb * 4 <= kMaxWarps * 32;  // 4 groups fit 16 warps (rows of up to 4096 columns)
  if (four && w.rows <= 4096) return launch_as<4, 8>(w, a, y, accumulate, s);
  if (four && w.rows <= 8192) return launch_as<4, 16>(w, a, y, accumulate, s);
  return launch_as<2, 16>(w, a, y, accumulate, s);
}

}  // namespace longkv::cuda

namespace longkv {
uint64_t cuda_gemv_shared_x_launches() { return cuda::g_launches; }
}  // namespace longkv

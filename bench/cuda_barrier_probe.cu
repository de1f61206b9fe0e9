// Kernel boundary probe: what a chain of dependent decode GEMVs pays at each
// link (docs/cuda-notes.md, milestones 17 and 20: a depth-0 step's GEMVs cost
// 2-4x their weight bytes in the pipeline). N square Q4_0 GEMVs in a chain,
// y_i = W_i y_{i-1}, every W_i a different copy (N x 9.4 MB at 4096 x 4096:
// several times L2), each link the shipped int8-activation slab structure
// (bench/cuda_gemv_probe.cu's dp4a kernel: 16-row batches, the next batch's
// loads in flight during a batch's reduction), run three ways:
//   plain       N launches in stream order
//   pdl         N launches with programmatic dependent launch (the engine's
//               way: a kernel's blocks load their first batch of weights
//               while the one before drains, then wait for it)
//   persistent  one cooperative launch, a grid-wide barrier between links;
//               each block loads its first batch of the next W before the
//               barrier (what a persistent layer kernel would do)
//   ping-pong   persistent, two sets of blocks taking the links in turn: a
//               set loads its next link's weights while the other computes
//               (written after the last device call of the session that
//               added it: not yet run; docs/cuda-notes.md milestone 20)
// and, to split a link's time, PDL chains of empty links (the wait and one
// store a block) and of links without weights (x, its int8 form, the
// reduction and the store), and a persistent chain of empty links (one store
// a block and the barrier).
// The persistent and PDL chains make the same arithmetic in the same order,
// so their outputs must be equal bit for bit (checked and printed; the random
// weights' nonzero mean makes the values grow ~8x a link, finite over 32, and
// the per-unit int8 scales keep the arithmetic the same at any magnitude).
// Prints µs per link and GB/s of weight bytes, and a device copy's bandwidth.
//
// Build and run (standalone; CMake builds it as barrier_probe with LONGKV_CUDA):
//   nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -o barrier_probe bench/cuda_barrier_probe.cu src/core/error.cpp
//   ./barrier_probe
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cuda/pdl.cuh"
#include "backend/cuda/weight_decode.cuh"
#include "cuda_probe_util.cuh"

namespace {

namespace cg = cooperative_groups;
using longkv::WeightType;
using longkv::cuda::Slab;
using S = Slab<WeightType::Q4_0>;

constexpr int kRB = 16;     // rows per batch (the shipped wo GEMV's)
constexpr int kWarps = 4;   // 4096 columns = 128 units = 4 warps of lanes

// One block's part of one link: its batches of rows of w against x -> y, the
// first batch's weights already in wu. Leaves wu free. Without kWeights
// (timing only) no weight is loaded and a row's sum is one of x's int8
// values: the link's x load, int8 form, reduction and store alone.
template <bool kWeights = true>
__device__ __forceinline__ void link(const uint8_t* __restrict__ w, size_t ld, int rows, int nb,
                                     const float* __restrict__ x, float* __restrict__ y, S::Unit (&wu)[kRB],
                                     float (&red)[2][kRB][kWarps], int& buf, int bid, int n_blocks) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int ui = warp * 32 + lane;
  const bool valid = ui < nb;
  const int u = valid ? ui : 0;
  const int stride = n_blocks * kRB;
  S::X f;
  S::load_x(x, u, f);
  longkv::cuda::XI8 xq;
  longkv::cuda::quantize_x_i8(f.v, xq);
  for (int r0 = bid * kRB; r0 < rows; r0 += stride) {
    float acc[kRB];
#pragma unroll
    for (int r = 0; r < kRB; ++r) {
      if constexpr (kWeights) acc[r] = valid ? longkv::cuda::dot_q4_0_i8(wu[r].q, wu[r].d, xq) : 0.0f;
      else acc[r] = valid ? xq.dx * static_cast<float>(xq.q[r % 8] & 0xFF) : 0.0f;
    }
    if (kWeights && r0 + stride < rows) {
#pragma unroll
      for (int r = 0; r < kRB; ++r) {
        wu[r] = S::load(w + ld * static_cast<size_t>(min(r0 + stride + r, rows - 1)), u, nb);
      }
    }
#pragma unroll
    for (int r = 0; r < kRB; ++r)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRB; ++r) red[buf][r][warp] = acc[r];
    }
    __syncthreads();
    if (threadIdx.x < kRB && r0 + static_cast<int>(threadIdx.x) < rows) {
      float s = 0;
      for (int k = 0; k < kWarps; ++k) s += red[buf][threadIdx.x][k];
      y[r0 + threadIdx.x] = s;
    }
    buf ^= 1;
  }
}

__device__ __forceinline__ void load_first(const uint8_t* __restrict__ w, size_t ld, int rows, int nb,
                                           S::Unit (&wu)[kRB], int bid) {
  const int ui = threadIdx.x;
  const int u = ui < nb ? ui : 0;
  if (bid * kRB >= rows) return;
#pragma unroll
  for (int r = 0; r < kRB; ++r) {
    wu[r] = S::load(w + ld * static_cast<size_t>(min(bid * kRB + r, rows - 1)), u, nb);
  }
}

// One link per launch (plain or PDL): xs[i] -> xs[i + 1] through w.
// (4 blocks an SM: at most 128 registers a lane, as the shipped GEMV.)
// kPart (timing only, PDL): 0 the whole link; 1 without weights (link<false>);
// 2 an empty link, the wait and one store a block: the dependency alone.
template <int kPart = 0>
__global__ void __launch_bounds__(kWarps * 32, 4)
    link_kernel(const uint8_t* __restrict__ w, size_t ld, int rows, int nb, const float* x, float* y) {
  __shared__ float red[2][kRB][kWarps];
  S::Unit wu[kRB];
  const int bid = blockIdx.x, n_blocks = gridDim.x;
  if constexpr (kPart == 0) load_first(w, ld, rows, nb, wu, bid);
  longkv::cuda::pdl_trigger();
  longkv::cuda::pdl_wait();
  int buf = 0;
  if constexpr (kPart == 2) {
    if (threadIdx.x == 0) y[blockIdx.x] = x[blockIdx.x] + 1.0f;
  } else {
    link<kPart == 0>(w, ld, rows, nb, x, y, wu, red, buf, bid, n_blocks);
  }
}

// Every link in one cooperative launch: xs [n + 1][rows]. kMode 0: every
// block takes part in every link and loads its first batch of the next
// link's weights before the barrier. 1 (timing only): each link is one store
// a block and the barrier. 2, ping-pong: two sets of blocks (the grid twice
// as large) take the links in turn, so a set loads the weights of its next
// link while the other set computes, as PDL's next kernel does beside the
// one before it; every link still ends at a grid-wide barrier.
template <int kMode = 0>
__global__ void __launch_bounds__(kWarps * 32, 4)
    chain_kernel(const uint8_t* const* __restrict__ ws, size_t ld, int rows, int nb, int n, float* xs) {
  __shared__ float red[2][kRB][kWarps];
  cg::grid_group g = cg::this_grid();
  if constexpr (kMode == 2) {
    const int half = gridDim.x / 2, set = blockIdx.x / half, bid = blockIdx.x % half;
    S::Unit wu[kRB];
    if (set < n) load_first(ws[set], ld, rows, nb, wu, bid);
    int buf = 0;
    for (int i = 0; i < n; ++i) {
      if (i % 2 == set) {
        float* x = xs + static_cast<size_t>(i) * rows;
        link(ws[i], ld, rows, nb, x, x + rows, wu, red, buf, bid, half);
        if (i + 2 < n) load_first(ws[i + 2], ld, rows, nb, wu, bid);
      }
      g.sync();
    }
    return;
  }
  if constexpr (kMode == 1) {
    for (int i = 0; i < n; ++i) {
      float* x = xs + static_cast<size_t>(i) * rows;
      if (threadIdx.x == 0) x[rows + blockIdx.x] = x[blockIdx.x] + 1.0f;
      g.sync();
    }
    return;
  }
  S::Unit wu[kRB];
  load_first(ws[0], ld, rows, nb, wu, blockIdx.x);
  int buf = 0;
  for (int i = 0; i < n; ++i) {
    float* x = xs + static_cast<size_t>(i) * rows;
    link(ws[i], ld, rows, nb, x, x + rows, wu, red, buf, blockIdx.x, gridDim.x);
    if (i + 1 < n) load_first(ws[i + 1], ld, rows, nb, wu, blockIdx.x);  // the next link's weights, before the barrier
    g.sync();
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 32;  // links in a chain
  const int dim = 4096, nb = dim / 32, reps = 20;
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  std::printf("device: %s, %d SMs; chain of %d Q4_0 GEMVs %dx%d, int8 activations, %d-row batches\n\n", p.name,
              p.multiProcessorCount, n, dim, dim, kRB);
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  probe_copy_bandwidth(s);
  // Random Q4_0 rows in the split layout (quants, then f16 scales), one copy per link.
  const size_t ld = size_t(nb) * 18, wbytes = ld * dim;
  std::mt19937 rng(7);
  std::vector<uint8_t> h(wbytes);
  std::vector<uint8_t*> ws(n);
  for (int i = 0; i < n; ++i) {
    random_q4_0_rows(rng, h.data(), dim, nb, 0.003f);
    CK(cudaMalloc(&ws[i], wbytes + 64));
    CK(cudaMemcpy(ws[i], h.data(), wbytes, cudaMemcpyHostToDevice));
  }
  const uint8_t** dws;
  CK(cudaMalloc(&dws, n * sizeof(uint8_t*)));
  CK(cudaMemcpy(dws, ws.data(), n * sizeof(uint8_t*), cudaMemcpyHostToDevice));
  std::vector<float> hx(dim);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : hx) v = nd(rng);
  float *xa, *xb;
  CK(cudaMalloc(&xa, sizeof(float) * dim * (n + 1)));
  CK(cudaMalloc(&xb, sizeof(float) * dim * (n + 1)));
  CK(cudaMemcpy(xa, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(xb, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));

  int occ = 0, occ_c = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, link_kernel<0>, kWarps * 32, 0));
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ_c, chain_kernel<0>, kWarps * 32, 0));
  const int batches = (dim + kRB - 1) / kRB;
  const int grid = std::min(batches, occ * p.multiProcessorCount);
  const int grid_c = std::min(batches, occ_c * p.multiProcessorCount);
  auto chain_launches = [&](bool pdl, int part = 0) {
    auto* kern = part == 0 ? link_kernel<0> : part == 1 ? link_kernel<1> : link_kernel<2>;
    for (int i = 0; i < n; ++i) {
      float* x = xa + static_cast<size_t>(i) * dim;
      longkv::cuda::launch_maybe_pdl(pdl, kern, dim3(grid), dim3(kWarps * 32), 0, s,
                                     static_cast<const uint8_t*>(ws[i]), ld, dim, nb, static_cast<const float*>(x),
                                     x + dim);
    }
  };
  // Ping-pong needs two sets of grid_c blocks resident at once.
  const bool pp_fits = 2 * grid_c <= occ_c * p.multiProcessorCount;
  float* xc;
  CK(cudaMalloc(&xc, sizeof(float) * dim * (n + 1)));
  CK(cudaMemcpy(xc, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));
  auto chain_persistent = [&](int mode) {
    int rows = dim, nbv = nb, nn = n;
    size_t ldv = ld;
    float* out = mode == 0 ? xb : mode == 1 ? xa : xc;
    void* args[] = {&dws, &ldv, &rows, &nbv, &nn, &out};
    void* kern = mode == 0   ? reinterpret_cast<void*>(chain_kernel<0>)
                 : mode == 1 ? reinterpret_cast<void*>(chain_kernel<1>)
                             : reinterpret_cast<void*>(chain_kernel<2>);
    CK(cudaLaunchCooperativeKernel(kern, dim3(mode == 2 ? 2 * grid_c : grid_c), dim3(kWarps * 32), args, 0, s));
  };
  auto time_us = [&](auto&& run) {
    for (int i = 0; i < 3; ++i) run();
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    CK(cudaEventRecord(a, s));
    for (int i = 0; i < reps; ++i) run();
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    return 1000.0 * ms / (reps * n);
  };
  std::printf("| chain | grid | µs per link | GB/s of weight bytes |\n|---|---:|---:|---:|\n");
  for (int round = 0; round < 2; ++round) {
    const double t_plain = time_us([&] { chain_launches(false); });
    const double t_empty = time_us([&] { chain_launches(true, 2); });
    const double t_now = time_us([&] { chain_launches(true, 1); });
    const double t_bar = time_us([&] { chain_persistent(1); });
    const double t_pdl = time_us([&] { chain_launches(true); });  // after the empty ones: its output is compared
    const double t_pers = time_us([&] { chain_persistent(0); });
    const double t_pp = pp_fits ? time_us([&] { chain_persistent(2); }) : 0.0;
    std::printf("| plain launches | %d | %.2f | %.0f |\n", grid, t_plain, wbytes / (t_plain * 1e-6) / 1e9);
    std::printf("| PDL launches, empty links (wait, one store a block) | %d | %.2f | — |\n", grid, t_empty);
    std::printf("| PDL launches, no weights (x, int8 form, reduction, store) | %d | %.2f | — |\n", grid, t_now);
    std::printf("| PDL launches | %d | %.2f | %.0f |\n", grid, t_pdl, wbytes / (t_pdl * 1e-6) / 1e9);
    std::printf("| persistent, grid barrier | %d | %.2f | %.0f |\n", grid_c, t_pers, wbytes / (t_pers * 1e-6) / 1e9);
    std::printf("| persistent, empty links (one store a block, the barrier) | %d | %.2f | — |\n", grid_c, t_bar);
    if (pp_fits)
      std::printf("| persistent ping-pong, grid barrier | %d | %.2f | %.0f |\n", 2 * grid_c, t_pp,
                  wbytes / (t_pp * 1e-6) / 1e9);
  }
  std::vector<float> ya(dim), yb(dim), yc(dim);
  CK(cudaMemcpy(ya.data(), xa + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(yb.data(), xb + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(yc.data(), xc + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  int differ = 0, differ_pp = 0, nonfinite = 0;
  for (int i = 0; i < dim; ++i) {
    differ += std::memcmp(&ya[i], &yb[i], sizeof(float)) != 0;
    differ_pp += pp_fits && std::memcmp(&ya[i], &yc[i], sizeof(float)) != 0;
    nonfinite += !std::isfinite(ya[i]);
  }
  differ += differ_pp;
  if (pp_fits) std::printf("\nping-pong vs PDL: %d of %d values differ", differ_pp, dim);
  std::printf("\nlast link's output, persistent vs PDL: %d of %d values differ, %d non-finite (|y_0| = %.3g)\n", differ,
              dim, nonfinite, std::fabs(ya[0]));
  for (auto* w : ws) CK(cudaFree(w));
  CK(cudaFree(dws));
  CK(cudaFree(xa));
  CK(cudaFree(xb));
  CK(cudaFree(xc));
  return differ == 0 && nonfinite == 0 ? 0 : 1;
}

// Q4_0 GEMV probe: where the slab kernel's time goes at batch 1.
//
// One kernel skeleton (gemv.cu's pipelined slab kernel: a lane owns one
// 32-element unit of every row it visits, 8 or 16 rows per batch, the next
// batch's loads issued before the current batch's reduction, PDL; since
// milestone 34 in bench/cuda_gemv_forms.cuh, which bench/cuda_ffn_probe.cu
// shares) with three inner products, so the differences between them are
// the arithmetic's cost:
//   f32   the shipped dot (Slab<Q4_0>::dot: exact dequantized weight x f32 x)
//   dp4a  x quantized once per lane to int8 with one scale per unit (as the
//         activations of llama.cpp's MMVQ), nibbles x int8 by __dp4a: the
//         shipped quantize_x_i8 / dot_q4_0_i8 (weight_decode.cuh)
//   none  the same loads folded into the sum with one integer op per word
//         (wrong results; the memory ceiling of this load structure)
// Times back-to-back launches over rotating copies (>= 512 MiB, several
// times L2) with CUDA events; prints a Markdown table of us and GB/s of
// weight bytes, plus a device-to-device copy's bandwidth for reference. The
// dp4a result is compared with the f32 one (relative RMS), so its error is
// printed beside its speed. Milestone 33's tables follow the first: the
// quantization of x at each block's start split from the dots, and the
// ring forms (row batches by bulk copies into shared memory); milestone 34's
// shared-x forms (printed before the rings) and, last, wo + gate|up behind a
// v3 stand-in (what the step runs them after, instead of copies of
// themselves).
//
// Build and run (standalone; CMake builds it as gemv_probe with LONGKV_CUDA):
//   nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -o gemv_probe bench/cuda_gemv_probe.cu src/core/error.cpp
//   ./gemv_probe
// (./gemv_probe ROWS COLS [PAD]: that shape only, rows PAD bytes (a
// multiple of 16) further apart than their 18 bytes a unit: whether the
// distance between the rows that a step's blocks read at once matters)
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/weight_decode.cuh"
#include "cuda_gemv_forms.cuh"
#include "cuda_probe_util.cuh"

namespace {

using longkv::WeightType;
using longkv::cuda::Slab;
using namespace gemv_forms;

constexpr int kMaxStages = 8;

// Ring (milestone 33): the block's row batches stream through a ring of
// `stages` batches in shared memory, each filled by one bulk (TMA) copy of
// its RB consecutive rows (rows are contiguous, 16-byte multiples), so the
// bytes in flight no longer depend on when the dots finish: the first
// `stages` batches are requested before the PDL wait, and a stage is
// refilled with the batch `stages` ahead as soon as the block's reduction
// barrier shows every warp is done reading it. Lanes read their 16-byte
// unit and scale from shared memory (consecutive lanes, consecutive bytes:
// no bank conflicts). Dots = false: the same copies and shared reads folded
// into the sum with one integer op (wrong results; this form's ceiling).
template <int RB, bool Dots>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) probe_ring_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                     int rows, int nb, const float* x,
                                                                     float* __restrict__ y, int stages) {
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ uint64_t full[kMaxStages];
  __shared__ float red[2][RB][kMaxWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  const int ui = warp * 32 + lane;
  const bool valid = ui < nb;
  const int u = valid ? ui : 0;
  const int n_batches = (rows + RB - 1) / RB;
  const size_t stage_bytes = RB * ld;
  // Batch k of this block (k = 0, 1, ...) is batch blockIdx.x + k * gridDim.x.
  auto request = [&](int k) {
    const int b = blockIdx.x + k * gridDim.x;
    if (b >= n_batches) return;
    const int r0 = b * RB, n = min(RB, rows - r0);
    uint64_t* bar = &full[k % stages];
    longkv::cuda::mbar_arrive_expect(bar, static_cast<unsigned>(n * ld));
    longkv::cuda::bulk_copy(ring + (k % stages) * stage_bytes, w + ld * static_cast<size_t>(r0),
                            static_cast<unsigned>(n * ld), bar);
  };
  if (threadIdx.x == 0) {
    for (int i = 0; i < stages; ++i) longkv::cuda::mbar_init(&full[i], 1);
    longkv::cuda::fence_mbar_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int k = 0; k < stages; ++k) request(k);
  }
  longkv::cuda::pdl_trigger();
  longkv::cuda::pdl_wait();
  Xr<Dots ? kDp4a : kNone> xr;
  make_x<Dots ? kDp4a : kNone>(x, u, nb, xr);
  int buf = 0;
  for (int k = 0;; ++k) {
    const int b = blockIdx.x + k * gridDim.x;
    if (b >= n_batches) break;
    const int r0 = b * RB;
    longkv::cuda::mbar_wait(&full[k % stages], (k / stages) & 1);
    const uint8_t* st = ring + (k % stages) * stage_bytes;
    float acc[RB];
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const uint8_t* row = st + r * ld;
      const Slab<WeightType::Q4_0>::Unit wu{*reinterpret_cast<const uint4*>(row + 16 * u),
                                            __half2float(*reinterpret_cast<const __half*>(row + 16 * nb + 2 * u))};
      acc[r] = valid && r0 + r < rows ? dot<Dots ? kDp4a : kNone>(wu, xr) : 0.0f;
    }
    longkv::cuda::publish_row_partials(acc, red[buf], warp, lane);
    if (threadIdx.x == 0) {
      longkv::cuda::fence_proxy_async();  // the block's reads of this stage, before its refill
      request(k + stages);
    }
    if (threadIdx.x < RB && r0 + static_cast<int>(threadIdx.x) < rows)
      y[r0 + threadIdx.x] = longkv::cuda::row_total(red[buf][threadIdx.x], n_warps);
    buf ^= 1;
  }
}

// Shared x (milestone 33, for the next device call): a block of RG row
// groups, each the plain kernel's warps (a lane a unit), quantizes x once
// for all of them -- RG threads a unit, 32 / RG elements each, the same bits
// as quantize_x_i8 (max is exact; the codes are each element's own; the
// offset an integer sum) -- into shared memory (one array a code word, so
// the lanes' reads are consecutive), instead of every 4-warp block doing all
// of it. Each thread holds 32 / RG floats instead of 32 at the start, so all
// RB rows of the first batch are requested before the PDL wait. Group g of
// block b takes batches b * RG + g, + gridDim * RG, ...; the loop runs as
// often in every group (the reduction's barrier is the block's), a group
// past its last batch adding zeros and storing nothing.
constexpr int kMaxSharedUnits = 512;
template <int RG, int RB>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) probe_shared_x_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                         int rows, int nb,
                                                                         const float* x,
                                                                         float* __restrict__ y) {
  using S = Slab<WeightType::Q4_0>;
  constexpr int kE = 32 / RG;  // elements of a unit a thread quantizes
  static_assert(32 % RG == 0 && kE % 4 == 0, "a thread quantizes whole code words");
  __shared__ int sq[8][kMaxSharedUnits];
  __shared__ float sdx[kMaxSharedUnits];
  __shared__ int soff[kMaxSharedUnits];
  __shared__ float red[2][RG][RB][kMaxWarps];
  const int wg = (nb + 31) / 32;  // warps a group
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = warp / wg, wl = warp % wg;
  const int ui = wl * 32 + lane;
  const bool valid = ui < nb;
  const int u = valid ? ui : 0;
  const int n_batches = (rows + RB - 1) / RB;
  const int gstride = gridDim.x * RG;  // batches between a group's two
  const int b0 = blockIdx.x * RG + g;
  // The loop's count is group 0's (the most): every group takes part in
  // every barrier.
  const int n_steps = (n_batches - blockIdx.x * RG + gstride - 1) / gstride;
  S::Unit wu[RB];
  auto load_batch = [&](int b) {
#pragma unroll
    for (int r = 0; r < RB; ++r) wu[r] = S::load(w + ld * static_cast<size_t>(min(b * RB + r, rows - 1)), u, nb);
  };
  if (b0 < n_batches) load_batch(b0);
  longkv::cuda::pdl_trigger();
  longkv::cuda::pdl_wait();
  {  // x: unit t / RG, elements (t % RG) * kE .. + kE (cuda_gemv_forms.cuh's quantize_x_i8_part)
    const int t = threadIdx.x, xu = t / RG, part = t % RG;
    float v[kE];
#pragma unroll
    for (int i = 0; i < kE; i += 4) {
      const float4 f = xu < nb ? *reinterpret_cast<const float4*>(x + 32 * xu + part * kE + i)
                               : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      v[i] = f.x, v[i + 1] = f.y, v[i + 2] = f.z, v[i + 3] = f.w;
    }
    int wd[kE / 4];
    float dx;
    int off;
    quantize_x_i8_part<RG>(v, wd, dx, off);
    if (xu < nb) {
#pragma unroll
      for (int j = 0; j < kE / 4; ++j) sq[part * kE / 4 + j][xu] = wd[j];  // word j of the unit: elements 4j .. 4j + 3
      if (part == 0) {
        sdx[xu] = dx;
        soff[xu] = off;
      }
    }
  }
  __syncthreads();
  longkv::cuda::XI8 xq;
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
    for (int r = 0; r < RB; ++r) acc[r] = valid && mine ? longkv::cuda::dot_q4_0_i8(wu[r].q, wu[r].d, xq) : 0.0f;
    if (b + gstride < n_batches) load_batch(b + gstride);
    longkv::cuda::publish_row_partials(acc, red[buf][g], wl, lane);
    const int tl = wl * 32 + lane, r0 = b * RB;
    if (mine && tl < RB && r0 + tl < rows) y[r0 + tl] = longkv::cuda::row_total(red[buf][g][tl], wg);
    buf ^= 1;
  }
}

struct Shape {
  const char* name;
  int rows, cols;
};

// One form's time: a grid of what fits on the GPU at once (at most a block a
// batch of RB rows), 20 warm-up launches, then `iters` back-to-back PDL
// launches over the rotating copies, us a launch.
// A form's launch over weights wp, as a callable: a grid of what fits on the
// GPU at once (at most a block a batch of RB rows, RG batches a block), PDL.
template <typename... KArgs, typename... Extra>
auto form_launcher(void (*k)(const uint8_t*, size_t, int, int, const float*, float*, KArgs...), int RB, int RG,
                   size_t smem, size_t ld, const Shape& sh, const float* x, float* y, cudaStream_t s, Extra... extra) {
  const int nb = sh.cols / 32;
  const int warps = RG * ((nb + 31) / 32);  // RG row groups of a warp a 32 units
  if (smem > 48 * 1024) CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int occ = 0, sms = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, warps * 32, smem));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int batches = (sh.rows + RB * RG - 1) / (RB * RG);  // a block takes RG batches at once
  const int grid = std::max(1, std::min(batches, std::max(1, occ) * sms));
  const int rows = sh.rows;
  return [=](const uint8_t* wp) {
    longkv::cuda::launch_maybe_pdl(true, k, dim3(grid), dim3(warps * 32), smem, s, wp, ld, rows, nb, x, y, extra...);
  };
}

// One form's time: 20 warm-up launches, then `iters` back-to-back PDL
// launches over the rotating copies, us a launch.
template <typename... KArgs, typename... Extra>
float time_launches(void (*k)(const uint8_t*, size_t, int, int, const float*, float*, KArgs...), int RB, int RG,
                    size_t smem, const std::vector<uint8_t*>& copies, size_t ld, const Shape& sh, const float* x,
                    float* y, int iters, cudaStream_t s, Extra... extra) {
  const auto one = form_launcher(k, RB, RG, smem, ld, sh, x, y, s, extra...);
  auto launch = [&](int i) { one(copies[i % copies.size()]); };
  for (int i = 0; i < 20; ++i) launch(i);
  return time_us(s, iters, launch);
}

template <Dot D, int RB, bool DB = false, int MinB = 1, int MaxT = kMaxWarps * 32, int Early = RB, bool XC = false,
          bool GLU = false>
float time_kernel(const std::vector<uint8_t*>& copies, size_t ld, const Shape& sh, const float* x, float* y,
                  int iters, cudaStream_t s) {
  const int warps = (sh.cols / 32 + 31) / 32;
  const size_t smem = XC ? size_t(warps) * 256 * sizeof(float4) : 0;
  return time_launches(probe_kernel<D, RB, MinB, DB, MaxT, Early, XC, GLU>, RB, 1, smem, copies, ld, sh, x, y, iters, s);
}

// The shared-x form: RG row groups a block (none if they pass 16 warps or
// kMaxSharedUnits units).
template <int RG, int RB>
float time_shared_x(const std::vector<uint8_t*>& copies, size_t ld, const Shape& sh, const float* x, float* y,
                    int iters, cudaStream_t s) {
  const int nb = sh.cols / 32;
  if (nb % 32 != 0 || RG * (nb / 32) > kMaxWarps || nb > kMaxSharedUnits) return -1.0f;
  return time_launches(probe_shared_x_kernel<RG, RB>, RB, RG, 0, copies, ld, sh, x, y, iters, s);
}

// The ring form with as many stages as fit in RingKB (2 to kMaxStages).
template <int RB, bool Dots, int RingKB>
float time_ring(const std::vector<uint8_t*>& copies, size_t ld, const Shape& sh, const float* x, float* y, int iters,
                cudaStream_t s) {
  const size_t stage = RB * ld;
  const int stages = static_cast<int>(std::clamp<size_t>(size_t(RingKB) * 1024 / stage, 2, kMaxStages));
  if (stages * stage > size_t(220) << 10) return -1.0f;  // does not fit in an SM's shared memory
  return time_launches(probe_ring_kernel<RB, Dots>, RB, 1, stages * stage, copies, ld, sh, x, y, iters, s, stages);
}

// Behind a neighbour (milestone 34): the engine's step runs wo and gate|up
// after the quantized decode kernel (v3), not after copies of themselves.
// The neighbour stands in for v3 at 131K: 388 blocks of 128 threads, 3 an
// SM by their 61 KB of shared memory, ~128 registers a lane, releasing their
// dependents at once and then spinning for ~46 us. A GEMV after it starts
// only where its blocks leave room -- a 4-warp block beside 3 of them, a
// 256- or 512-thread shared-x block only once some have left.
constexpr int kNeighbourRegs = 112;  // live floats a lane: ptxas holds them in registers
// spread: the fraction of `cycles` by which blocks may end early, spread
// over the blocks by a hash of their index (v3's SMs are active ~81% of its
// launch on average: milestone 30), 0 for all ending together.
__global__ void __launch_bounds__(128, 3) neighbour_kernel(float* sink, long long cycles, float spread) {
  extern __shared__ float nsm[];
  longkv::cuda::pdl_trigger();
  longkv::cuda::pdl_wait();
  const float h = static_cast<float>(((blockIdx.x * 2654435761u) >> 16) & 1023u) / 1023.0f;
  cycles = static_cast<long long>(static_cast<float>(cycles) * (1.0f - spread * h));
  float r[kNeighbourRegs];
#pragma unroll
  for (int i = 0; i < kNeighbourRegs; ++i) r[i] = static_cast<float>(threadIdx.x + i);
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
#pragma unroll
    for (int i = 0; i < kNeighbourRegs; ++i) r[i] = fmaf(r[i], 1.0000001f, 0.5f);
  }
  float sum = 0;
#pragma unroll
  for (int i = 0; i < kNeighbourRegs; ++i) sum += r[i];
  nsm[threadIdx.x] = sum;
  if (sum == 1.2345f) *sink = nsm[(threadIdx.x + 1) % 128];
}

// us an iteration of: the neighbour (or none), wo, gate|up -- the engine's
// forms (16 rows, 8 early, x coalesced; gate|up with the SwiGLU store)
// against the shared-x forms (wo 4 groups of 8 rows, gate|up 2 of 16) -- as
// Markdown rows.
std::vector<std::string> neighbour_rows(cudaStream_t s) {
  const Shape wo{"wo", 4096, 4096}, gu{"gate+up", 28672, 4096};
  const size_t ld = 128 * 18;
  std::mt19937 rng(3);
  std::vector<uint8_t> hw(ld * wo.rows), hg(ld * gu.rows);
  random_q4_0_rows(rng, hw.data(), wo.rows, 128, 0.002f);
  random_q4_0_rows(rng, hg.data(), gu.rows, 128, 0.002f);
  constexpr int kSets = 6;  // 456 MB: several times L2
  std::vector<uint8_t*> cw(kSets), cg(kSets);
  for (int i = 0; i < kSets; ++i) {
    CK(cudaMalloc(&cw[i], hw.size()));
    CK(cudaMalloc(&cg[i], hg.size()));
    CK(cudaMemcpy(cw[i], hw.data(), hw.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(cg[i], hg.data(), hg.size(), cudaMemcpyHostToDevice));
  }
  float *x, *y1, *y2, *sink;
  CK(cudaMalloc(&x, 4096 * sizeof(float)));
  CK(cudaMemset(x, 0, 4096 * sizeof(float)));
  CK(cudaMalloc(&y1, 4096 * sizeof(float)));
  CK(cudaMalloc(&y2, 28672 * sizeof(float)));
  CK(cudaMalloc(&sink, sizeof(float)));
  constexpr size_t kNeighbourSmem = 61 << 10;
  CK(cudaFuncSetAttribute(neighbour_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kNeighbourSmem)));
  constexpr int kT = kMaxWarps * 32;
  const size_t xc_smem = 4 * 256 * sizeof(float4);
  const auto wo_e = form_launcher(probe_kernel<kDp4a, 16, 1, false, kT, 8, true>, 16, 1, xc_smem, ld, wo, x, y1, s);
  const auto gu_e = form_launcher(probe_kernel<kDp4a, 16, 1, false, kT, 8, true, true>, 16, 1, xc_smem, ld, gu, x, y2, s);
  const auto wo_x = form_launcher(probe_shared_x_kernel<4, 8>, 8, 4, 0, ld, wo, x, y1, s);
  const auto gu_x = form_launcher(probe_shared_x_kernel<2, 16>, 16, 2, 0, ld, gu, x, y2, s);
  float spread = 0;
  auto chain = [&](bool neighbour, int form) {  // form 0: none, 1: the engine's, 2: shared x
    auto it = [&](int i) {
      if (neighbour)
        longkv::cuda::launch_maybe_pdl(true, neighbour_kernel, dim3(388), dim3(128), kNeighbourSmem, s, sink,
                                       90000LL, spread);
      if (form == 1) wo_e(cw[i % kSets]), gu_e(cg[i % kSets]);
      if (form == 2) wo_x(cw[i % kSets]), gu_x(cg[i % kSets]);
    };
    for (int i = 0; i < 10; ++i) it(i);
    return time_us(s, 100, it);
  };
  const float e0 = chain(false, 1), x0 = chain(false, 2);
  std::vector<std::string> rows;
  for (float sp : {0.0f, 0.4f}) {  // all blocks ending together; ending over the last 40% (~80% active on average)
    spread = sp;
    const float alone = chain(true, 0), e = chain(true, 1), xs = chain(true, 2);
    char line[2][200];
    std::snprintf(line[0], sizeof line[0], "| engine's forms | %.0f%% | %.1f | %.1f | %.1f | %.1f |", 100 * sp, e0, alone,
                  e, e - alone);
    std::snprintf(line[1], sizeof line[1], "| shared x | %.0f%% | %.1f | %.1f | %.1f | %.1f |", 100 * sp, x0, alone,
                  xs, xs - alone);
    rows.push_back(line[0]);
    rows.push_back(line[1]);
  }
  for (int i = 0; i < kSets; ++i) {
    CK(cudaFree(cw[i]));
    CK(cudaFree(cg[i]));
  }
  CK(cudaFree(x));
  CK(cudaFree(y1));
  CK(cudaFree(y2));
  CK(cudaFree(sink));
  return rows;
}

// A Markdown cell: us a launch and GB/s of `bytes`; `absent` where the form
// did not run (us < 0: it does not fit the shape).
std::string us_cell(float us, double bytes, const char* absent = " — |") {
  if (us < 0) return absent;
  char cell[64];
  std::snprintf(cell, sizeof cell, " %.1f (%.0f) |", us, bytes / (us * 1e-6) / 1e9);
  return cell;
}

}  // namespace

int main(int argc, char** argv) {
  // Optional: ROWS COLS times that one shape only (e.g. under a profiler).
  const int only_rows = argc > 2 ? std::atoi(argv[1]) : 0, only_cols = argc > 2 ? std::atoi(argv[2]) : 0;
  const size_t pad = argc > 3 ? static_cast<size_t>(std::atoi(argv[3])) / 16 * 16 : 0;
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  std::printf("device: %s, %d SMs\n\n", p.name, p.multiProcessorCount);
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  probe_copy_bandwidth(s);
  const Shape shapes[] = {{"wo", 4096, 4096},      {"qkv", 6144, 4096},      {"gate+up", 28672, 4096},
                          {"down", 4096, 14336},   {"output", 128256, 4096}};
  std::printf("| shape | f32 RB8 | f32 RB16 | dp4a RB8 | dp4a RB16 | none RB8 | dp4a RB8 x2 | "
              "dp4a RB8, 448 x 2 | dp4a RB16, 8 early | + coalesced x | + SwiGLU store | dp4a rel. RMS vs f32 | "
              "x2 vs RB8 | 448 x 2 vs RB8 | 8 early vs RB16 | coalesced vs RB16 | SwiGLU rel. RMS |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::mt19937 rng(1);
  std::vector<std::string> ring_rows, head_rows, shared_rows;
  for (const Shape& sh : shapes) {
    if (only_rows > 0 && (sh.rows != only_rows || sh.cols != only_cols)) continue;
    const int nb = sh.cols / 32;
    const size_t ld0 = size_t(nb) * 18, ld = ld0 + pad;
    const size_t bytes = ld * sh.rows;  // GB/s below: of the weights' own bytes (ld0 a row)
    std::vector<uint8_t> h0(ld0 * sh.rows), h(bytes, 0);
    random_q4_0_rows(rng, h0.data(), sh.rows, nb, 0.002f);
    for (int r = 0; r < sh.rows; ++r) std::memcpy(h.data() + r * ld, h0.data() + r * ld0, ld0);
    const int n_copies = static_cast<int>(std::max<size_t>(2, ((size_t(512) << 20) + bytes - 1) / bytes));
    std::vector<uint8_t*> copies(n_copies);
    for (auto& c : copies) {
      CK(cudaMalloc(&c, bytes + 64));
      CK(cudaMemcpy(c, h.data(), bytes, cudaMemcpyHostToDevice));
    }
    std::vector<float> hx(sh.cols);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& v : hx) v = nd(rng);
    float *x, *y;
    CK(cudaMalloc(&x, sh.cols * sizeof(float)));
    CK(cudaMalloc(&y, sh.rows * sizeof(float)));
    CK(cudaMemcpy(x, hx.data(), sh.cols * sizeof(float), cudaMemcpyHostToDevice));
    // Accuracy: one launch of a form on copy 0, its n outputs. The order of
    // launches keeps scripts/device-gemv-source.sh's SKIP indices: the first
    // seven forms' as in milestone 31, then milestone 32's forms, each form's
    // accuracy launch before its timing.
    const std::vector<uint8_t*> one = {copies[0]};
    // Every form as a callable (copies, iterations) -> us; E8: 16 rows, 8 of
    // them early; XC, GLU: milestone 32's engine extras on top of E8.
    using TimeFn = float (*)(const std::vector<uint8_t*>&, size_t, const Shape&, const float*, float*, int,
                             cudaStream_t);
    struct Form {
      TimeFn fn;
      const Shape* sh;
      size_t ld;
      const float* x;
      float* y;
      cudaStream_t s;
      float operator()(const std::vector<uint8_t*>& c, int n) const { return fn(c, ld, *sh, x, y, n, s); }
    };
    auto form = [&](TimeFn k) { return Form{k, &sh, ld, x, y, s}; };
    constexpr int kT = kMaxWarps * 32;
    const Form f32_8 = form(time_kernel<kF32, 8>);
    const Form f32_16 = form(time_kernel<kF32, 16>);
    const Form dp_8 = form(time_kernel<kDp4a, 8>);
    const Form dp_16 = form(time_kernel<kDp4a, 16>);
    const Form none_8 = form(time_kernel<kNone, 8>);
    const Form dp_8x2 = form(time_kernel<kDp4a, 8, true>);
    const Form dp_448 = form(time_kernel<kDp4a, 8, false, 2, 448>);
    const Form e8 = form(time_kernel<kDp4a, 16, false, 1, kT, 8>);
    const Form e8_xc = form(time_kernel<kDp4a, 16, false, 1, kT, 8, true>);
    const Form e8_glu = form(time_kernel<kDp4a, 16, false, 1, kT, 8, true, true>);
    auto outputs = [&](const Form& f, int n) {
      f(one, 1);
      std::vector<float> out(n);
      CK(cudaMemcpy(out.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost));
      return out;
    };
    auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
      return std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0 ? "same bits" : "DIFFERENT";
    };
    // The first n forms' outputs against refs[i], each where it runs (a form
    // that does not fit returns < 0 and is left out): "same bits",
    // "DIFFERENT", or "—" where none ran.
    auto same_where_run = [&](const Form* forms, const std::vector<float>* const* refs, int n) {
      bool any = false, all = true;
      for (int i = 0; i < n; ++i) {
        if (forms[i](one, 1) < 0) continue;
        any = true;
        all = all && same(outputs(forms[i], sh.rows), *refs[i])[0] == 's';
      }
      return !any ? "—" : all ? "same bits" : "DIFFERENT";
    };
    const int iters = 400;
    const std::vector<float> y_f32 = outputs(f32_8, sh.rows), y_dp = outputs(dp_8, sh.rows);
    // The double-buffered and 2-block kernels against the single one (same
    // arithmetic per row: bits equal).
    const char* db_same = same(outputs(dp_8x2, sh.rows), y_dp);
    const char* r64_same = same(outputs(dp_448, sh.rows), y_dp);
    float t[10] = {f32_8(copies, iters), f32_16(copies, iters), dp_8(copies, iters),   dp_16(copies, iters),
                   none_8(copies, iters), dp_8x2(copies, iters), dp_448(copies, iters)};
    const std::vector<float> y_16 = outputs(dp_16, sh.rows);
    const char* e8_same = same(outputs(e8, sh.rows), y_16);
    t[7] = e8(copies, iters);
    // + x coalesced (same values, so the 16-row form's bits), + SwiGLU in the
    // store (rows read as gate, up pairs; against the host's silu of the
    // 16-row outputs).
    const char* xc_same = same(outputs(e8_xc, sh.rows), y_16);
    const std::vector<float> y_glu = outputs(e8_glu, sh.rows / 2);
    std::vector<float> glu_ref(sh.rows / 2);
    for (int i = 0; i < sh.rows / 2; ++i) {
      const double g = y_16[2 * i];
      glu_ref[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * y_16[2 * i + 1]);
    }
    t[8] = e8_xc(copies, iters);
    t[9] = e8_glu(copies, iters);
    std::printf("| %s %dx%d%s |", sh.name, sh.rows, sh.cols, pad ? (", rows +" + std::to_string(pad) + " B").c_str() : "");
    const double wbytes = double(ld0) * sh.rows;  // GB/s of the weights' own bytes
    for (float us : t) std::printf("%s", us_cell(us, wbytes).c_str());
    std::printf(" %.2e | %s | %s | %s | %s | %.2e |\n", rel_rms(y_dp, y_f32), db_same, r64_same, e8_same, xc_same,
                rel_rms(y_glu, glu_ref));
    // Milestone 33's head splits (after the forms above, so their SKIP
    // indices hold): the quantization of x at every block's start.
    {
      const Form heads[] = {form(time_kernel<kDp4aCvt, 8>), form(time_kernel<kDp4aRaw, 8>),
                            form(time_kernel<kQNone, 8>), form(time_kernel<kDp4aCvt, 16>),
                            form(time_kernel<kDp4aCvt, 16, false, 1, kT, 8, true, true>)};
      const bool cvt_same = same(outputs(heads[0], sh.rows), y_dp)[0] == 's' &&
                             same(outputs(heads[3], sh.rows), y_16)[0] == 's' &&
                             same(outputs(heads[4], sh.rows / 2), y_glu)[0] == 's';
      std::string line = "| " + std::string(sh.name) + " |";
      for (float us : {t[2], heads[0](copies, iters), heads[1](copies, iters), heads[2](copies, iters), t[4], t[3],
                       heads[3](copies, iters), t[9], heads[4](copies, iters)})
        line += us_cell(us, wbytes);
      head_rows.push_back(line + (cvt_same ? " same bits |" : " DIFFERENT |"));
    }
    // Milestone 33's shared-x forms (against the plain kernel's bits: the
    // same quantization and sums).
    {
      const Form forms[] = {form(time_shared_x<2, 16>), form(time_shared_x<4, 16>), form(time_shared_x<4, 8>)};
      const std::vector<float>* refs[] = {&y_16, &y_16, &y_dp};
      const char* bits = same_where_run(forms, refs, 3);
      std::string line = "| " + std::string(sh.name) + " |" + us_cell(t[3], wbytes) + us_cell(t[2], wbytes);
      for (const Form& f : forms) line += us_cell(f(copies, iters), wbytes);
      shared_rows.push_back(line + " " + bits + " |");
    }
    // Milestone 33's ring forms (after every earlier form's launches, so the
    // SKIP indices above hold), printed as a second table at the end.
    if (ld % 16 == 0) {
      const Form rings[] = {form(time_ring<8, true, 72>),  form(time_ring<8, true, 200>),
                            form(time_ring<4, true, 72>),  form(time_ring<16, true, 110>),
                            form(time_ring<8, false, 72>), form(time_ring<8, false, 200>)};
      const std::vector<float>* refs[] = {&y_dp, &y_dp, &y_dp, &y_dp};
      const char* bits = same_where_run(rings, refs, 4);  // the loads-only two compute nothing to compare
      std::string line = "| " + std::string(sh.name) + " |" + us_cell(t[2], wbytes) + us_cell(t[3], wbytes);
      for (const Form& f : rings) line += us_cell(f(copies, iters), wbytes, " (does not fit) |");
      ring_rows.push_back(line + " " + bits + " |");
    }
    for (auto* c : copies) CK(cudaFree(c));
    CK(cudaFree(x));
    CK(cudaFree(y));
  }
  std::printf("\nus per launch (GB/s of weight bytes); back-to-back PDL launches over rotating copies\n");
  std::printf("\nThe quantization of x at each block's start (cvt: milestone 13's quantizer, F2I conversions; raw: dots "
              "on x's f32 bits, no quantization; q only: the quantization (cvt), no dots):\n\n| shape | dp4a RB8 | cvt RB8 | "
              "raw RB8 | q only RB8 | none RB8 | dp4a RB16 | cvt RB16 | engine form (RB16, 8 early, x coalesced, SwiGLU) | "
              "the same, cvt | cvt vs shipped |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const std::string& r : head_rows) std::printf("%s\n", r.c_str());
  std::printf("\nShared x (RG row groups a block quantize x once, all RB rows of the first batch early; — where the "
              "groups would pass 16 warps):\n\n| shape | dp4a RB16 | dp4a RB8 | RG 2, RB16 | RG 4, RB16 | RG 4, RB8 | "
              "vs the plain kernel |\n|---|---:|---:|---:|---:|---:|---|\n");
  for (const std::string& r : shared_rows) std::printf("%s\n", r.c_str());
  if (!ring_rows.empty()) {
    std::printf("\nRing forms (one bulk copy a batch of RB rows into a ring of stages in shared memory; /KB: the ring's "
                "size a block, 2-%d stages):\n\n| shape | dp4a RB8 | dp4a RB16 | ring RB8/72 | ring RB8/200 | "
                "ring RB4/72 | ring RB16/110 | ring loads only RB8/72 | ring loads only RB8/200 | dp4a rings vs RB8 |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
                kMaxStages);
    for (const std::string& r : ring_rows) std::printf("%s\n", r.c_str());
  }
  if (only_rows == 0) {
    std::printf("\nBehind a neighbour (a v3 stand-in: 388 blocks, 3 an SM, ~46 us, its blocks ending together or "
                "spread over the last 40%%; then wo and gate|up, PDL), us an iteration:\n\n| wo, gate+up | spread | "
                "without the neighbour | the neighbour alone | after it | after it, less the neighbour alone |\n"
                "|---|---:|---:|---:|---:|---:|\n");
    for (const std::string& r : neighbour_rows(s)) std::printf("%s\n", r.c_str());
  }
  return 0;
}

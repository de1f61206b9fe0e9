// The step's GEMV links as a wavefront instead of a chain of grid barriers
// (cuda-notes milestone 45): bench/cuda_stream_probe.cu's persistent kernel
// waited at every link for its slowest block, and each link restarted empty.
//
// Here a link's output completes in kSlices slices, each on its own counter,
// and each block produces its rows slice by slice: block b's share of slice s
// is units [s U/S + (U/S) b / G, s U/S + (U/S) (b + 1) / G) (U units, a row or
// a gate|up pair each). So every slice of a link's output is complete early
// in the link, the first after ~1/S of it. An x-loader warp a block waits for
// the counters of the slices its next x needs, makes each x slice (int8, in
// shared memory, double-buffered by link) and signals it on an mbarrier; the
// consumers dot a unit as soon as its slice is there, and count every output
// they store (red.release) into its slice's counter. No block waits for a
// whole link before the next starts. The producer thread streams the block's
// rows in the same slice order into a ring whose stage g belongs to consumer
// group g.
//
// Same bits as the barrier kernel and the plain chain: a row's sum is still
// its lanes' units in order and the warp's shuffle sum.
#pragma once

#include "cuda_stream_parts.cuh"

namespace stream_probe {

using longkv::cuda::bulk_copy;
using longkv::cuda::fence_mbar_init;
using longkv::cuda::mbar_arrive_expect;
using longkv::cuda::mbar_init;
using longkv::cuda::mbar_wait;

constexpr int kSlices = 8;                     // slices of a link's output (and of the next x)
constexpr int kWaveStages = 5;                 // ring stages = consumer groups: group g takes stage slot g
constexpr int kWaveGW = 6;                     // warps a group
constexpr int kWaveCW = kWaveStages * kWaveGW;  // consumer warps; then the producer warp and the x loader
constexpr int kWaveThreads = (kWaveCW + 2) * 32;

// Outputs stored, per link and slice; zeroed before each step.
__device__ unsigned g_wave_cnt[kLinks][kSlices];

// Block b's rows of link L in slice order: position p of its sequence is
// slice p / run, row m u0(s) + p % run (every slice's run has the same
// length for a given block).
struct WavePlan {
  int m, rb, rpc, ups, run, total, lo;
  __device__ WavePlan(const Link& L, int b, int G) {
    m = L.glu ? 2 : 1;
    rb = L.cols / 32 * 18;
    rpc = (kStageBytes / rb) & ~1;
    ups = L.rows / m / kSlices;
    lo = ups * b / G;
    run = m * (ups * (b + 1) / G - lo);
    total = kSlices * run;
  }
  __device__ int row(int p) const { return m * ((p / run) * ups + lo) + p % run; }
  __device__ int stages() const { return (total + rpc - 1) / rpc; }
};

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void red_release_add(unsigned* p, unsigned v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// The x loader's part of link l: slice s of x (NB / kSlices units), once
// every slice of link l - 1's output it covers is complete, into xs.
template <int NB>
__device__ __forceinline__ void wave_x_slice(const Link& L, int l, bool first, int s, int& done, XSmem& xs) {
  // Units a slice; 4 units a pass (8 lanes a unit), loads issued a batch of
  // up to 7 passes ahead (down's 14 passes at once would pass 64 registers).
  constexpr int kU = NB / kSlices, kPasses = kU / 4, kBatch = kPasses < 7 ? kPasses : 7;
  static_assert(kU % 4 == 0 && kPasses % kBatch == 0, "whole passes and batches");
  const int lane = threadIdx.x % 32;
  if (!first) {  // link l - 1's slices up to the one holding x's element (s + 1) K / S - 1
    const int n_prev = g_links[l - 1].glu ? g_links[l - 1].rows / 2 : g_links[l - 1].rows;
    const int per = n_prev / kSlices, need = ((s + 1) * NB * 32 / kSlices - 1) / per;
    if (lane == 0)
      for (; done < need; ++done)
        while (ld_acquire(&g_wave_cnt[l - 1][done + 1]) < static_cast<unsigned>(per)) {
        }
    __syncwarp();
  }
#pragma unroll
  for (int i0 = 0; i0 < kPasses; i0 += kBatch) {
    float4 f[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int u = s * kU + 4 * (i0 + i) + lane / 8;
      f[i] = __ldcg(reinterpret_cast<const float4*>(L.x) + 8 * u + lane % 8);
    }
#pragma unroll
    for (int i = 0; i < kBatch; ++i) put_x_part(f[i], s * kU + 4 * (i0 + i) + lane / 8, true, xs);
  }
}

// A stage's rows for warp wg of its group: gate|up pairs wg, wg + kWaveGW
// or rows wg + r kWaveGW (4096 columns), row wg (down, 4 rows a stage).
// Each output stored is counted into its slice's counter.
template <int NB>
__device__ __forceinline__ void wave_stage(const Link& L, int l, const WavePlan& p, int c, const uint8_t* st,
                                           const XSmem& xs, int wg, int lane, int& ready, uint64_t* xready,
                                           unsigned xpar) {
  constexpr int R = NB == 128 ? 4 : 1;
  const int p0 = c * p.rpc, nr = min(p.rpc, p.total - p0);
  int ro[R], n = 0;
  if (NB != 128) {
    ro[0] = wg * p.rb;
    n = wg < nr ? 1 : 0;
  } else if (L.glu) {
#pragma unroll
    for (int r = 0; r < R; ++r) ro[r] = (2 * (wg + (r / 2) * kWaveGW) + r % 2) * p.rb;
    n = R == 4 && wg + kWaveGW < nr / 2 ? 4 : wg < nr / 2 ? 2 : 0;
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      ro[r] = (wg + r * kWaveGW) * p.rb;
      n += wg + r * kWaveGW < nr ? 1 : 0;
    }
  }
  if (n == 0) return;
  float acc[R];
  constexpr int kU = NB / kSlices;
  rows_dot<NB, R, false>(st, ro, n, xs, nullptr, lane, acc, [&](int j) {
    const int s = min(32 * j + 31, NB - 1) / kU;  // the last slice step j reads
    if (s > ready) {
      mbar_wait(&xready[s], xpar);
      ready = s;
    }
  });
  if (lane == 0) {
    const int n_out = L.glu ? L.rows / 2 : L.rows, per = n_out / kSlices;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r >= n) break;
      const int row = p.row(p0 + ro[r] / p.rb);
      if (L.glu && r % 2 == 1) continue;
      const int o = L.glu ? row / 2 : row;
      L.y[o] = L.glu ? glu(acc[r], acc[r + 1]) : acc[r];
      red_release_add(&g_wave_cnt[l][o / per], 1u);
    }
  }
}

// Links [l0, l1); mode 2 (kChainOnly in the probe): no copies.
__global__ void __launch_bounds__(kWaveThreads, 1) wave_kernel(int l0, int l1, int mode) {
  extern __shared__ __align__(128) uint8_t ring[];  // kWaveStages stages, then two XSmem
  __shared__ __align__(8) uint64_t full[kWaveStages], empty[kWaveStages], xready[2][kSlices], xfree[2];
  XSmem* xs = reinterpret_cast<XSmem*>(ring + kWaveStages * kStageBytes);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool copies = !(mode & 2);
  if (threadIdx.x == 0) {
    for (int s = 0; s < kWaveStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kWaveGW);
    }
    for (int b = 0; b < 2; ++b) {
      for (int s = 0; s < kSlices; ++s) mbar_init(&xready[b][s], 1);
      mbar_init(&xfree[b], kWaveCW);
    }
    fence_mbar_init();
  }
  __syncthreads();

  if (warp == kWaveCW) {  // the producer: the block's rows of every link in slice order
    if (lane != 0 || !copies) return;
    int n = 0;
    for (int l = l0; l < l1; ++l) {
      const Link& L = g_links[l];
      const WavePlan p(L, blockIdx.x, gridDim.x);
      for (int c = 0; c < p.stages(); ++c, ++n) {
        const int s = n % kWaveStages;
        if (n >= kWaveStages) mbar_wait(&empty[s], (n / kWaveStages - 1) & 1);
        const int p0 = c * p.rpc, p1 = min(p.total, p0 + p.rpc);
        mbar_arrive_expect(&full[s], static_cast<unsigned>((p1 - p0) * p.rb));
        for (int q = p0; q < p1;) {  // one copy a run of consecutive rows
          const int k = min(p1 - q, p.run - q % p.run);
          bulk_copy(ring + s * kStageBytes + (q - p0) * p.rb, L.w + static_cast<size_t>(p.row(q)) * p.rb,
                    static_cast<unsigned>(k * p.rb), &full[s]);
          q += k;
        }
      }
    }
    return;
  }

  if (warp == kWaveCW + 1) {  // the x loader
    for (int l = l0; l < l1; ++l) {
      const int b = (l - l0) & 1, k = (l - l0) / 2;
      if (k >= 1) mbar_wait(&xfree[b], (k - 1) & 1);  // link l - 2's consumers are done with buffer b
      const Link& L = g_links[l];
      int done = -1;
      for (int s = 0; s < kSlices; ++s) {
        if (L.cols == 4096)
          wave_x_slice<128>(L, l, l == l0, s, done, xs[b]);
        else
          wave_x_slice<448>(L, l, l == l0, s, done, xs[b]);
        __syncwarp();
        if (lane == 0) mbar_arrive(&xready[b][s]);
      }
    }
    return;
  }

  const int grp = warp / kWaveGW, wg = warp % kWaveGW;
  int n0 = 0;  // the link's first stage, counted over the launch
  for (int l = l0; l < l1; ++l) {
    const Link& L = g_links[l];
    const WavePlan p(L, blockIdx.x, gridDim.x);
    const int b = (l - l0) & 1, nc = p.stages();
    const unsigned xpar = ((l - l0) / 2) & 1;
    int ready = -1;  // the highest x slice this warp has seen complete
    for (int c = ((grp - n0) % kWaveStages + kWaveStages) % kWaveStages; c < nc; c += kWaveStages) {
      const int n = n0 + c;  // slot grp, its fill (n / kWaveStages)
      if (copies) mbar_wait(&full[grp], (n / kWaveStages) & 1);
      const uint8_t* st = ring + grp * kStageBytes;
      if (L.cols == 4096)
        wave_stage<128>(L, l, p, c, st, xs[b], wg, lane, ready, xready[b], xpar);
      else
        wave_stage<448>(L, l, p, c, st, xs[b], wg, lane, ready, xready[b], xpar);
      __syncwarp();
      if (lane == 0 && copies) mbar_arrive(&empty[grp]);
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(&xfree[b]);
    n0 += nc;
  }
}

}  // namespace stream_probe

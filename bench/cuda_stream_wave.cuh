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
// shared memory, double-buffered by link) and signals it on an mbarrier
// (kLoaders warps share a link's slices); the
// consumers dot a unit as soon as its slice is there, and count every output
// they store (a fence, then relaxed adds) into its slice's counter. No block waits for a
// whole link before the next starts. The producer thread streams the block's
// rows in the same slice order into a ring whose stage g belongs to consumer
// group g.
//
// Same bits as the barrier kernel and the plain chain: a row's sum is still
// its lanes' units in order and the warp's shuffle sum.
//
// H200 (cuda-notes milestone 45, calls 18-19): slower than the barrier
// kernel, 3.0 ms a step against 1.5 (one loader warp: 3.65). Every row of a
// link needs all of its x, so no row completes before the link before has
// ended everywhere; what the slices can overlap is bounded by the stages in
// the ring, and the loaders' L2 round trips and the counters' polling cost
// more than the barrier did (long-scoreboard stalls 22.8 of 33 cycles an
// instruction).
#pragma once

#include "cuda_stream_parts.cuh"

namespace stream_probe {

constexpr int kSlices = 8;                     // slices of a link's output (and of the next x)
constexpr int kWaveStages = 5;                 // ring stages = consumer groups: group g takes stage slot g
constexpr int kWaveGW = 5;                     // warps a group
constexpr int kWaveCW = kWaveStages * kWaveGW;  // consumer warps; then the producer warp and kLoaders x loaders
constexpr int kLoaders = 6;                     // loader i makes slices i, i + kLoaders, ... of each x
constexpr int kWaveThreads = (kWaveCW + 1 + kLoaders) * 32;

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

// Waits with a watchdog: after ~0.5 s (1e9 cycles) a wait gives up, records
// where (g_wave_hang: block, warp, tag, link, stage or slice, parity) and
// sets g_wave_abort, which every other wait then obeys -- a hang costs a
// wrong result (the check fails and prints the record), not the device call.
__device__ int g_wave_abort;
__device__ int g_wave_hang[8];
__device__ __noinline__ void wave_hang(int tag, int l, int c, int par) {
  if (atomicCAS(&g_wave_abort, 0, 1) == 0) {
    const int rec[8] = {static_cast<int>(blockIdx.x), static_cast<int>(threadIdx.x / 32), tag, l, c, par, 0, 1};
    for (int i = 0; i < 8; ++i) g_wave_hang[i] = rec[i];
  }
}
__device__ __forceinline__ void wave_wait(uint64_t* bar, unsigned parity, int tag, int l, int c) {
  const long long t0 = clock64();
  while (!mbar_try(bar, parity)) {
    if (*reinterpret_cast<volatile int*>(&g_wave_abort)) return;
    if (clock64() - t0 > 1000000000LL) {
      wave_hang(tag, l, c, static_cast<int>(parity));
      return;
    }
  }
}

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void red_relaxed_add(unsigned* p, unsigned v) {
  asm volatile("red.relaxed.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
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
    if (lane == 0) {
      const long long t0 = clock64();
      for (; done < need; ++done)
        while (ld_acquire(&g_wave_cnt[l - 1][done + 1]) < static_cast<unsigned>(per)) {
          if (*reinterpret_cast<volatile int*>(&g_wave_abort)) break;
          if (clock64() - t0 > 1000000000LL) {
            wave_hang(5, l, done + 1, static_cast<int>(ld_acquire(&g_wave_cnt[l - 1][done + 1])));
            break;
          }
        }
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
                                           const XSmem& xs, int wg, int lane, unsigned& ready, uint64_t* xready,
                                           unsigned xpar) {
  constexpr int R = NB == 128 ? 4 : 1;
  const int p0 = c * p.rpc, nr = min(p.rpc, p.total - p0);
  int ro[R], n = 0;
  if (NB != 128) {
    ro[0] = wg * p.rb;
    n = wg < nr ? 1 : 0;
  } else {
    n = warp_rows<R, kWaveGW>(L.glu, wg, nr, p.rb, ro);
  }
  if (n == 0) return;
  float acc[R];
  constexpr int kU = NB / kSlices;
  rows_dot<NB, R, false>(st, ro, n, xs, nullptr, lane, acc, [&](int j) {
    // The slices step j reads (loaders finish them in any order): each
    // waited for once a link (ready: a bit a slice).
    for (int s = (32 * j) / kU; s <= min(32 * j + 31, NB - 1) / kU; ++s)
      if (!(ready >> s & 1)) {
        wave_wait(&xready[s], xpar, 4, l, s);
        ready |= 1u << s;
      }
  });
  // The outputs, then one fence and a relaxed count each (a release add an
  // output would order every store before it separately).
  if (lane == 0) {
    const int n_out = L.glu ? L.rows / 2 : L.rows, per = n_out / kSlices;
    int os[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      os[r] = -1;
      if (r >= n || (L.glu && r % 2 == 1)) continue;
      const int row = p.row(p0 + ro[r] / p.rb);
      os[r] = L.glu ? row / 2 : row;
      L.y[os[r]] = L.glu ? glu(acc[r], acc[r + 1]) : acc[r];
    }
    __threadfence();
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (os[r] >= 0) red_relaxed_add(&g_wave_cnt[l][os[r] / per], 1u);
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
        if (n >= kWaveStages) wave_wait(&empty[s], (n / kWaveStages - 1) & 1, 1, l, c);
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

  if (warp > kWaveCW) {  // x loader i = warp - kWaveCW - 1: slices i, i + kLoaders, ...
    for (int l = l0; l < l1; ++l) {
      const int b = (l - l0) & 1, k = (l - l0) / 2;
      if (k >= 1) wave_wait(&xfree[b], (k - 1) & 1, 2, l, -1);  // link l - 2's consumers are done with buffer b
      const Link& L = g_links[l];
      int done = -1;
      for (int s = warp - kWaveCW - 1; s < kSlices; s += kLoaders) {
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
    unsigned ready = 0;  // the x slices this warp has seen complete
    for (int c = ((grp - n0) % kWaveStages + kWaveStages) % kWaveStages; c < nc; c += kWaveStages) {
      const int n = n0 + c;  // slot grp, its fill (n / kWaveStages)
      if (copies) wave_wait(&full[grp], (n / kWaveStages) & 1, 3, l, c);
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

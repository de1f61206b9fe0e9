// Kernel boundary probe: what a chain of dependent decode GEMVs pays at each
// link (docs/cuda-notes.md, milestones 17 and 20: a depth-0 step's GEMVs cost
// 2-4x their weight bytes in the pipeline). N square Q4_0 GEMVs in a chain,
// y_i = W_i y_{i-1}, every W_i a different copy (N x 9.4 MB at 4096 x 4096:
// several times L2), each link the shipped int8-activation slab structure
// (bench/cuda_gemv_probe.cu's dp4a kernel: 16-row batches, the next batch's
// loads in flight during a batch's reduction), run these ways:
//   plain       N launches in stream order
//   pdl         N launches with programmatic dependent launch (the engine's
//               way: a kernel's blocks load their first batch of weights
//               while the one before drains, then wait for it)
//   persistent  one cooperative launch, a grid-wide barrier between links;
//               each block loads its first batch of the next W before the
//               barrier (what a persistent layer kernel would do)
//   ping-pong   persistent, two sets of blocks taking the links in turn: a
//               set loads its next link's weights while the other computes
//   smem ahead  persistent, one 16-row batch a block and link; a block copies
//               its rows of the next W into shared memory at the start of a
//               link (double-buffered): by cp.async from every thread, from
//               every thread but warp 0 (the barrier's arriving thread), or
//               by one bulk (TMA) copy on an mbarrier; and, timing only, with
//               no copies at all (the link's chain with dots from shared
//               memory, without weight traffic)
// and, to split a link's time, PDL chains of empty links (the wait and one
// store a block) and of links without weights (x, its int8 form, the
// reduction and the store), and persistent chains of both kinds (with the
// barrier instead of the wait). docs/cuda-notes.md milestones 20 and 21 have
// the results: no persistent form beats the PDL launches. `barrier_probe N
// flag` times only PDL chains with a flag handoff (a counter of finished
// blocks) in place of the wait, against the wait (milestone 22); `barrier_probe
// N x` only PDL chains whose x comes in different forms (milestone 36, H200:
// the engine's coalesced x 5.00 us a link, x as if written in int8 form by
// its producer 4.39-4.46, no x at all 3.74-3.81); `barrier_probe N icache`
// only PDL chains of the engine's link whose consecutive links run the same
// kernel or cycle through 2, 4 or 8 copies of its code (milestone 37: what a
// link pays when its code is not the one the SMs ran last, as in a decode
// step's q|k|v, wo and down); `barrier_probe N cold` the same with a 96 MB
// stream through L2 before every link, loaded plainly or evict-first
// (milestone 38: whether code evicted from L2 by a step's KV reads costs a
// link a fetch from DRAM).
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

#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/kv_quant_mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/weight_decode.cuh"
#include "cuda_probe_util.cuh"

namespace {

namespace cg = cooperative_groups;
using longkv::WeightType;
using longkv::cuda::Slab;
using S = Slab<WeightType::Q4_0>;
using longkv::cuda::bulk_copy;
using longkv::cuda::fence_mbar_init;
using longkv::cuda::fence_proxy_async;
using longkv::cuda::mbar_arrive_expect;
using longkv::cuda::mbar_init;
using longkv::cuda::mbar_wait;

constexpr int kRB = 16;     // rows per batch (the shipped wo GEMV's)
constexpr int kWarps = 4;   // 4096 columns = 128 units = 4 warps of lanes

// A batch's row sums: the warps' partial sums of rows r0 .. r0 + kRB - 1
// meet in red[buf] (one barrier; buf alternates between batches) and the
// first kRB threads store them to y.
__device__ __forceinline__ void reduce_store(float (&acc)[kRB], float (&red)[2][kRB][kWarps], int buf, int r0,
                                             int rows, float* __restrict__ y) {
  longkv::cuda::publish_row_partials(acc, red[buf], threadIdx.x / 32, threadIdx.x % 32);
  if (threadIdx.x < kRB && r0 + static_cast<int>(threadIdx.x) < rows)
    y[r0 + threadIdx.x] = longkv::cuda::row_total(red[buf][threadIdx.x], kWarps);
}

// One block's part of one link: its batches of rows of w against x -> y, the
// first batch's weights already in wu. Leaves wu free. Without kWeights
// (timing only) no weight is loaded and a row's sum is one of x's int8
// values: the link's x load, int8 form, reduction and store alone.
// kX (timing only, with kWeights false): 1 loads x as if its previous link
// had written it in int8 form (32 bytes and a scale a lane instead of 128
// bytes, no quantization; the bytes are whatever x holds), 2 uses no x at all,
// 3 loads x as 0 does but packs its bits without quantizing. 5 (any
// kWeights) loads x by the engine's ldx_warp_units, 6 the same through L2 only
// (the flag handoff's reader). (4, another quantization form, was measured
// slower and removed: commit 48e42e7 has it.)
template <bool kWeights = true, int kX = 0>
__device__ __forceinline__ void link(const uint8_t* __restrict__ w, size_t ld, int rows, int nb,
                                     const float* __restrict__ x, float* __restrict__ y, S::Unit (&wu)[kRB],
                                     float (&red)[2][kRB][kWarps], int& buf, int bid, int n_blocks) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int ui = warp * 32 + lane;
  const bool valid = ui < nb;
  const int u = valid ? ui : 0;
  const int stride = n_blocks * kRB;
  longkv::cuda::XI8 xq;
  if constexpr (kX == 0 || kX == 3) {
    S::X f;
    S::load_x(x, u, f);
    if constexpr (kX == 0) {
      longkv::cuda::quantize_x_i8(f.v, xq);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j)
        xq.q[j] = __float_as_int(f.v[4 * j]) ^ __float_as_int(f.v[4 * j + 1]) ^ __float_as_int(f.v[4 * j + 2]) ^
                  __float_as_int(f.v[4 * j + 3]);
      xq.dx = 1.0f;
      xq.off = 0;
    }
  } else if constexpr (kX == 5 || kX == 6) {
    __shared__ float4 sx[kWarps][256];
    S::X f;
    longkv::cuda::ldx_warp_units<kX == 6>(x, {sx[warp], 32 * warp, 32}, f.v);
    longkv::cuda::quantize_x_i8(f.v, xq);
  } else if constexpr (kX == 1) {
    const uint4 a = __ldcg(reinterpret_cast<const uint4*>(x) + 2 * u);
    const uint4 b = __ldcg(reinterpret_cast<const uint4*>(x) + 2 * u + 1);
    const int q[8] = {int(a.x), int(a.y), int(a.z), int(a.w), int(b.x), int(b.y), int(b.z), int(b.w)};
#pragma unroll
    for (int j = 0; j < 8; ++j) xq.q[j] = q[j];
    xq.dx = __ldcg(x + 2048 + u);
    xq.off = 0;
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) xq.q[j] = 0x01010101 * (j + 1);
    xq.dx = 1.0f;
    xq.off = 0;
  }
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
    reduce_store(acc, red, buf, r0, rows, y);
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

// The flag handoff (kPart 4, 5): instead of griddepcontrol.wait, which
// returns once the previous grid has completed and flushed, a block waits
// until the previous link's blocks have all counted themselves done in
// *flag_in (>= target; the counters only grow, target = run * grid) and
// counts itself in *flag_out once its stores are visible. The launches stay
// PDL launches, so a link's blocks are resident (and have their first weights
// in flight) while the one before computes; every block of a link has
// started before the next link launches, so spinning blocks never keep a
// block they wait for from running.
__device__ __forceinline__ void flag_wait(const int* flag, int target) {
  if (threadIdx.x == 0 && target > 0) {
    int v;
    do {
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(flag) : "memory");
    } while (v < target);
  }
  __syncthreads();
}
__device__ __forceinline__ void flag_signal(int* flag) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(flag, 1);
  }
}

// One link per launch (plain or PDL): xs[i] -> xs[i + 1] through w.
// (4 blocks an SM: at most 128 registers a lane, as the shipped GEMV.)
// kPart (timing only, PDL): 0 the whole link; 1 without weights (link<false>);
// 3 the whole link with x loaded by ldx_warp_units (same outputs as 0);
// 2 an empty link, the wait and one store a block: the dependency alone;
// 4 and 5: 3 and 2 with the flag handoff instead of the wait (4's outputs are 3's);
// 6 and 7 (timing only, wrong outputs; milestone 36): the whole link with x
// loaded as if its producer had written it in int8 form (link's kX 1: 36
// bytes a lane, no quantization), and with no x at all (kX 2): what a
// producer-side int8 x could save a link at most, and the floor of any x form.
// kCopy: otherwise identical copies of a kernel, so that consecutive links can
// run different code (`barrier_probe N icache`, milestone 37).
template <int kPart = 0, int kCopy = 0>
__global__ void __launch_bounds__(kWarps * 32, 4)
    link_kernel(const uint8_t* __restrict__ w, size_t ld, int rows, int nb, const float* x, float* y,
                const int* flag_in, int* flag_out, int target) {
  __shared__ float red[2][kRB][kWarps];
  S::Unit wu[kRB];
  const int bid = blockIdx.x, n_blocks = gridDim.x;
  constexpr bool kFlag = kPart == 4 || kPart == 5;
  if constexpr (kPart == 0 || kPart == 3 || kPart == 4 || kPart >= 6) load_first(w, ld, rows, nb, wu, bid);
  longkv::cuda::pdl_trigger();
  if constexpr (kFlag) flag_wait(flag_in, target);
  else longkv::cuda::pdl_wait();
  int buf = 0;
  if constexpr (kPart == 2 || kPart == 5) {
    if (threadIdx.x == 0) y[blockIdx.x] = __ldcg(x + blockIdx.x) + 1.0f;
  } else {
    constexpr int kX = kPart == 3 ? 5 : kPart == 4 ? 6 : kPart == 6 ? 1 : kPart == 7 ? 2 : 0;
    link<kPart == 0 || kPart >= 3, kX>(w, ld, rows, nb, x, y, wu, red, buf, bid, n_blocks);
  }
  if constexpr (kFlag) flag_signal(flag_out);
}

// Streams n16 16-byte words of src through L2 (ld.global.cg, as the decode
// step's KV reads by cp.async.cg) between two links of `barrier_probe N cold`
// (milestone 38): a step at depth reads ~100 MB of cache a layer, twice L2,
// between its GEMVs. kEvictFirst: every load carries an L2 evict-first policy,
// so that what the links use again (their code, x) may stay in L2. The sum
// goes to sink only if it is an improbable value, so no load is dropped.
template <bool kEvictFirst>
__global__ void __launch_bounds__(256) stream_kernel(const uint4* __restrict__ src, size_t n16, unsigned* sink) {
  longkv::cuda::pdl_trigger();
  longkv::cuda::pdl_wait();
  [[maybe_unused]] uint64_t pol = 0;
  if constexpr (kEvictFirst) asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  unsigned acc = 0;
  const size_t step = size_t(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n16; i += 4 * step) {
    uint4 v[4];  // four loads in flight a lane
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint4* a = src + min(i + k * step, n16 - 1);
      if constexpr (kEvictFirst)
        asm("ld.global.cg.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
            : "=r"(v[k].x), "=r"(v[k].y), "=r"(v[k].z), "=r"(v[k].w)
            : "l"(a), "l"(pol));
      else
        v[k] = __ldcg(a);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) acc ^= v[k].x + v[k].y + v[k].z + v[k].w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

// `bytes` (a multiple of 16) from src into shared memory by cp.async, from
// threads t0 and up (mode 4: warp 0, which holds the thread that arrives at
// the grid barrier, copies nothing; mode 5, timing only, wrong output: no
// copies, the link's chain without weight traffic).
__device__ __forceinline__ void prefetch_rows_smem(const uint8_t* __restrict__ src, unsigned bytes, uint8_t* sw,
                                                   int t0) {
  if (t0 >= static_cast<int>(blockDim.x)) return;
  for (int c = static_cast<int>(threadIdx.x) - t0; c < static_cast<int>(bytes / 16);
       c += static_cast<int>(blockDim.x) - t0)
    if (c >= 0) longkv::cuda::cp_async16(sw + 16 * c, src + 16 * c);
}

// Every link in one cooperative launch: xs [n + 1][rows]. kMode 0: every
// block takes part in every link and loads its first batch of the next
// link's weights before the barrier. 1 (timing only): each link is one store
// a block and the barrier. 2, ping-pong: two sets of blocks (the grid twice
// as large) take the links in turn, so a set loads the weights of its next
// link while the other set computes, as PDL's next kernel does beside the
// one before it; every link still ends at a grid-wide barrier.
// 3-6, weights a link ahead in shared memory: at the start of link i a block
// copies its rows of W_{i+1} (one 16-row batch: 36 KB, contiguous) into the
// other of two shared-memory buffers, so they stream during link i and its
// barrier; link i's dots read its rows from shared memory after its x is
// loaded and quantized (one batch a block per link: dim / kRB blocks). 3:
// cp.async by every thread; 4: by every thread but warp 0; 5 (timing only):
// no copies; 6: one bulk copy. 7-9 (timing only): links without weights,
// with x as now (7), with x loaded as if already in int8 form (8), without x (9),
// with x loaded as now but not quantized (10), loaded by ldx_warp_units (12).
// (11 is gone with link's kX 4.)
template <int kMode = 0>
__global__ void __launch_bounds__(kWarps * 32, 4)
    chain_kernel(const uint8_t* const* __restrict__ ws, size_t ld, int rows, int nb, int n, float* xs) {
  __shared__ float red[2][kRB][kWarps];
  cg::grid_group g = cg::this_grid();
  if constexpr (kMode >= 3 && kMode <= 6) {
    // Modes 3-5 copy by cp.async (t0 as in prefetch_rows_smem), mode 6 by one
    // bulk copy a link (thread 0) on an mbarrier per buffer, so no thread
    // stalls issuing 18 copies of its own.
    extern __shared__ __align__(16) uint8_t sw[];  // two buffers of ld * kRB bytes
    __shared__ uint64_t bars[2];
    const int t0 = kMode == 5 ? kWarps * 32 : kMode == 4 ? 32 : 0;
    const bool valid = static_cast<int>(threadIdx.x) < nb;
    const int u = valid ? threadIdx.x : 0;
    const unsigned bytes = static_cast<unsigned>(ld * kRB);
    auto fetch = [&](int i) {  // link i's rows -> buffer i % 2
      const uint8_t* src = ws[i] + ld * static_cast<size_t>(blockIdx.x) * kRB;
      if constexpr (kMode == 6) {
        if (threadIdx.x == 0) {
          fence_proxy_async();
          mbar_arrive_expect(&bars[i % 2], bytes);
          bulk_copy(sw + (i % 2) * bytes, src, bytes, &bars[i % 2]);
        }
      } else {
        prefetch_rows_smem(src, bytes, sw + (i % 2) * bytes, t0);
        longkv::cuda::cp_async_commit();
      }
    };
    if (kMode == 6 && threadIdx.x == 0) {
      mbar_init(&bars[0], 1);
      mbar_init(&bars[1], 1);
      fence_mbar_init();
    }
    __syncthreads();
    fetch(0);
    int buf = 0;
    for (int i = 0; i < n; ++i) {
      if (i + 1 < n) fetch(i + 1);
      else if (kMode != 6) longkv::cuda::cp_async_commit();  // an empty group: wait<1> below stays right
      const float* x = xs + static_cast<size_t>(i) * rows;
      S::X f;
      S::load_x(x, u, f);
      longkv::cuda::XI8 xq;
      longkv::cuda::quantize_x_i8(f.v, xq);
      if constexpr (kMode == 6) {
        mbar_wait(&bars[i % 2], (i / 2) & 1);
      } else {
        longkv::cuda::cp_async_wait<1>();  // link i's rows are in
        __syncthreads();
      }
      const uint8_t* cur = sw + (i % 2) * bytes;
      float acc[kRB];
#pragma unroll
      for (int r = 0; r < kRB; ++r) {
        const uint8_t* row = cur + ld * r;
        const uint4 q = *reinterpret_cast<const uint4*>(row + 16 * u);
        const float d = __half2float(*reinterpret_cast<const __half*>(row + 16 * nb + 2 * u));
        acc[r] = valid ? longkv::cuda::dot_q4_0_i8(q, d, xq) : 0.0f;
      }
      reduce_store(acc, red, buf, blockIdx.x * kRB, rows, xs + static_cast<size_t>(i + 1) * rows);
      buf ^= 1;
      g.sync();
    }
    return;
  }
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
  if constexpr (kMode >= 7) {  // timing only: link<false, kMode - 7> and the barrier
    S::Unit wu[kRB];
    int buf = 0;
    for (int i = 0; i < n; ++i) {
      float* x = xs + static_cast<size_t>(i) * rows;
      link<false, kMode - 7>(ws[i], ld, rows, nb, x, x + rows, wu, red, buf, blockIdx.x, gridDim.x);
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
  const bool flag_only = argc > 2 && std::strcmp(argv[2], "flag") == 0;  // only the flag handoff rows
  const bool x_only = argc > 2 && std::strcmp(argv[2], "x") == 0;        // only the x-form rows (milestone 36)
  const bool icache = argc > 2 && std::strcmp(argv[2], "icache") == 0;   // only the code-copy rows (milestone 37)
  const bool cold = argc > 2 && std::strcmp(argv[2], "cold") == 0;       // code copies behind streams (milestone 38)
  if (n < 1 || n > 4096 || (argc > 2 && !flag_only && !x_only && !icache && !cold) || argc > 3) {
    std::fprintf(stderr, "usage: barrier_probe [LINKS (1..4096, default 32) [flag | x | icache | cold]]\n");
    return 2;
  }
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
  float* xh;  // the PDL chain with coalesced x loads (part 3)
  CK(cudaMalloc(&xh, sizeof(float) * dim * (n + 1)));
  CK(cudaMemcpy(xh, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));
  // Flag handoff counters: flags[i] counts link i's finished blocks over all runs.
  int* flags;
  CK(cudaMalloc(&flags, sizeof(int) * (n + 1)));
  CK(cudaMemset(flags, 0, sizeof(int) * (n + 1)));
  float* xf;  // the flag chain's activations
  CK(cudaMalloc(&xf, sizeof(float) * dim * (n + 1)));
  CK(cudaMemcpy(xf, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));
  int flag_runs = 0;
  auto chain_launches = [&](bool pdl, int part = 0) {
    auto* kern = part == 0   ? link_kernel<0>
                 : part == 1 ? link_kernel<1>
                 : part == 2 ? link_kernel<2>
                 : part == 3 ? link_kernel<3>
                 : part == 4 ? link_kernel<4>
                 : part == 5 ? link_kernel<5>
                 : part == 6 ? link_kernel<6>
                             : link_kernel<7>;
    const bool flag = part == 4 || part == 5;
    if (flag) ++flag_runs;
    for (int i = 0; i < n; ++i) {
      float* x = (part == 3 ? xh : part == 4 ? xf : xa) + static_cast<size_t>(i) * dim;
      longkv::cuda::launch_maybe_pdl(pdl, kern, dim3(grid), dim3(kWarps * 32), 0, s,
                                     static_cast<const uint8_t*>(ws[i]), ld, dim, nb, static_cast<const float*>(x),
                                     x + dim, static_cast<const int*>(flags + i), flags + i + 1,
                                     flag && i > 0 ? flag_runs * grid : 0);
    }
  };
  // The engine's link (part 3) cycling through `copies` copies of its code,
  // into xf (the flag chain's buffer; icache runs nothing else).
  auto copy_launches = [&](int copies) {
    using K = decltype(&link_kernel<3, 0>);
    const K kerns[8] = {link_kernel<3, 0>, link_kernel<3, 1>, link_kernel<3, 2>, link_kernel<3, 3>,
                        link_kernel<3, 4>, link_kernel<3, 5>, link_kernel<3, 6>, link_kernel<3, 7>};
    for (int i = 0; i < n; ++i) {
      float* x = xf + static_cast<size_t>(i) * dim;
      longkv::cuda::launch_maybe_pdl(true, kerns[i % copies], dim3(grid), dim3(kWarps * 32), 0, s,
                                     static_cast<const uint8_t*>(ws[i]), ld, dim, nb, static_cast<const float*>(x),
                                     x + dim, static_cast<const int*>(flags + i), flags + i + 1, 0);
    }
  };
  // `cold`: a stream of kStreamMB through L2 before every link (regions of
  // a 1 GiB buffer in turn, never the same twice in a row), the links
  // cycling through `copies` copies of their code; copies 0: streams only.
  constexpr size_t kStreamMB = 96, kBufMB = 1024;
  uint4* big = nullptr;
  unsigned* sink = nullptr;
  if (cold) {
    CK(cudaMalloc(&big, kBufMB << 20));
    CK(cudaMemset(big, 1, kBufMB << 20));
    CK(cudaMalloc(&sink, sizeof(unsigned)));
  }
  auto cold_launches = [&](int copies, bool ef) {
    using K = decltype(&link_kernel<3, 0>);
    const K kerns[8] = {link_kernel<3, 0>, link_kernel<3, 1>, link_kernel<3, 2>, link_kernel<3, 3>,
                        link_kernel<3, 4>, link_kernel<3, 5>, link_kernel<3, 6>, link_kernel<3, 7>};
    const size_t n16 = (kStreamMB << 20) / 16, regions = kBufMB / kStreamMB;
    for (int i = 0; i < n; ++i) {
      const uint4* src = big + (i % regions) * n16;
      longkv::cuda::launch_maybe_pdl(true, ef ? stream_kernel<true> : stream_kernel<false>,
                                     dim3(4 * p.multiProcessorCount), dim3(256), 0, s, src, n16, sink);
      if (copies == 0) continue;
      float* x = xf + static_cast<size_t>(i) * dim;
      longkv::cuda::launch_maybe_pdl(true, kerns[i % copies], dim3(grid), dim3(kWarps * 32), 0, s,
                                     static_cast<const uint8_t*>(ws[i]), ld, dim, nb, static_cast<const float*>(x),
                                     x + dim, static_cast<const int*>(flags + i), flags + i + 1, 0);
    }
  };
  // Ping-pong needs two sets of grid_c blocks resident at once.
  const bool pp_fits = 2 * grid_c <= occ_c * p.multiProcessorCount;
  float *xc, *xd, *xe, *xg;
  CK(cudaMalloc(&xc, sizeof(float) * dim * (n + 1)));
  CK(cudaMalloc(&xd, sizeof(float) * dim * (n + 1)));
  CK(cudaMalloc(&xe, sizeof(float) * dim * (n + 1)));
  CK(cudaMalloc(&xg, sizeof(float) * dim * (n + 1)));
  CK(cudaMemcpy(xg, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(xe, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(xc, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(xd, hx.data(), sizeof(float) * dim, cudaMemcpyHostToDevice));
  // Weights a link ahead in shared memory: one batch a block, all resident.
  const int smem3 = static_cast<int>(2 * ld * kRB);
  CK(cudaFuncSetAttribute(chain_kernel<3>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem3));
  CK(cudaFuncSetAttribute(chain_kernel<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem3));
  CK(cudaFuncSetAttribute(chain_kernel<5>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem3));
  CK(cudaFuncSetAttribute(chain_kernel<6>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem3));
  int occ_3 = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ_3, chain_kernel<3>, kWarps * 32, smem3));
  const bool sm_fits = batches <= occ_3 * p.multiProcessorCount;
  auto chain_persistent = [&](int mode) {
    int rows = dim, nbv = nb, nn = n;
    size_t ldv = ld;
    float* out = mode == 0                            ? xb
                 : mode == 1 || mode == 5 || mode >= 7 ? xa  // timing only: overwritten by the PDL chain
                 : mode == 2                           ? xc
                 : mode == 3                           ? xd
                 : mode == 4                           ? xe
                                                       : xg;
    void* args[] = {&dws, &ldv, &rows, &nbv, &nn, &out};
    void* kern = mode == 0   ? reinterpret_cast<void*>(chain_kernel<0>)
                 : mode == 1 ? reinterpret_cast<void*>(chain_kernel<1>)
                 : mode == 2 ? reinterpret_cast<void*>(chain_kernel<2>)
                 : mode == 3 ? reinterpret_cast<void*>(chain_kernel<3>)
                 : mode == 4 ? reinterpret_cast<void*>(chain_kernel<4>)
                 : mode == 5 ? reinterpret_cast<void*>(chain_kernel<5>)
                 : mode == 6 ? reinterpret_cast<void*>(chain_kernel<6>)
                 : mode == 7 ? reinterpret_cast<void*>(chain_kernel<7>)
                 : mode == 8 ? reinterpret_cast<void*>(chain_kernel<8>)
                 : mode == 9 ? reinterpret_cast<void*>(chain_kernel<9>)
                 : mode == 10 ? reinterpret_cast<void*>(chain_kernel<10>)
                              : reinterpret_cast<void*>(chain_kernel<12>);
    const int gx = mode == 2 ? 2 * grid_c : mode >= 3 && mode <= 6 ? batches : grid_c;
    CK(cudaLaunchCooperativeKernel(kern, dim3(gx), dim3(kWarps * 32), args, mode >= 3 && mode <= 6 ? smem3 : 0, s));
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
  // Whether two chains' last outputs have the same bits, all finite (printed; 0 if so).
  auto same_last = [&](const float* p, const float* q, const char* what) {
    std::vector<float> a(dim), b(dim);
    CK(cudaMemcpy(a.data(), p + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b.data(), q + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
    int differ = 0, nonfinite = 0;
    for (int i = 0; i < dim; ++i) {
      differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
      nonfinite += !std::isfinite(b[i]);
    }
    std::printf("\nlast link's output, %s: %d of %d values differ, %d non-finite\n", what, differ, dim, nonfinite);
    return differ == 0 && nonfinite == 0 ? 0 : 1;
  };
  if (icache) {  // the same link, its code the one run last or not, interleaved
    for (int round = 0; round < 3; ++round) {
      const double t_same = time_us([&] { chain_launches(true, 3); });
      for (int c : {2, 4, 8}) {
        const double t = time_us([&] { copy_launches(c); });
        std::printf("| PDL launches, the engine's link, %d copies of its code in turn | %d | %.2f | %.0f |\n", c, grid,
                    t, wbytes / (t * 1e-6) / 1e9);
      }
      std::printf("| the same, one kernel for every link | %d | %.2f | %.0f |\n", grid, t_same,
                  wbytes / (t_same * 1e-6) / 1e9);
    }
    return same_last(xh, xf, "8 copies vs one kernel");  // the same arithmetic: equal bits
  }
  if (cold) {  // what a link adds behind a stream, by how many copies of its code take turns
    std::printf("\n(each link behind a %zu MB stream through L2; µs per link = (streams and links - streams "
                "alone) / links)\n\n", kStreamMB);
    for (int round = 0; round < 3; ++round) {
      for (bool ef : {false, true}) {
        const double t0 = time_us([&] { cold_launches(0, ef); });
        for (int c : {1, 2, 8}) {
          const double t = time_us([&] { cold_launches(c, ef); }) - t0;
          std::printf("| PDL launches behind a stream%s (%.1f µs alone), %d cop%s of the link's code in turn | %d | "
                      "%.2f | %.0f |\n", ef ? " loaded evict-first" : "", t0, c, c == 1 ? "y" : "ies", grid, t,
                      wbytes / (t * 1e-6) / 1e9);
        }
      }
    }
    chain_launches(true, 3);  // the reference: the same links, one kernel, no streams
    const int rc = same_last(xh, xf, "8 copies behind streams vs one kernel");
    CK(cudaFree(big));
    CK(cudaFree(sink));
    return rc;
  }
  if (x_only) {  // what x's form costs a PDL link with weights, interleaved (rows 6, 7 timing only)
    for (int round = 0; round < 3; ++round) {
      const double t_empty = time_us([&] { chain_launches(true, 2); });
      const double t_none = time_us([&] { chain_launches(true, 7); });  // into xa: overwritten below
      const double t_i8 = time_us([&] { chain_launches(true, 6); });
      const double t_lane = time_us([&] { chain_launches(true, 0); });
      const double t_pdl3 = time_us([&] { chain_launches(true, 3); });
      std::printf("| PDL launches, empty links (wait, one store a block) | %d | %.2f | — |\n", grid, t_empty);
      std::printf("| PDL launches, x lane by lane (8 float4 a lane) | %d | %.2f | %.0f |\n", grid, t_lane,
                  wbytes / (t_lane * 1e-6) / 1e9);
      std::printf("| PDL launches, x loaded coalesced through shared memory (the engine's) | %d | %.2f | %.0f |\n",
                  grid, t_pdl3, wbytes / (t_pdl3 * 1e-6) / 1e9);
      std::printf("| PDL launches, x loaded as int8 (36 bytes a lane, no int8 form made; timing only) | %d | %.2f | "
                  "%.0f |\n", grid, t_i8, wbytes / (t_i8 * 1e-6) / 1e9);
      std::printf("| PDL launches, no x (timing only) | %d | %.2f | %.0f |\n", grid, t_none,
                  wbytes / (t_none * 1e-6) / 1e9);
    }
    return same_last(xa, xh, "coalesced vs lane by lane");  // the same bits (milestone 21)
  }
  if (flag_only) {  // the flag handoff against PDL's wait, interleaved
    for (int round = 0; round < 3; ++round) {
      const double t_empty = time_us([&] { chain_launches(true, 2); });
      const double t_empty_f = time_us([&] { chain_launches(true, 5); });
      const double t_pdl3 = time_us([&] { chain_launches(true, 3); });
      const double t_flag = time_us([&] { chain_launches(true, 4); });
      std::printf("| PDL launches, empty links (wait, one store a block) | %d | %.2f | — |\n", grid, t_empty);
      std::printf("| PDL launches, empty links, flag handoff | %d | %.2f | — |\n", grid, t_empty_f);
      std::printf("| PDL launches, x loaded coalesced through shared memory | %d | %.2f | %.0f |\n", grid, t_pdl3,
                  wbytes / (t_pdl3 * 1e-6) / 1e9);
      std::printf("| the same with the flag handoff | %d | %.2f | %.0f |\n", grid, t_flag,
                  wbytes / (t_flag * 1e-6) / 1e9);
    }
    return same_last(xh, xf, "flag handoff vs PDL");  // the same links on the same input: equal bits
  }
  for (int round = 0; round < 2; ++round) {
    const double t_plain = time_us([&] { chain_launches(false); });
    const double t_empty = time_us([&] { chain_launches(true, 2); });
    const double t_now = time_us([&] { chain_launches(true, 1); });
    const double t_bar = time_us([&] { chain_persistent(1); });
    const double t_sm5 = sm_fits ? time_us([&] { chain_persistent(5); }) : 0.0;  // into xa, before the PDL chain
    const double t_pnw = time_us([&] { chain_persistent(7); });                      // into xa too
    const double t_pnw8 = time_us([&] { chain_persistent(8); });
    const double t_pnw9 = time_us([&] { chain_persistent(9); });
    const double t_pnw10 = time_us([&] { chain_persistent(10); });
    const double t_pnw12 = time_us([&] { chain_persistent(12); });
    const double t_pdl = time_us([&] { chain_launches(true); });  // after the empty ones: its output is compared
    const double t_pdl3 = time_us([&] { chain_launches(true, 3); });
    const double t_pers = time_us([&] { chain_persistent(0); });
    const double t_pp = pp_fits ? time_us([&] { chain_persistent(2); }) : 0.0;
    const double t_sm = sm_fits ? time_us([&] { chain_persistent(3); }) : 0.0;
    const double t_sm4 = sm_fits ? time_us([&] { chain_persistent(4); }) : 0.0;
    const double t_sm6 = sm_fits ? time_us([&] { chain_persistent(6); }) : 0.0;
    std::printf("| plain launches | %d | %.2f | %.0f |\n", grid, t_plain, wbytes / (t_plain * 1e-6) / 1e9);
    std::printf("| PDL launches, empty links (wait, one store a block) | %d | %.2f | — |\n", grid, t_empty);
    std::printf("| PDL launches, no weights (x, int8 form, reduction, store) | %d | %.2f | — |\n", grid, t_now);
    std::printf("| PDL launches | %d | %.2f | %.0f |\n", grid, t_pdl, wbytes / (t_pdl * 1e-6) / 1e9);
    std::printf("| PDL launches, x loaded coalesced through shared memory | %d | %.2f | %.0f |\n", grid, t_pdl3,
                wbytes / (t_pdl3 * 1e-6) / 1e9);
    std::printf("| persistent, grid barrier | %d | %.2f | %.0f |\n", grid_c, t_pers, wbytes / (t_pers * 1e-6) / 1e9);
    std::printf("| persistent, empty links (one store a block, the barrier) | %d | %.2f | — |\n", grid_c, t_bar);
    std::printf("| persistent, no weights (x, int8 form, reduction, store, barrier) | %d | %.2f | — |\n", grid_c,
                t_pnw);
    std::printf("| the same with x loaded as int8 (no int8 form made) | %d | %.2f | — |\n", grid_c, t_pnw8);
    std::printf("| the same without x (reduction, store, barrier) | %d | %.2f | — |\n", grid_c, t_pnw9);
    std::printf("| the same with x loaded as now, not quantized | %d | %.2f | — |\n", grid_c, t_pnw10);
    std::printf("| the same with x loaded coalesced through shared memory | %d | %.2f | — |\n", grid_c, t_pnw12);
    if (pp_fits)
      std::printf("| persistent ping-pong, grid barrier | %d | %.2f | %.0f |\n", 2 * grid_c, t_pp,
                  wbytes / (t_pp * 1e-6) / 1e9);
    if (sm_fits)
      std::printf("| persistent, weights a link ahead in shared memory | %d | %.2f | %.0f |\n", batches, t_sm,
                  wbytes / (t_sm * 1e-6) / 1e9);
    if (sm_fits)
      std::printf("| the same, warp 0 (the barrier's arriving thread) copying nothing | %d | %.2f | %.0f |\n", batches,
                  t_sm4, wbytes / (t_sm4 * 1e-6) / 1e9);
    if (sm_fits)
      std::printf("| the same without copies (x, int8 form, dots from shared memory, reduction, store, barrier) | %d | "
                  "%.2f | — |\n", batches, t_sm5);
    if (sm_fits)
      std::printf("| the same with one bulk copy a link (thread 0, mbarrier) | %d | %.2f | %.0f |\n", batches, t_sm6,
                  wbytes / (t_sm6 * 1e-6) / 1e9);
  }
  std::vector<float> ya(dim), yb(dim), yc(dim), yd(dim), ye(dim), yg(dim), yh(dim);
  CK(cudaMemcpy(ya.data(), xa + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(yb.data(), xb + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(yc.data(), xc + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(yd.data(), xd + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(ye.data(), xe + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(yg.data(), xg + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(yh.data(), xh + static_cast<size_t>(n) * dim, sizeof(float) * dim, cudaMemcpyDeviceToHost));
  int differ = 0, differ_pp = 0, differ_sm = 0, differ_co = 0, nonfinite = 0;
  for (int i = 0; i < dim; ++i) {
    differ += std::memcmp(&ya[i], &yb[i], sizeof(float)) != 0;
    differ_pp += pp_fits && std::memcmp(&ya[i], &yc[i], sizeof(float)) != 0;
    differ_sm += sm_fits && std::memcmp(&ya[i], &yd[i], sizeof(float)) != 0;
    differ_sm += sm_fits && std::memcmp(&ya[i], &ye[i], sizeof(float)) != 0;
    differ_sm += sm_fits && std::memcmp(&ya[i], &yg[i], sizeof(float)) != 0;
    differ_co += std::memcmp(&ya[i], &yh[i], sizeof(float)) != 0;
    nonfinite += !std::isfinite(ya[i]);
  }
  differ += differ_pp + differ_sm + differ_co;
  std::printf("\ncoalesced x vs PDL: %d of %d values differ", differ_co, dim);
  if (pp_fits) std::printf("\nping-pong vs PDL: %d of %d values differ", differ_pp, dim);
  if (sm_fits) std::printf("\nweights in shared memory vs PDL: %d of %d values differ", differ_sm, dim);
  std::printf("\nlast link's output, persistent vs PDL: %d of %d values differ, %d non-finite (|y_0| = %.3g)\n", differ,
              dim, nonfinite, std::fabs(ya[0]));
  for (auto* w : ws) CK(cudaFree(w));
  CK(cudaFree(dws));
  CK(cudaFree(xa));
  CK(cudaFree(xb));
  CK(cudaFree(xc));
  CK(cudaFree(xd));
  CK(cudaFree(xe));
  CK(cudaFree(xg));
  CK(cudaFree(xh));
  return differ == 0 && nonfinite == 0 ? 0 : 1;
}

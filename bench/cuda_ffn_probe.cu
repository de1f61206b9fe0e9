// Feed-forward probe (milestone 34): one launch for llama3-8b's gate|up and
// down GEMVs instead of two, with a deterministic split-K of down.
//
// The depth-0 step pays ~3.5 us a kernel boundary (milestones 20-22), and the
// GEMV probe (bench/cuda_gemv_probe.cu) puts the gap between its dp4a forms
// and their loads-only ceiling in each launch's start and end (milestone 33).
// Fusing down into gate|up removes one boundary a layer, if the fused launch
// stays balanced over the SMs without a grid-wide barrier. The form here:
//   - hidden units (32 FFN outputs) split evenly over NC clusters of CL
//     blocks (Hopper thread-block clusters); a cluster's gate|up rows split
//     evenly over its blocks, each the engine's 16-row slab loop (4 warps, x
//     coalesced and quantized to int8, 8 rows requested before the PDL wait,
//     silu(gate) * up made at the store), h kept in the block's shared memory;
//   - a cluster barrier, every block then copies the cluster's h through
//     distributed shared memory and quantizes its units as down's GEMV would;
//   - down's rows split over the cluster's blocks, each row's slice of the
//     cluster's units (down re-laid out per cluster: a row's n_c units'
//     quant bodies then their scales, padded to 16 bytes, so every block
//     streams one contiguous range), a lane a unit, its rows' partial sums
//     stored per cluster;
//   - the partial sums of a row slice (the rows of one block rank) added in
//     cluster order by the slice's last block to finish (a ticket per slice):
//     the same bits on every run, no grid-wide wait.
// Against the engine's pair: gate|up (16 rows, 8 early, x coalesced, SwiGLU
// store) then down (16 rows, 8 early, x coalesced), the forms of
// bench/cuda_gemv_forms.cuh, PDL launches. h is the same bits in both (the
// same row sums and SwiGLU), so y differs only by the order of down's sums:
// the table gives its relative RMS against the pair.
//
// H200 (cuda-notes milestone 34): the fused form takes 69.5 us against the
// pair's 31.7 (its cluster handoff costs ~8 us with PDL, its down part twice
// the engine's down); the pair's check found the probes' x read before the
// PDL wait (cuda_gemv_forms.cuh).
//
// Build and run (standalone; CMake builds it as ffn_probe with LONGKV_CUDA):
//   nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -o ffn_probe bench/cuda_ffn_probe.cu src/core/error.cpp
//   ./ffn_probe
#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/pdl.cuh"
#include "backend/cuda/weight_decode.cuh"
#include "cuda_gemv_forms.cuh"
#include "cuda_probe_util.cuh"

namespace {

namespace cg = cooperative_groups;
using longkv::cuda::Slab;
using longkv::cuda::XI8;
using namespace gemv_forms;
using S = Slab<longkv::WeightType::Q4_0>;

constexpr int kDim = 4096, kFfn = 14336;
constexpr int kNbX = kDim / 32, kNbF = kFfn / 32;  // units of x (128) and of h (448)
constexpr int kWarps = kNbX / 32;                  // a lane a unit of x: 4 warps
constexpr int kThreads = 32 * kWarps;
constexpr int kRB = 16, kEarly = 8;
constexpr size_t kLdGu = size_t(kNbX) * 18, kLdDown = size_t(kNbF) * 18;

// Cluster c's hidden units [u0, u1): an even split of kNbF over nc.
__host__ __device__ inline int cluster_u0(int c, int nc) { return c * kNbF / nc; }
// A row of cluster c's down slice: its n units' quant bodies, then their
// f16 scales, padded to 16 bytes.
__host__ __device__ inline size_t down_ld(int n) { return (18 * size_t(n) + 15) / 16 * 16; }

// CL blocks a cluster, LPR lanes a row in down's phase (>= a cluster's
// units). kParts: 7 the whole block; timing splits (wrong results) leave out
// 1 gate|up (h left as it is), 2 down's dots and stores, 4 the partials'
// sums; the cluster barrier and h's copy run in every form.
// Cluster c's units start at u0s[c] (u0s[nc] = kNbF) and its down slice at
// byte doff[c] of dfused, both made on the host (a loop of 64-bit sums and
// divisions here, before down's first loads, cost microseconds).
struct Split {
  const int* u0s;
  const size_t* doff;
};

template <int CL, int LPR, int kParts>
__global__ void __launch_bounds__(kThreads) ffn_fused_kernel(const uint8_t* __restrict__ gu,
                                                             const uint8_t* __restrict__ dfused, int nc, Split sp,
                                                             const float* x, float* __restrict__ part,
                                                             int* __restrict__ tickets, float* __restrict__ y,
                                                             float* __restrict__ h_out) {
  constexpr int kMaxH = 32 * LPR;               // a cluster's h values at most
  constexpr int kRowsStep = kThreads / LPR;     // down rows a block takes at once
  constexpr int kSliceRows = kDim / CL;         // down rows of one block rank
  constexpr int kSteps = kSliceRows / kRowsStep;
  constexpr int kAhead = 8;                     // down steps in registers ahead
  static_assert(kSteps % kAhead == 0 && kSliceRows % 4 == 0, "down's slice");
  __shared__ float red[2][kRB][kWarps];
  __shared__ float hs[kMaxH];  // this block's h, at cluster-local indices
  __shared__ float hl[kMaxH];  // the cluster's h
  __shared__ int last;
  cg::cluster_group cl = cg::this_cluster();
  const int rank = static_cast<int>(cl.block_rank()), c = blockIdx.x / CL;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, u = threadIdx.x;
  const int u0 = sp.u0s[c], nu = sp.u0s[c + 1] - u0;

  // Gate|up: the cluster's rows [64 u0, 64 u1), this block's 8 nu of them
  // (an even count: whole gate, up pairs).
  const int share = 64 * nu / CL, rbeg = 64 * u0 + rank * share, rend = rbeg + share;
  const int n_batches = (share + kRB - 1) / kRB;
  S::Unit wa[kRB];
  auto load_rows = [&](int r0, int lo, int hi) {
#pragma unroll
    for (int r = lo; r < hi; ++r) wa[r] = S::load(gu + kLdGu * static_cast<size_t>(min(r0 + r, rend - 1)), u, kNbX);
  };
  if constexpr ((kParts & 1) != 0) load_rows(rbeg, 0, kEarly);
  longkv::cuda::pdl_trigger();
  longkv::cuda::pdl_wait();
  Xr<kDp4a> xr;
  if constexpr ((kParts & 1) != 0) {
    make_x<kDp4a, true>(x, u, kNbX, xr);
    load_rows(rbeg, kEarly, kRB);
  }
  int buf = 0;
  for (int b = 0; b < ((kParts & 1) != 0 ? n_batches : 0); ++b) {
    const int r0 = rbeg + b * kRB;
    float acc[kRB];
#pragma unroll
    for (int r = 0; r < kRB; ++r) acc[r] = dot<kDp4a>(wa[r], xr);
    if (b + 1 < n_batches) load_rows(r0 + kRB, 0, kRB);
    longkv::cuda::publish_row_partials(acc, red[buf], warp, lane);
    const int t = threadIdx.x;
    if (t < kRB && !(t & 1) && r0 + t < rend) {
      const float s = longkv::cuda::row_total(red[buf][t], kWarps);
      const float pu = longkv::cuda::row_total(red[buf][t + 1], kWarps);
      hs[(r0 + t) / 2 - 32 * u0] = s / (1.0f + expf(-s)) * pu;  // the GLU store's formula
      if (h_out) h_out[(r0 + t) / 2] = hs[(r0 + t) / 2 - 32 * u0];  // the check's copy
    }
    buf ^= 1;
  }

  // Down: rows [rank kSliceRows, + kSliceRows) x the cluster's units; lane
  // group of LPR a row, unit j = lane % LPR. Its first kAhead steps are
  // requested before the cluster barrier.
  const uint8_t* dbase = dfused + sp.doff[c];
  const size_t ldd = down_ld(nu);
  const int j = threadIdx.x % LPR, rr = threadIdx.x / LPR, row0 = rank * kSliceRows + rr;
  const bool unit_ok = j < nu;
  S::Unit dw[kAhead];
  auto load_down = [&](int step, S::Unit& w) {
    const uint8_t* row = dbase + ldd * static_cast<size_t>(row0 + step * kRowsStep);
    w = unit_ok ? S::Unit{longkv::cuda::ldg16(row + 16 * j), longkv::cuda::ld_f16(row + 16 * nu + 2 * j)}
                : S::Unit{make_uint4(0, 0, 0, 0), 0.0f};
  };
  if constexpr ((kParts & 2) != 0) {
#pragma unroll
    for (int i = 0; i < kAhead; ++i) load_down(i, dw[i]);
  }
  cl.sync();  // every block's h written and visible across the cluster
  const int per_block = 32 * nu / CL;  // h values block k made: [k per_block, (k + 1) per_block)
  for (int i = threadIdx.x; i < 32 * nu; i += kThreads) hl[i] = *cl.map_shared_rank(hs + i, i / per_block);
  cl.barrier_arrive();  // this block is done reading the others' shared memory (waited at the end)
  __syncthreads();
  XI8 xq = {};
  if (unit_ok) {
    float v[32];
#pragma unroll
    for (int e = 0; e < 32; ++e) v[e] = hl[32 * j + e];
    longkv::cuda::quantize_x_i8(v, xq);
  }
  for (int s0 = 0; s0 < ((kParts & 2) != 0 ? kSteps : 0); s0 += kAhead) {
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      float a = unit_ok ? longkv::cuda::dot_q4_0_i8(dw[i].q, dw[i].d, xq) : 0.0f;
      if (s0 + kAhead < kSteps) load_down(s0 + kAhead + i, dw[i]);
#pragma unroll
      for (int o = 1; o < LPR; o <<= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
      if (j == 0) part[static_cast<size_t>(c) * kDim + row0 + (s0 + i) * kRowsStep] = a;
    }
  }

  if constexpr ((kParts & 4) != 0) {
    // The slice's last block adds the nc partials of its rows in cluster
    // order: TPC threads a float4 column, each over the clusters k with
    // k % TPC == its sub, combined in sub order.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(tickets + rank, 1) == nc - 1;
    __syncthreads();
    if (last) {
      __threadfence();
      constexpr int kCols = kSliceRows / 4, kTpc = kThreads / kCols;
      static_assert(kThreads % kCols == 0 && (kTpc & (kTpc - 1)) == 0, "reduction: whole columns");
      const int col = threadIdx.x / kTpc, sub = threadIdx.x % kTpc;
      const float4* p4 = reinterpret_cast<const float4*>(part + rank * kSliceRows) + col;
      float4 s = make_float4(0, 0, 0, 0);
#pragma unroll 8
      for (int k = sub; k < nc; k += kTpc) {
        const float4 v = __ldcg(p4 + static_cast<size_t>(k) * (kDim / 4));
        s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
      }
#pragma unroll
      for (int o = kTpc / 2; o > 0; o >>= 1) {  // sub 0 ends with (sub 0 + sub 1) + ... in a fixed tree
        s.x += __shfl_down_sync(0xffffffffu, s.x, o, kTpc);
        s.y += __shfl_down_sync(0xffffffffu, s.y, o, kTpc);
        s.z += __shfl_down_sync(0xffffffffu, s.z, o, kTpc);
        s.w += __shfl_down_sync(0xffffffffu, s.w, o, kTpc);
      }
      if (sub == 0) reinterpret_cast<float4*>(y + rank * kSliceRows)[col] = s;
      if (threadIdx.x == 0) tickets[rank] = 0;  // the next launch waits for this grid before its tickets
    }
  }
  cl.barrier_wait();
}

// The fused form's launch configuration: nc clusters of CL blocks, PDL.
template <int CL, int LPR, int kParts>
cudaLaunchConfig_t fused_config(int nc, cudaStream_t s, cudaLaunchAttribute (&attr)[2], bool pdl = true) {
  static bool once = [] {
    if (CL > 8)
      CK(cudaFuncSetAttribute(ffn_fused_kernel<CL, LPR, kParts>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    return true;
  }();
  (void)once;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(nc * CL);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = kWarps * 256 * sizeof(float4);  // make_x's coalesced x
  cfg.stream = s;
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = CL;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = CL > 1 ? attr : attr + 1;  // CL 1: no cluster attribute at all
  cfg.numAttrs = (CL > 1 ? 1 : 0) + (pdl ? 1 : 0);
  return cfg;
}
// How many clusters of CL blocks the device holds at once: the fused form
// uses that many (more would run a second wave).
template <int CL, int LPR, int kParts>
int max_clusters(cudaStream_t s) {
  cudaLaunchAttribute attr[2];
  cudaLaunchConfig_t cfg = fused_config<CL, LPR, kParts>(1, s, attr);
  int n = 0;
  CK(cudaOccupancyMaxActiveClusters(&n, ffn_fused_kernel<CL, LPR, kParts>, &cfg));
  return n;
}
template <int CL, int LPR, int kParts>
void launch_fused(int nc, Split sp, const uint8_t* gu, const uint8_t* df, const float* x, float* part, int* tickets,
                  float* y, cudaStream_t s, float* h_out = nullptr, bool pdl = true) {
  cudaLaunchAttribute attr[2];
  const cudaLaunchConfig_t cfg = fused_config<CL, LPR, kParts>(nc, s, attr, pdl);
  CK(cudaLaunchKernelEx(&cfg, ffn_fused_kernel<CL, LPR, kParts>, gu, df, nc, sp, x, part, tickets, y, h_out));
}

// One rotating set of weights: gate|up interleaved (row 2i gate i, 2i + 1
// up i), down, and down re-laid out for each cluster count of `ncs`.
struct Set {
  uint8_t* gu;
  uint8_t* down;
  std::vector<uint8_t*> fused;
};

std::vector<uint8_t> relayout_down(const std::vector<uint8_t>& down, int nc) {
  size_t total = 0;
  for (int c = 0; c < nc; ++c) total += kDim * down_ld(cluster_u0(c + 1, nc) - cluster_u0(c, nc));
  std::vector<uint8_t> out(total, 0);
  size_t off = 0;
  for (int c = 0; c < nc; ++c) {
    const int u0 = cluster_u0(c, nc), n = cluster_u0(c + 1, nc) - u0;
    const size_t ld = down_ld(n);
    for (int r = 0; r < kDim; ++r) {
      const uint8_t* src = down.data() + kLdDown * r;
      uint8_t* dst = out.data() + off + ld * r;
      std::memcpy(dst, src + 16 * u0, 16 * size_t(n));
      std::memcpy(dst + 16 * n, src + 16 * kNbF + 2 * u0, 2 * size_t(n));
    }
    off += kDim * ld;
  }
  return out;
}

// The grid the GEMV probe gives a form: what fits at once, at most a block a batch.
template <typename K>
int form_grid(K* k, int rows, int threads, size_t smem) {
  int occ = 0, sms = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k, threads, smem));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  return std::max(1, std::min((rows + kRB - 1) / kRB, std::max(1, occ) * sms));
}

}  // namespace

int main() {
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  std::printf("device: %s, %d SMs\n\n", p.name, p.multiProcessorCount);
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  const double copy_gbs = probe_copy_bandwidth(s);
  std::mt19937 rng(1);
  std::vector<uint8_t> hgu(kLdGu * 2 * kFfn), hdown(kLdDown * kDim);
  random_q4_0_rows(rng, hgu.data(), 2 * kFfn, kNbX, 0.002f);
  random_q4_0_rows(rng, hdown.data(), kDim, kNbF, 0.002f);
  // As many clusters as fit at once (a cluster's units must fit its LPR lanes).
  const int ncs[] = {std::max(kNbF / 8 + 1, std::min(kNbF / 7, max_clusters<8, 8, 7>(s))),
                     std::max(kNbF / 16 + 1, std::min(kNbF / 14, max_clusters<16, 16, 7>(s)))};
  std::printf("clusters held at once: %d of 8 blocks, %d of 16; used: %d, %d\n\n", max_clusters<8, 8, 7>(s),
              max_clusters<16, 16, 7>(s), ncs[0], ncs[1]);
  std::vector<std::vector<uint8_t>> hfused;
  for (int nc : ncs) hfused.push_back(relayout_down(hdown, nc));
  auto make_split = [](int nc) {
    std::vector<int> u0s(nc + 1);
    std::vector<size_t> doff(nc + 1, 0);
    for (int c = 0; c <= nc; ++c) u0s[c] = cluster_u0(c, nc);
    for (int c = 0; c < nc; ++c) doff[c + 1] = doff[c] + kDim * down_ld(u0s[c + 1] - u0s[c]);
    int* du;
    size_t* dd;
    CK(cudaMalloc(&du, u0s.size() * sizeof(int)));
    CK(cudaMalloc(&dd, doff.size() * sizeof(size_t)));
    CK(cudaMemcpy(du, u0s.data(), u0s.size() * sizeof(int), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dd, doff.data(), doff.size() * sizeof(size_t), cudaMemcpyHostToDevice));
    return Split{du, dd};
  };
  const Split splits_by_nc[] = {make_split(ncs[0]), make_split(ncs[1]), make_split(kNbF)};
  const double wbytes = double(hgu.size() + hdown.size());
  const int n_sets = static_cast<int>(std::max(2.0, std::ceil(512.0 * 1048576 / (wbytes * 2))));
  std::vector<Set> sets(n_sets);
  for (Set& st : sets) {
    CK(cudaMalloc(&st.gu, hgu.size()));
    CK(cudaMalloc(&st.down, hdown.size()));
    CK(cudaMemcpy(st.gu, hgu.data(), hgu.size(), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(st.down, hdown.data(), hdown.size(), cudaMemcpyHostToDevice));
    for (const auto& f : hfused) {
      uint8_t* d;
      CK(cudaMalloc(&d, f.size()));
      CK(cudaMemcpy(d, f.data(), f.size(), cudaMemcpyHostToDevice));
      st.fused.push_back(d);
    }
  }
  std::vector<float> hx(kDim);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : hx) v = nd(rng);
  float *x, *h, *y, *part;
  int* tickets;
  CK(cudaMalloc(&x, kDim * sizeof(float)));
  CK(cudaMalloc(&h, kFfn * sizeof(float)));
  CK(cudaMalloc(&y, kDim * sizeof(float)));
  CK(cudaMalloc(&part, size_t(128) * kDim * sizeof(float)));
  CK(cudaMalloc(&tickets, 64 * sizeof(int)));
  CK(cudaMemset(tickets, 0, 64 * sizeof(int)));
  CK(cudaMemcpy(x, hx.data(), kDim * sizeof(float), cudaMemcpyHostToDevice));

  // The engine's pair (cuda_gemv_forms.cuh): gate|up with the SwiGLU store,
  // then down; the grid the GEMV probe gives each.
  constexpr int kT = kMaxWarps * 32;
  auto* gu_k = probe_kernel<kDp4a, kRB, 1, false, kT, kEarly, true, true>;
  auto* dn_k = probe_kernel<kDp4a, kRB, 1, false, kT, kEarly, true, false>;
  const size_t gu_smem = size_t(kNbX / 32) * 256 * sizeof(float4), dn_smem = size_t(kNbF / 32) * 256 * sizeof(float4);
  CK(cudaFuncSetAttribute(dn_k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dn_smem)));
  const int dn_threads = 32 * (kNbF / 32);
  const int gu_grid = form_grid(gu_k, 2 * kFfn, kThreads, gu_smem), dn_grid = form_grid(dn_k, kDim, dn_threads, dn_smem);
  auto pair = [&](const Set& st, bool gate_up, bool down) {
    if (gate_up)
      longkv::cuda::launch_maybe_pdl(true, gu_k, dim3(gu_grid), dim3(kThreads), gu_smem, s,
                                     static_cast<const uint8_t*>(st.gu), kLdGu, 2 * kFfn, kNbX,
                                     static_cast<const float*>(x), h);
    if (down)
      longkv::cuda::launch_maybe_pdl(true, dn_k, dim3(dn_grid), dim3(dn_threads), dn_smem, s,
                                     static_cast<const uint8_t*>(st.down), kLdDown, kDim, kNbF,
                                     static_cast<const float*>(h), y);
  };
  auto fused = [&](int form, const Set& st, float* h_out = nullptr) {
    const Split a = splits_by_nc[0], b = splits_by_nc[1], one = splits_by_nc[2];
    if (form == 0) launch_fused<8, 8, 7>(ncs[0], a, st.gu, st.fused[0], x, part, tickets, y, s, h_out);
    if (form == 1) launch_fused<16, 16, 7>(ncs[1], b, st.gu, st.fused[1], x, part, tickets, y, s, h_out);
    if (form == 2) launch_fused<8, 8, 3>(ncs[0], a, st.gu, st.fused[0], x, part, tickets, y, s, h_out);
    if (form == 3) launch_fused<8, 8, 1>(ncs[0], a, st.gu, st.fused[0], x, part, tickets, y, s, h_out);
    if (form == 4) launch_fused<8, 8, 2>(ncs[0], a, st.gu, st.fused[0], x, part, tickets, y, s, h_out);
    if (form == 5) launch_fused<1, 1, 1>(kNbF, one, st.gu, st.fused[0], x, part, tickets, y, s, h_out);
    if (form == 6) launch_fused<8, 8, 7>(ncs[0], a, st.gu, st.fused[0], x, part, tickets, y, s, h_out, false);
    if (form == 7) launch_fused<8, 8, 1>(ncs[0], a, st.gu, st.fused[0], x, part, tickets, y, s, h_out, false);
    if (form == 8) launch_fused<8, 8, 2>(ncs[0], a, st.gu, st.fused[0], x, part, tickets, y, s, h_out, false);
    if (form == 9) launch_fused<1, 1, 1>(kNbF, one, st.gu, st.fused[0], x, part, tickets, y, s, h_out, false);
  };
  auto y_now = [&] {
    CK(cudaStreamSynchronize(s));
    CK(cudaGetLastError());
    std::vector<float> out(kDim);
    CK(cudaMemcpy(out.data(), y, kDim * sizeof(float), cudaMemcpyDeviceToHost));
    return out;
  };
  auto time_ffn = [&](auto&& one) {  // us an FFN: 10 warm-up, 300 timed, over the rotating sets
    for (int i = 0; i < 10; ++i) one(sets[i % n_sets]);
    return time_us(s, 300, [&](int i) { one(sets[i % n_sets]); });
  };

  pair(sets[0], true, true);
  const std::vector<float> y_pair = y_now();
  std::vector<float> h_pair(kFfn), h_fused(kFfn);
  CK(cudaMemcpy(h_pair.data(), h, kFfn * sizeof(float), cudaMemcpyDeviceToHost));
  // The exact block on the host (dequantized weights, f64 sums, f32 x).
  std::vector<float> y_exact(kDim), h_exact(kFfn);
  {
    auto dot_row = [](const uint8_t* row, int nb, const float* v) {
      double acc = 0;
      for (int b = 0; b < nb; ++b) {
        __half_raw hr;
        std::memcpy(&hr.x, row + 16 * nb + 2 * b, 2);
        const double d = __half2float(__half(hr));
        for (int k = 0; k < 16; ++k) {
          const uint8_t q = row[16 * b + k];
          acc += d * ((q & 15) - 8) * v[32 * b + k] + d * ((q >> 4) - 8) * v[32 * b + 16 + k];
        }
      }
      return acc;
    };
    for (int i = 0; i < kFfn; ++i) {
      const double g = dot_row(hgu.data() + kLdGu * (2 * i), kNbX, hx.data());
      const double up = dot_row(hgu.data() + kLdGu * (2 * i + 1), kNbX, hx.data());
      h_exact[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up);
    }
    for (int r = 0; r < kDim; ++r) y_exact[r] = static_cast<float>(dot_row(hdown.data() + kLdDown * r, kNbF, h_exact.data()));
  }
  std::printf("the pair against the exact block: h rel. RMS %.2e, y %.2e\n", rel_rms(h_pair, h_exact),
              rel_rms(y_pair, y_exact));
  pair(sets[0], false, true);
  std::printf("down again on the pair's h buffer after a sync: y %.2e\n", rel_rms(y_now(), y_exact));
  pair(sets[0], true, false);
  longkv::cuda::launch_maybe_pdl(false, dn_k, dim3(dn_grid), dim3(dn_threads), dn_smem, s,
                                 static_cast<const uint8_t*>(sets[0].down), kLdDown, kDim, kNbF,
                                 static_cast<const float*>(h), y);
  std::printf("the pair with down launched without PDL: y %.2e\n", rel_rms(y_now(), y_exact));
  for (int rep = 0; rep < 3; ++rep) {
    pair(sets[0], true, true);
    std::printf("the pair again (%d): y %.2e\n", rep, rel_rms(y_now(), y_exact));
  }
  for (int rep = 0; rep < 3; ++rep) {  // h zeroed in the stream first: does down see gu's h?
    CK(cudaMemsetAsync(h, 0, kFfn * sizeof(float), s));
    pair(sets[0], true, true);
    std::printf("the pair after h was zeroed (%d): y %.2e\n", rep, rel_rms(y_now(), y_exact));
  }
  for (int rep = 0; rep < 2; ++rep) {  // the same with a kernel (not a memset) before the pair
    CK(cudaMemsetAsync(h, 0, kFfn * sizeof(float), s));
    pair(sets[1], false, true);  // down alone: reads the zeros, writes y
    pair(sets[0], true, true);
    std::printf("the pair after zeroed h and a down launch (%d): y %.2e\n", rep, rel_rms(y_now(), y_exact));
  }
  {  // down alone on a copy of the pair's h, three ways
    float* h2;
    CK(cudaMalloc(&h2, kFfn * sizeof(float)));
    CK(cudaMemcpy(h2, h_pair.data(), kFfn * sizeof(float), cudaMemcpyHostToDevice));
    auto* dn_plain = probe_kernel<kDp4a, kRB, 1, false, kT, kEarly, false, false>;
    for (int way = 0; way < 3; ++way) {
      if (way < 2)
        longkv::cuda::launch_maybe_pdl(way == 0, dn_k, dim3(dn_grid), dim3(dn_threads), dn_smem, s,
                                       static_cast<const uint8_t*>(sets[0].down), kLdDown, kDim, kNbF,
                                       static_cast<const float*>(h2), y);
      else
        longkv::cuda::launch_maybe_pdl(false, dn_plain, dim3(dn_grid), dim3(dn_threads), 0, s,
                                       static_cast<const uint8_t*>(sets[0].down), kLdDown, kDim, kNbF,
                                       static_cast<const float*>(h2), y);
      const char* names[] = {"PDL, x coalesced", "no PDL, x coalesced", "no PDL, x lane by lane"};
      std::printf("down alone on the pair's h (%s): y rel. RMS %.2e against the exact block\n", names[way],
                  rel_rms(y_now(), y_exact));
    }
    CK(cudaFree(h2));
  }
  std::vector<std::string> checks;
  for (int form = 0; form < 2; ++form) {
    float* hdev;
    CK(cudaMalloc(&hdev, kFfn * sizeof(float)));
    fused(form, sets[0], hdev);
    const std::vector<float> y1 = y_now();
    CK(cudaMemcpy(h_fused.data(), hdev, kFfn * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaFree(hdev));
    std::printf("fused form %d: h %s the pair's, y rel. RMS %.2e against the exact block\n", form,
                std::memcmp(h_fused.data(), h_pair.data(), sizeof(float) * kFfn) == 0 ? "equal to" : "DIFFERENT from",
                rel_rms(y1, y_exact));
    fused(form, sets[0]);  // again: the same bits (tickets reset, fixed order)
    const std::vector<float> y2 = y_now();
    char line[160];
    std::snprintf(line, sizeof line, "rel. RMS %.2e vs the pair, %s on a second run",
                  rel_rms(y1, y_pair), std::memcmp(y1.data(), y2.data(), sizeof(float) * kDim) == 0 ? "same bits"
                                                                                                      : "DIFFERENT");
    checks.push_back(line);
  }

  struct Row {
    std::string name, check;
    float us;
  };
  std::vector<Row> rows;
  rows.push_back({"pair: gate|up (SwiGLU store), then down", "reference",
                  time_ffn([&](const Set& st) { pair(st, true, true); })});
  rows.push_back({"gate|up alone", "—", time_ffn([&](const Set& st) { pair(st, true, false); })});
  rows.push_back({"down alone", "—", time_ffn([&](const Set& st) { pair(st, false, true); })});
  rows.push_back({"fused, " + std::to_string(ncs[0]) + " clusters of 8", checks[0],
                  time_ffn([&](const Set& st) { fused(0, st); })});
  rows.push_back({"fused, " + std::to_string(ncs[1]) + " clusters of 16", checks[1],
                  time_ffn([&](const Set& st) { fused(1, st); })});
  const char* splits[] = {"partials not added", "gate|up and h's handoff only", "h's handoff and down only"};
  for (int f = 2; f < 5; ++f)
    rows.push_back({"fused, " + std::to_string(ncs[0]) + " clusters of 8, " + splits[f - 2] + " (timing only)", "—",
                    time_ffn([&](const Set& st) { fused(f, st); })});
  rows.push_back({"fused, 448 blocks without clusters, gate|up only (timing only)", "—",
                  time_ffn([&](const Set& st) { fused(5, st); })});
  rows.push_back({"fused, " + std::to_string(ncs[0]) + " clusters of 8, launched without PDL", "—",
                  time_ffn([&](const Set& st) { fused(6, st); })});
  rows.push_back({"fused, " + std::to_string(ncs[0]) + " clusters of 8, without PDL, gate|up and h's handoff only", "—",
                  time_ffn([&](const Set& st) { fused(7, st); })});
  rows.push_back({"fused, " + std::to_string(ncs[0]) + " clusters of 8, without PDL, h's handoff and down only", "—",
                  time_ffn([&](const Set& st) { fused(8, st); })});
  rows.push_back({"fused, 448 blocks without clusters, without PDL, gate|up only", "—",
                  time_ffn([&](const Set& st) { fused(9, st); })});
  rows.push_back({"pair, down launched without PDL", "—", time_ffn([&](const Set& st) {
                    pair(st, true, false);
                    longkv::cuda::launch_maybe_pdl(false, dn_k, dim3(dn_grid), dim3(dn_threads), dn_smem, s,
                                                   static_cast<const uint8_t*>(st.down), kLdDown, kDim, kNbF,
                                                   static_cast<const float*>(h), y);
                  })});
  std::printf("llama3-8b feed-forward block, Q4_0 (gate|up %d x %d, down %d x %d: %.1f MB of weights; %.1f us at "
              "copy bandwidth), grids: gate|up %d x %d, down %d x %d threads\n\n",
              2 * kFfn, kDim, kDim, kFfn, wbytes / 1e6, wbytes / copy_gbs / 1e3, gu_grid, kThreads, dn_grid,
              dn_threads);
  std::printf("| form | us an FFN | GB/s of weight bytes | output |\n|---|---:|---:|---|\n");
  for (const Row& r : rows) {
    const double bytes = r.name == "gate|up alone" ? hgu.size() : r.name == "down alone" ? hdown.size() : wbytes;
    std::printf("| %s | %.1f | %.0f | %s |\n", r.name.c_str(), r.us, bytes / (r.us * 1e-6) / 1e9, r.check.c_str());
  }
  std::printf("\nBack-to-back PDL launches over %d rotating weight sets; fused forms read down re-laid out per "
              "cluster (rows padded to 16 bytes: +%.1f%% and +%.1f%% bytes, not counted above).\n",
              n_sets, 100.0 * (double(hfused[0].size()) / hdown.size() - 1), 100.0 * (double(hfused[1].size()) / hdown.size() - 1));
  for (Set& st : sets) {
    CK(cudaFree(st.gu));
    CK(cudaFree(st.down));
    for (uint8_t* d : st.fused) CK(cudaFree(d));
  }
  return 0;
}

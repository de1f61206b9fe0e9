// The floor of a decode step made as a chain of kernels (cuda-notes
// milestone 46). Issue 4's k2v2 bars at 131K need the llama3-8b Q4_0 step at
// <= ~2.26 ms, 1.29x its 6.95 GiB at copy bandwidth; the engine takes ~2.85.
// Milestones 36-45 measured its parts: the weights part ~1.6x its bytes, the
// attention ~1.75x. This probe asks what the chain itself costs when the
// links do nothing but read their bytes: the step's byte pattern, link by
// link (per layer q|k|v, the layer's KV records, wo, gate|up, down; then the
// output matrix), read by kernels with no arithmetic, so that what is left
// over the bytes is the price of the links' order alone. Every form reads
// the same bytes in the same order of links:
//   stream    one launch; every block reads its share of every link in
//             turn, with no wait between links: the bytes' own floor
//   graph     a launch a link in a CUDA graph, in plain stream order
//   pdl       a launch a link with programmatic dependent launch (the
//             engine's way): a block reads its share after griddepcontrol.wait
//   early     pdl, with each thread's first kEarly loads issued before the
//             wait (the engine's GEMVs request their first row batch so)
//   barrier   one cooperative launch, a grid barrier between links
// each with the links' blocks either taking the SM whole (dynamic shared
// memory sized so that no block of the next link fits beside them, as the
// engine's GEMVs fill the register file) or leaving room for the next link's
// blocks (`share`: what a chain of small kernels could overlap at best).
// Prints µs a step, its GB/s and its ratio to the bytes at the device's copy
// bandwidth (the bound the engine's tables use); then, for k2v2 at 131K, what
// each kind of link costs the chain (the step less the step without it, as
// the bench's `sfx` measures the engine's).
//
// H200 (cuda-notes milestone 46): k2v2 at 131K reads its 6.93 GiB in 1.95-2.0
// ms as a PDL chain (1.12-1.15x the bytes), 1.89-1.92 with the next link's
// blocks beside the last ones; the engine takes 2.86. So the chain of
// launches leaves room for the bars (<= ~2.26 ms); the engine's arithmetic
// does not: v3 costs ~0.54 ms over its link's read, down ~0.12, q|k|v ~0.04.
//
// Usage: floor_probe [iters]
// Build (CMake target floor_probe with LONGKV_CUDA, or standalone):
//   nvcc -O3 -std=c++17 -arch=sm_90 -Isrc -Iinclude -Ibench -o floor_probe bench/cuda_floor_probe.cu src/core/error.cpp
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/pdl.cuh"
#include "cuda_probe_util.cuh"

namespace {

using longkv::cuda::launch_maybe_pdl;
using longkv::cuda::pdl_trigger;
using longkv::cuda::pdl_wait;

constexpr int kThreads = 512;
constexpr int kUnroll = 8;  // 16-byte loads a thread in flight
constexpr int kEarly = 8;   // early: loads a thread issues before its wait
constexpr int kMaxLinks = 32 * 5 + 1;
enum Form { kStream, kGraph, kPdl, kEarlyForm, kBarrier, kForms };
const char* const kFormNames[kForms] = {"stream", "graph", "pdl", "early", "barrier"};

struct Link {
  const uint4* p;
  long long n16;  // 16-byte words
};
__constant__ Link c_links[kMaxLinks];

// Block b's words [lo, hi) of a link of n16 words, over g blocks.
__device__ __forceinline__ void share(long long n16, int b, int g, long long& lo, long long& hi) {
  lo = n16 * b / g;
  hi = n16 * (b + 1) / g;
}

// Words lo + t, lo + t + step, ... < hi, kUnroll loads in flight; xor-folded
// into acc so that no load is dead.
__device__ __forceinline__ void read_range(const uint4* p, long long lo, long long hi, uint32_t& acc) {
  const int step = blockDim.x;
  for (long long i = lo + threadIdx.x; i < hi; i += static_cast<long long>(step) * kUnroll) {
    uint4 v[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const long long j = i + static_cast<long long>(k) * step;
      v[k] = j < hi ? __ldg(p + j) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) acc ^= v[k].x ^ v[k].y ^ v[k].z ^ v[k].w;
  }
}

// One link a launch (graph, pdl, early). Early: this thread's first kEarly
// words requested before the wait (weights and KV records are not written
// by the step's earlier kernels), folded in after it.
template <bool Early>
__global__ void __launch_bounds__(kThreads) link_kernel(int l, uint32_t* sink) {
  const Link L = c_links[l];
  long long lo, hi;
  share(L.n16, blockIdx.x, gridDim.x, lo, hi);
  uint32_t acc = 0;
  uint4 e[kEarly];
  if constexpr (Early) {
#pragma unroll
    for (int k = 0; k < kEarly; ++k) {
      const long long j = lo + threadIdx.x + static_cast<long long>(k) * blockDim.x;
      e[k] = j < hi ? __ldg(L.p + j) : make_uint4(0, 0, 0, 0);
    }
    lo += static_cast<long long>(kEarly) * blockDim.x;
  }
  pdl_trigger();
  pdl_wait();
  if constexpr (Early) {
#pragma unroll
    for (int k = 0; k < kEarly; ++k) acc ^= e[k].x ^ e[k].y ^ e[k].z ^ e[k].w;
  }
  read_range(L.p, lo, hi, acc);
  if (threadIdx.x == 0) sink[(l % 2) * gridDim.x + blockIdx.x] = acc;  // the link's one store a block
}

// All links in one launch: stream (barrier false) or a grid barrier between
// links on a counter that only grows (target: blocks x links passed).
template <bool Barrier>
__global__ void __launch_bounds__(kThreads) step_kernel(int n_links, uint32_t* sink, unsigned* ctr, unsigned base) {
  uint32_t acc = 0;
  for (int l = 0; l < n_links; ++l) {
    const Link L = c_links[l];
    long long lo, hi;
    share(L.n16, blockIdx.x, gridDim.x, lo, hi);
    read_range(L.p, lo, hi, acc);
    if (!Barrier) continue;
    if (threadIdx.x == 0) sink[(l % 2) * gridDim.x + blockIdx.x] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(ctr, 1u);
      const unsigned target = base + gridDim.x * static_cast<unsigned>(l + 1);
      unsigned v;
      do {
        asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(ctr) : "memory");
      } while (static_cast<int>(v - target) < 0);
    }
    __syncthreads();
  }
  if (!Barrier && threadIdx.x == 0) sink[blockIdx.x] = acc;
}

// llama3-8b, Q4_0 in the GPU's split layout: 18 bytes a 32-element unit.
constexpr long long kDim = 4096, kFfn = 14336, kVocab = 128256, kKvDim = 1024;
constexpr long long q4(long long rows, long long cols) { return rows * (cols / 32) * 18; }
constexpr long long kQkv = q4(kDim + 2 * kKvDim, kDim), kWo = q4(kDim, kDim), kGateUp = q4(2 * kFfn, kDim);
constexpr long long kDown = q4(kDim, kFfn), kOut = q4(kVocab, kDim);
// KV bytes a layer at depth d: k2v2 (32-token groups of 8 KV heads, 3,072
// bytes a group: key and value codes, 1,024 each, and their f16 scale and
// zero, 512 each; cuda-notes milestone 44's 100.65 MB a launch at 131K) or
// f16 (keys and values, 2 bytes an element).
long long kv_bytes(const std::string& mode, long long d) {
  return mode == "f16" ? d * kKvDim * 2 * 2 : mode == "k2v2" ? (d / 32) * 8 * 3072 : 0;
}

struct Buffers {
  std::vector<uint8_t*> w;   // per layer: q|k|v, wo, gate|up, down
  std::vector<uint8_t*> kv;  // per layer
  uint8_t* out = nullptr;
};

// A layer's links, in the engine's order (the output matrix ends the step).
enum Kind { kQkvLink, kAttnLink, kWoLink, kGateUpLink, kDownLink, kKinds };
const char* const kKindNames[kKinds] = {"q|k|v", "attention", "wo", "gate|up", "down"};

// The step's links in the engine's order, but the kind `skip` of every layer
// (-1: none; the bench's `sfx` leaves a kind's launches out so); bytes a step
// into *bytes.
std::vector<Link> step_links(const Buffers& b, long long kvb, double* bytes, int skip = -1) {
  std::vector<Link> v;
  auto add = [&](int kind, const uint8_t* p, long long n) {
    if (kind == skip) return;
    v.push_back({reinterpret_cast<const uint4*>(p), n / 16});
    *bytes += static_cast<double>(n);
  };
  *bytes = 0;
  for (int l = 0; l < 32; ++l) {
    uint8_t* w = b.w[l];
    add(kQkvLink, w, kQkv);
    if (kvb > 0) add(kAttnLink, b.kv[l], kvb);
    add(kWoLink, w + kQkv, kWo);
    add(kGateUpLink, w + kQkv + kWo, kGateUp);
    add(kDownLink, w + kQkv + kWo + kGateUp, kDown);
  }
  add(kKinds, b.out, kOut);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 20;
  int dev = 0, sms = 0, smem_sm = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CK(cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s, %d SMs\n", prop.name, sms);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const double cbw = probe_copy_bandwidth(s);

  const std::vector<std::pair<std::string, long long>> cases = {
      {"depth 0", 0}, {"k2v2", 32768}, {"k2v2", 131072}, {"f16", 131072}};
  long long kv_max = 0;
  for (const auto& c : cases) kv_max = std::max(kv_max, kv_bytes(c.first, c.second));
  Buffers b;
  const long long layer_w = kQkv + kWo + kGateUp + kDown;
  for (int l = 0; l < 32; ++l) {
    uint8_t *w, *kv = nullptr;
    CK(cudaMalloc(&w, layer_w));
    CK(cudaMemset(w, 0x5a ^ l, layer_w));
    if (kv_max > 0) {
      CK(cudaMalloc(&kv, kv_max));
      CK(cudaMemset(kv, 0x3c ^ l, kv_max));
    }
    b.w.push_back(w);
    b.kv.push_back(kv);
  }
  CK(cudaMalloc(&b.out, kOut));
  CK(cudaMemset(b.out, 0x11, kOut));
  uint32_t* sink;
  unsigned* ctr;
  const int bpsm = 2, grid = bpsm * sms;
  CK(cudaMalloc(&sink, 2 * sizeof(uint32_t) * grid));
  CK(cudaMalloc(&ctr, sizeof(unsigned)));
  CK(cudaMemset(ctr, 0, sizeof(unsigned)));
  // "whole": a block's shared memory such that bpsm blocks fill the SM and
  // no block of the next link fits beside them; "share": none.
  const int smem_whole = smem_sm / bpsm - 2048;
  for (auto k : {link_kernel<false>, link_kernel<true>})
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_whole));
  for (auto k : {step_kernel<false>, step_kernel<true>})
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_whole));
  std::printf("grid: %d blocks of %d threads (%d an SM); %d iterations a row; 'whole': %d bytes of shared memory "
              "a block\n\n",
              grid, kThreads, bpsm, iters, smem_whole);

  // µs a step of form `form` over the n links in c_links ("whole" or "share").
  unsigned base = 0;
  auto time_form = [&](int form, bool whole, int n) {
    const int smem = whole ? smem_whole : 0;
    float us = 0;
    if (form == kStream || form == kBarrier) {  // one launch a step
      auto launch = [&](int) {
        if (form == kStream) {
          step_kernel<false><<<grid, kThreads, smem, s>>>(n, sink, ctr, 0);
        } else {
          void* args[] = {&n, &sink, &ctr, &base};
          CK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(step_kernel<true>), grid, kThreads, args, smem, s));
          base += static_cast<unsigned>(grid) * n;
        }
      };
      for (int i = 0; i < 3; ++i) launch(i);
      us = time_us(s, iters, launch);
    } else {  // a launch a link, captured into a graph
      cudaGraph_t g;
      cudaGraphExec_t ge;
      CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
      for (int l = 0; l < n; ++l) {
        if (form == kEarlyForm)
          launch_maybe_pdl(true, link_kernel<true>, dim3(grid), dim3(kThreads), smem, s, l, sink);
        else
          launch_maybe_pdl(form == kPdl, link_kernel<false>, dim3(grid), dim3(kThreads), smem, s, l, sink);
      }
      CK(cudaStreamEndCapture(s, &g));
      CK(cudaGraphInstantiate(&ge, g, 0));
      for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(ge, s));
      us = time_us(s, iters, [&](int) { CK(cudaGraphLaunch(ge, s)); });
      CK(cudaGraphExecDestroy(ge));
      CK(cudaGraphDestroy(g));
    }
    CK(cudaGetLastError());
    return us;
  };
  auto load = [&](const std::vector<Link>& links) {
    CK(cudaMemcpyToSymbol(c_links, links.data(), sizeof(Link) * links.size()));
    return static_cast<int>(links.size());
  };

  std::printf("| step | links | bytes | bound at copy bw | form | SM | µs a step | GB/s | × bound |\n");
  std::printf("|---|---:|---:|---:|---|---|---:|---:|---:|\n");
  for (const auto& c : cases) {
    double bytes = 0;
    const int n = load(step_links(b, kv_bytes(c.first, c.second), &bytes));
    const double bound_us = bytes / (cbw * 1e3);
    const std::string name = c.second == 0 ? c.first : c.first + " at " + std::to_string(c.second);
    for (int form = 0; form < kForms; ++form) {
      for (int whole = 1; whole >= 0; --whole) {
        if (!whole && (form == kStream || form == kBarrier)) continue;  // no later launch to share the SM with
        const float us = time_form(form, whole, n);
        std::printf("| %s | %d | %.2f GiB | %.0f µs | %s | %s | %.0f | %.0f | %.2f |\n", name.c_str(), n,
                    bytes / (1u << 30), bound_us, kFormNames[form], whole ? "whole" : "share", us,
                    bytes / (us * 1e3), us / bound_us);
      }
    }
  }

  // What each kind of link costs the chain: the step without it (as the
  // bench's sfx), k2v2 at 131072, the engine-like forms, SMs taken whole.
  const long long kvb = kv_bytes("k2v2", 131072);
  std::printf("\nk2v2 at 131072, a kind of link left out of every layer (as `sfx`), SMs whole: µs a step, and "
              "what the kind costs (the full step less the step without it) against its bytes at copy bw\n\n");
  std::printf("| left out | its bytes a step | at copy bw | pdl: µs | pdl: it costs | early: µs | "
              "early: it costs |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  double full_bytes = 0;
  int n = load(step_links(b, kvb, &full_bytes));
  const float full_pdl = time_form(kPdl, true, n), full_early = time_form(kEarlyForm, true, n);
  std::printf("| nothing | | | %.0f | | %.0f | |\n", full_pdl, full_early);
  for (int k = 0; k < kKinds; ++k) {
    double bytes = 0;
    n = load(step_links(b, kvb, &bytes, k));
    const float pdl = time_form(kPdl, true, n), early = time_form(kEarlyForm, true, n);
    const double kb = full_bytes - bytes;
    std::printf("| %s | %.1f MB | %.0f µs | %.0f | %.0f | %.0f | %.0f |\n", kKindNames[k], kb / 1e6,
                kb / (cbw * 1e3), pdl, full_pdl - pdl, early, full_early - early);
  }
  CK(cudaStreamSynchronize(s));
  return 0;
}

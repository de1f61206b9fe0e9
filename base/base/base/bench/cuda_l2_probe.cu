// L2 residency probe (cuda-notes milestone 23): do weights requested into L2
// survive a long stream of other reads until a later kernel reads them, and
// does the stream's L2 policy (evict_first) decide it?
//
// The question behind it: the quantized decode kernel (v3) at 131K tokens
// streams ~100 MB of codes per layer at ~40% of DRAM bandwidth, so it could
// request the next GEMVs' weights into L2 on the side. In the engine
// (commit c837698, LONGKV_CUDA_TUNING l2w, reverted) that made the step
// slower, growing with the bytes requested. This probe takes the engine out
// and times, for a weight region of W MiB:
//   cold            flush L2, read the region
//   warm            flush, read, read again (the second read timed)
//   request         flush, bulk-request the region into L2, wait, read
//   request+stream  flush, request, stream S MiB of other data, read
//   read+stream     flush, read, stream, read again
// with the stream's loads plain, evict_first or evict_normal and the requests
// normal or evict_last. Each row: the timed read's us and GB/s, min of 3.
// H200 (cuda-notes milestone 23): requested bytes come back only 0.5-1.2 us
// faster than cold ones, whatever the stream's policy, and a warm read beats
// a cold one only up to ~16 MiB.
//
// Usage: l2_probe [W_MiB,... [S_MiB]] (default 8,24,40 and 128).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda_probe_util.cuh"

namespace {

constexpr int kThreads = 256;

// L2 policies: 0 none (plain load), 1 evict_first, 2 evict_normal, 3 evict_last.
__device__ __forceinline__ uint64_t policy(int mode) {
  uint64_t pol = 0;
  if (mode == 1) asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  else if (mode == 2) asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(pol));
  else if (mode == 3) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(pol));
  return pol;
}

// Reads n 16-byte words (grid-stride, kUnroll loads in flight per thread,
// no L1 allocation), with L2 policy `mode`; the XOR of everything goes to
// *sink only if it equals a value the data never makes, so the loads stay.
constexpr int kUnroll = 8;
__device__ __forceinline__ uint4 ld16(const uint4* p, int mode, uint64_t pol) {
  uint4 v;
  if (mode == 0) {
    asm volatile("ld.global.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
  } else {
    asm volatile("ld.global.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p), "l"(pol));
  }
  return v;
}
__global__ void read_kernel(const uint4* __restrict__ p, size_t n, int mode, unsigned* sink) {
  const uint64_t pol = policy(mode);
  const size_t stride = size_t(gridDim.x) * kThreads;
  unsigned x = 0;
  size_t i = blockIdx.x * size_t(kThreads) + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < n; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = ld16(p + i + u * stride, mode, pol);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) x ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = ld16(p + i, mode, pol);
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9e3779b9u) *sink = x;
}

// Every warp's lane 0 requests its share of [p, p + 16 n16) into L2 with one
// bulk prefetch (as the engine's l2_request_share), policy normal or evict_last.
__global__ void request_kernel(const uint8_t* p, uint32_t n16, bool evict_last) {
  const uint32_t parts = gridDim.x * (kThreads / 32), part = blockIdx.x * (kThreads / 32) + threadIdx.x / 32;
  const uint32_t share = (n16 + parts - 1) / parts, u0 = share * part, u1 = min(u0 + share, n16);
  if (threadIdx.x % 32 != 0 || u0 >= u1) return;
  const uint8_t* a = p + 16 * size_t(u0);
  const uint32_t bytes = 16 * (u1 - u0);
  if (evict_last) {
    const uint64_t pol = policy(3);
    asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(a), "r"(bytes), "l"(pol)
                 : "memory");
  } else {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"(bytes) : "memory");
  }
}

// A pause of about `us` microseconds on the stream (the requests land).
__global__ void sleep_kernel(int us) {
  for (int i = 0; i < us; ++i) __nanosleep(1000);
}

struct Probe {
  cudaStream_t s;
  int blocks;
  unsigned* sink;
  uint8_t *flush_buf, *stream_buf;
  size_t flush_bytes, stream_bytes;
  cudaEvent_t e0, e1;

  void read(const uint8_t* p, size_t bytes, int mode) {
    // enough blocks for every thread to keep kUnroll loads in flight at once
    const int g = static_cast<int>(std::min<size_t>(blocks, std::max<size_t>(1, bytes / 16 / (kThreads * kUnroll))));
    read_kernel<<<g, kThreads, 0, s>>>(reinterpret_cast<const uint4*>(p), bytes / 16, mode, sink);
    CK(cudaGetLastError());
  }
  // Lines made evict_last may outlive a plain read of the flush buffer, so
  // they are demoted first.
  void flush() {
    CK(cudaStreamSynchronize(s));
    CK(cudaCtxResetPersistingL2Cache());
    read(flush_buf, flush_bytes, 0);
  }
  void request(const uint8_t* p, size_t bytes, bool evict_last) {
    request_kernel<<<blocks, kThreads, 0, s>>>(p, static_cast<uint32_t>(bytes / 16), evict_last);
    CK(cudaGetLastError());
    sleep_kernel<<<1, 1, 0, s>>>(100);
    CK(cudaGetLastError());
  }
  // The timed read of w after `setup` queued what comes before it: min of 3, us.
  template <typename F>
  float timed(const uint8_t* w, size_t bytes, F setup) {
    float best = 1e30f;
    for (int r = 0; r < 3; ++r) {
      flush();
      setup();
      CK(cudaEventRecord(e0, s));
      read(w, bytes, 0);
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      best = std::min(best, ms * 1000.0f);
    }
    return best;
  }
};

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  std::string t(s);
  size_t i = 0;
  while (i <= t.size()) {
    const size_t j = t.find(',', i);
    const std::string item = t.substr(i, j == std::string::npos ? std::string::npos : j - i);
    char* end = nullptr;
    const long x = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || x < 1 || x > 4096) {
      std::fprintf(stderr, "usage: l2_probe [W_MiB,... [S_MiB]] (whole MiB 1..4096; got '%s')\n", item.c_str());
      std::exit(2);
    }
    v.push_back(static_cast<int>(x));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<int> ws = parse_list(argc > 1 ? argv[1] : "8,24,40");
  const int stream_mib = argc > 2 ? parse_list(argv[2])[0] : 128;
  if (argc > 3) {
    std::fprintf(stderr, "usage: l2_probe [W_MiB,... [S_MiB]]\n");
    return 2;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, L2 %d MiB, %d SMs\n", prop.name, prop.l2CacheSize >> 20, prop.multiProcessorCount);
  Probe p;
  CK(cudaStreamCreate(&p.s));
  probe_copy_bandwidth(p.s);
  p.blocks = prop.multiProcessorCount * 8;
  p.flush_bytes = size_t(512) << 20;
  p.stream_bytes = size_t(stream_mib) << 20;
  const size_t w_max = size_t(*std::max_element(ws.begin(), ws.end())) << 20;
  uint8_t* w;
  CK(cudaMalloc(&p.sink, sizeof(unsigned)));
  CK(cudaMalloc(&p.flush_buf, p.flush_bytes));
  CK(cudaMalloc(&p.stream_buf, p.stream_bytes));
  CK(cudaMalloc(&w, w_max));
  CK(cudaMemset(p.flush_buf, 1, p.flush_bytes));
  CK(cudaMemset(p.stream_buf, 2, p.stream_bytes));
  CK(cudaMemset(w, 3, w_max));
  CK(cudaEventCreate(&p.e0));
  CK(cudaEventCreate(&p.e1));

  const char* mode_name[] = {"plain", "evict_first", "evict_normal"};
  std::printf("Timed: a read of W MiB after the setup (min of 3); the stream is %d MiB.\n\n", stream_mib);
  std::printf("| W MiB | setup | read us | GB/s |\n|---:|---|---:|---:|\n");
  for (int wm : ws) {
    const size_t wb = size_t(wm) << 20;
    auto row = [&](const std::string& what, float us) {
      std::printf("| %d | %s | %.1f | %.0f |\n", wm, what.c_str(), us, wb / (us * 1e-6) / 1e9);
    };
    row("cold (flushed)", p.timed(w, wb, [] {}));
    row("warm (read just before)", p.timed(w, wb, [&] { p.read(w, wb, 0); }));
    row("requested (bulk, normal), 100 us pause", p.timed(w, wb, [&] { p.request(w, wb, false); }));
    row("requested (bulk, evict_last), 100 us pause", p.timed(w, wb, [&] { p.request(w, wb, true); }));
    for (int m = 0; m < 3; ++m) {
      row(std::string("requested (normal), then stream ") + mode_name[m],
          p.timed(w, wb, [&] { p.request(w, wb, false); p.read(p.stream_buf, p.stream_bytes, m); }));
      row(std::string("requested (evict_last), then stream ") + mode_name[m],
          p.timed(w, wb, [&] { p.request(w, wb, true); p.read(p.stream_buf, p.stream_bytes, m); }));
      row(std::string("read, then stream ") + mode_name[m],
          p.timed(w, wb, [&] { p.read(w, wb, 0); p.read(p.stream_buf, p.stream_bytes, m); }));
    }
  }
  CK(cudaDeviceSynchronize());
  return 0;
}

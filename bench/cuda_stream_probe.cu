// A decode step's weight GEMVs as one persistent kernel whose weight stream
// does not wait for the chain (cuda-notes milestone 45).
//
// Milestones 36-37 put the step's weights part W (every GEMV, no attention) at
// ~1.55-1.60 ms for llama3-8b Q4_0, 1.6x its 3.93 GiB at copy bandwidth: each
// of a layer's four GEMV links costs ~3.5 us beyond its bytes, because a link
// cannot stream its weights until the link before has ended (PDL lets only
// its first rows go early). The bars of issue 4 need W at 1.22-1.47 ms.
// Milestone 21's persistent chains lost to the PDL launches, but they
// requested at most one link's weights ahead. Here one producer thread a
// block streams the block's rows of every link, in order, through a ring of
// shared-memory stages by bulk (TMA) copies, and waits only for a free
// stage -- never for the chain. The consumer warps compute each link as soon
// as its x is there (a grid barrier between links), so DRAM keeps streaming
// the next links' rows while the chain waits.
//
// Links per layer, llama3-8b: wo (4096 x 4096), gate|up (2 x 14336 x 4096,
// rows interleaved gate, up; SwiGLU in the store), down (4096 x 14336),
// q|k|v (6144 x 4096; its first 4096 outputs stand in for attention and feed
// the next layer's wo). Q4_0 rows in the GPU's split layout, x quantized to
// int8 per 32-element unit and dotted as the engine does (weight_decode.cuh:
// quantize_x_i8, dot_q4_0_i8). No RMSNorm, residual or attention (the bench
// measures the engine's W with the same parts left out: `sfx=2`).
//
// Rows: the persistent kernel with its ring S stages deep, all 32 layers in
// one launch or one launch a layer (what v3 between the links would force);
// its stream alone (no arithmetic, no barriers: the copy floor) and its chain
// alone (no copies: the latency floor); and a chain of plain one-link
// kernels, untuned, which is also the check: every output of the persistent
// kernel must have the plain chain's bits, and the first link's must match
// the host's exact sums.
//
// Usage: stream_probe [iters]
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend/cuda/bulk_copy.cuh"
#include "backend/cuda/weight_decode.cuh"
#include "cuda_probe_util.cuh"

namespace {

using longkv::cuda::bulk_copy;
using longkv::cuda::dot_q4_0_i8;
using longkv::cuda::fence_mbar_init;
using longkv::cuda::mbar_arrive_expect;
using longkv::cuda::mbar_init;
using longkv::cuda::mbar_wait;
using longkv::cuda::quantize_x_i8;
using longkv::cuda::smem_u32;
using longkv::cuda::XI8;

constexpr int kLayers = 32, kLinksPerLayer = 4, kLinks = kLayers * kLinksPerLayer;
constexpr int kCW = 16;                      // consumer warps; one more warp holds the producer thread
constexpr int kThreads = (kCW + 1) * 32;
constexpr int kStageBytes = 32256;           // 14 rows of 4096 columns (2304 B) or 4 of 14336 (8064 B)
constexpr int kMaxStages = 6;
constexpr int kMaxChunkRows = 16;

// One GEMV link: y = W x over the split-layout Q4_0 rows w (row stride
// 18 cols / 32 bytes); glu: rows interleaved gate, up and y[j] = silu(g_j) u_j.
struct Link {
  const uint8_t* w;
  const float* x;
  float* y;
  int rows, cols, glu;
};
__constant__ Link c_links[kLinks];

enum Mode { kFull = 0, kStreamOnly = 1, kChainOnly = 2 };

// Block b's rows of a link: whole units (a row, or a gate|up pair) split
// evenly over the grid; chunks of as many rows as a stage holds.
struct Plan {
  int r0, r1, rb, rpc;
  __device__ Plan(const Link& l, int b, int nblocks) {
    const int m = l.glu ? 2 : 1, units = l.rows / m;
    r0 = m * static_cast<int>(static_cast<long long>(units) * b / nblocks);
    r1 = m * static_cast<int>(static_cast<long long>(units) * (b + 1) / nblocks);
    rb = l.cols / 32 * 18;
    rpc = min(kMaxChunkRows, kStageBytes / rb) & ~1;  // even: a gate|up pair never straddles chunks
  }
};

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, %0;\n" ::"n"(kCW * 32) : "memory"); }

// Every consumer thread of every block has passed its link (cooperative
// groups' grid sync, on a counter that only grows: target = blocks x links
// passed since it was zeroed).
__device__ __forceinline__ void grid_sync(unsigned* ctr, unsigned target) {
  consumer_sync();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(ctr, 1u);
    unsigned v;
    do {
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(ctr) : "memory");
    } while (static_cast<int>(v - target) < 0);
  }
  consumer_sync();
}

// A lane's unit u of x (32 floats, through L2: a block of the previous link
// may have written it from another SM), in the engine's int8 form.
__device__ __forceinline__ void load_x(const float* x, int u, XI8& xq) {
  float v[32];
  const float4* p = reinterpret_cast<const float4*>(x + 32 * u);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const float4 f = __ldcg(p + k);
    v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
  }
  quantize_x_i8(v, xq);
}

__device__ __forceinline__ float warp_sum(float p) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) p += __shfl_xor_sync(0xffffffffu, p, o);
  return p;
}

// A row's total from its warps' partials, in warp order; the GLU store.
__device__ __forceinline__ float row_sum(const float* part, int n) {
  float s = 0;
  for (int i = 0; i < n; ++i) s += part[i];
  return s;
}
__device__ __forceinline__ float glu(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// Links [l0, l1) of the step. Consumer warp w of a link with nb units a row
// belongs to row group w / wpr (wpr = the warps a row takes, a lane a unit)
// and holds unit (w % wpr) 32 + lane of x in registers for the whole link;
// a stage's rows go to the groups in turn, each row's warp partials meet in
// shared memory, and after one consumer barrier a chunk's rows are stored.
__global__ void __launch_bounds__(kThreads, 1)
    stream_kernel(int l0, int l1, int stages, int mode, unsigned* ctr, unsigned ctr_base) {
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ __align__(8) uint64_t full[kMaxStages], empty[kMaxStages];
  __shared__ float red[2][kMaxChunkRows][kCW];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kCW);
    }
    fence_mbar_init();
  }
  __syncthreads();

  if (warp == kCW) {  // the producer: the block's rows of every link, in order, a stage ahead of nothing but the ring
    if (lane != 0 || mode == kChainOnly) return;
    int n = 0;
    for (int l = l0; l < l1; ++l) {
      const Link L = c_links[l];
      const Plan p(L, blockIdx.x, gridDim.x);
      for (int c0 = p.r0; c0 < p.r1; c0 += p.rpc, ++n) {
        const int s = n % stages;
        if (n >= stages) mbar_wait(&empty[s], (n / stages - 1) & 1);
        const unsigned bytes = static_cast<unsigned>(min(p.rpc, p.r1 - c0) * p.rb);
        mbar_arrive_expect(&full[s], bytes);
        bulk_copy(ring + s * kStageBytes, L.w + static_cast<size_t>(c0) * p.rb, bytes, &full[s]);
      }
    }
    return;
  }

  int n = 0, par = 0;
  unsigned target = ctr_base;
  for (int l = l0; l < l1; ++l) {
    const Link L = c_links[l];
    const Plan p(L, blockIdx.x, gridDim.x);
    const int nb = L.cols / 32, wpr = (nb + 31) / 32, rg = kCW / wpr;
    const int g = warp / wpr, sub = warp % wpr, u = sub * 32 + lane;
    const bool active = g < rg, valid = active && u < nb;
    XI8 xq{};
    if (valid && mode != kStreamOnly) load_x(L.x, u, xq);
    for (int c0 = p.r0; c0 < p.r1; c0 += p.rpc, ++n) {
      const int s = n % stages, nr = min(p.rpc, p.r1 - c0);
      if (mode != kChainOnly) mbar_wait(&full[s], (n / stages) & 1);
      if (mode == kStreamOnly) {
        __syncwarp();
        if (lane == 0) mbar_arrive(&empty[s]);
        continue;
      }
      const uint8_t* st = ring + s * kStageBytes;
      if (active) {
        for (int i = g; i < nr; i += rg) {
          const uint8_t* row = st + i * p.rb;
          float v = 0;
          if (valid) {
            const uint4 q = *reinterpret_cast<const uint4*>(row + 16 * u);
            v = dot_q4_0_i8(q, longkv::cuda::ld_f16(row + 16 * nb + 2 * u), xq);
          }
          v = warp_sum(v);
          if (lane == 0) red[par][i][sub] = v;
        }
      }
      __syncwarp();
      if (lane == 0 && mode != kChainOnly) mbar_arrive(&empty[s]);
      consumer_sync();
      const int t = threadIdx.x;
      if (L.glu) {
        if (t < nr / 2) L.y[c0 / 2 + t] = glu(row_sum(red[par][2 * t], wpr), row_sum(red[par][2 * t + 1], wpr));
      } else if (t < nr) {
        L.y[c0 + t] = row_sum(red[par][t], wpr);
      }
      par ^= 1;
    }
    target += gridDim.x;
    if (mode != kStreamOnly && l + 1 < l1) grid_sync(ctr, target);
  }
}

// The check and the untuned baseline: one launch a link, a block of wpr
// warps a unit (row or gate|up pair), the persistent kernel's lane mapping
// and summation order, weights straight from global memory.
__global__ void ref_link_kernel(int l) {
  const Link L = c_links[l];
  __shared__ float red[2][kCW];
  const int nb = L.cols / 32, wpr = blockDim.x / 32, m = L.glu ? 2 : 1, rb = nb * 18;
  const int sub = threadIdx.x / 32, lane = threadIdx.x % 32, u = sub * 32 + lane;
  const bool valid = u < nb;
  XI8 xq{};
  if (valid) load_x(L.x, u, xq);
  for (int r = 0; r < m; ++r) {
    const uint8_t* row = L.w + static_cast<size_t>(blockIdx.x * m + r) * rb;
    float v = 0;
    if (valid) v = dot_q4_0_i8(__ldg(reinterpret_cast<const uint4*>(row) + u), longkv::cuda::ld_f16(row + 16 * nb + 2 * u), xq);
    v = warp_sum(v);
    if (lane == 0) red[r][sub] = v;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const float a = row_sum(red[0], wpr);
    L.y[blockIdx.x] = L.glu ? glu(a, row_sum(red[1], wpr)) : a;
  }
}

// Random split-layout Q4_0 rows on the device: hashed nibbles, scales
// d (1 + 0.25 h), h in [0, 1): outputs keep about their inputs' size.
__global__ void fill_rows(uint8_t* w, long long rows, int nb, float d, unsigned seed) {
  const long long rb = 18LL * nb, n = rows * rb;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long r = i / rb, o = i % rb;
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed ^ static_cast<unsigned>(i >> 32) * 40503u;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    if (o < 16LL * nb) {
      w[i] = static_cast<uint8_t>(h);
    } else if (((o - 16LL * nb) & 1) == 0) {
      *reinterpret_cast<__half*>(w + r * rb + o) = __float2half(d * (1.0f + 0.25f * (h >> 8) / 16777216.0f));
    }
  }
}

struct Shape {
  const char* name;
  int rows, cols, glu;
};
constexpr Shape kShapes[kLinksPerLayer] = {
    {"wo", 4096, 4096, 0}, {"gate|up", 28672, 4096, 1}, {"down", 4096, 14336, 0}, {"q|k|v", 6144, 4096, 0}};
int out_len(const Shape& s) { return s.glu ? s.rows / 2 : s.rows; }

// The host's exact value of link 0 (layer 0's wo): x quantized as
// quantize_x_i8 (amax, dx = amax / 127, q = rn(v 127 / amax)), the integer
// sums exact, the products in double.
std::vector<double> host_link0(const std::vector<uint8_t>& w, const std::vector<float>& x, int rows, int cols) {
  const int nb = cols / 32, rb = 18 * nb;
  std::vector<int> q(cols);
  std::vector<float> dx(nb);
  for (int u = 0; u < nb; ++u) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(x[32 * u + i]));
    dx[u] = amax / 127.0f;
    const float inv = amax > 0 ? 127.0f / amax : 0.0f;
    for (int i = 0; i < 32; ++i) q[32 * u + i] = static_cast<int>(std::nearbyint(x[32 * u + i] * inv));
  }
  std::vector<double> y(rows);
  for (int r = 0; r < rows; ++r) {
    const uint8_t* row = w.data() + static_cast<size_t>(r) * rb;
    double acc = 0;
    for (int u = 0; u < nb; ++u) {
      long s = 0;
      for (int k = 0; k < 16; ++k) {
        const uint8_t b = row[16 * u + k];
        s += ((b & 15) - 8) * q[32 * u + k] + ((b >> 4) - 8) * q[32 * u + 16 + k];
      }
      __half hd;
      std::memcpy(&hd, row + 16 * nb + 2 * u, 2);
      acc += static_cast<double>(__half2float(hd)) * dx[u] * s;
    }
    y[r] = acc;
  }
  return y;
}

}  // namespace

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 10;
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const int G = prop.multiProcessorCount;
  std::printf("# stream_probe: %s, %d SMs; llama3-8b's GEMV links, Q4_0, %d layers\n\n", prop.name, G, kLayers);
  const double bw = probe_copy_bandwidth(st);

  // Weights, one allocation per link; activations x0 and every link's output.
  std::vector<Link> links(kLinks);
  std::vector<uint8_t*> wbuf(kLinks);
  std::vector<float*> ybuf(kLinks), yref(kLinks);
  double bytes = 0;
  float* x0;
  CK(cudaMalloc(&x0, 4096 * sizeof(float)));
  std::vector<float> hx(4096);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : hx) v = nd(rng);
  CK(cudaMemcpy(x0, hx.data(), hx.size() * sizeof(float), cudaMemcpyHostToDevice));
  for (int l = 0; l < kLinks; ++l) {
    const Shape& s = kShapes[l % kLinksPerLayer];
    const size_t wb = static_cast<size_t>(s.rows) * s.cols / 32 * 18;
    CK(cudaMalloc(&wbuf[l], wb));
    fill_rows<<<1024, 256, 0, st>>>(wbuf[l], s.rows, s.cols / 32, 1.0f / std::sqrt(21.5f * s.cols), 977u * l + 13);
    CK(cudaGetLastError());
    CK(cudaMalloc(&ybuf[l], out_len(s) * sizeof(float)));
    CK(cudaMalloc(&yref[l], out_len(s) * sizeof(float)));
    bytes += wb;
  }
  auto set_links = [&](const std::vector<float*>& y) {
    for (int l = 0; l < kLinks; ++l) {
      const Shape& s = kShapes[l % kLinksPerLayer];
      links[l] = Link{wbuf[l], l == 0 ? x0 : y[l - 1], y[l], s.rows, s.cols, s.glu};
    }
    CK(cudaMemcpyToSymbol(c_links, links.data(), sizeof(Link) * kLinks));
  };
  CK(cudaStreamSynchronize(st));
  std::printf("weights: %.3f GB, %.1f us at copy bandwidth\n", bytes / 1e9, bytes / (bw * 1e3));

  unsigned* ctr;
  CK(cudaMalloc(&ctr, sizeof(unsigned)));
  CK(cudaMemset(ctr, 0, sizeof(unsigned)));
  unsigned ctr_base = 0;
  const size_t smem_max = static_cast<size_t>(kMaxStages) * kStageBytes;
  CK(cudaFuncSetAttribute(stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_max)));
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, stream_kernel, kThreads, smem_max));
  if (per_sm < 1) {
    std::fprintf(stderr, "stream_kernel does not fit an SM\n");
    return 1;
  }
  // One step: links in launches of `lpl` layers.
  auto step = [&](int stages, int mode, int lpl) {
    for (int l0 = 0; l0 < kLinks; l0 += lpl * kLinksPerLayer) {
      int a0 = l0, a1 = l0 + lpl * kLinksPerLayer, a2 = stages, a3 = mode;
      unsigned a5 = ctr_base;
      void* args[] = {&a0, &a1, &a2, &a3, &ctr, &a5};
      CK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(stream_kernel), dim3(G), dim3(kThreads), args,
                                     static_cast<size_t>(stages) * kStageBytes, st));
      if (mode != kStreamOnly) ctr_base += static_cast<unsigned>(G) * (a1 - a0 - 1);  // the launch's grid syncs
    }
  };
  auto ref_step = [&]() {
    for (int l = 0; l < kLinks; ++l) {
      const Shape& s = kShapes[l % kLinksPerLayer];
      ref_link_kernel<<<out_len(s), (s.cols / 32 + 31) / 32 * 32, 0, st>>>(l);
    }
    CK(cudaGetLastError());
  };

  // The check: the plain chain into yref, the persistent kernel into ybuf.
  set_links(yref);
  ref_step();
  CK(cudaStreamSynchronize(st));
  set_links(ybuf);
  step(kMaxStages, kFull, kLayers);
  CK(cudaStreamSynchronize(st));
  long differ = 0, total = 0;
  double maxrel = 0;
  for (int l = 0; l < kLinks; ++l) {
    const int n = out_len(kShapes[l % kLinksPerLayer]);
    std::vector<float> a(n), b(n);
    CK(cudaMemcpy(a.data(), ybuf[l], n * sizeof(float), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b.data(), yref[l], n * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; ++i) {
      differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
      maxrel = std::fmax(maxrel, std::fabs(double(a[i]) - b[i]) / (std::fabs(double(b[i])) + 1e-30));
    }
    total += n;
  }
  {
    const Shape& s = kShapes[0];
    std::vector<uint8_t> hw(static_cast<size_t>(s.rows) * s.cols / 32 * 18);
    CK(cudaMemcpy(hw.data(), wbuf[0], hw.size(), cudaMemcpyDeviceToHost));
    const std::vector<double> y = host_link0(hw, hx, s.rows, s.cols);
    std::vector<float> a(s.rows);
    CK(cudaMemcpy(a.data(), ybuf[0], a.size() * sizeof(float), cudaMemcpyDeviceToHost));
    double e = 0, nn = 0;
    for (int i = 0; i < s.rows; ++i) e += (a[i] - y[i]) * (a[i] - y[i]), nn += y[i] * y[i];
    std::vector<float> last(out_len(kShapes[3]));
    CK(cudaMemcpy(last.data(), ybuf[kLinks - 1], last.size() * sizeof(float), cudaMemcpyDeviceToHost));
    double rms = 0;
    for (float v : last) rms += double(v) * v;
    std::printf("check: %ld of %ld outputs differ from the plain chain's bits (max rel %.3g); link 0 against the "
                "host's exact sums: rel RMS %.3g; the last link's output RMS %.3g\n",
                differ, total, maxrel, std::sqrt(e / nn), std::sqrt(rms / last.size()));
    if (differ != 0 || !(std::sqrt(e / nn) < 1e-5) || !(rms > 0)) {
      std::printf("CHECK FAILED\n");
      return 1;
    }
  }

  // Timings: the mean of `iters` steps after two untimed ones.
  std::printf("\n| form | stages | layers a launch | us a step | us a layer | GB/s of weight bytes | x bytes |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");
  auto row = [&](const char* name, int stages, int lpl, auto&& launch) {
    for (int i = 0; i < 2; ++i) launch();
    const float us = time_us(st, iters, [&](int) { launch(); });
    CK(cudaGetLastError());
    std::printf("| %s | %d | %d | %.1f | %.2f | %.0f | %.2f |\n", name, stages, lpl, us, us / kLayers,
                bytes / (us * 1e3), us / (bytes / (bw * 1e3)));
  };
  row("plain chain (untuned, one launch a link)", 0, 0, [&] { ref_step(); });
  for (int stages : {6, 4, 2}) row("persistent", stages, kLayers, [&] { step(stages, kFull, kLayers); });
  for (int stages : {6, 2}) row("persistent, one launch a layer", stages, 1, [&] { step(stages, kFull, 1); });
  row("stream alone (no arithmetic, no barriers)", 6, kLayers, [&] { step(6, kStreamOnly, kLayers); });
  row("chain alone (no copies)", 6, kLayers, [&] { step(6, kChainOnly, kLayers); });
  std::printf("\n(x bytes: the time over the weights' bytes at copy bandwidth)\n");
  for (int l = 0; l < kLinks; ++l) {
    CK(cudaFree(wbuf[l]));
    CK(cudaFree(ybuf[l]));
    CK(cudaFree(yref[l]));
  }
  CK(cudaFree(x0));
  CK(cudaFree(ctr));
  return 0;
}

// A decode step's weight GEMVs as one persistent kernel whose weight stream
// does not wait for the chain (cuda-notes milestone 45).
//
// Milestones 36-37 put the step's weights part W (every GEMV, no attention) at
// ~1.5-1.6 ms for llama3-8b Q4_0, ~1.6x its 3.93 GB at copy bandwidth: each
// of a layer's four GEMV links costs ~3.5 us beyond its bytes, because a link
// cannot stream its weights until the link before has ended (PDL lets only
// its first rows go early). The bars of issue 4 need W at 1.22-1.47 ms.
// Milestone 21's persistent chains lost to the PDL launches, but they
// requested at most one link's weights ahead. Here one producer thread a
// block streams the block's rows of every link, in order, through a ring of
// shared-memory stages by bulk (TMA) copies, and waits only for a free
// stage -- never for the chain. The consumer warps, in kGroups groups that
// take the stages in turn, compute each link as soon as its x is there (a
// grid barrier between links), so DRAM keeps streaming the next links' rows
// while the chain waits.
//
// Links per layer, llama3-8b: wo (4096 x 4096), gate|up (2 x 14336 x 4096,
// rows interleaved gate, up; a GLU in the store), down (4096 x 14336),
// q|k|v (6144 x 4096; its first 4096 outputs stand in for attention and feed
// the next layer's wo). Q4_0 rows in the GPU's split layout, x quantized to
// int8 per 32-element unit and dotted as the engine does (weight_decode.cuh:
// quantize_x_i8, dot_q4_0_i8). No RMSNorm, residual or attention (the bench
// measures the engine's W with the attention launches left out: `sfx=2`).
//
// Rows, per form (15 consumer warps with a 4096-column link's x in registers,
// or 30 with x in shared memory): the persistent kernel with its ring 6 or 3
// stages deep, all 32 layers in one launch or one launch a layer (as v3
// between the links would force); and its parts -- the stream alone (no
// arithmetic, no barriers: the copy floor), the chain alone (no copies: the
// latency floor) and the chain's parts (Mode). The check, first: a chain of
// plain one-link kernels (also timed, untuned), whose bits every output of
// both forms must have, and the host's exact sums for the first link.
//
// The wavefront kernel (cuda_stream_wave.cuh) replaces the grid barriers by
// counters per slice of each link's output.
//
// H200 (cuda-notes milestone 45): the stream alone reads the 3.93 GB in
// 0.84 ms (4.7 TB/s), but the persistent kernel takes 1.42-1.55 ms, as the
// engine's W (1.47): the chain alone, with no copies, takes 0.95-1.10 ms,
// and each link's grid barrier idles every block behind the slowest. The
// wavefront takes 3.0 ms.
//
// Usage: stream_probe [iters]                        the check and the whole table
//        stream_probe iters form mode stages lpl bv  the check and one row: form 0-1 the barrier
//                                                    kernel's forms[], 2 the wavefront; mode: Mode bits
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda_probe_util.cuh"
#include "cuda_stream_parts.cuh"
#include "cuda_stream_wave.cuh"

namespace stream_probe {
namespace {

// Consumer warps CW (the kernel's template parameter) in kGroups groups; one
// more warp holds the producer thread. 15 (16 warps, up to 128 registers a
// thread: x in registers) or 30 (31 warps, 64 registers: x from shared
// memory); 17 warps would cap ptxas at 96 registers.
constexpr int kMaxStages = 6;
constexpr int kGroups = 3;  // consumer groups (stages: a multiple of kGroups)

// Parts left out (timing only, wrong outputs but for kFull): the stream
// alone (no x, no dots, no barriers), the chain alone (no copies: the dots
// read whatever the stages hold), and parts of the chain: the grid barriers,
// x's loads and quantization, the dots and stores.
enum Mode { kFull = 0, kStreamOnly = 1, kChainOnly = 2, kNoGrid = 4, kNoX = 8, kNoDot = 16, kNoChunks = 32 };

// Block b's rows of a link: whole units (a row, or a gate|up pair) split
// evenly over the grid; chunks of as many rows as a stage holds.
struct Plan {
  int r0, r1, rb, rpc;
  __device__ Plan(const Link& l, int b, int nblocks) {
    const int m = l.glu ? 2 : 1, units = l.rows / m;  // units x blocks < 2^31
    r0 = m * (units * b / nblocks);
    r1 = m * (units * (b + 1) / nblocks);
    rb = l.cols / 32 * 18;
    rpc = (kStageBytes / rb) & ~1;  // even: a gate|up pair never straddles chunks
  }
};

template <int CW>
__device__ __forceinline__ void consumer_sync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(CW * 32) : "memory");
}

// Every consumer thread of every block has passed its link (cooperative
// groups' grid sync, on a counter that only grows: target = blocks x links
// passed since it was zeroed). bv: how thread 0 arrives and polls -- 0 a
// fence, atomicAdd, ld.acquire polls; 1 cooperative groups' way (fence,
// atomicAdd, volatile polls, fence); 2 red.release, ld.acquire polls with a
// short sleep between them.
template <int CW>
__device__ __forceinline__ void grid_sync(unsigned* ctr, unsigned target, int bv) {
  consumer_sync<CW>();
  if (threadIdx.x == 0) {
    unsigned v;
    if (bv == 2) {
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(ctr) : "memory");
    } else {
      __threadfence();
      atomicAdd(ctr, 1u);
    }
    if (bv == 1) {
      while (static_cast<int>(*reinterpret_cast<volatile unsigned*>(ctr) - target) < 0) {
      }
      __threadfence();
    } else {
      for (;;) {
        asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(ctr) : "memory");
        if (static_cast<int>(v - target) >= 0) break;
        if (bv == 2) __nanosleep(32);
      }
    }
  }
  consumer_sync<CW>();
}

// All consumer threads: x (cols floats, through L2: blocks on other SMs wrote
// it) into xs. Coalesced: a lane loads 4 consecutive floats, 8 lanes a unit
// (quantize_x_i8_part: the bits of quantize_x_i8, which the check's plain
// chain uses).
// Every pass's loads are issued before the first quantization (a pass's
// shuffles would otherwise keep the next pass's loads behind them: one L2
// round trip a pass, 7 for down's x).
template <int NB, int CW>
__device__ __forceinline__ void load_x_block(const float* x, XSmem& xs) {
  constexpr int kPass = CW * 4, kPasses = (NB + kPass - 1) / kPass;  // units a pass
  const int part = threadIdx.x % 8;
  float4 f[kPasses];
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int u = i * kPass + threadIdx.x / 8;
    f[i] = u < NB ? __ldcg(reinterpret_cast<const float4*>(x) + 8 * u + part) : make_float4(0, 0, 0, 0);
  }
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int u = i * kPass + threadIdx.x / 8;
    put_x_part(f[i], u, u < NB, xs);
  }
}

// A stage's rows for warp wg (0..kGW-1) of the group that takes it. 4096
// columns: the stage's units (rows, or gate|up pairs) wg, wg + kGW, ...,
// all of the warp's rows in one rows_dot (at most 4). down (14336 columns,
// 4 rows a stage): row wg.
template <int NB, int GW, bool XR>
__device__ __forceinline__ void stage_rows(const Link& L, const Plan& p, int c0, const uint8_t* st,
                                           const XSmem& xs, const XI8* xr, int wg, int lane) {
  const int nr = min(p.rpc, p.r1 - c0);
  if (NB != 128) {
    if (wg >= nr) return;
    const int ro[1] = {wg * p.rb};
    float acc[1];
    rows_dot<NB, 1, XR>(st, ro, 1, xs, xr, lane, acc, [](int) {});
    if (lane == 0) L.y[c0 + wg] = acc[0];
    return;
  }
  constexpr int R = GW >= 10 ? 2 : 4;  // 14-row stages: the warp's rows (warp_rows)
  int ro[R];
  const int n = warp_rows<R, GW>(L.glu, wg, nr, p.rb, ro);
  if (n == 0) return;
  float acc[R];
  rows_dot<NB, R, XR>(st, ro, n, xs, xr, lane, acc, [](int) {});
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = c0 + ro[r] / p.rb;
      if (r >= n) break;
      if (!L.glu)
        L.y[i] = acc[r];
      else if (r % 2 == 0)
        L.y[i / 2] = glu(acc[r], acc[r + 1]);
    }
  }
}

// Links [l0, l1) of the step. The consumers make each link's x in shared
// memory once it is complete (a grid barrier), then take every stage as the
// producer fills it: each warp dots its own rows (a warp a row, x from
// shared memory) and stores them, and releases the stage -- no barrier
// inside a link.
template <int CW, bool XR>
__global__ void __launch_bounds__((CW + 1) * 32, 1)
    stream_kernel(int l0, int l1, int stages, int mode, unsigned* ctr, unsigned ctr_base, int bv) {
  constexpr int kGW = CW / kGroups;
  extern __shared__ __align__(128) uint8_t ring[];
  __shared__ __align__(8) uint64_t full[kMaxStages], empty[kMaxStages];
  __shared__ XSmem xs;
  __shared__ Link links[kLinks];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int i = threadIdx.x; i < l1 - l0; i += blockDim.x) links[i] = g_links[l0 + i];
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kGW);
    }
    fence_mbar_init();
  }
  __syncthreads();

  if (warp == CW) {  // the producer: the block's rows of every link, in order, a stage ahead of nothing but the ring
    if (lane != 0 || (mode & kChainOnly)) return;
    int n = 0, s = 0, ph = 0;  // stages issued; slot; the parity of the slot's previous release
    for (int l = l0; l < l1; ++l) {
      const Link& L = links[l - l0];
      const Plan p(L, blockIdx.x, gridDim.x);
      for (int c0 = p.r0; c0 < p.r1; c0 += p.rpc, ++n) {
        if (n >= stages) mbar_wait(&empty[s], ph);
        const unsigned bytes = static_cast<unsigned>(min(p.rpc, p.r1 - c0) * p.rb);
        mbar_arrive_expect(&full[s], bytes);
        bulk_copy(ring + s * kStageBytes, L.w + static_cast<size_t>(c0) * p.rb, bytes, &full[s]);
        if (++s == stages) s = 0, ph ^= n >= stages ? 1 : 0;
      }
    }
    return;
  }

  // The consumers, kGroups groups of kGW warps: stage n (counted over the
  // launch) goes to group n % kGroups, whose warps wait for it, dot their
  // rows of it and release it. A warp steps over the other groups' stages
  // by arithmetic: milestone 45's third run had every warp visit every
  // stage, ~30 instructions a stage at ~7.7 cycles each (4 warps a
  // scheduler, dependent instructions), 7.7 us a layer with no work at all.
  const int grp = warp / kGW, wg = warp % kGW, per = stages / kGroups;
  int n0 = 0;  // the link's first stage, counted over the launch
  unsigned target = ctr_base;
  for (int l = l0; l < l1; ++l) {
    const Link& L = links[l - l0];
    const Plan p(L, blockIdx.x, gridDim.x);
    const int nb = L.cols / 32, nc = (p.r1 - p.r0 + p.rpc - 1) / p.rpc;
    if (!(mode & (kStreamOnly | kNoX))) {
      if (nb == 128)
        load_x_block<128, CW>(L.x, xs);
      else
        load_x_block<448, CW>(L.x, xs);
    }
    if (!(mode & kStreamOnly)) consumer_sync<CW>();
    XI8 xr[4];
    if (XR && nb == 128 && !(mode & kStreamOnly)) {
#pragma unroll
      for (int j = 0; j < 4; ++j) xr[j] = x_unit(xs, lane + 32 * j);
    }
    const bool dots = !(mode & (kStreamOnly | kNoDot));
    const int c_end = (mode & kNoChunks) ? 0 : nc;
    for (int c = ((grp - n0) % kGroups + kGroups) % kGroups; c < c_end; c += kGroups) {
      const int q = (n0 + c) / kGroups;  // the group's q-th stage: slot grp + kGroups (q % per), fill q / per
      const int s = grp + kGroups * (per == 2 ? (q & 1) : 0), ph = (per == 2 ? q >> 1 : q) & 1;
      if (!(mode & kChainOnly)) mbar_wait(&full[s], ph);
      const int c0 = p.r0 + c * p.rpc;
      if (dots) {
        const uint8_t* st = ring + s * kStageBytes;
        if (nb == 128)
          stage_rows<128, kGW, XR>(L, p, c0, st, xs, xr, wg, lane);
        else
          stage_rows<448, kGW, XR>(L, p, c0, st, xs, xr, wg, lane);
      }
      __syncwarp();
      if (lane == 0 && !(mode & kChainOnly)) mbar_arrive(&empty[s]);
    }
    n0 += nc;
    target += gridDim.x;
    if (!(mode & (kStreamOnly | kNoGrid)) && l + 1 < l1) grid_sync<CW>(ctr, target, bv);
  }
}

// The check and the untuned baseline: one launch a link, a warp a unit (row
// or gate|up pair), the lanes' units and the sums in the persistent kernel's
// order, x made lane by lane (quantize_x_i8), weights straight from global.
template <int NB>
__global__ void ref_link_kernel(int l) {
  const Link L = g_links[l];
  const int m = L.glu ? 2 : 1, rb = NB * 18, lane = threadIdx.x % 32;
  const int k = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (k >= L.rows / m) return;
  float v[2] = {0, 0};
#pragma unroll
  for (int j = 0; j < (NB + 31) / 32; ++j) {
    const int u = lane + 32 * j;
    if (NB % 32 != 0 && u >= NB) continue;
    XI8 xq;
    load_x(L.x, u, xq);
    for (int r = 0; r < m; ++r) {
      const uint8_t* row = L.w + static_cast<size_t>(k * m + r) * rb;
      v[r] += dot_q4_0_i8(__ldg(reinterpret_cast<const uint4*>(row) + u), longkv::cuda::ld_f16(row + 16 * NB + 2 * u),
                          xq);
    }
  }
  const float a = warp_sum(v[0]), b = warp_sum(v[1]);
  if (lane == 0) L.y[k] = L.glu ? glu(a, b) : a;
}

// Random split-layout Q4_0 rows on the device: hashed nibbles, scales
// +-d (1 + 0.25 h), h in [0, 1), the sign random too: the codes' mean of
// -0.5 would otherwise give every output a common part that grew ~7x a link
// (the second run).
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
      const float m = (h & 1 ? -1.0f : 1.0f) * (1.0f + 0.25f * (h >> 8) / 16777216.0f);
      *reinterpret_cast<__half*>(w + r * rb + o) = __float2half(d * m);
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
}  // namespace stream_probe

int main(int argc, char** argv) {
  using namespace stream_probe;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines reach the file as they are printed
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
    // Scales for outputs of about their inputs' size: 27.3 = E (n - 8)^2 over
    // the 16 codes (21.5) times E (1 + 0.25 h)^2 (1.27); down's input is glu's,
    // E glu(g, u)^2 = 0.137 for g, u ~ N(0, 1).
    const float d = 1.0f / std::sqrt(27.3f * s.cols * (s.cols == 14336 ? 0.137f : 1.0f));
    fill_rows<<<1024, 256, 0, st>>>(wbuf[l], s.rows, s.cols / 32, d, 977u * l + 13);
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
    CK(cudaMemcpyToSymbol(g_links, links.data(), sizeof(Link) * kLinks));
  };
  CK(cudaStreamSynchronize(st));
  std::printf("weights: %.3f GB, %.1f us at copy bandwidth\n", bytes / 1e9, bytes / (bw * 1e3));

  unsigned* ctr;
  CK(cudaMalloc(&ctr, sizeof(unsigned)));
  CK(cudaMemset(ctr, 0, sizeof(unsigned)));
  unsigned ctr_base = 0;
  // The kernel's forms: consumer warps and where a 4096-column link's x lives.
  struct Form {
    const void* fn;
    int threads;
    const char* name;
  };
  const Form forms[] = {{reinterpret_cast<const void*>(stream_kernel<15, true>), 16 * 32, "15 warps, x in registers"},
                        {reinterpret_cast<const void*>(stream_kernel<30, false>), 31 * 32, "30 warps, x in shared"}};
  const size_t smem_max = static_cast<size_t>(kMaxStages) * kStageBytes;
  for (const Form& f : forms) {
    CK(cudaFuncSetAttribute(f.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_max)));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, f.fn, f.threads, smem_max));
    if (per_sm < 1) {
      std::fprintf(stderr, "stream_kernel (%s) does not fit an SM\n", f.name);
      return 1;
    }
  }
  // One step: links in launches of `lpl` layers.
  auto step = [&](int form, int stages, int mode, int lpl, int bv = 0) {
    for (int l0 = 0; l0 < kLinks; l0 += lpl * kLinksPerLayer) {
      int a0 = l0, a1 = l0 + lpl * kLinksPerLayer, a2 = stages, a3 = mode, a6 = bv;
      unsigned a5 = ctr_base;
      void* args[] = {&a0, &a1, &a2, &a3, &ctr, &a5, &a6};
      CK(cudaLaunchCooperativeKernel(forms[form].fn, dim3(G), dim3(forms[form].threads), args,
                                     static_cast<size_t>(stages) * kStageBytes, st));
      if (!(mode & (kStreamOnly | kNoGrid))) ctr_base += static_cast<unsigned>(G) * (a1 - a0 - 1);  // its grid syncs
    }
  };
  // The wavefront kernel (cuda_stream_wave.cuh): its slice counters zeroed before each step.
  unsigned* wave_cnt;
  CK(cudaGetSymbolAddress(reinterpret_cast<void**>(&wave_cnt), g_wave_cnt));
  const size_t wave_smem = static_cast<size_t>(kWaveStages) * kStageBytes + 2 * sizeof(XSmem);
  CK(cudaFuncSetAttribute(wave_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(wave_smem)));
  {
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, wave_kernel, kWaveThreads, wave_smem));
    if (per_sm < 1) {
      std::fprintf(stderr, "wave_kernel does not fit an SM\n");
      return 1;
    }
  }
  auto wave_step = [&](int mode, int lpl) {
    CK(cudaMemsetAsync(wave_cnt, 0, sizeof(unsigned) * kLinks * kSlices, st));
    for (int l0 = 0; l0 < kLinks; l0 += lpl * kLinksPerLayer) {
      int a0 = l0, a1 = l0 + lpl * kLinksPerLayer, a2 = mode;
      void* args[] = {&a0, &a1, &a2};
      CK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(wave_kernel), dim3(G), dim3(kWaveThreads), args,
                                     wave_smem, st));
    }
  };
  auto ref_step = [&]() {
    for (int l = 0; l < kLinks; ++l) {
      const Shape& s = kShapes[l % kLinksPerLayer];
      const int units = out_len(s), blocks = (units + 3) / 4;
      if (s.cols == 4096)
        ref_link_kernel<128><<<blocks, 128, 0, st>>>(l);
      else
        ref_link_kernel<448><<<blocks, 128, 0, st>>>(l);
    }
    CK(cudaGetLastError());
  };

  // The check: the plain chain into yref, the persistent kernel into ybuf.
  set_links(yref);
  ref_step();
  CK(cudaStreamSynchronize(st));
  long differ = 0, total = 0;
  double maxrel = 0;
  set_links(ybuf);
  // Forms 2 and 3: the wavefront kernel in one launch and in one launch a layer.
  for (int form = 3; form >= 0; --form) {  // form 0's outputs stay for the host check below
    for (int l = 0; l < kLinks; ++l) CK(cudaMemsetAsync(ybuf[l], 0xff, out_len(kShapes[l % kLinksPerLayer]) * 4, st));
    if (form >= 2)
      wave_step(kFull, form == 2 ? kLayers : 1);
    else
      step(form, kMaxStages, kFull, kLayers);
    CK(cudaStreamSynchronize(st));
    int hang[8] = {};
    CK(cudaMemcpyFromSymbol(hang, g_wave_hang, sizeof(hang)));
    if (hang[7]) {  // wave_wait's record: block, warp, tag (1 empty, 2 xfree, 3 full, 4 xready, 5 counter), ...
      std::printf("form %d: a wait gave up: block %d warp %d tag %d link %d stage/slice %d parity/count %d\n", form,
                  hang[0], hang[1], hang[2], hang[3], hang[4], hang[5]);
      return 1;
    }
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
    // Every layer's q|k|v output RMS: the activations neither vanish nor blow up.
    std::vector<float> last(out_len(kShapes[3]));
    double rms = 0, rms_min = 1e300, rms_max = 0;
    for (int l = kLinksPerLayer - 1; l < kLinks; l += kLinksPerLayer) {
      CK(cudaMemcpy(last.data(), ybuf[l], last.size() * sizeof(float), cudaMemcpyDeviceToHost));
      rms = 0;
      for (float v : last) rms += double(v) * v;
      rms = std::sqrt(rms / last.size());
      rms_min = std::fmin(rms_min, rms), rms_max = std::fmax(rms_max, rms);
    }
    std::printf("check: %ld of %ld outputs differ from the plain chain's bits (max rel %.3g); link 0 against the "
                "host's exact sums: rel RMS %.3g; the layers' q|k|v output RMS %.3g to %.3g\n",
                differ, total, maxrel, std::sqrt(e / nn), rms_min, rms_max);
    if (differ != 0 || !(std::sqrt(e / nn) < 1e-5) || !(rms_min > 1e-6 && rms_max < 1e6)) {
      std::printf("CHECK FAILED\n");
      return 1;
    }
  }

  // Timings: the mean of `iters` steps after two untimed ones.
  std::printf("\n| form | warps | stages | layers a launch | barrier | us a step | us a layer | GB/s of weight bytes "
              "| x bytes |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
  auto row = [&](const char* name, int form, int stages, int lpl, int bv, auto&& launch) {
    for (int i = 0; i < 2; ++i) launch();
    const float us = time_us(st, iters, [&](int) { launch(); });
    CK(cudaGetLastError());
    std::printf("| %s | %s | %d | %d | %d | %.1f | %.2f | %.0f | %.2f |\n", name, form < 0 ? "-" : forms[form].name,
                stages, lpl, bv, us, us / kLayers, bytes / (us * 1e3), us / (bytes / (bw * 1e3)));
  };
  if (argc > 6) {  // one row: iters form mode stages lpl bv (for ncu: the 4th stream_kernel launch on is timed)
    const int form = std::atoi(argv[2]), mode = std::atoi(argv[3]), stages = std::atoi(argv[4]);
    const int lpl = std::atoi(argv[5]), bv = std::atoi(argv[6]);
    if (form == 2 && lpl >= 1 && kLayers % lpl == 0) {  // the wavefront kernel (stages, bv: ignored)
      row("one row: wavefront (mode bits)", -1, kWaveStages, lpl, 0, [&] { wave_step(mode, lpl); });
      return 0;
    }
    if (form < 0 || form > 1 || stages % kGroups != 0 || stages > kMaxStages || lpl < 1 || kLayers % lpl != 0) {
      std::fprintf(stderr, "form 0, 1 (2: the wavefront), stages %d or %d, layers a launch dividing %d\n", kGroups,
                   2 * kGroups, kLayers);
      return 1;
    }
    row("one row (mode bits)", form, stages, lpl, bv, [&] { step(form, stages, mode, lpl, bv); });
    return 0;
  }
  row("plain chain (untuned, one launch a link)", -1, 0, 0, 0, [&] { ref_step(); });
  row("wavefront, 8 slices a link", -1, kWaveStages, kLayers, 0, [&] { wave_step(kFull, kLayers); });
  row("wavefront, one launch a layer", -1, kWaveStages, 1, 0, [&] { wave_step(kFull, 1); });
  row("wavefront, chain alone (no copies)", -1, kWaveStages, kLayers, 0, [&] { wave_step(kChainOnly, kLayers); });
  row("stream alone (no arithmetic, no barriers)", 0, 6, kLayers, 0, [&] { step(0, 6, kStreamOnly, kLayers); });
  for (int f = 0; f < 2; ++f) {
    for (int bv : {0, 2}) row("persistent", f, 6, kLayers, bv, [&] { step(f, 6, kFull, kLayers, bv); });
    row("persistent", f, 3, kLayers, 0, [&] { step(f, 3, kFull, kLayers, 0); });
    row("persistent, one launch a layer", f, 6, 1, 0, [&] { step(f, 6, kFull, 1, 0); });
    row("persistent without grid barriers (wrong results)", f, 6, kLayers, 0, [&] { step(f, 6, kNoGrid, kLayers); });
    row("chain alone (no copies)", f, 6, kLayers, 0, [&] { step(f, 6, kChainOnly, kLayers, 0); });
    row("chain alone without grid barriers", f, 6, kLayers, 0, [&] { step(f, 6, kChainOnly | kNoGrid, kLayers); });
    row("dots alone", f, 6, kLayers, 0, [&] { step(f, 6, kChainOnly | kNoX | kNoGrid, kLayers); });
    row("x alone", f, 6, kLayers, 0, [&] { step(f, 6, kChainOnly | kNoDot | kNoGrid, kLayers); });
    row("grid barriers alone", f, 6, kLayers, 0, [&] { step(f, 6, kChainOnly | kNoX | kNoDot, kLayers, 0); });
    row("the loops alone", f, 6, kLayers, 0, [&] { step(f, 6, kChainOnly | kNoDot | kNoGrid | kNoX, kLayers); });
  }
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

// v3's copy pattern alone (cuda-notes milestone 43): how fast can warps that
// stage k2v2 group records the way v3 does read them, and what moves that?
//
// Milestone 43 found that v3 with every arithmetic part left out (the qfx
// probe) still takes ~35 us a layer at 131K tokens: its copies read the
// 100.6 MB at ~2.8 TB/s, and neither 4 stages nor strided groups changed it.
// This probe takes the engine out. Each warp of a 4-warp block owns a split
// of one KV head's groups (8 heads, 4,091 groups of a 1,536-byte key record
// and a 1,536-byte value record in two allocations, as the engine's k2v2 at
// 131K) and streams them through a ring of S stages in its shared memory,
// 16 bytes a lane by cp.async.cg, as v3's stage_next; per group it waits for
// the oldest stage, reads two words a lane, and then "works" W dependent
// integer steps (~4 cycles each; v3's skeleton is ~0.8 us a group without
// copies) or W rounds of shared-memory, shuffle and FMA work ("mixed work").
// Rows: stages S, blocks (376 = v3's grid at 131K beside the decode block,
// 528 = 4 an SM, 792 = 6 an SM), W; each the mean of 20 launches after 3
// untimed ones, as us and GB/s of the records read. The last rows are
// a plain streaming read of the same bytes (8 loads of 16 bytes in flight a
// thread), the ceiling of this access.
//
// H200 (cuda-notes milestone 43): the ring reads the records in 26-30 us
// (3.4-3.8 TB/s) at 2 to 4 stages, in v3's layout or contiguously, with up to
// ~200 instructions of work a group beside the copies; a streaming read of
// the same bytes takes 26.2 us. Milestone 44: the same with random bytes and
// with a 6 GiB read of other memory before each launch (26.5-27.7 us), and
// this ring in v3's place over the engine's own records (27.5 us), where
// v3's loop with its work left out takes ~33.
//
// Usage: copy_probe                 the whole table
//        copy_probe S BLOCKS WORK [mix] [v3] [nocopy] [rand] [cold]
//                                   one row (for ncu: skip 3 launches)
// rand: the records hold random bytes instead of a memset constant; cold:
// each timed launch after a 6 GiB read of other memory (both milestone 44;
// the whole table ends with those rows).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "backend/cuda/kv_quant_decode_v3.cuh"
#include "backend/cuda/kv_quant_mma.cuh"
#include "cuda_probe_util.cuh"

namespace {

using longkv::cuda::cp_async16;
using longkv::cuda::cp_async_commit;
using longkv::cuda::cp_async_wait;

constexpr int kWarps = 4, kHeads = 8, kGroups = 4091, kRec = 1536;
constexpr int kLaneChunks = kRec / 16 / 32;  // 16-byte chunks a lane copies of one record
constexpr int kMaxBlocks = 32768;            // the output buffer holds a word per thread of this many blocks

// The engine's staged layout (kV3Layout): v3's k2v2 head_dim-128 stage, whose
// chunks land at V3Shape::chunk_dst (rows padded for its readers) in stages
// of V3Shape::kStageW words, instead of contiguously.
using V3S = longkv::cuda::v3::V3Shape<128, 4, 2, 2, 3, true>;
static_assert(V3S::kChunks == 2 * kRec / 16 && V3S::kKChunks == kRec / 16, "the probe's records are v3's");

// kMix = false: the work is W dependent integer steps; true: W rounds of a
// shared-memory store, a load, a shuffle and an FMA each (v3's skeleton's
// kinds of instruction, ~6 a round with the loop), in a 32-word scratch after
// the warp's ring. copy = false leaves the copies out (the work alone, as
// v3's qfx=16).
template <int S, bool kMix, bool kV3Layout>
__global__ void __launch_bounds__(kWarps * 32)
    ring_kernel(const uint8_t* __restrict__ kc, const uint8_t* __restrict__ vc, int gps, int n_splits, int work,
                bool copy, uint32_t* out) {
  extern __shared__ __align__(16) uint32_t sm[];
  const int lane = threadIdx.x % 32, wi = threadIdx.x / 32;
  const int gw = blockIdx.x * kWarps + wi, hk = gw / n_splits, split = gw % n_splits;
  if (hk >= kHeads) return;
  // Words a stage holds: the key record, then the value record (v3: padded).
  constexpr int kStageW = kV3Layout ? V3S::kStageW : 2 * kRec / 4;
  uint32_t* ring = sm + wi * (S * kStageW + 32);
  float* scratch = reinterpret_cast<float*>(ring + S * kStageW);
  float f = lane;
  const int g0 = split * gps, g1 = min(kGroups, g0 + gps);
  const size_t r0 = static_cast<size_t>(hk) * kGroups + g0;
  const uint8_t* knext = kc + r0 * kRec + 16 * lane;
  const uint8_t* vnext = vc + r0 * kRec + 16 * lane;
  int snext = 0;
  auto stage_next = [&]() {
    uint32_t* dst = ring + snext;
#pragma unroll
    for (int r = 0; r < kLaneChunks && copy; ++r) {
      cp_async16(dst + (kV3Layout ? V3S::chunk_dst(lane, r) : 4 * (lane + 32 * r)), knext + 512 * r);
      cp_async16(dst + (kV3Layout ? V3S::chunk_dst(lane, r + kLaneChunks) : kRec / 4 + 4 * (lane + 32 * r)),
                 vnext + 512 * r);
    }
    knext += kRec;
    vnext += kRec;
    snext = snext == (S - 1) * kStageW ? 0 : snext + kStageW;
  };
#pragma unroll
  for (int i = 0; i < S - 1; ++i) {
    if (g0 + i < g1) stage_next();
    cp_async_commit();
  }
  uint32_t acc = lane;
  for (int grp = g0, scur = 0; grp < g1; ++grp, scur = scur == (S - 1) * kStageW ? 0 : scur + kStageW) {
    if (grp + S - 1 < g1) stage_next();
    cp_async_commit();
    cp_async_wait<S - 1>();
    __syncwarp();
    acc ^= ring[scur + lane] + ring[scur + kRec / 4 + lane];
    if constexpr (kMix) {
      for (int i = 0; i < work; ++i) {
        scratch[lane] = f;
        f = fmaf(scratch[lane ^ (i & 31)], 0.999f, __shfl_xor_sync(0xffffffffu, f, 1));
      }
    } else {
      for (int i = 0; i < work; ++i) acc = acc * 1664525u + 1013904223u;
    }
    __syncwarp();  // every lane has read the stage before it is refilled
  }
  out[gw * 32 + lane] = acc ^ __float_as_uint(f);
}

// The ceiling: every thread keeps 8 loads of 16 bytes in flight over both regions.
__global__ void stream_kernel(const uint4* __restrict__ a, const uint4* __restrict__ b, size_t n, uint32_t* out) {
  uint32_t acc = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < 2 * n; i += 8 * stride) {
    uint4 v[8];
#pragma unroll
    for (int u = 0; u < 8; ++u) {
      const size_t j = i + u * stride;
      v[u] = j < 2 * n ? (j < n ? a[j] : b[j - n]) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) acc ^= v[u].x + v[u].w;
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// Fills n bytes with a hash of their index (milestone 44: the records'
// bytes were a memset constant until then).
__global__ void fill_random_kernel(uint32_t* p, size_t n_words, uint32_t seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n_words; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15, x *= 2246822519u, x ^= x >> 13, x *= 3266489917u, x ^= x >> 16;
    p[i] = x;
  }
}

// Cold (milestone 44): each timed launch comes after a read of kColdBytes of
// other memory, so that neither L2 nor the address translation caches hold
// anything of the records, as in the engine, where ~4 GB of weights and the
// other layers' caches pass between two launches on one layer's records.
constexpr size_t kColdBytes = size_t{6} << 30;
uint4* g_cold = nullptr;
uint32_t* g_cold_out = nullptr;
bool g_cold_on = false;

// Mean of 20 launches after 3 untimed ones (cold: each launch timed alone
// after the read of other memory).
template <typename F>
double mean_us(F&& launch) {
  for (int i = 0; i < 3; ++i) launch(i);
  if (!g_cold_on) {
    const double us = time_us(0, 20, launch);
    CK(cudaGetLastError());
    return us;
  }
  double sum = 0;
  for (int i = 0; i < 20; ++i) {
    stream_kernel<<<528, 256>>>(g_cold, g_cold + kColdBytes / 32, kColdBytes / 32, g_cold_out);
    sum += time_us(0, 1, launch);
  }
  CK(cudaGetLastError());
  return sum / 20;
}

struct Row {
  int stages = 3, blocks = 376, work = 0;
  bool mix = false, v3_layout = false, copy = true;
};

template <int S, bool kMix, bool kV3Layout>
void ring_row(const Row& row, const uint8_t* kc, const uint8_t* vc, uint32_t* out, double bytes) {
  const int n_splits = row.blocks * kWarps / kHeads;
  const int gps = (kGroups + n_splits - 1) / n_splits;
  const size_t smem = sizeof(uint32_t) * kWarps * (S * (kV3Layout ? V3S::kStageW : 2 * kRec / 4) + 32);
  auto* kern = ring_kernel<S, kMix, kV3Layout>;
  CK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, kWarps * 32, smem));
  const double us = mean_us([&](int) {
    kern<<<row.blocks, kWarps * 32, smem>>>(kc, vc, gps, n_splits, row.work, row.copy, out);
  });
  std::printf("| ring%s%s%s | %d | %d | %d | %d | %d | %.2f | %.0f |\n", kV3Layout ? " (v3's layout)" : "",
              kMix ? " (mixed work)" : "", row.copy ? "" : " (no copies)", S, row.blocks, per_sm, gps, row.work, us,
              row.copy ? bytes / us / 1e3 : 0.0);
}

template <int S>
void ring_row(const Row& row, const uint8_t* kc, const uint8_t* vc, uint32_t* out, double bytes) {
  if (row.mix && row.v3_layout) return ring_row<S, true, true>(row, kc, vc, out, bytes);
  if (row.mix) return ring_row<S, true, false>(row, kc, vc, out, bytes);
  if (row.v3_layout) return ring_row<S, false, true>(row, kc, vc, out, bytes);
  ring_row<S, false, false>(row, kc, vc, out, bytes);
}

void ring_row(const Row& row, const uint8_t* kc, const uint8_t* vc, uint32_t* out, double bytes) {
  switch (row.stages) {
    case 2: return ring_row<2>(row, kc, vc, out, bytes);
    case 3: return ring_row<3>(row, kc, vc, out, bytes);
    case 4: return ring_row<4>(row, kc, vc, out, bytes);
    case 6: return ring_row<6>(row, kc, vc, out, bytes);
    default: std::fprintf(stderr, "copy_probe: stages must be 2, 3, 4 or 6 (got %d)\n", row.stages), std::exit(2);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // copy_probe S BLOCKS WORK [mix] [v3] [nocopy] [rand] [cold]: that one
  // row (for ncu: 3 untimed launches, then the 20 timed ones).
  Row one;
  bool rand_fill = false, cold = false;
  const bool single = argc > 1;
  if (single) {
    if (argc < 4) {
      std::fprintf(stderr, "usage: copy_probe [S BLOCKS WORK [mix] [v3] [nocopy] [rand] [cold]]\n");
      return 2;
    }
    one.stages = std::atoi(argv[1]), one.blocks = std::atoi(argv[2]), one.work = std::atoi(argv[3]);
    for (int a = 4; a < argc; ++a) {
      const std::string w = argv[a];
      if (w == "mix") one.mix = true;
      else if (w == "v3") one.v3_layout = true;
      else if (w == "nocopy") one.copy = false;
      else if (w == "rand") rand_fill = true;
      else if (w == "cold") cold = true;
      else return std::fprintf(stderr, "copy_probe: unknown word '%s'\n", argv[a]), 2;
    }
    if (one.stages != 2 && one.stages != 3 && one.stages != 4 && one.stages != 6) {
      std::fprintf(stderr, "copy_probe: S must be 2, 3, 4 or 6 (got '%s')\n", argv[1]);
      return 2;
    }
    if (one.blocks < 1 || one.blocks > kMaxBlocks || one.blocks * kWarps % kHeads != 0 || one.work < 0) {
      std::fprintf(stderr, "copy_probe: BLOCKS must be a multiple of %d in 1..%d, WORK >= 0\n", kHeads / kWarps,
                   kMaxBlocks);
      return 2;
    }
  }
  int dev = 0;
  CK(cudaSetDevice(dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  if (!single) probe_copy_bandwidth(0);
  const size_t n = static_cast<size_t>(kHeads) * kGroups * kRec;
  uint8_t *kc, *vc;
  uint32_t* out;
  CK(cudaMalloc(&kc, n));
  CK(cudaMalloc(&vc, n));
  CK(cudaMalloc(&out, sizeof(uint32_t) * kMaxBlocks * kWarps * 32));  // >= the stream rows' 1056 x 256 too
  auto fill = [&](bool random) {
    if (random) {
      fill_random_kernel<<<1024, 256>>>(reinterpret_cast<uint32_t*>(kc), n / 4, 0x9E3779B9u);
      fill_random_kernel<<<1024, 256>>>(reinterpret_cast<uint32_t*>(vc), n / 4, 0x7F4A7C15u);
    } else {
      CK(cudaMemset(kc, 0x5A, n));
      CK(cudaMemset(vc, 0xA5, n));
    }
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
  };
  fill(rand_fill);
  if (cold || !single) {
    CK(cudaMalloc(&g_cold, kColdBytes));
    CK(cudaMalloc(&g_cold_out, sizeof(uint32_t) * 528 * 256));
    fill_random_kernel<<<1024, 256>>>(reinterpret_cast<uint32_t*>(g_cold), kColdBytes / 4, 1u);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
  }
  g_cold_on = cold;
  const double bytes = 2.0 * n;
  std::printf("records: %d heads x %d groups x 2 x %d bytes = %.1f MB (%s bytes%s)\n\n", kHeads, kGroups, kRec,
              bytes / 1e6, rand_fill ? "random" : "constant", cold ? ", each launch cold" : "");
  std::printf("| kernel | stages | blocks | blocks an SM fit | groups a warp | work | us | GB/s |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  if (single) {
    ring_row(one, kc, vc, out, bytes);
  } else {
    for (int work : {0, 200, 400})
      for (int blocks : {376, 528, 792})
        for (int st : {2, 3, 4, 6}) ring_row(Row{st, blocks, work}, kc, vc, out, bytes);
    // v3's skeleton's kinds of instruction beside the copies (v3's grid and 4
    // an SM), then the same work alone.
    for (int work : {16, 32, 48}) {
      ring_row(Row{3, 376, work, true}, kc, vc, out, bytes);
      ring_row(Row{3, 528, work, true}, kc, vc, out, bytes);
    }
    for (int work : {16, 32, 48}) ring_row(Row{3, 376, work, true, false, false}, kc, vc, out, bytes);
    ring_row(Row{3, 376, 400, false, false, false}, kc, vc, out, bytes);
    // v3's staged layout with the same work.
    for (int work : {0, 400}) ring_row(Row{3, 376, work, false, true}, kc, vc, out, bytes);
    for (int work : {16, 32}) ring_row(Row{3, 376, work, true, true}, kc, vc, out, bytes);
    auto stream_row = [&](int blocks, const char* what) {
      const double us = mean_us([&](int) {
        stream_kernel<<<blocks, 256>>>(reinterpret_cast<const uint4*>(kc), reinterpret_cast<const uint4*>(vc), n / 16,
                                       out);
      });
      std::printf("| stream (256 threads)%s | | %d | | | | %.2f | %.0f |\n", what, blocks, us, bytes / us / 1e3);
    };
    for (int blocks : {132, 264, 528, 1056}) stream_row(blocks, "");
    // Milestone 44: the same records with random bytes, then each launch cold.
    fill(true);
    for (bool c : {false, true}) {
      g_cold_on = c;
      std::printf("| (random bytes%s) | | | | | | | |\n", c ? ", each launch cold" : "");
      for (int work : {0, 400}) ring_row(Row{3, 376, work, false, true}, kc, vc, out, bytes);
      ring_row(Row{3, 376, 32, true, true}, kc, vc, out, bytes);
      stream_row(528, "");
    }
    g_cold_on = false;
  }
  if (g_cold) CK(cudaFree(g_cold));
  if (g_cold_out) CK(cudaFree(g_cold_out));
  CK(cudaFree(kc));
  CK(cudaFree(vc));
  CK(cudaFree(out));
  return 0;
}

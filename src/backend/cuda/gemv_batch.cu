// The decode GEMV of a batch of tokens (milestone 50; CudaModel::forward_batch,
// one token of each of n sequences a step): Y[t][r] (+)= dot(W.row(r), X[t])
// for n <= kGemvBatchMax tokens, every weight byte read once for all n.
// Q4_0 (the GPU's split row layout, Slab<Q4_0>); other formats take gemm().
//
// Why not gemm(): it dequantizes each matrix to f16 in memory and reads it
// back, ~8 bytes of traffic per weight against Q4_0's 0.56 -- for a few
// tokens the step would stream ~34 GB instead of ~4.2 for llama3-8b. Why not
// n single-token GEMVs: they read the weights n times.
//
// Int8 (the default, CudaTuning::gemv_i8x): each token's activations are
// quantized once per unit by quantize_x_i8 (the single-token GEMV's rule; a
// launch of its own, a thread a unit, which also makes the activation from
// its BatchAct: RMSNorm or SwiGLU, batch_act.cuh), and the dots run on tensor
// cores: mma m16n8k32 with the weights' nibbles as unsigned bytes (A: 16
// rows x one unit's 32 columns) and the int8 activations (B: 32 x 8 tokens),
// integer sums exact, so (C - 8 sum q) is the single-token kernel's sum.
// Each unit's products then scale by d dx into f32 accumulators. A block of
// 8 warps owns 16 rows; each warp stages chunks of 8 units through shared
// memory (gemv_batch_mma_kernel), and the warps' sums meet in shared memory
// in warp order. Milestone 50's first form (dp4a, 2 rows a warp) ran at
// 250-350 GB/s with 24 tokens: issue-bound on the per-token activation loads
// and 8 dp4a per unit, row and token.
//
// Exact (gemv_i8x off): 4-warp blocks, 2 rows a warp, Slab<Q4_0>::dot in f32
// per token (the CPU's products; the tests' sharp comparison, not fast).
//
// Which form runs: up to 8 tokens milestone 51's ring (batch_form); 9-32
// tokens of the large matrices (>= 8192 rows or columns: gate|up, down)
// milestone 53's row-split form (rowsplit_takes); the rest milestone 50's
// form (9-24 tokens) or the ring (25-32). All of them give the same bits.
//
// Either way a token's result does not depend on n or on the other tokens of
// the batch: its column of every MMA and its sums go through the same
// operations in the same order (the tests compare a batch against its tokens
// one by one, bit for bit).
#include "backend/cuda/batch_act.cuh"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/gemv_batch_stage.cuh"
#include "backend/cuda/kv_quant_mma.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/weight_decode.cuh"

#include <algorithm>

namespace longkv::cuda {
namespace {

// The int8 activations the MMA kernel reads, unit-major with the tokens
// padded to npad = 8 ceil(n / 8) (padding: zero codes and scales): token t's
// unit u at u npad + t. q: the 32 codes in XI8's order (two 16-byte words).
// sc: dx and kMagic - off as int bits -- a unit's integer sum C + kMagic -
// off read as a float is 1.5 * 2^23 + C - off exactly (|C - off| <= 32 * 15 *
// 127 < 2^22), so subtracting 1.5 * 2^23 converts it with a full-rate FADD
// instead of a quarter-rate I2F.
struct BatchX8 {
  int4* q;     // [units][npad][2]
  float2* sc;  // [units][npad]
  int npad;
};
constexpr int kMagic = 0x4B400000;  // the bits of 12582912.0f = 1.5 * 2^23
constexpr float kMagicF = 12582912.0f;

// Token blockIdx.y's units (batch_act.cuh's grid) -> int8 cells.
__global__ void quantize_batch_kernel(BatchAct a, int n, int units, BatchX8 out) {
  // x is the previous kernel's (a no-op in a plain launch). No trigger: its
  // GEMV launches when it ends (milestone 56: triggered early, down's
  // row-split blocks, two an SM, shared the SMs with this kernel's and ran
  // 55 us instead of 36 at 24 tokens).
  pdl_wait();
  float v[32];
  const bool real = batch_act_unit(a, n, units, v);
  const int u = blockIdx.x * kActThreads + threadIdx.x;
  if (u >= units) return;
  XI8 r{};
  if (real) quantize_x_i8(v, r);
  const size_t i = static_cast<size_t>(u) * out.npad + blockIdx.y;
  out.q[2 * i] = make_int4(r.q[0], r.q[1], r.q[2], r.q[3]);
  out.q[2 * i + 1] = make_int4(r.q[4], r.q[5], r.q[6], r.q[7]);
  out.sc[i] = make_float2(real ? r.dx : 0.0f, __int_as_float(kMagic - (real ? r.off : 0)));
}

// The exact path's activations where they are not x itself: [n][cols] f32.
__global__ void batch_act_f32_kernel(BatchAct a, int n, int units, float* __restrict__ out) {
  pdl_wait();
  float v[32];
  const bool real = batch_act_unit(a, n, units, v);
  if (!real) return;
  float* dst = out + static_cast<size_t>(blockIdx.y) * units * 32 + 32 * static_cast<size_t>(blockIdx.x * kActThreads + threadIdx.x);
#pragma unroll
  for (int k = 0; k < 32; k += 4) *reinterpret_cast<float4*>(dst + k) = make_float4(v[k], v[k + 1], v[k + 2], v[k + 3]);
}

// c = A (16 x 32 unsigned bytes) B (32 x 8 signed bytes), integer; C starts at 0.
__device__ __forceinline__ void mma_u8s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
      : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
}

// One unit's products for tokens 2t, 2t + 1 of a tile (s4: their dx and
// kMagic - off), rows g and g + 8 (weight scales da, db), into acc.
__device__ __forceinline__ void fold_unit(float (&acc)[4], const int (&c)[4], float da, float db, float4 s4) {
  acc[0] += da * s4.x * (__int_as_float(c[0] + __float_as_int(s4.y)) - kMagicF);
  acc[1] += da * s4.z * (__int_as_float(c[1] + __float_as_int(s4.w)) - kMagicF);
  acc[2] += db * s4.x * (__int_as_float(c[2] + __float_as_int(s4.y)) - kMagicF);
  acc[3] += db * s4.z * (__int_as_float(c[3] + __float_as_int(s4.w)) - kMagicF);
}

// Unit k of a staged chunk (16 rows of kRowW bytes; scl: the rows' kChunk
// scales each), as lane (g, t) = (lane / 4, lane % 4) feeds it to the MMA:
// A's rows g and g + 8 (the unit's code bytes 4t..4t+3 of each: their low
// nibbles are columns 4t.., their high ones 16 + 4t.., as the fragment
// wants) and the two rows' scales. Every form builds its operands here.
struct StagedUnit {
  uint32_t a[4];
  float da, db;
};
__device__ __forceinline__ StagedUnit staged_unit(const uint8_t* st, const __half* scl, int k, int g, int t) {
  const uint32_t wa = *reinterpret_cast<const uint32_t*>(st + g * kRowW + 16 * k + 4 * t);
  const uint32_t wb = *reinterpret_cast<const uint32_t*>(st + (g + 8) * kRowW + 16 * k + 4 * t);
  return {{wa & 0x0F0F0F0Fu, wb & 0x0F0F0F0Fu, (wa >> 4) & 0x0F0F0F0Fu, (wb >> 4) & 0x0F0F0F0Fu},
          __half2float(scl[g * kChunk + k]),
          __half2float(scl[(g + 8) * kChunk + k])};
}

// Every kernel below is launched with NT = ceil(n / 8) tiles, so BatchX8's
// npad is 8 NT in them (launch_batch checks it): the ring and row-split
// forms' folds take all NT tiles and their cells' strides as compile-time
// constants (milestone 56: the runtime tile count and npad cost the row-split
// form's loop ~20 of its ~122 SASS instructions a unit at 24 tokens, in
// branches and address arithmetic; 3-11% faster). Milestone 50's form keeps
// them at run time (`tiles`): with constants its x loads were scheduled
// differently and its 16- and 24-token calls ran 4-17% slower (milestone 57).
// A staged unit's products with the tiles' activations in global memory
// (through L1: every row tile reads them; BatchX8's cell `cell` on) into acc.
template <int NT>
__device__ __forceinline__ void fold_global_x(float (&acc)[NT][4], const StagedUnit& su, const BatchX8& xq,
                                              size_t cell, int g, int t, int tiles = NT) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    if (j >= tiles) break;
    int cc[4];
    const int* qb = reinterpret_cast<const int*>(xq.q + 2 * (cell + 8 * j + g));
    mma_u8s8(cc, su.a, static_cast<uint32_t>(__ldg(qb + t)), static_cast<uint32_t>(__ldg(qb + 4 + t)));
    fold_unit(acc[j], cc, su.da, su.db, __ldg(reinterpret_cast<const float4*>(xq.sc + cell + 8 * j + 2 * t)));
  }
}

// A staged unit's products with the tiles' activations in shared memory
// (BatchX8's layout from cell lcell on: xs_q codes, xs_sc scales) into acc.
template <int NT>
__device__ __forceinline__ void fold_staged_x(float (&acc)[NT][4], const StagedUnit& su, const int4* xs_q,
                                              const float2* xs_sc, int lcell, int g, int t) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    int cc[4];
    const int* qb = reinterpret_cast<const int*>(xs_q + 2 * (lcell + 8 * j + g));
    mma_u8s8(cc, su.a, static_cast<uint32_t>(qb[t]), static_cast<uint32_t>(qb[4 + t]));
    fold_unit(acc[j], cc, su.da, su.db, *reinterpret_cast<const float4*>(xs_sc + lcell + 8 * j + 2 * t));
  }
}

// A row tile's end: each warp's sums into red, then y's 16 rows x n tokens
// summed over the warps in warp order (consecutive threads: consecutive rows
// of y). The caller syncs again before red is written anew.
template <int NT>
__device__ __forceinline__ void reduce_store(float (*red)[16][8 * NT], const float (&acc)[NT][4], int row0, int rows,
                                             int n, float* __restrict__ y, bool accumulate) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    red[warp][g][8 * j + 2 * t] = acc[j][0];
    red[warp][g][8 * j + 2 * t + 1] = acc[j][1];
    red[warp][g + 8][8 * j + 2 * t] = acc[j][2];
    red[warp][g + 8][8 * j + 2 * t + 1] = acc[j][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 16 * n; i += kMmaWarps * 32) {
    const int r = i % 16, tok = i / 16;
    if (row0 + r >= rows) continue;
    float v = 0;
#pragma unroll
    for (int k = 0; k < kMmaWarps; ++k) v += red[k][r][tok];
    float* dst = y + static_cast<size_t>(tok) * rows + row0 + r;
    *dst = accumulate ? *dst + v : v;
  }
}

// NT: n-tiles of 8 tokens the accumulators hold (n <= 8 NT). Warp w takes
// chunks w, w + 8, ... of 8 units. It copies a chunk's codes (16 rows x 128
// contiguous bytes: each lane 4 rows' 16 bytes, whole lines a warp) and
// scales into its own shared staging, requests the next chunk, then folds
// the staged one: lane (g, t) = (lane / 4, lane % 4) reads A's rows g and
// g + 8 (the unit's code bytes 4t..4t+3 of each: their low nibbles are
// columns 4t.., their high ones 16 + 4t.., as the fragment wants), B's
// column g (token 8 j + g: its codes' words t and 4 + t) and holds C's rows
// g, g + 8 x columns 2t, 2t + 1. (Milestone 50's first MMA form read A's
// 4-byte words straight from global memory: ~600 GB/s at any n.)
// 16 bytes of weights not kept in L1 (gemv_batch_stages 1: L1 is left to the
// activations, which every row tile of the SM reads again).
__device__ __forceinline__ uint4 ldg16_stream(const uint8_t* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

template <int NT, bool kStream = false>
__global__ void __launch_bounds__(kMmaWarps * 32) gemv_batch_mma_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                        int rows, int units, BatchX8 xq, int n,
                                                                        float* __restrict__ y, bool accumulate) {
  __shared__ float red[kMmaWarps][16][8 * NT];
  __shared__ __align__(16) uint8_t stage[kMmaWarps][16 * kRowW];
  __shared__ __align__(16) __half scl[kMmaWarps][16][kChunk];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int row0 = blockIdx.x * 16;
  // The lane's copies: rows cr + 4 i of unit cu of each chunk; lanes < 16 also row `lane`'s 8 scales.
  const int cr = lane / 8, cu = lane % 8;
  const uint8_t* crow[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) crow[i] = w + ld * static_cast<size_t>(min(row0 + cr + 4 * i, rows - 1));
  const uint8_t* srow = w + ld * static_cast<size_t>(min(row0 + lane % 16, rows - 1)) + 16 * static_cast<size_t>(units);
  const int chunks = (units + kChunk - 1) / kChunk, tiles = (n + 7) / 8;
  uint4 q[4], sc;
  // A chunk past the row's last unit reads the codes of its last unit and
  // scale bytes past the row (inside the upload's padding), never folded.
  auto request = [&](int ch) {
    const int u = min(ch * kChunk + cu, units - 1);
#pragma unroll
    for (int i = 0; i < 4; ++i) q[i] = kStream ? ldg16_stream(crow[i] + 16 * u) : ldg16(crow[i] + 16 * u);
    sc = kStream ? ldg16_stream(srow + 2 * kChunk * ch) : ldg16(srow + 2 * kChunk * ch);
  };
  float acc[NT][4] = {};
  if (warp < chunks) request(warp);  // weights: constant, so before the PDL wait
  pdl_wait();  // x (and y, accumulating) are earlier kernels' (a no-op in a plain launch)
  for (int ch = warp; ch < chunks; ch += kMmaWarps) {
    __syncwarp();  // the last chunk's reads are done
#pragma unroll
    for (int i = 0; i < 4; ++i) *reinterpret_cast<uint4*>(&stage[warp][(cr + 4 * i) * kRowW + 16 * cu]) = q[i];
    if (lane < 16) *reinterpret_cast<uint4*>(&scl[warp][lane][0]) = sc;
    __syncwarp();
    if (ch + kMmaWarps < chunks) request(ch + kMmaWarps);  // in flight while this chunk is folded
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
      const int u = ch * kChunk + k;
      if (u >= units) break;
      fold_global_x<NT>(acc, staged_unit(stage[warp], scl[warp][0], k, g, t), xq, static_cast<size_t>(u) * xq.npad,
                        g, t, tiles);
    }
  }
  reduce_store<NT>(red, acc, row0, rows, n, y, accumulate);
}

// The ring form (milestone 51, CudaTuning::gemv_batch_stages = S >= 2): the
// same warps, chunks, fold and reduction as gemv_batch_mma_kernel -- so the
// same bits -- but each warp copies its chunks with cp.async into a ring of S
// slots in shared memory (no registers held for loads in flight), S - 1
// chunks ahead, and a block walks row tiles blockIdx.x, + gridDim.x, ...:
// the next tile's chunks are in flight during a tile's reduction. Launched
// with PDL (CudaTuning::pdl): the first S - 1 chunks, weights only, are
// requested before the wait for the activations. Milestone 50's form held
// one chunk in flight a warp in registers, and a block lived for one tile
// (two chunks a warp at 4096 columns): 1.0-1.3 TB/s at 1-8 tokens.
// With XS, a slot also holds the chunk's activations, as BatchX8 lays them
// out: its 8 units' codes (8 npad x 32 bytes), then their (dx, magic - off).
template <int NT, bool XS>
__host__ __device__ constexpr int slot_bytes() { return kSlotW + (XS ? kChunk * 8 * NT * (32 + 8) : 0); }

// XS (CudaTuning::gemv_batch_x_smem, up to 16 tokens): each chunk's
// activations come through the ring beside its weights, so the fold reads
// them from shared memory instead of L1/L2 (ncu, milestone 51: the loads of x
// were the fold's long-scoreboard stalls, L1 hit rate 45-60% beside the
// ring's shared memory).
template <int NT, int S, bool XS>
__global__ void __launch_bounds__(kMmaWarps * 32) gemv_batch_ring_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                         int rows, int units, BatchX8 xq, int n,
                                                                         float* __restrict__ y, bool accumulate) {
  extern __shared__ __align__(16) uint8_t ring_smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  constexpr int kSlot = slot_bytes<NT, XS>(), kXq = kChunk * 8 * NT * 32;  // x codes' bytes in a slot
  uint8_t* ring = ring_smem + warp * S * kSlot;
  float(*red)[16][8 * NT] = reinterpret_cast<float(*)[16][8 * NT]>(ring_smem + kMmaWarps * S * kSlot);
  const int chunks = (units + kChunk - 1) / kChunk;
  const int mine = warp < chunks ? (chunks - 1 - warp) / kMmaWarps + 1 : 0;  // chunks a tile gives this warp
  const int row_tiles = (rows + 15) / 16;
  const int my_tiles = (row_tiles - 1 - static_cast<int>(blockIdx.x)) / static_cast<int>(gridDim.x) + 1;
  const int items = my_tiles * mine;
  // Item i: chunk warp + 8 (i % mine) of the block's tile i / mine, into
  // slot i % S; one commit group an item (empty past the last), so that
  // cp_async_wait<S - 1> after item i + S - 1's commit means item i landed.
  // The chunk's activations (after the PDL wait): 16-byte pieces of its
  // units' codes, then of their scales; none past the last unit.
  auto issue_x = [&](int i) {
    if (!XS || i >= items) return;
    const int ch = warp + kMmaWarps * (i % mine), nu = min(kChunk, units - ch * kChunk);
    uint8_t* slot = ring + (i % S) * kSlot + kSlotW;
    const uint8_t* gq = reinterpret_cast<const uint8_t*>(xq.q + 2 * static_cast<size_t>(ch) * kChunk * xq.npad);
    const uint8_t* gs = reinterpret_cast<const uint8_t*>(xq.sc + static_cast<size_t>(ch) * kChunk * xq.npad);
    for (int p = lane; p < nu * (8 * NT) * 2; p += 32) cp_async16_l1(slot + 16 * p, gq + 16 * p);
    for (int p = lane; p < nu * (8 * NT) / 2; p += 32) cp_async16_l1(slot + kXq + 16 * p, gs + 16 * p);
  };
  auto issue = [&](int i, bool with_x = true) {
    if (with_x) issue_x(i);
    if (i < items) {
      const int row0 = (blockIdx.x + (i / mine) * gridDim.x) * 16, ch = warp + kMmaWarps * (i % mine);
      stage_rows(ring + (i % S) * kSlot, w, ld, rows, units, row0, ch, lane);
    }
    if (with_x) cp_async_commit();
  };
  // The first S - 1 items' weights before the wait; their activations after
  // it, one commit group an item (item 0's holds the prologue's weights too).
#pragma unroll
  for (int i = 0; i < S - 1; ++i) issue(i, false);
  pdl_wait();  // the activations (and y, when accumulating) are earlier kernels'
#pragma unroll
  for (int i = 0; i < S - 1; ++i) {
    issue_x(i);
    cp_async_commit();
  }
  int i = 0;
  for (int tk = 0; tk < my_tiles; ++tk) {
    float acc[NT][4] = {};
    for (int c = 0; c < mine; ++c, ++i) {
      issue(i + S - 1);  // into the slot folded last
      cp_async_wait<S - 1>();
      __syncwarp();  // every lane's pieces of item i have landed
      const uint8_t* st = ring + (i % S) * kSlot;
      const __half* scl = reinterpret_cast<const __half*>(st + 16 * kRowW);
      const int4* xs_q = reinterpret_cast<const int4*>(st + kSlotW);
      const float2* xs_sc = reinterpret_cast<const float2*>(st + kSlotW + kXq);
      const int ch = warp + kMmaWarps * c;
#pragma unroll
      for (int k = 0; k < kChunk; ++k) {
        const int u = ch * kChunk + k;
        if (u >= units) break;
        const StagedUnit su = staged_unit(st, scl, k, g, t);
        if constexpr (XS) fold_staged_x<NT>(acc, su, xs_q, xs_sc, k * (8 * NT), g, t);
        else fold_global_x<NT>(acc, su, xq, static_cast<size_t>(u) * (8 * NT), g, t);
      }
      __syncwarp();  // the slot's reads are done before issue() refills it
    }
    reduce_store<NT>(red, acc, (blockIdx.x + tk * gridDim.x) * 16, rows, n, y, accumulate);
    __syncthreads();  // red is read before the next tile writes it
  }
}

template <int NT, int S, bool XS>
void launch_ring(const GpuWeight& w, BatchX8 xq, int n, float* y, bool accumulate, cudaStream_t s) {
  const size_t smem =
      static_cast<size_t>(kMmaWarps) * S * slot_bytes<NT, XS>() + sizeof(float) * kMmaWarps * 16 * 8 * NT;
  static int resident = [&] {  // blocks a GPU holds at once (the device of the first call)
    auto k = gemv_batch_ring_kernel<NT, S, XS>;
    LONGKV_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    int dev = 0, sms = 0, per_sm = 0;
    LONGKV_CUDA_CHECK(cudaGetDevice(&dev));
    LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    LONGKV_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, kMmaWarps * 32, smem));
    return std::max(1, sms * per_sm);
  }();
  const int rows = static_cast<int>(w.rows), row_tiles = (rows + 15) / 16, per = cuda_tuning().gemv_batch_tiles;
  const int grid = per > 0 ? (row_tiles + per - 1) / per : std::min(row_tiles, resident);
  launch_maybe_pdl(cuda_tuning().pdl, gemv_batch_ring_kernel<NT, S, XS>, dim3(grid), dim3(kMmaWarps * 32), smem, s,
                   w.data, w.ld, rows, static_cast<int>(w.cols / 32), xq, n, y, accumulate);
}

template <int NT>
void launch_ring_stages(int stages, const GpuWeight& w, BatchX8 xq, int n, float* y, bool accumulate,
                        cudaStream_t s) {
  // The activations beside the weights up to 16 tokens, in at most 3 slots
  // (a slot of 16 tokens is 7.5 KB, 8 warps x 3 slots 180 KB).
  constexpr bool kXs = NT <= 2;
  if (kXs && cuda_tuning().gemv_batch_x_smem) {
    if (stages == 2) return launch_ring<NT, 2, kXs>(w, xq, n, y, accumulate, s);
    return launch_ring<NT, 3, kXs>(w, xq, n, y, accumulate, s);
  }
  switch (stages) {
    case 2: return launch_ring<NT, 2, false>(w, xq, n, y, accumulate, s);
    case 3: return launch_ring<NT, 3, false>(w, xq, n, y, accumulate, s);
    case 4: return launch_ring<NT, 4, false>(w, xq, n, y, accumulate, s);
    default: return launch_ring<NT, 6, false>(w, xq, n, y, accumulate, s);
  }
}

// The row-split form (milestone 53, CudaTuning::gemv_batch_row_stages = S
// >= 2, 9-32 tokens, up to kRowFormRows rows): at 24 tokens milestone 50's
// form re-reads all of x for every 16-row tile (down: ~88 MB of x through
// L1/L2 for 33 MB of weights) and stalls on those loads. Here a block's 8
// warps own 16 rows each (a block 128 rows) and share each chunk's
// activations, copied once into the block's ring of S stages beside each
// warp's weights; the columns are split over 8 blocks (blockIdx.y = slice s
// takes chunks s, s + 8, ...: warp s's chunks in milestone 50's form). Each
// block stores its sums per row and token; the last block of a row tile
// (tickets) adds the 8 slices in order, as milestone 50's reduction adds
// its warps: the same bits as every other form.

template <int NT>
__host__ __device__ constexpr int row_stage_bytes() { return kMmaWarps * kSlotW + kChunk * 8 * NT * (32 + 8); }

template <int NT, int S>
__global__ void __launch_bounds__(kMmaWarps * 32) gemv_batch_rowsplit_kernel(
    const uint8_t* __restrict__ w, size_t ld, int rows, int units, BatchX8 xq, int n, float* __restrict__ y,
    bool accumulate, float* __restrict__ part, int* __restrict__ tickets) {
  extern __shared__ __align__(16) uint8_t rs_smem[];
  constexpr int kStage = row_stage_bytes<NT>(), kXq = kChunk * 8 * NT * 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int row0 = blockIdx.x * kRowTile + 16 * warp, sl = blockIdx.y;
  const int chunks = (units + kChunk - 1) / kChunk;
  const int items = sl < chunks ? (chunks - 1 - sl) / kMmaWarps + 1 : 0;  // chunks sl, sl + 8, ...
  auto stage = [&](int i) { return rs_smem + (i % S) * kStage; };
  const RowStager rs(w, ld, rows, units, row0, lane);
  auto issue_w = [&](int i) {  // this warp's 16 rows of item i's chunk (as the ring form's slot)
    if (i < items) rs.issue(stage(i) + warp * kSlotW, sl + kMmaWarps * i, lane);
  };
  auto issue_x = [&](int i) {  // item i's activations, by the whole block (as the ring form's XS part)
    if (i >= items) return;
    const int ch = sl + kMmaWarps * i, nu = min(kChunk, units - ch * kChunk);
    uint8_t* xs = stage(i) + kMmaWarps * kSlotW;
    const uint8_t* gq = reinterpret_cast<const uint8_t*>(xq.q + 2 * static_cast<size_t>(ch) * kChunk * xq.npad);
    const uint8_t* gs = reinterpret_cast<const uint8_t*>(xq.sc + static_cast<size_t>(ch) * kChunk * xq.npad);
    for (int p = threadIdx.x; p < nu * (8 * NT) * 2; p += kMmaWarps * 32) cp_async16_l1(xs + 16 * p, gq + 16 * p);
    for (int p = threadIdx.x; p < nu * (8 * NT) / 2; p += kMmaWarps * 32)
      cp_async16_l1(xs + kXq + 16 * p, gs + 16 * p);
  };
  float acc[NT][4] = {};
  ring_items<S>(items, issue_w, issue_x, [&](int i) {
    const uint8_t* st = stage(i) + warp * kSlotW;
    const __half* scl = reinterpret_cast<const __half*>(st + 16 * kRowW);
    const int4* xs_q = reinterpret_cast<const int4*>(stage(i) + kMmaWarps * kSlotW);
    const float2* xs_sc = reinterpret_cast<const float2*>(stage(i) + kMmaWarps * kSlotW + kXq);
    const int ch = sl + kMmaWarps * i;
#pragma unroll
    for (int k = 0; k < kChunk; ++k) {
      const int u = ch * kChunk + k;
      if (u >= units) break;
      fold_staged_x<NT>(acc, staged_unit(st, scl, k, g, t), xs_q, xs_sc, k * (8 * NT), g, t);
    }
  });
  slices_store<NT>(acc, part, tickets, y, rows, n, accumulate);
}

template <int NT, int S>
void launch_rowsplit(const GpuWeight& w, BatchX8 xq, int n, float* y, bool accumulate, float* part, int* tickets,
                     cudaStream_t s) {
  constexpr size_t kSmem = static_cast<size_t>(S) * row_stage_bytes<NT>();
  static const bool attr = [] {
    LONGKV_CUDA_CHECK(cudaFuncSetAttribute(gemv_batch_rowsplit_kernel<NT, S>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem)));
    return true;
  }();
  (void)attr;
  const int rows = static_cast<int>(w.rows);
  launch_maybe_pdl(cuda_tuning().pdl, gemv_batch_rowsplit_kernel<NT, S>,
                   dim3((rows + kRowTile - 1) / kRowTile, kMmaWarps), dim3(kMmaWarps * 32), kSmem, s, w.data, w.ld,
                   rows, static_cast<int>(w.cols / 32), xq, n, y, accumulate, part, tickets);
}

// Whether the row-split form takes n tokens of w (CudaTuning::gemv_batch_row_stages):
// 9-32 tokens of a matrix with >= 8192 rows or columns (H200, milestone 53,
// 24 tokens: gate 44.6 -> 35.8 us, down 43.5 -> 34.1, but q|k|v 19.5 -> 21.6
// and wo 18.1 -> 18.5: a block of a 4096-column matrix has two chunks a
// slice, too few to pay for the slices' sums through memory).
bool rowsplit_takes(const GpuWeight& w, int n) {
  return cuda_tuning().gemv_batch_row_stages >= 2 && n > 8 && w.rows <= kRowFormRows &&
         (w.rows >= 8192 || w.cols >= 8192);
}

constexpr int kWarps = 4;  // the exact kernel's block
constexpr int kRows = 2;   // rows a warp

// Exact f32 products (gemv_i8x off), NT >= n tokens.
template <int NT>
__global__ void __launch_bounds__(kWarps * 32) gemv_batch_exact_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                       int rows, int cols, const float* __restrict__ x,
                                                                       int n, float* __restrict__ y, bool accumulate) {
  using S = Slab<WeightType::Q4_0>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int row0 = (blockIdx.x * kWarps + warp) * kRows;
  if (row0 >= rows) return;
  const int units = cols / 32;
  const uint8_t* wr[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) wr[r] = w + ld * static_cast<size_t>(min(row0 + r, rows - 1));
  float acc[kRows][NT] = {};
  for (int u = lane; u < units; u += 32) {
    S::Unit wu[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) wu[r] = S::load(wr[r], u, units);
#pragma unroll
    for (int tk = 0; tk < NT; ++tk) {
      if (tk >= n) break;
      S::X xr;
      S::load_x(x + static_cast<size_t>(tk) * cols, u, xr);
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r][tk] += S::dot(wu[r], xr, u);
    }
  }
#pragma unroll
  for (int tk = 0; tk < NT; ++tk) {
    if (tk >= n) break;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float v = warp_sum(acc[r][tk]);
      if (lane == 0 && row0 + r < rows) {
        float* dst = y + static_cast<size_t>(tk) * rows + row0 + r;
        *dst = accumulate ? *dst + v : v;
      }
    }
  }
}

// The form gemv_batch_stages picks for n tokens. -1 (the default): the ring
// of 2 slots for up to 8 tokens (x through the ring) and for more than 24,
// milestone 50's register form between. H200, llama3-8b's shapes (milestone
// 51): at 1-8 tokens the ring takes wo 12.5 -> 7.3 us, down 28.1 -> 17.2,
// gate 24.6 -> 20.1; at 32 gate 66.2 -> 49.5, down 65.0 -> 55.6; at 16 and
// 24 neither form is ahead on every shape, and batched steps of 24 sequences
// measured the register form 0.6% faster.
int batch_form(int n) {
  const int st = cuda_tuning().gemv_batch_stages;
  return st >= 0 ? st : n <= 8 || n > 24 ? 2 : 0;
}

template <int NT>
void launch_batch(const GpuWeight& w, const float* x, BatchX8 xq, int n, float* y, bool accumulate, bool i8,
                  float* part, int* tickets, cudaStream_t s) {
  const int rows = static_cast<int>(w.rows), cols = static_cast<int>(w.cols), form = batch_form(n);
  LONGKV_CHECK(!i8 || (xq.npad == NT && n > NT - 8 && n <= NT), "gemv_batch: %d tokens padded to %d in the %d-token "
               "kernels", n, xq.npad, NT);
  if (i8 && part && NT > 8) {
    if constexpr (NT > 8) {
      if (cuda_tuning().gemv_batch_row_stages == 2)
        launch_rowsplit<NT / 8, 2>(w, xq, n, y, accumulate, part, tickets, s);
      else
        launch_rowsplit<NT / 8, 3>(w, xq, n, y, accumulate, part, tickets, s);
    }
  } else if (i8 && form >= 2)
    launch_ring_stages<NT / 8>(form, w, xq, n, y, accumulate, s);
  else if (i8 && form == 1)
    launch_maybe_pdl(cuda_tuning().pdl, gemv_batch_mma_kernel<NT / 8, true>, dim3((rows + 15) / 16),
                     dim3(kMmaWarps * 32), 0, s, w.data, w.ld, rows, cols / 32, xq, n, y, accumulate);
  else if (i8)  // PDL (milestone 56): the first weights requested before the wait for x
    launch_maybe_pdl(cuda_tuning().pdl, gemv_batch_mma_kernel<NT / 8>, dim3((rows + 15) / 16),
                     dim3(kMmaWarps * 32), 0, s, w.data, w.ld, rows, cols / 32, xq, n, y, accumulate);
  else
    gemv_batch_exact_kernel<NT><<<(rows + kWarps * kRows - 1) / (kWarps * kRows), kWarps * 32, 0, s>>>(
        w.data, w.ld, rows, cols, x, n, y, accumulate);
  LONGKV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool gemv_batch_supported(const GpuWeight& w) { return w.type == WeightType::Q4_0 && w.cols % 32 == 0; }

void gemv_batch(const GpuWeight& w, const BatchAct& a, int n, float* y, bool accumulate, DeviceBuffer& scratch,
                cudaStream_t s, bool same_x) {
  LONGKV_CHECK(gemv_batch_supported(w), "gemv_batch: %s rows of %lld columns are not supported",
               weight_traits(w.type).name, static_cast<long long>(w.cols));
  LONGKV_CHECK(n >= 1 && n <= kGemvBatchMax, "gemv_batch: %d tokens (1..%d)", n, kGemvBatchMax);
  const bool i8 = cuda_tuning().gemv_i8x;
  // The f16 form by the matrix's shape only (gbhd), as a token's bits must
  // not depend on the batch; same_x then pairs matrices of one shape.
  if (i8 && cuda_tuning().gemv_batch_h16 && std::max(w.rows, w.cols) >= cuda_tuning().gemv_batch_h16_dim)
    return gemv_batch_h16(w, a, n, y, accumulate, scratch, s, same_x);
  const int units = static_cast<int>(w.cols / 32);
  BatchX8 xq{nullptr, nullptr, (n + 7) / 8 * 8};
  float* part = nullptr;
  int* tickets = nullptr;
  const float* x = a.x;
  if (i8) {
    // scratch: the row-split form's tickets (zero between launches), the
    // int8 x at kScratchHead, then (row-split form) the slices' sums.
    const size_t cells = static_cast<size_t>(units) * xq.npad, q_bytes = cells * 2 * sizeof(int4);
    const size_t x_end = kScratchHead + q_bytes + cells * sizeof(float2);
    const bool rowsplit = rowsplit_takes(w, n);
    const size_t need = x_end + (rowsplit ? sizeof(float) * kMmaWarps * n * static_cast<size_t>(w.rows) : 0);
    LONGKV_CHECK(!same_x || scratch.bytes() >= x_end, "gemv_batch: no int8 x to reuse");
    const size_t had = scratch.bytes();
    scratch.reserve(need);
    if (scratch.bytes() != had) LONGKV_CUDA_CHECK(cudaMemsetAsync(scratch.as(), 0, kTicketBytes, s));
    xq.q = reinterpret_cast<int4*>(scratch.as<uint8_t>() + kScratchHead);
    xq.sc = reinterpret_cast<float2*>(scratch.as<uint8_t>() + kScratchHead + q_bytes);
    if (rowsplit) {
      tickets = scratch.as<int>();
      part = reinterpret_cast<float*>(scratch.as<uint8_t>() + x_end);
    }
    // PDL (milestone 56): it starts while the kernel before it ends
    if (!same_x)
      launch_maybe_pdl(cuda_tuning().pdl, quantize_batch_kernel, batch_act_grid(units, xq.npad), dim3(kActThreads),
                       0, s, a, n, units, xq);
  } else if (a.kind != BatchAct::plain) {  // the exact path reads f32: made at kScratchHead
    scratch.reserve(kScratchHead + sizeof(float) * n * static_cast<size_t>(w.cols));
    float* xf = reinterpret_cast<float*>(scratch.as<uint8_t>() + kScratchHead);
    if (!same_x)
      launch_maybe_pdl(cuda_tuning().pdl, batch_act_f32_kernel, batch_act_grid(units, n), dim3(kActThreads), 0, s, a,
                       n, units, xf);
    x = xf;
  }
  LONGKV_CUDA_CHECK(cudaGetLastError());
  if (n <= 8) launch_batch<8>(w, x, xq, n, y, accumulate, i8, part, tickets, s);
  else if (n <= 16) launch_batch<16>(w, x, xq, n, y, accumulate, i8, part, tickets, s);
  else if (n <= 24) launch_batch<24>(w, x, xq, n, y, accumulate, i8, part, tickets, s);
  else launch_batch<32>(w, x, xq, n, y, accumulate, i8, part, tickets, s);
}

}  // namespace longkv::cuda

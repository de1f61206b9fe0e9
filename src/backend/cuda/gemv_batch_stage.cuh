// What the batch GEMV's forms share (gemv_batch.cu: int8 activations;
// gemv_batch_h16.cu: f16 activations): the block of 8 warps, the chunk of 8
// Q4_0 units a warp stages into shared memory with cp.async, and the
// row-split forms' end, where the column slices' sums meet in memory.
//
// A staged row (kRowW bytes): a chunk's 8 units of 16 code bytes, then 16
// bytes unused, so that the lanes' 4-byte reads at g kRowW + 16 k + 4 t (g =
// lane / 4, t = lane % 4: the MMAs' A fragments) fall in 32 distinct banks.
// A warp's slot (kSlotW): its 16 staged rows, then the 16 rows' 8 scales
// (f16 [16][kChunk]).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/kv_quant_mma.cuh"
#include "backend/cuda/pdl.cuh"

namespace longkv::cuda {

constexpr int kMmaWarps = 8;  // a block: its units (or, row-split, its rows) split over 8 warps
constexpr int kChunk = 8;     // units a warp stages at once (a chunk)
constexpr int kRowW = kChunk * 16 + 16;       // bytes of a staged row: a chunk's codes + 16 (conflict-free reads)
constexpr int kSlotW = 16 * kRowW + 16 * 16;  // a warp's slot: 16 staged rows, then 16 rows' 8 scales
constexpr int kRowTile = kMmaWarps * 16;      // rows of a row-split block: 16 a warp
constexpr int kRowFormRows = 256 * kRowTile;  // the tickets at the scratch's start: one int a row tile
constexpr size_t kTicketBytes = 256 * sizeof(int);
constexpr size_t kScratchHead = 4096;  // tickets, then (16-byte aligned and more) the activations

__device__ __forceinline__ void cp_async16_l1(void* smem, const void* gmem) {  // kept in L1: every tile reads x
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}

// A warp's copies of chunk ch of the 16 rows from row0 into a slot (cp.async,
// the caller commits): each lane 4 rows' 16 bytes of unit cu = lane % 8
// (rows lane / 8 + 4 r: whole lines a warp), lanes < 16 also row `lane`'s
// kChunk scales. Rows past the matrix read its last row, a chunk past the
// row's last unit that unit's codes and scale bytes past the row (inside the
// upload's padding): never folded. The lane's row addresses are made once
// (RowStager's constructor), so a chunk costs its 5 copies and their offsets
// (milestone 58: made again for every chunk, the 64-bit row addresses were
// ~100 of the ~160 instructions an item spent outside its fold at 1-8 tokens
// in the f16 form).
struct RowStager {
  const uint8_t* row[4];  // rows cr + 4 r (clamped)
  const uint8_t* scale;   // row `lane`'s (clamped) kChunk-scale runs
  int units, cu;

  // The addresses go through an asm move, which ptxas cannot make again:
  // without it they were rematerialized inside the item loop (their 64-bit
  // multiplies with them), the cost this struct exists to remove.
  __device__ __forceinline__ RowStager(const uint8_t* __restrict__ w, size_t ld, int rows, int units_, int row0,
                                       int lane)
      : units(units_), cu(lane % 8) {
    const int cr = lane / 8;
#pragma unroll
    for (int r = 0; r < 4; ++r) row[r] = pinned(w + ld * min(row0 + cr + 4 * r, rows - 1));
    scale = pinned(w + ld * min(row0 + (lane & 15), rows - 1) + 16 * static_cast<size_t>(units));
  }
  __device__ __forceinline__ static const uint8_t* pinned(const uint8_t* p) {
    asm("mov.b64 %0, %0;" : "+l"(p));
    return p;
  }
  __device__ __forceinline__ void issue(uint8_t* slot, int ch, int lane) const {
    const size_t u = static_cast<size_t>(min(ch * kChunk + cu, units - 1));
#pragma unroll
    for (int r = 0; r < 4; ++r) cp_async16(slot + (lane / 8 + 4 * r) * kRowW + 16 * cu, row[r] + 16 * u);
    if (lane < 16) cp_async16(slot + 16 * kRowW + 16 * lane, scale + 2 * kChunk * ch);
  }
};

// One chunk of a tile (the ring form, whose blocks walk tiles): the same
// copies, the addresses made in place.
__device__ __forceinline__ void stage_rows(uint8_t* slot, const uint8_t* __restrict__ w, size_t ld, int rows,
                                           int units, int row0, int ch, int lane) {
  const int cr = lane / 8, cu = lane % 8;
  const size_t u = static_cast<size_t>(min(ch * kChunk + cu, units - 1));
#pragma unroll
  for (int r = 0; r < 4; ++r)
    cp_async16(slot + (cr + 4 * r) * kRowW + 16 * cu, w + ld * min(row0 + cr + 4 * r, rows - 1) + 16 * u);
  if (lane < 16)
    cp_async16(slot + 16 * kRowW + 16 * lane,
               w + ld * min(row0 + lane, rows - 1) + 16 * static_cast<size_t>(units) + 2 * kChunk * ch);
}

// The row-split forms' ring of S stages over a block's items: the first
// S - 1 items' weights (issue_w, constant data) before the PDL wait, their
// activations (issue_x) after it, one commit group an item (empty past the
// last); then item i is folded (fold_item) once every thread's pieces of it
// have landed, while item i + S - 1 is copied into item i - 1's stage.
template <int S, typename W, typename X, typename F>
__device__ __forceinline__ void ring_items(int items, W&& issue_w, X&& issue_x, F&& fold_item) {
#pragma unroll
  for (int i = 0; i < S - 1; ++i) issue_w(i);
  pdl_wait();
#pragma unroll
  for (int i = 0; i < S - 1; ++i) {
    issue_x(i);
    cp_async_commit();
  }
  for (int i = 0; i < items; ++i) {
    cp_async_wait<S - 2>();  // this thread's pieces of item i
    __syncthreads();         // everyone's; and every warp is done with item i - 1's stage
    issue_w(i + S - 1);      // into item i - 1's stage
    issue_x(i + S - 1);
    cp_async_commit();
    fold_item(i);
  }
}

// A row-split block's end: its warps' accumulators (the MMA's C fragments:
// lane (g, t) holds rows g, g + 8 x tokens 8 j + 2t, + 1 of tile j) are
// slice blockIdx.y's sums of rows blockIdx.x kRowTile + 16 warp ...; they go
// to part[slice][token][row], and the row tile's last block (tickets) adds
// the gridDim.y slices in slice order into y. One slice stores straight into
// y: the same bits (0 + v is v).
template <int NT>
__device__ __forceinline__ void slices_store(const float (&acc)[NT][4], float* __restrict__ part,
                                             int* __restrict__ tickets, float* __restrict__ y, int rows, int n,
                                             bool accumulate) {
  __shared__ int last;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int row0 = blockIdx.x * kRowTile + 16 * warp, sl = blockIdx.y, slices = gridDim.y;
  float* out = slices == 1 ? y : part + static_cast<size_t>(sl) * n * rows;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int tok = 8 * j + 2 * t + (e & 1), row = row0 + g + 8 * (e >> 1);
      if (tok >= n || row >= rows) continue;
      float* dst = out + static_cast<size_t>(tok) * rows + row;
      *dst = slices == 1 && accumulate ? *dst + acc[j][e] : acc[j][e];
    }
  }
  if (slices == 1) return;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&tickets[blockIdx.x], 1) == slices - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = threadIdx.x; i < kRowTile * n; i += kMmaWarps * 32) {
    const int row = blockIdx.x * kRowTile + i % kRowTile, tok = i / kRowTile;
    if (row >= rows) continue;
    float v = 0;
    for (int k = 0; k < slices; ++k) v += __ldcg(part + (static_cast<size_t>(k) * n + tok) * rows + row);
    float* dst = y + static_cast<size_t>(tok) * rows + row;
    *dst = accumulate ? *dst + v : v;
  }
  if (threadIdx.x == 0) tickets[blockIdx.x] = 0;  // for the next launch
}

}  // namespace longkv::cuda

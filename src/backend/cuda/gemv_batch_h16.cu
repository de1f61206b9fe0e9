// The batch GEMV with f16 activations (milestone 57, CudaTuning::
// gemv_batch_h16, key "gbh=S"): Y[t][r] (+)= sum_c W[r][c] X[t][c] for n <=
// kGemvBatchMax tokens of a Q4_0 matrix, as mma m16n8k16 with f16 operands
// and f32 accumulation over the whole row.
//
// Why: the int8 forms (gemv_batch.cu) scale every unit's integer sums by
// d dx per row and token, four instructions an output a unit (~48 of the
// ~130 a warp spends on a 16-row unit at 24 tokens); at 24-32 tokens they
// are bound by instruction issue at ~1 TB/s (milestone 56, ncu). Here the
// weights are dequantized once per unit and row, d (n - 8) rounded to f16,
// and nothing is done per token but the MMA: a lane makes its 16 weights of
// a unit in ~26 instructions whatever n, then 2 MMAs and one 16-byte load of
// x per 8 tokens.
//
// The rule (the tests' reference): y = sum over the row of f16(d (n - 8)) x
// f16(x), the products exact, summed in f32 by the tensor cores in unit
// order within a slice of the columns, then the slices in order. x beyond
// f16's range gives inf (no silent clamp). A token's result does not depend
// on n or the batch's other tokens: its column of each MMA sees only its own
// x, and the slices are a rule of the matrix's shape.
//
// The form: milestone 53's row-split blocks (gemv_batch_stage.cuh): 8 warps
// own 16 rows each (a block 128 rows) and share each chunk's activations,
// copied once into the block's stage beside each warp's weights; the chunks
// split over `slices` blocks (h16_slices: ~384 blocks for llama3-8b's
// shapes, one slice for the output matrix's 1,002 row tiles). gemv_batch takes
// this form for matrices of gbhd rows or columns and more.
//
// The activations' layout (made by convert_batch_h16_kernel, which makes the
// activation from its BatchAct as the int8 quantizer does): cell
// (unit u, token t) is 32 f16 in 64 bytes, 4 groups of 8; group q holds
// columns 4q, 4q+2, 4q+1, 4q+3, 4q+16, 4q+18, 4q+17, 4q+19, so lane (g, t) of
// a warp reads its B fragments of both k-steps for token g as one uint4.
// The A fragments follow from the nibbles: a lane's word of a row (code bytes
// 4t..4t+3) masked 0x000F000F gives columns 4t, 4t+2, shifted by 8 columns
// 4t+1, 4t+3, and the high nibbles the same columns + 16 (dequant_pair).
#include "backend/cuda/batch_act.cuh"
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/gemv_batch_stage.cuh"
#include "backend/cuda/kv_quant_mma.cuh"
#include "backend/cuda/pdl.cuh"

#include <algorithm>

namespace longkv::cuda {
namespace {

constexpr int kCellBytes = 64;  // a (unit, token) cell of f16 activations

// Token blockIdx.y's units (batch_act.cuh's grid) -> cells [units][npad]
// (tokens n.. of the padding: 0).
__global__ void convert_batch_h16_kernel(BatchAct a, int n, int units, int npad, uint4* __restrict__ out) {
  pdl_wait();  // x is the previous kernel's (a no-op in a plain launch)
  float v[32];
  batch_act_unit(a, n, units, v);
  const int u = blockIdx.x * kActThreads + threadIdx.x;
  if (u >= units) return;
  const size_t i = static_cast<size_t>(u) * npad + blockIdx.y;
  auto pair = [&](int p, int q) { return h2_bits(__floats2half2_rn(v[p], v[q])); };
#pragma unroll
  for (int q = 0; q < 4; ++q)
    out[4 * i + q] = make_uint4(pair(4 * q, 4 * q + 2), pair(4 * q + 1, 4 * q + 3), pair(4 * q + 16, 4 * q + 18),
                                pair(4 * q + 17, 4 * q + 19));
}

// f16x2 d (n - 8) of the two nibbles at bits [s, s + 4) and [16 + s, 20 + s)
// of w (s = 0 or 4; d2: d in both halves). 1024 + n (s = 0) or 1024 + 16 n
// (s = 4) is exact in f16, and so is n - 8 made from it; only the product
// with d rounds.
template <int S>
__device__ __forceinline__ uint32_t dequant_pair(uint32_t w, __half2 d2) {
  uint32_t h;  // (w & mask) | 0x64006400 as one LOP3 (the compiler made two: two immediates)
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(h) : "r"(w), "n"(0x000F000Fu << S), "r"(0x64006400u));
  const __half2 hv = *reinterpret_cast<const __half2*>(&h);
  __half2 nm8;
  if constexpr (S == 0) {
    nm8 = __hsub2(hv, __half2half2(__ushort_as_half(0x6408)));  // - 1032
  } else {
    nm8 = __hfma2(hv, __half2half2(__ushort_as_half(0x2C00)), __half2half2(__ushort_as_half(0xD480)));  // / 16 - 72
  }
  return h2_bits(__hmul2(nm8, d2));
}

template <int NT>
__host__ __device__ constexpr int h16_stage_bytes() { return kMmaWarps * kSlotW + kChunk * 8 * NT * kCellBytes; }

template <int NT, int S>
__global__ void __launch_bounds__(kMmaWarps * 32) gemv_batch_h16_kernel(
    const uint8_t* __restrict__ w, size_t ld, int rows, int units, const uint4* __restrict__ xh, int n,
    float* __restrict__ y, bool accumulate, float* __restrict__ part, int* __restrict__ tickets) {
  extern __shared__ __align__(16) uint8_t hs_smem[];
  constexpr int kStage = h16_stage_bytes<NT>(), kCells = 8 * NT;  // cells a unit: the padded tokens
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int row0 = blockIdx.x * kRowTile + 16 * warp, sl = blockIdx.y, slices = gridDim.y;
  const int chunks = (units + kChunk - 1) / kChunk;
  const int items = sl < chunks ? (chunks - 1 - sl) / slices + 1 : 0;  // chunks sl, sl + slices, ...
  auto stage = [&](int i) { return hs_smem + (i % S) * kStage; };
  const RowStager rs(w, ld, rows, units, row0, lane);
  auto issue_w = [&](int i) {  // this warp's 16 rows of item i's chunk
    if (i < items) rs.issue(stage(i) + warp * kSlotW, sl + slices * i, lane);
  };
  // A chunk's activations are kChunk kCells cells of 4 pieces: NT pieces a
  // thread when the chunk is whole (the loop's bounds made once, milestone 58).
  constexpr int kPieces = kChunk * kCells * (kCellBytes / 16);
  static_assert(kPieces == NT * kMmaWarps * 32, "a whole chunk's pieces: NT a thread");
  const uint4* xsrc = xh + threadIdx.x;
  auto issue_x = [&](int i) {  // item i's activations, by the whole block
    if (i >= items) return;
    const int ch = sl + slices * i, nu = min(kChunk, units - ch * kChunk);
    uint8_t* xs = stage(i) + kMmaWarps * kSlotW + 16 * threadIdx.x;
    const uint4* src = xsrc + static_cast<unsigned>(ch) * kPieces;
    if (nu == kChunk) {
#pragma unroll
      for (int k = 0; k < NT; ++k) cp_async16_l1(xs + 16 * k * kMmaWarps * 32, src + k * kMmaWarps * 32);
    } else {
      for (int p = 0; threadIdx.x + p < nu * kCells * (kCellBytes / 16); p += kMmaWarps * 32)
        cp_async16_l1(xs + 16 * p, src + p);
    }
  };
  float acc[NT][4] = {};
  ring_items<S>(items, issue_w, issue_x, [&](int i) {
    const uint8_t* st = stage(i) + warp * kSlotW;
    const __half* scl = reinterpret_cast<const __half*>(st + 16 * kRowW);
    const uint4* xs = reinterpret_cast<const uint4*>(stage(i) + kMmaWarps * kSlotW);
    const int ch = sl + slices * i;
    auto fold = [&](int k) {  // unit k of the chunk
      const uint32_t wa = *reinterpret_cast<const uint32_t*>(st + g * kRowW + 16 * k + 4 * t);
      const uint32_t wb = *reinterpret_cast<const uint32_t*>(st + (g + 8) * kRowW + 16 * k + 4 * t);
      const __half2 da = __half2half2(scl[g * kChunk + k]), db = __half2half2(scl[(g + 8) * kChunk + k]);
      const uint32_t a0[4] = {dequant_pair<0>(wa, da), dequant_pair<0>(wb, db), dequant_pair<0>(wa >> 8, da),
                              dequant_pair<0>(wb >> 8, db)};  // columns 4t, 4t+2 | 4t+1, 4t+3
      const uint32_t a1[4] = {dequant_pair<4>(wa, da), dequant_pair<4>(wb, db), dequant_pair<4>(wa >> 8, da),
                              dequant_pair<4>(wb >> 8, db)};  // the same + 16
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint4 b = xs[(k * kCells + 8 * j + g) * 4 + t];
        mma_16816(acc[j], a0, make_uint2(b.x, b.y));
        mma_16816(acc[j], a1, make_uint2(b.z, b.w));
      }
    };
    const int nu = min(kChunk, units - ch * kChunk);
    if (nu == kChunk) {  // no unit checks in the unrolled chunk
#pragma unroll
      for (int k = 0; k < kChunk; ++k) fold(k);
    } else {
      for (int k = 0; k < nu; ++k) fold(k);
    }
  });
  slices_store<NT>(acc, part, tickets, y, rows, n, accumulate);
}

// Column slices of a matrix: ~gbhb blocks (default 384, ~3 an SM of an
// H200) where its row tiles are fewer, at most 8 and at most its chunks; one
// past the tickets' 256 row tiles. A rule of the shape only. Not "at most
// one wave": gate's 112 row tiles in 3 slices (336 blocks) measured 5-6%
// slower at 24-32 tokens than in 4 (448 blocks on 396 places; milestone 57, call 3).
int h16_slices(int rows, int units) {
  const int row_tiles = (rows + kRowTile - 1) / kRowTile, chunks = (units + kChunk - 1) / kChunk;
  if (row_tiles > static_cast<int>(kTicketBytes / sizeof(int))) return 1;
  const int blocks = cuda_tuning().gemv_batch_h16_blocks;
  return std::max(1, std::min({(blocks + row_tiles - 1) / row_tiles, kMmaWarps, chunks}));
}

template <int NT, int S>
void launch_h16(const GpuWeight& w, const uint4* xh, int n, float* y, bool accumulate, float* part, int* tickets,
                cudaStream_t s) {
  constexpr size_t kSmem = static_cast<size_t>(S) * h16_stage_bytes<NT>();
  static const bool attr = [] {
    LONGKV_CUDA_CHECK(cudaFuncSetAttribute(gemv_batch_h16_kernel<NT, S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(kSmem)));
    return true;
  }();
  (void)attr;
  const int rows = static_cast<int>(w.rows), units = static_cast<int>(w.cols / 32);
  launch_maybe_pdl(cuda_tuning().pdl, gemv_batch_h16_kernel<NT, S>,
                   dim3((rows + kRowTile - 1) / kRowTile, h16_slices(rows, units)), dim3(kMmaWarps * 32), kSmem, s,
                   w.data, w.ld, rows, units, xh, n, y, accumulate, part, tickets);
}

template <int NT>
void launch_h16_stages(int stages, const GpuWeight& w, const uint4* xh, int n, float* y, bool accumulate,
                       float* part, int* tickets, cudaStream_t s) {
  if (stages == 3) launch_h16<NT, 3>(w, xh, n, y, accumulate, part, tickets, s);
  else launch_h16<NT, 2>(w, xh, n, y, accumulate, part, tickets, s);
}

}  // namespace

void gemv_batch_h16(const GpuWeight& w, const BatchAct& a, int n, float* y, bool accumulate, DeviceBuffer& scratch,
                    cudaStream_t s, bool same_x) {
  const int rows = static_cast<int>(w.rows), units = static_cast<int>(w.cols / 32), npad = (n + 7) / 8 * 8;
  // scratch: the tickets (zero between launches), the f16 x at kScratchHead,
  // then the slices' sums.
  const size_t cells = static_cast<size_t>(units) * npad, x_end = kScratchHead + cells * kCellBytes;
  const int slices = h16_slices(rows, units);
  const size_t need = x_end + (slices > 1 ? sizeof(float) * slices * n * static_cast<size_t>(rows) : 0);
  LONGKV_CHECK(!same_x || scratch.bytes() >= x_end, "gemv_batch: no f16 x to reuse");
  const size_t had = scratch.bytes();
  scratch.reserve(need);
  if (scratch.bytes() != had) LONGKV_CUDA_CHECK(cudaMemsetAsync(scratch.as(), 0, kTicketBytes, s));
  uint4* xh = reinterpret_cast<uint4*>(scratch.as<uint8_t>() + kScratchHead);
  if (!same_x) {
    launch_maybe_pdl(cuda_tuning().pdl, convert_batch_h16_kernel, batch_act_grid(units, npad), dim3(kActThreads), 0,
                     s, a, n, units, npad, xh);
    LONGKV_CUDA_CHECK(cudaGetLastError());
  }
  float* part = reinterpret_cast<float*>(scratch.as<uint8_t>() + x_end);
  int* tickets = scratch.as<int>();
  const int st = cuda_tuning().gemv_batch_h16;
  if (n <= 8) launch_h16_stages<1>(st, w, xh, n, y, accumulate, part, tickets, s);
  else if (n <= 16) launch_h16_stages<2>(st, w, xh, n, y, accumulate, part, tickets, s);
  else if (n <= 24) launch_h16_stages<3>(st, w, xh, n, y, accumulate, part, tickets, s);
  else launch_h16_stages<4>(st, w, xh, n, y, accumulate, part, tickets, s);
  LONGKV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace longkv::cuda

// Weight kernels: single-token GEMV per format, dequantization to dense
// f16/f32 (the GEMM path), embedding rows. Upload (the split row layout they
// read) is weight_upload.cu; the slab GEMV's activation, made in its load,
// and gx8's int8 x (milestones 36-38) are gemv_act_load.cuh.
//
// Block-format GEMV ("slab"): a block has one warp per 32 units of the row
// (a unit = 32 elements); each lane loads its unit's activations into
// registers once and keeps them while the block walks over batches of kRB
// rows, loading kRB units of 16 bytes at once (many loads in flight, no
// shared-memory staging, no re-reads of x), decoding in registers. Per batch
// the warps' partial sums meet in shared memory. The grid is what fits on the
// GPU at once, so x is read about once per resident block. Rows with more
// than 512 units are done in column slices, accumulating. The op before the
// GEMV (RMSNorm, SwiGLU) is made in the lane's load of x (milestone 6): a
// block first sums x^2 over the whole row for RMSNorm (x is in L2), so the
// separate rmsnorm/swiglu kernels and their round trip through memory go.
//
// Block-format GEMV ("rows", milestone 5; off by default, CudaTuning: it
// measured 35-45% slower than the slab kernel on H100): each warp owns R
// whole rows and walks their units lane by lane, so the only reduction is the
// warp's own (no block barrier per batch). The activation is staged once per
// block in shared memory, and staging is where the op before the GEMV runs:
// RMSNorm (x * rsqrt(mean x^2 + eps) * norm) or SwiGLU (silu(gate) * up), so
// those kernels disappear from a decode step. The first weight loads are
// issued before the staging, hiding its latency behind theirs.
//
// Milestone 8: the slab kernel (Q4_0, Q8_0) requests its first row batch
// before anything else and keeps the next batch's loads in flight during each
// reduction ("pipelined", CudaTuning::gemv_pipe), and is launched with
// programmatic dependent launch (pdl.cuh, CudaTuning::pdl): it starts while
// the kernel before it drains, its weight loads overlapping that tail.
//
// Milestone 13: Q4_0 with int8 activations (CudaTuning::gemv_i8x;
// weight_decode.cuh: quantize_x_i8, dot_q4_0_i8): a lane quantizes its
// unit's activations once, after the op made in its load, and each row's
// unit is 8 __dp4a instead of ~100 f32 instructions; the kernel was
// issue-bound (bench/cuda_gemv_probe.cu). 16 rows a batch when 8-row batches
// would not all be resident at once (fewer, fuller passes; measured per shape);
// since milestone 17 whenever 16-row batches still give every SM a block
// (llama3-8b's wo GEMV: 256 blocks instead of 512, the step 3.5% faster).
//
// Milestone 8b: interleaved RoPE in the store (GemvAct::rope,
// CudaTuning::gemv_rope). Rows 2i and 2i+1 of a head are in the same row
// batch (batches start at multiples of an even row count), so the thread that
// stores row r sums its partner's partials too (same order as the partner
// does) and writes its half of the rotated pair; the angle is computed at
// the top of the batch, while its weight loads are in flight (and only when
// the batch's offset in a head changes). Removes the RoPE kernel after the
// q|k|v GEMV of every layer.
//
// Milestone 17: SwiGLU in the store (GemvAct::glu, CudaTuning::gemv_glu):
// w_gate / w_up uploaded with interleaved rows (upload_interleaved), so a
// batch holds (gate_i, up_i) pairs and the gate row's thread writes
// silu(gate) up -- w_down's GEMV then loads h plainly. And a narrow variant
// (CudaTuning::gemv_prefetch, off): 4-warp blocks with more registers that
// request a one-pass batch's 16 rows all before the PDL wait.
//
// Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS (weight_decode_q32.cuh) take Q4_0's
// slab kernels but for the int8 x link (GemvAct::X8): pipelined f32 and
// int8 kernels, coalesced x (slab_xc), 8- and 16-row batches (Q5_0's, Q5_1's
// and IQ4_XS's 24-byte units 8 only, slab_wide).
//
// Milestone 64: Q8_0 the same way, its unit a whole block (36 bytes, 8-row
// batches): with int8 activations a unit is 8 __dp4a instead of ~100 f32
// instructions (its f32 kernel streamed an 8B model's weights at ~59% of
// the copy bandwidth).
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/gemv_act_load.cuh"
#include "backend/cuda/pdl.cuh"
#include "backend/cuda/rope_rotate.cuh"
#include "backend/cuda/weight_decode.cuh"

#include <algorithm>
#include <atomic>
#include <type_traits>

namespace longkv::cuda {
namespace {

constexpr int kWarps = 8;  // dense kernels
constexpr int kRows = 2;

// Sums each row's partial dot products over the block and writes y (RoPE'd
// if rp says so: row0 is even, so a pair is in one block).
__device__ __forceinline__ void block_reduce_store(const float (&acc)[kRows], int row0, int rows, float* y,
                                                   bool accumulate, const GemvRope& rp) {
  static_assert(kRows % 2 == 0, "RoPE pairs must share a block");
  __shared__ float red[kRows][kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float s = warp_sum(acc[r]);
    if (lane == 0) red[r][warp] = s;
  }
  __syncthreads();
  if (threadIdx.x < kRows && row0 + static_cast<int>(threadIdx.x) < rows) {
    float s = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[threadIdx.x][w];
    const int row = row0 + threadIdx.x;
    float cs, sn;
    if (rope_row_angle(rp, row, cs, sn)) {
      float p = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) p += red[threadIdx.x ^ 1][w];
      s = rope_own_half(row, s, p, cs, sn);
    }
    float* dst = y + row;
    *dst = accumulate ? *dst + s : s;
  }
}

// Units [u_begin, u_begin + nu) of every row; a.x is the whole row's input
// (a.kind: the op made in the load, see load_x_act).
// Pipe = false: milestone 2's order per batch of RB rows: load, use, reduce
// (two barriers). Pipe = true (milestone 8): the first batch's weights are
// requested before anything else (before the PDL wait: weights are not
// written by earlier kernels; x is), and each next batch's loads are issued
// right after the current batch's dot products, so they are in flight during
// its shuffles, barrier and store; the partial sums alternate between two
// shared arrays, so one barrier per batch suffices (a buffer is rewritten
// only after the next barrier, which its readers have passed).
// Rope: a.rope applied in the store (one slice, not accumulating; RB even).
// I8 (Q4_0, since milestone 61 the K-quants, and Q4_0's siblings of
// slab_xc): int8 activations,
// dot_unit_i8. RB: rows per batch.
// Narrow (milestone 17, CudaTuning::gemv_prefetch): blocks of 4 warps (rows
// of 128 units) with up to 168 registers a lane (3 blocks an SM), so the
// first batch's RB rows are all requested before the PDL wait, none after
// the activation is made.
// X8 (milestone 36, GemvAct::X8; Q4_0 int8 with coalesced x only): 1 reads
// x in int8 form (a.kind == rmsnorm, the whole row) and applies 1/rms at
// the store, every row of the first batch requested before the wait (3: 8
// of 16, as the other kernels); 2 writes it (plain, rows % 16 == 0, 16-row
// batches). Both also as the narrow kernel where it is on (gemv_prefetch,
// off by default; milestone 37), so that gx8 never silently drops it.
// 4 (milestone 38, CudaTuning::gemv_x8 bit 32; plain 16-row only): reads
// and writes decided at run time from a, so that every link of a gx8 step
// runs this one kernel (behind v3 a link whose kernel differs from the one
// the step's other GEMVs run lost ~5 us, milestone 38); x in XI8x16 form
// either way, each form's dots with their own bits, the form chosen once a
// batch.
// 6: 4 whose readers request their whole first batch before the wait, as
// 1 does (CudaTuning::gemv_x8 bit 64, with 32).
template <WeightType T, bool Pipe, bool Rope, bool I8, int RB, bool Narrow = false, bool XC = false, int X8 = 0>
__global__ void __launch_bounds__(Narrow ? 128 : kMaxSlabWarps * 32, Narrow ? 3 : 1) gemv_slab_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                      int rows, int nb, int u_begin, int nu,
                                                                      GemvAct a, float* __restrict__ y,
                                                                      bool accumulate) {
  using S = Slab<T>;
  static_assert(!I8 || slab_int8(T), "int8 activations: the formats of slab_int8");
  static_assert(!XC || slab_xc(T), "coalesced x: units of 32 contiguous activations only");
  static_assert(X8 == 0 || T == WeightType::Q4_0, "int8 x between GEMVs: Q4_0 only");
  __shared__ float red[Pipe ? 2 : 1][RB][kMaxSlabWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = blockDim.x / 32;
  const int ui = warp * 32 + lane;
  const bool valid = ui < nu;
  const int u = u_begin + (valid ? ui : 0);
  const int stride = gridDim.x * RB;
  typename S::Unit wu[RB];
  auto load_rows = [&](int r0, int lo, int hi) {
#pragma unroll
    for (int r = lo; r < hi; ++r) wu[r] = S::load(w + ld * static_cast<size_t>(min(r0 + r, rows - 1)), u, nb);
  };
  auto load_batch = [&](int r0) { load_rows(r0, 0, RB); };
  // Rows loaded before the activation: all, except that 16-row batches
  // request their second half after it, since x and the norm (64 registers)
  // beside 16 units would pass the 128 registers a lane has here (ptxas spills).
  constexpr bool kRead8 = X8 == 1 || X8 == 3;  // reads x in int8 form
  constexpr bool kAny = X8 == 4 || X8 == 6;     // reads or writes it, or neither, as a says
  constexpr bool kAnyEarly16 = X8 == 6;         // kAny whose readers request all RB rows before the wait
  // The K-quants' units are 16 to 36 bytes (Q4_0's 18), Q5_0's, Q5_1's and
  // IQ4_XS's 24 (slab_wide): half their batch goes before the activation,
  // the rest after it. Q4_1's and IQ4_NL's 16-row batches: 6 rows before it
  // (their dots hold a few registers more than Q4_0's; 8 spilled).
  constexpr bool kKQuant = slab_kquant(T) || slab_wide(T);
  constexpr int kEarly = kKQuant ? RB / 2 : RB > 8 && !Narrow && X8 != 1 ? (T == WeightType::Q4_0 ? 8 : 6) : RB;
  static_assert(X8 == 0 || (I8 && XC && Pipe && (X8 == 1 || X8 == 3 || RB == 16)), "int8 x between GEMVs");
  static_assert(!kAny || (!Rope && !Narrow && RB == 16), "gx8's one kernel: the plain 16-row kernel only");
  // This launch reads x in int8 form / writes the next one's (kAny: as the host's x8 in launch_slab_as).
  const bool read8 = kAny ? a.x8_in.q != nullptr && a.kind == GemvAct::rmsnorm : kRead8;
  const bool write8 = kAny ? a.x8_out.q != nullptr && a.kind == GemvAct::plain : X8 == 2;
  const bool first = Pipe && blockIdx.x * RB < rows;
  if (first) load_rows(blockIdx.x * RB, 0, kEarly);
  // A reader holds no f32 x: its whole first batch fits beside x16, as X8 =
  // 1's. Unconditional on `first` here and in the other path's late load
  // below (every block of a pipelined launch has a first batch; rows are
  // clamped), so that no path keeps the other's rows live across its x load
  // (ptxas spilled 424 bytes with both loads on `first`).
  if constexpr (kAnyEarly16) {
    if (read8) load_rows(blockIdx.x * RB, kEarly, RB);
  }
  pdl_trigger();
  pdl_wait();
  // RoPE: lane t < RB's angle is for the pair at offset rope_j in a head,
  // recomputed only when a batch's offset changes (never when the stride is
  // a multiple of head_dim: llama3-8b's q|k|v, 528 blocks x 8 rows = 33
  // heads). The first one is made here, under the loads of x.
  float cs = 0, sn = 0;
  int rope_j = -1;
  int64_t rope_pos = 0;
  if constexpr (Rope) {
    rope_pos = a.rope.dpos ? static_cast<int64_t>(*a.rope.dpos) : a.rope.pos0;
    const int j = (blockIdx.x * RB + threadIdx.x) % a.rope.head_dim;
    if (threadIdx.x < RB && j < a.rope.rope_dim) {
      rope_cos_sin(rope_pos, a.rope.inv_freq[j / 2], cs, sn);
      rope_j = j;
    }
  }
  const int cols = nb * weight_traits_block(T);
  static_assert(!XC || I8, "coalesced x: the int8 kernels only");
  XSrc xs;
  if constexpr (XC) {
    extern __shared__ float4 gemv_sx[];  // 256 float4 a warp
    xs = {gemv_sx + 256 * warp, u_begin + 32 * warp, min(32, nu - 32 * warp)};
  }
  typename S::X xr;
  [[maybe_unused]] XI8 xq;
  [[maybe_unused]] XI8x16 x16;
  [[maybe_unused]] float inv_rms = 1.0f;  // read8: applied at the store
  if (read8) {
    load_x8(a.x8_in.q, a.x8_in.dx, u, x16);
    inv_rms = x8_inv_rms(a.x8_in.ss, u, valid, cols, a.eps);
  } else {
    if (Pipe && a.kind == GemvAct::rmsnorm && u_begin == 0 && nu == nb * S::kUnitsPerBlock) {
      load_x_rmsnorm_whole_row<T, XC, !Rope>(a, u, xs, valid, cols, xr);
    } else {
      const float inv = a.kind == GemvAct::rmsnorm ? block_inv_rms(a.x, cols, a.eps) : 1.0f;
      load_x_act<T, XC, !Rope>(a, u, xs, inv, xr);
    }
    if constexpr (I8) quantize_x_i8(xr.v, xq);
    if constexpr (kAny) {  // the same registers as the int8 form read
#pragma unroll
      for (int j = 0; j < 8; ++j) x16.q[j] = xq.q[j];
      x16.dx[0] = xq.dx;
      x16.off[0] = xq.off;
    }
    if constexpr (kAnyEarly16) load_rows(blockIdx.x * RB, kEarly, RB);
  }
  if (!kAnyEarly16 && first) load_rows(blockIdx.x * RB, kEarly, RB);
  int buf = 0;
  static_assert(!Rope || RB % 2 == 0, "RoPE pairs must share a row batch");
  bool rot = false;
  for (int r0 = blockIdx.x * RB; r0 < rows; r0 += stride) {
    if (!Pipe) load_batch(r0);
    // The store's own operands, requested before the dots so that they are
    // not one more round trip after the reduction (milestone 37): the row
    // this batch adds to (accumulate: written by earlier kernels, so only
    // past the wait) and X8's norm. (Never with RoPE in the store, which
    // does not accumulate.)
    float res = 0, nrm = 0;
    if (!Rope && !a.glu && threadIdx.x < RB && r0 + static_cast<int>(threadIdx.x) < rows) {
      if (accumulate) res = y[r0 + threadIdx.x];
      if (write8) nrm = a.x8_out.norm[r0 + threadIdx.x];
    }
    if constexpr (Rope) {  // while this batch's weights are on their way
      const int row = r0 + threadIdx.x, j = row % a.rope.head_dim;
      rot = threadIdx.x < RB && row < a.rope.heads * a.rope.head_dim && j < a.rope.rope_dim;
      if (rot && j != rope_j) {
        rope_cos_sin(rope_pos, a.rope.inv_freq[j / 2], cs, sn);
        rope_j = j;
      }
    }
    float acc[RB];
    if constexpr (kAny) {  // the form chosen once a batch, each loop one form's dots (milestone 38)
      if (read8) {
#pragma unroll
        for (int r = 0; r < RB; ++r) acc[r] = valid ? dot_q4_0_i8x16(wu[r].q, wu[r].d, x16) : 0.0f;
      } else {
        XI8 xv;  // the default form's registers, as kept in x16
#pragma unroll
        for (int j = 0; j < 8; ++j) xv.q[j] = x16.q[j];
        xv.dx = x16.dx[0];
        xv.off = x16.off[0];
#pragma unroll
        for (int r = 0; r < RB; ++r) acc[r] = valid ? dot_q4_0_i8(wu[r].q, wu[r].d, xv) : 0.0f;
      }
    } else {
#pragma unroll
      for (int r = 0; r < RB; ++r) {
        if constexpr (kRead8) acc[r] = valid ? dot_q4_0_i8x16(wu[r].q, wu[r].d, x16) : 0.0f;
        else if constexpr (I8) acc[r] = valid ? dot_unit_i8<T>(wu[r], xq, u) : 0.0f;
        else acc[r] = valid ? S::dot(wu[r], xr, u) : 0.0f;
      }
    }
    if (Pipe && r0 + stride < rows) load_batch(r0 + stride);
    publish_row_partials(acc, red[buf], warp, lane);
    if (threadIdx.x < RB && r0 + static_cast<int>(threadIdx.x) < rows) {
      // A row's total (kRead8, kAny: times 1/rms, 1 unless read8: exact; the other forms unchanged).
      auto total = [&](int t) {
        if constexpr (kRead8 || kAny) return row_total(red[buf][t], n_warps) * inv_rms;
        else return row_total(red[buf][t], n_warps);
      };
      float s = total(threadIdx.x);
      if (Rope && rot) s = rope_own_half(r0 + threadIdx.x, s, total(threadIdx.x ^ 1), cs, sn);
      if (a.glu) {  // the gate row's thread: silu(gate) up, as load_x_act's SwiGLU makes it
        if (!(threadIdx.x & 1)) {
          const float p = total(threadIdx.x + 1);
          y[(r0 + threadIdx.x) / 2] = s / (1.0f + expf(-s)) * p;
        }
      } else {
        const float v = accumulate ? res + s : s;
        y[r0 + threadIdx.x] = v;
        if (write8) store_x8(a.x8_out, r0, threadIdx.x, v, nrm);
      }
    }
    if constexpr (Pipe) buf ^= 1;
    else __syncthreads();
  }
}

constexpr int kRowsWarps = 8;

// Stages the (transformed) activation in xs[cols]; every thread of the block
// takes part. Same arithmetic per element as rmsnorm_kernel / swiglu_kernel,
// the sum of squares in another order.
__device__ __forceinline__ void stage_activation(const GemvAct& a, int cols, float* xs) {
  const int tid = threadIdx.x, nt = blockDim.x;
  if (a.kind == GemvAct::swiglu) {
    for (int i = tid; i < cols; i += nt) {
      const float g = a.x[i];
      xs[i] = g / (1.0f + expf(-g)) * a.up[i];
    }
    return;
  }
  float ss = 0;
  for (int i = 4 * tid; i < cols; i += 4 * nt) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(a.x + i));
    *reinterpret_cast<float4*>(xs + i) = v;
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  if (a.kind != GemvAct::rmsnorm) return;
  __shared__ float red[kRowsWarps];
  ss = warp_sum(ss);
  if (tid % 32 == 0) red[tid / 32] = ss;
  __syncthreads();
  float tot = 0;
  for (int k = 0; k < kRowsWarps; ++k) tot += red[k];
  const float scale = rsqrtf(tot / cols + a.eps);
  for (int i = 4 * tid; i < cols; i += 4 * nt)  // the elements this thread wrote
#pragma unroll
    for (int e = 0; e < 4; ++e) xs[i + e] = xs[i + e] * scale * a.norm[i + e];
}

// R rows per warp, kRowsWarps warps per block, U units per lane in flight per
// row (U * R loads before the first use); xs = cols floats of shared memory.
template <WeightType T, int R>
__global__ void __launch_bounds__(kRowsWarps * 32) gemv_rows_kernel(const uint8_t* __restrict__ w, size_t ld,
                                                                     int rows, int nb, GemvAct a,
                                                                     float* __restrict__ y, bool accumulate) {
  using S = Slab<T>;
  constexpr int U = S::kRB / R > 0 ? S::kRB / R : 1;
  extern __shared__ float4 xs4[];
  float* xs = reinterpret_cast<float*>(xs4);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = (blockIdx.x * kRowsWarps + warp) * R;
  const int units = nb * S::kUnitsPerBlock;
  const int cols = nb * weight_traits_block(T);
  const uint8_t* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + ld * static_cast<size_t>(min(r0 + r, rows - 1));
  typename S::Unit wu[U][R];
  auto load_batch = [&](int u0) {
#pragma unroll
    for (int j = 0; j < U; ++j)
#pragma unroll
      for (int r = 0; r < R; ++r) wu[j][r] = S::load(wr[r], min(u0 + 32 * j, units - 1), nb);
  };
  load_batch(lane);
  stage_activation(a, cols, xs);
  __syncthreads();
  if (r0 >= rows) return;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0;
  for (int u0 = lane;;) {
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int u = u0 + 32 * j;
      if (u < units) {
        typename S::X xr;
        S::load_x(xs, u, xr);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += S::dot(wu[j][r], xr, u);
      }
    }
    u0 += 32 * U;
    if (u0 >= units) break;
    load_batch(u0);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (r0 + r < rows) y[r0 + r] = accumulate ? y[r0 + r] + acc[r] : acc[r];
  }
}

// F32/F16/BF16: 16-byte loads straight from global memory, 8 elements (F16,
// BF16) or 4 (F32) per lane per step.
template <WeightType T>
__global__ void __launch_bounds__(kWarps * 32) gemv_dense_kernel(const uint8_t* __restrict__ w, size_t ld, int rows,
                                                                  int cols, const float* __restrict__ x,
                                                                  float* __restrict__ y, bool accumulate,
                                                                  GemvRope rp) {
  constexpr int kPer = T == WeightType::F32 ? 4 : 8;
  const int row0 = blockIdx.x * kRows;
  float acc[kRows] = {};
  const int nvec = cols / kPer;
  for (int v = threadIdx.x; v < nvec; v += kWarps * 32) {
    float xv[kPer];
#pragma unroll
    for (int k = 0; k < kPer; k += 4) {
      const float4 t = __ldg(reinterpret_cast<const float4*>(x + v * kPer + k));
      xv[k] = t.x; xv[k + 1] = t.y; xv[k + 2] = t.z; xv[k + 3] = t.w;
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* rp = w + ld * static_cast<size_t>(min(row0 + r, rows - 1));
      const uint4 q = __ldg(reinterpret_cast<const uint4*>(rp) + v);
      if constexpr (T == WeightType::F32) {
        acc[r] += __uint_as_float(q.x) * xv[0] + __uint_as_float(q.y) * xv[1] + __uint_as_float(q.z) * xv[2] +
                  __uint_as_float(q.w) * xv[3];
      } else {
        const uint32_t u[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          float lo, hi;
          if constexpr (T == WeightType::F16) {
            const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&u[k]));
            lo = f.x; hi = f.y;
          } else {
            lo = __uint_as_float(u[k] << 16);
            hi = __uint_as_float(u[k] & 0xffff0000u);
          }
          acc[r] += lo * xv[2 * k] + hi * xv[2 * k + 1];
        }
      }
    }
  }
  // Tail elements (cols not a multiple of kPer; only F32/F16/BF16 reach here).
  for (int i = nvec * kPer + static_cast<int>(threadIdx.x); i < cols; i += kWarps * 32)
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      acc[r] += decode_elem<T>(w + ld * static_cast<size_t>(min(row0 + r, rows - 1)), i, 0) * x[i];
  block_reduce_store(acc, row0, rows, y, accumulate, rp);
}

template <WeightType T, typename Out>
__global__ void dequantize_kernel(const uint8_t* __restrict__ w, size_t ld, int64_t rows, int64_t cols,
                                  Out* __restrict__ dst) {
  const int64_t nb = cols / weight_traits_block(T);
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float v = decode_elem<T>(w + ld * r, c, nb);
    if constexpr (sizeof(Out) == 2) dst[i] = __float2half(v);
    else dst[i] = v;
  }
}

template <WeightType T>
__global__ void get_rows_kernel(const uint8_t* __restrict__ w, size_t ld, int64_t cols, const int32_t* ids,
                                float* __restrict__ dst) {
  const int64_t nb = cols / weight_traits_block(T);
  const int t = blockIdx.y;
  const uint8_t* row = w + ld * static_cast<size_t>(ids[t]);
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[t * cols + c] = decode_elem<T>(row, c, nb);
}

// Expands BODY with the compile-time type T for the runtime type `t`.
#define LONGKV_DISPATCH_WEIGHT(t, BODY)                                                              \
  switch (t) {                                                                                      \
    case WeightType::F32: { constexpr WeightType T = WeightType::F32; BODY; break; }                \
    case WeightType::F16: { constexpr WeightType T = WeightType::F16; BODY; break; }                \
    case WeightType::BF16: { constexpr WeightType T = WeightType::BF16; BODY; break; }              \
    case WeightType::Q8_0: { constexpr WeightType T = WeightType::Q8_0; BODY; break; }              \
    case WeightType::Q4_0: { constexpr WeightType T = WeightType::Q4_0; BODY; break; }              \
    case WeightType::Q4_1: { constexpr WeightType T = WeightType::Q4_1; BODY; break; }              \
    case WeightType::Q5_0: { constexpr WeightType T = WeightType::Q5_0; BODY; break; }              \
    case WeightType::Q5_1: { constexpr WeightType T = WeightType::Q5_1; BODY; break; }              \
    case WeightType::IQ4_NL: { constexpr WeightType T = WeightType::IQ4_NL; BODY; break; }          \
    case WeightType::IQ4_XS: { constexpr WeightType T = WeightType::IQ4_XS; BODY; break; }          \
    case WeightType::Q2_K: { constexpr WeightType T = WeightType::Q2_K; BODY; break; }              \
    case WeightType::Q3_K: { constexpr WeightType T = WeightType::Q3_K; BODY; break; }              \
    case WeightType::Q4_K: { constexpr WeightType T = WeightType::Q4_K; BODY; break; }              \
    case WeightType::Q5_K: { constexpr WeightType T = WeightType::Q5_K; BODY; break; }              \
    case WeightType::Q6_K: { constexpr WeightType T = WeightType::Q6_K; BODY; break; }              \
    default: fail("CUDA backend: unsupported weight type %s", ggml_type_name(static_cast<uint32_t>(t))); \
  }

// Returns whether a.rope was applied (in the store of a single slice).
std::atomic<int64_t> x8_launch_count[2] = {};  // [the narrow kernel]
std::atomic<int64_t> one_kernel_launch_count{0};  // gx8's one kernel (CudaTuning::gemv_x8 bit 32)

template <WeightType T, bool Pipe>
bool launch_slab_as(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  using S = Slab<T>;
  const int rows = static_cast<int>(w.rows);
  const int nb = static_cast<int>(w.cols / weight_traits_block(T));
  const int units = nb * S::kUnitsPerBlock;
  const int slice = std::clamp(cuda_tuning().slab_slice / 32 * 32, 32, kMaxSlabWarps * 32);
  const bool rope = a.rope.inv_freq != nullptr && units <= slice && !accumulate;
  LONGKV_CHECK(!a.glu || (units <= slice && !accumulate && S::kRB % 2 == 0 && w.rows % 2 == 0),
               "CUDA GEMV: SwiGLU in the store needs one slice, even rows and no accumulation");
  // Resident blocks per SM for each kernel variant and warp count, asked once.
  // Variants: 0 f32 dot, 1 int8 x 8 rows a batch, 2 int8 x 16 rows, 3 the
  // narrow int8 16-row kernel (4 warps only).
  static int occ[5][2][2][4][kMaxSlabWarps + 1] = {};  // [x8, 3 or 4: gx8's one kernel][rope][coalesced x][variant][warps]
  static int sms = 0;
  if (sms == 0) LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const bool pdl = cuda_tuning().pdl;
  const bool i8 = slab_int8(T) && cuda_tuning().gemv_i8x;
  // Coalesced x (the pipelined int8 kernels): 4 KB of shared memory a warp.
  const bool xc = slab_xc(T) && Pipe && i8 && cuda_tuning().gemv_x_coalesced;
  // The K-quants' f32 kernel keeps milestone 2's order (launch_slab); their
  // int8 kernels, and slab_wide's, take their kRB rows a batch only (Q2_K
  // 16, the other K-quants, Q5_0, Q5_1 and IQ4_XS 8):
  // more of their 24- to 36-byte units would pass the 128 registers a lane
  // has (ptxas spills).
  constexpr bool kK = slab_kquant(T);
  constexpr bool kFixed = kK || slab_wide(T);
  using Kernel = void (*)(const uint8_t*, size_t, int, int, int, int, GemvAct, float*, bool);
  Kernel kernels[4] = {nullptr, nullptr, nullptr, nullptr};
  // The f32 kernel of a K-quant: at most 8 rows a batch (Q2_K's 16 with 32
  // floats of x spilled 8 bytes in the RoPE kernel); Q5_K's and Q8_0's 4
  // (8 of their 36-byte units beside 32 floats of x spilled 4 to 32 bytes).
  constexpr int kRB0 = T == WeightType::Q5_K || T == WeightType::Q8_0 ? 4 : kK && S::kRB > 8 ? 8 : S::kRB;
  if constexpr (!(kK && Pipe))
    kernels[0] = rope ? gemv_slab_kernel<T, Pipe, true, false, kRB0> : gemv_slab_kernel<T, Pipe, false, false, kRB0>;
  int rbs[4] = {kRB0, 8, 16, 16};
  // The int8 kernels with (X) or without coalesced x; X only where Pipe.
  auto i8_kernels = [&](auto x_c) {
    constexpr bool X = decltype(x_c)::value;
    if constexpr (kFixed) {
      kernels[1] = kernels[2] = kernels[3] = rope ? gemv_slab_kernel<T, Pipe, true, true, S::kRB, false, X>
                                                  : gemv_slab_kernel<T, Pipe, false, true, S::kRB, false, X>;
      rbs[1] = rbs[2] = rbs[3] = S::kRB;
    } else {
      kernels[1] = rope ? gemv_slab_kernel<T, Pipe, true, true, 8, false, X>
                        : gemv_slab_kernel<T, Pipe, false, true, 8, false, X>;
      kernels[2] = rope ? gemv_slab_kernel<T, Pipe, true, true, 16, false, X>
                        : gemv_slab_kernel<T, Pipe, false, true, 16, false, X>;
      kernels[3] = rope ? gemv_slab_kernel<T, Pipe, true, true, 16, true, X>
                        : gemv_slab_kernel<T, Pipe, false, true, 16, true, X>;
    }
  };
  // Int8 x between GEMVs (GemvAct::X8): 1 this launch reads it, 2 writes it.
  const int x8 = a.x8_in.q && a.kind == GemvAct::rmsnorm ? 1 : a.x8_out.q && a.kind == GemvAct::plain ? 2 : 0;
  LONGKV_CHECK(x8 == 0 || (T == WeightType::Q4_0 && xc && units <= slice && (x8 == 1 || (rows % 16 == 0 && !rope))),
               "CUDA GEMV: int8 x between GEMVs needs Q4_0's coalesced int8 slab kernel in one slice");
  // gx8's one kernel (CudaTuning::gemv_x8 bit 32): the plain 16-row int8
  // kernel of every such launch, x8 or not, runs gemv_slab_kernel<..., 4>.
  const bool any = T == WeightType::Q4_0 && Pipe && xc && !rope && units <= slice && (cuda_tuning().gemv_x8 & 32);
  const int xi = any ? (cuda_tuning().gemv_x8 & 64 ? 4 : 3) : x8;  // occ's and opted's index
  if constexpr (slab_xc(T)) {
    if constexpr (Pipe) {
      if (xc) {
        i8_kernels(std::true_type{});
        if constexpr (T == WeightType::Q4_0) {
          if (x8 == 1) {
            kernels[1] = rope ? gemv_slab_kernel<T, Pipe, true, true, 8, false, true, 1>
                              : gemv_slab_kernel<T, Pipe, false, true, 8, false, true, 1>;
            kernels[3] = rope ? gemv_slab_kernel<T, Pipe, true, true, 16, true, true, 1>
                              : gemv_slab_kernel<T, Pipe, false, true, 16, true, true, 1>;
            if (cuda_tuning().gemv_x8 & 4)
              kernels[2] = rope ? gemv_slab_kernel<T, Pipe, true, true, 16, false, true, 3>
                                : gemv_slab_kernel<T, Pipe, false, true, 16, false, true, 3>;
            else
              kernels[2] = rope ? gemv_slab_kernel<T, Pipe, true, true, 16, false, true, 1>
                                : gemv_slab_kernel<T, Pipe, false, true, 16, false, true, 1>;
          } else if (x8 == 2) {
            kernels[2] = gemv_slab_kernel<T, Pipe, false, true, 16, false, true, 2>;
            kernels[3] = gemv_slab_kernel<T, Pipe, false, true, 16, true, true, 2>;
          }
          if (any)
            kernels[2] = cuda_tuning().gemv_x8 & 64 ? gemv_slab_kernel<T, Pipe, false, true, 16, false, true, 6>
                                                    : gemv_slab_kernel<T, Pipe, false, true, 16, false, true, 4>;
        }
        static bool opted[5][2] = {};
        if (!opted[xi][rope]) {
          for (int v = 1; v < 4; ++v)
            LONGKV_CUDA_CHECK(
                cudaFuncSetAttribute(kernels[v], cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSlabWarps * 4096));
          opted[xi][rope] = true;
        }
      }
    }
    if (!xc) i8_kernels(std::false_type{});
  } else if constexpr (kK) {
    if (i8) i8_kernels(std::false_type{});
  }
  // Dynamic shared memory of variant v over `warps` warps (coalesced x
  // only; the int8 x reader loads no f32 x).
  auto smem = [&](int v, int warps) { return v > 0 && xc && x8 != 1 ? warps * 4096 : 0; };
  auto resident = [&](int v, int warps) {
    int& o = occ[xi][rope][xc][v][warps];
    if (o == 0)
      LONGKV_CUDA_CHECK(
          cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, kernels[v], warps * 32, smem(v, warps)));
    return std::max(1, o) * sms;
  };
  for (int u0 = 0; u0 < units; u0 += slice) {
    const int nu = std::min(slice, units - u0);
    const int warps = (nu + 31) / 32;
    int v = 0;
    // 16-row batches (fewer blocks, each loading and quantizing x once for
    // more rows) while every SM still gets a block, else 8 (CudaTuning::gemv_rows_per_batch).
    if (i8) v = !kFixed && (rows + 15) / 16 >= sms ? 2 : 1;
    if (i8 && !kFixed && cuda_tuning().gemv_rows_per_batch) v = cuda_tuning().gemv_rows_per_batch == 8 ? 1 : 2;
    // One pass of 16-row batches over 4-warp blocks: the narrow kernel, all
    // of a block's rows requested before its wait (CudaTuning::gemv_prefetch).
    if (v == 2 && warps == 4 && cuda_tuning().gemv_prefetch && (rows + 15) / 16 <= resident(3, 4)) v = 3;
    if (x8 == 2 && v < 2) v = 2;  // the writer's batch is one 16-element unit of x
    if (x8) x8_launch_count[v == 3].fetch_add(1, std::memory_order_relaxed);
    if (any && v == 2) one_kernel_launch_count.fetch_add(1, std::memory_order_relaxed);
    const int batches = (rows + rbs[v] - 1) / rbs[v];
    const int grid = std::max(1, std::min(batches, resident(v, warps)));
    launch_maybe_pdl(pdl, kernels[v], dim3(grid), dim3(warps * 32), smem(v, warps), s, w.data, w.ld,
                     rows, nb, u0, nu, a, y, accumulate || u0 > 0);
    LONGKV_CUDA_LAUNCHED();
  }
  return rope;
}

// The K-quants keep milestone 2's order with f32 activations: with a second
// batch in flight their 32-byte units and 32 floats of x exceed the 128
// registers a lane may use here (ptxas spills). With int8 activations (x in
// 12 registers) they are pipelined too (milestone 61).
template <WeightType T>
bool launch_slab(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  if constexpr (slab_xc(T)) {
    if (cuda_tuning().gemv_pipe) return launch_slab_as<T, true>(w, a, y, accumulate, s);
  } else if constexpr (slab_kquant(T)) {
    if (cuda_tuning().gemv_pipe && cuda_tuning().gemv_i8x) return launch_slab_as<T, true>(w, a, y, accumulate, s);
  }
  return launch_slab_as<T, false>(w, a, y, accumulate, s);
}

// The rows kernel, if it takes this weight (block formats whose activation
// fits in shared memory); false otherwise.
template <WeightType T>
bool launch_rows(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  if constexpr (T == WeightType::F32 || T == WeightType::F16 || T == WeightType::BF16) {
    return false;
  } else {
    static int smem_max = 0;
    if (smem_max == 0) {
      LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&smem_max, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
      smem_max -= 1024;  // the opt-in limit counts the kernel's static shared memory (the reduction) too
      LONGKV_CUDA_CHECK(cudaFuncSetAttribute(gemv_rows_kernel<T, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max));
      LONGKV_CUDA_CHECK(cudaFuncSetAttribute(gemv_rows_kernel<T, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_max));
    }
    const size_t smem = sizeof(float) * static_cast<size_t>(w.cols);
    if (!cuda_tuning().gemv_rows || smem > static_cast<size_t>(smem_max)) return false;
    const int rows = static_cast<int>(w.rows);
    const int nb = static_cast<int>(w.cols / weight_traits_block(T));
    // Wide matrices (the output projection, gate|up) take 4 rows per warp:
    // fewer blocks staging x; small ones 2, for more warps in flight.
    if (rows > 8192) {
      const int grid = (rows + 4 * kRowsWarps - 1) / (4 * kRowsWarps);
      gemv_rows_kernel<T, 4><<<grid, kRowsWarps * 32, smem, s>>>(w.data, w.ld, rows, nb, a, y, accumulate);
    } else {
      const int grid = (rows + 2 * kRowsWarps - 1) / (2 * kRowsWarps);
      gemv_rows_kernel<T, 2><<<grid, kRowsWarps * 32, smem, s>>>(w.data, w.ld, rows, nb, a, y, accumulate);
    }
    LONGKV_CUDA_LAUNCHED();
    return true;
  }
}

// y = W . x (a.kind == plain); returns whether a.rope was applied (the rows
// kernel has no RoPE epilogue).
template <WeightType T>
bool launch_gemv(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s) {
  if (launch_rows<T>(w, a, y, accumulate, s)) return false;
  if constexpr (T == WeightType::F32 || T == WeightType::F16 || T == WeightType::BF16) {
    const int rows = static_cast<int>(w.rows);
    const int grid = (rows + kRows - 1) / kRows;
    const GemvRope rp = accumulate ? GemvRope{} : a.rope;
    gemv_dense_kernel<T><<<grid, kWarps * 32, 0, s>>>(w.data, w.ld, rows, static_cast<int>(w.cols), a.x, y,
                                                        accumulate, rp);
    return rp.inv_freq != nullptr;
  } else {
    return launch_slab<T>(w, a, y, accumulate, s);
  }
}

// The activation made inside the GEMV (rows kernel if on, else slab): false
// for the dense formats, which take the separate kernels. *roped: whether
// a.rope was applied too.
template <WeightType T>
bool launch_fused(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s, bool* roped) {
  if constexpr (T == WeightType::F32 || T == WeightType::F16 || T == WeightType::BF16) {
    return false;
  } else {
    *roped = !launch_rows<T>(w, a, y, accumulate, s) && launch_slab<T>(w, a, y, accumulate, s);
    return true;
  }
}

// Slab units of a row of `cols` (block formats).
template <WeightType T>
int slab_units(int64_t cols) {
  if constexpr (T == WeightType::F32 || T == WeightType::F16 || T == WeightType::BF16) return 0;
  else return static_cast<int>(cols / weight_traits_block(T)) * Slab<T>::kUnitsPerBlock;
}

int grid_for(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 132 * 16));
}

}  // namespace

bool gemv_glu_supported(WeightType t, int64_t cols) {
  if (t == WeightType::F32 || t == WeightType::F16 || t == WeightType::BF16) return false;
  int units = 0;
  LONGKV_DISPATCH_WEIGHT(t, units = slab_units<T>(cols));
  return units <= std::clamp(cuda_tuning().slab_slice / 32 * 32, 32, kMaxSlabWarps * 32);  // one slice
}

bool gemv_x8_supported(const GpuWeight& w, bool producer) {
  const CudaTuning& t = cuda_tuning();
  const int slice = std::clamp(t.slab_slice / 32 * 32, 32, kMaxSlabWarps * 32);
  return w.type == WeightType::Q4_0 && t.gemv_i8x && t.gemv_pipe && t.gemv_x_coalesced && !t.gemv_rows &&
         t.fuse_activation && w.cols % kQK == 0 && w.cols / kQK <= slice && (!producer || w.rows % 16 == 0);
}

void gemv(const GpuWeight& w, const float* x, float* y, bool accumulate, cudaStream_t s) {
  GemvAct a;
  a.x = x;
  LONGKV_DISPATCH_WEIGHT(w.type, launch_gemv<T>(w, a, y, accumulate, s));
  LONGKV_CUDA_LAUNCHED();
}

void gemv_act(const GpuWeight& w, const GemvAct& a_in, float* y, bool accumulate, cudaStream_t s) {
  const GemvRope rp = a_in.rope;
  const bool want_rope = rp.inv_freq != nullptr && rp.heads > 0;
  GemvAct a = a_in;
  // The store rotates interleaved pairs only, and only rows it has whole.
  const bool fusable = want_rope && cuda_tuning().gemv_rope && !rp.neox && !accumulate && rp.head_dim > 0 &&
                       rp.head_dim % 2 == 0 && rp.rope_dim % 2 == 0 && rp.rope_dim <= rp.head_dim &&
                       static_cast<int64_t>(rp.heads) * rp.head_dim <= w.rows;
  if (!fusable) a.rope = GemvRope{};
  bool roped = false, done = false;
  LONGKV_CHECK(!a.glu || (a.kind != GemvAct::swiglu && !want_rope && cuda_tuning().fuse_activation &&
                          !cuda_tuning().gemv_rows && gemv_glu_supported(w.type, w.cols)),
               "CUDA GEMV: SwiGLU in the store needs the slab kernel of a block format");
  if (a.kind == GemvAct::plain) {
    LONGKV_DISPATCH_WEIGHT(w.type, roped = launch_gemv<T>(w, a, y, accumulate, s));
    done = true;
  } else if (cuda_tuning().fuse_activation) {
    LONGKV_DISPATCH_WEIGHT(w.type, done = launch_fused<T>(w, a, y, accumulate, s, &roped));
  }
  if (!done) {
    LONGKV_CHECK(a.scratch != nullptr, "CUDA GEMV: unfused activation needs a scratch buffer");
    if (a.kind == GemvAct::rmsnorm) {
      rmsnorm(a.x, a.norm, 1, static_cast<int>(w.cols), a.eps, a.scratch, s);
    } else {
      LONGKV_CHECK(a.scratch == a.x, "CUDA GEMV: SwiGLU runs in place on the gate");
      swiglu(a.scratch, a.up, static_cast<size_t>(w.cols), s);
    }
    GemvAct p;
    p.x = a.scratch;
    p.rope = a.rope;
    LONGKV_DISPATCH_WEIGHT(w.type, roped = launch_gemv<T>(w, p, y, accumulate, s));
  }
  LONGKV_CUDA_LAUNCHED();
  if (want_rope && !roped) rope(rp.inv_freq, rp.head_dim, rp.rope_dim, rp.neox, y, 1, rp.heads, rp.pos0, s, rp.dpos);
}

void dequantize(const GpuWeight& w, void* dst, bool to_f16, cudaStream_t s) {
  const int grid = grid_for(w.rows * w.cols, 256);
  if (to_f16) {
    LONGKV_DISPATCH_WEIGHT(w.type, (dequantize_kernel<T, __half><<<grid, 256, 0, s>>>(
                                       w.data, w.ld, w.rows, w.cols, static_cast<__half*>(dst))));
  } else {
    LONGKV_DISPATCH_WEIGHT(w.type, (dequantize_kernel<T, float><<<grid, 256, 0, s>>>(
                                       w.data, w.ld, w.rows, w.cols, static_cast<float*>(dst))));
  }
  LONGKV_CUDA_LAUNCHED();
}

void get_rows(const GpuWeight& w, const int32_t* ids, int n, float* dst, cudaStream_t s) {
  if (n == 0) return;
  const dim3 grid(static_cast<unsigned>((w.cols + 255) / 256), static_cast<unsigned>(n));
  LONGKV_DISPATCH_WEIGHT(w.type, (get_rows_kernel<T><<<grid, 256, 0, s>>>(w.data, w.ld, w.cols, ids, dst)));
  LONGKV_CUDA_LAUNCHED();
}

void gemm(cublasHandle_t h, const GpuWeight& w, const float* x, int n, float* y, bool accumulate, CudaGemm g,
          DeviceBuffer& scratch, cudaStream_t s) {
  const bool f16 = g == CudaGemm::f16;
  const size_t esz = f16 ? 2 : 4;
  // Dequantize at most ~64M elements at a time to bound the scratch.
  const int64_t chunk_rows = std::max<int64_t>(1, std::min<int64_t>(w.rows, (int64_t(64) << 20) / w.cols));
  const size_t x_bytes = f16 ? static_cast<size_t>(n) * w.cols * 2 : 0;
  const size_t w_off = (x_bytes + 255) / 256 * 256;
  scratch.reserve(w_off + static_cast<size_t>(chunk_rows) * w.cols * esz);
  LONGKV_CUBLAS_CHECK(cublasSetStream(h, s));
  if (f16) f32_to_f16(x, scratch.as<__half>(), static_cast<size_t>(n) * w.cols, s);
  void* wd = scratch.as<uint8_t>() + w_off;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  for (int64_t r0 = 0; r0 < w.rows; r0 += chunk_rows) {
    GpuWeight part = w;
    part.rows = std::min(chunk_rows, w.rows - r0);
    part.data = w.data + w.ld * static_cast<size_t>(r0);
    dequantize(part, wd, f16, s);
    // Row-major Y[n][rows] = X W^T is column-major Y^T = W X^T with W
    // (row-major [rows][cols]) read transposed.
    const int m = static_cast<int>(part.rows), k = static_cast<int>(w.cols);
    if (f16) {
      LONGKV_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, wd, CUDA_R_16F, k,
                                       scratch.as(), CUDA_R_16F, k, &beta, y + r0, CUDA_R_32F,
                                       static_cast<int>(w.rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    } else {
      LONGKV_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, static_cast<float*>(wd), k, x,
                                      k, &beta, y + r0, static_cast<int>(w.rows)));
    }
  }
}

}  // namespace longkv::cuda

namespace longkv {
int64_t cuda_gemv_x8_launches(bool narrow_only) {
  return cuda::x8_launch_count[1].load() + (narrow_only ? 0 : cuda::x8_launch_count[0].load());
}
int64_t cuda_gemv_one_kernel_launches() { return cuda::one_kernel_launch_count.load(); }
}  // namespace longkv

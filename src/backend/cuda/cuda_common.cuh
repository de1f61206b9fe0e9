// Internal to the CUDA backend: error checks, device buffers, and the
// launchers every .cu file shares. Not included by CPU code.
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "formats/weight_types.h"

namespace longkv::cuda {

// Butterfly reductions over the 32 lanes of a warp (every lane gets the result).
// 2^x with the SFU, results below 2^-126 flushed to 0 (ex2.approx(-inf) =
// +0, which masking relies on): one MUFU, where __expf adds a multiply and a
// range fix-up around it. Softmax weights that small round to 0 in f16 anyway.
__device__ __forceinline__ float exp2_fast(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// A row batch's sums over a block (the slab GEMVs of gemv.cu and the probes
// that time them): each warp's partial sums acc[r] of RB rows, summed over
// its lanes, go to red[r][warp]; after the barrier, row r's total is
// row_total(red[r], the block's warps), summed in warp order.
template <int RB, int NW>
__device__ __forceinline__ void publish_row_partials(float (&acc)[RB], float (&red)[RB][NW], int warp, int lane) {
#pragma unroll
  for (int r = 0; r < RB; ++r) acc[r] = warp_sum(acc[r]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < RB; ++r) red[r][warp] = acc[r];
  }
  __syncthreads();
}
template <int NW>
__device__ __forceinline__ float row_total(const float (&part)[NW], int n_warps) {
  float s = 0;
  for (int k = 0; k < n_warps; ++k) s += part[k];
  return s;
}

// Warps of `kernel` resident on the whole GPU at once with blocks of
// block_threads (occupancy API); callers cache it per kernel.
template <typename K>
int resident_warps(K kernel, int block_threads) {
  int blocks = 0, sms = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, block_threads, 0) != cudaSuccess) blocks = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess) sms = 132;
  cudaGetLastError();
  return (blocks > 0 ? blocks : 1) * (block_threads / 32) * sms;
}

#define LONGKV_CUDA_CHECK(expr)                                                                  \
  do {                                                                                          \
    const cudaError_t err_ = (expr);                                                            \
    if (err_ != cudaSuccess) ::longkv::fail("CUDA: %s: %s", #expr, cudaGetErrorString(err_));   \
  } while (0)

// Warps of `kernel` resident on the whole GPU at once for a kernel with
// `smem` bytes of dynamic shared memory a block (allowed first when, with
// the kernel's static shared memory, above the 48 KiB default: the f16
// decode block's 3 stages at head_dim 64 are exactly 48 KiB of dynamic
// memory, and were refused before milestone 42). carveout >= 0: the kernel
// asks for that percentage of the SM's unified L1/shared memory as shared
// memory
// (cudaFuncAttributePreferredSharedMemoryCarveout), and the count is capped
// to the blocks that fit in it -- why: an SM runs every kernel under one
// split of that memory, and a kernel whose blocks need a larger share than
// the one the SM has makes it drain and switch; between each layer's GEMVs
// and an attention kernel that wants 3 blocks of 72 KiB that cost ~9 us a
// layer on H200 (docs/cuda-notes.md, milestone 14).
// A kernel's preferred carveout (cudaSharedmemCarveoutDefault or 0..100),
// set only when it differs from what this process last set for that
// kernel: the batched step asks for it at every layer's launch (milestone
// 56), and the value changes only with CudaTuning.
inline void set_carveout(const void* kernel, int carveout) {
  static std::mutex mu;
  static std::map<const void*, int> set;
  const std::lock_guard<std::mutex> lock(mu);
  const auto it = set.find(kernel);
  if (it != set.end() && it->second == carveout) return;
  LONGKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, carveout));
  set[kernel] = carveout;
}

template <typename K>
int resident_warps_smem(K kernel, int block_threads, size_t smem, int carveout) {
  cudaFuncAttributes fa;
  LONGKV_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  if (smem + fa.sharedSizeBytes > 48 * 1024)
    LONGKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  if (carveout >= 0)
    LONGKV_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, carveout));
  int blocks = 0, sms = 0;
  LONGKV_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, block_threads, smem));
  LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  if (carveout >= 0) {
    int per_sm = 0, reserved = 0;
    LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0));
    LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&reserved, cudaDevAttrReservedSharedMemoryPerBlock, 0));
    const double per_block = static_cast<double>(smem + fa.sharedSizeBytes + reserved);
    blocks = std::min(blocks, static_cast<int>(per_sm * (carveout / 100.0) / per_block));
  }
  LONGKV_CHECK(blocks > 0, "CUDA: a kernel with %zu bytes of shared memory a block fits on no SM (carveout %d%%)", smem,
               carveout);
  return blocks * (block_threads / 32) * sms;
}

#define LONGKV_CUBLAS_CHECK(expr)                                                 \
  do {                                                                           \
    const cublasStatus_t st_ = (expr);                                           \
    if (st_ != CUBLAS_STATUS_SUCCESS) ::longkv::fail("cuBLAS: %s: status %d", #expr, static_cast<int>(st_)); \
  } while (0)

// After every launch: a bad configuration surfaces here, not three kernels later.
#define LONGKV_CUDA_LAUNCHED() LONGKV_CUDA_CHECK(cudaGetLastError())

// Owning device allocation (cudaMalloc; never managed memory).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { resize(bytes); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) { release(); p_ = o.p_; n_ = o.n_; o.p_ = nullptr; o.n_ = 0; }
    return *this;
  }
  // Grows (contents are not kept); never shrinks.
  void reserve(size_t bytes) {
    if (bytes > n_) resize(bytes);
  }
  void resize(size_t bytes) {
    release();
    if (bytes == 0) return;
    const cudaError_t e = cudaMalloc(&p_, bytes);
    if (e != cudaSuccess) {
      p_ = nullptr;
      // Cleared, since the caller may go on (bench rows past the memory):
      // else the next launch's check would report this failure as its own.
      (void)cudaGetLastError();
      fail("CUDA: cannot allocate %.2f GiB of device memory: %s", bytes / 1073741824.0, cudaGetErrorString(e));
    }
    n_ = bytes;
  }
  void release() {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  template <typename T = void>
  T* as() const { return static_cast<T*>(p_); }
  size_t bytes() const { return n_; }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};

// A weight matrix on the device in its stored format. Rows are `ld` bytes
// apart: row_bytes(type, cols) (Q3_K: + 2 a block) rounded up to 16 so every row starts 16-byte
// aligned for vector loads; the allocation has 64 spare bytes at the end so
// a tile copy may read a little past the last row.
struct GpuWeight {
  WeightType type = WeightType::F32;
  int64_t rows = 0, cols = 0;
  size_t ld = 0;
  const uint8_t* data = nullptr;

  size_t nbytes() const { return ld * static_cast<size_t>(rows); }
};

constexpr size_t kWeightPadBytes = 64;
// Bytes a block takes on the GPU beyond its stored size: Q3_K's 14-byte tail
// is 16 there (weight_decode.cuh, LowBitUnit; milestone 65), every other
// format's row keeps its size.
constexpr int gpu_block_extra(WeightType t) { return t == WeightType::Q3_K ? 2 : 0; }
inline size_t gpu_row_stride(WeightType t, int64_t cols) {
  const size_t extra = gpu_block_extra(t) ? gpu_block_extra(t) * static_cast<size_t>(cols / kQKK) : 0;
  return (row_bytes(t, cols) + extra + 15) / 16 * 16;
}

// Copies a host weight into `buf` with the GPU row stride and returns its view.
GpuWeight upload_weight(const WeightView& w, DeviceBuffer& buf, cudaStream_t s);
// The same into caller-owned device memory (zeroed), rows dst_ld bytes apart
// (0: gpu_row_stride); the view's ld is that stride.
GpuWeight upload_weight_to(const WeightView& w, uint8_t* dst, cudaStream_t s, size_t dst_ld = 0);
// Matrices of one type and width with their rows concatenated in one buffer
// (wq|wk|wv, w_gate|w_up): one GEMV covers them all for a single token;
// parts[i] are views of each (for the GEMM path). Throws unless stackable().
bool stackable(const std::vector<const WeightView*>& ws);
GpuWeight upload_stacked(const std::vector<const WeightView*>& ws, DeviceBuffer& buf, GpuWeight* parts,
                         cudaStream_t s);
// Two matrices of one shape with their rows interleaved (row 2i = a's row i,
// 2i + 1 = b's): w_gate / w_up for the GEMV that applies SwiGLU in its store
// (GemvAct::glu). parts[0], parts[1] view a and b (ld twice the row).
GpuWeight upload_interleaved(const WeightView& a, const WeightView& b, DeviceBuffer& buf, GpuWeight* parts,
                             cudaStream_t s);

// --- weight kernels (gemv.cu) -------------------------------------------
// y[r] (+)= dot(W.row(r), x) for one token (f32 x, f32 y).
void gemv(const GpuWeight& w, const float* x, float* y, bool accumulate, cudaStream_t s);
// The activation a single-token GEMV reads, made as it is loaded: x itself,
// rmsnorm(x) * norm (x: w.cols floats), or silu(x) * up (x = the gate).
// Where the fused kernels do not apply (float weight types,
// CudaTuning::fuse_activation off) the separate kernel
// writes it to `scratch` first (for swiglu scratch must be x: in place).
struct GemvAct {
  enum Kind { plain, rmsnorm, swiglu } kind = plain;
  const float* x = nullptr;
  const float* norm = nullptr;
  float eps = 0;
  const float* up = nullptr;
  float* scratch = nullptr;
  // RoPE on the output: rows [0, heads * head_dim) of y are `heads` heads,
  // rotated to position *dpos (device memory, read when the kernel runs:
  // graph replay) or pos0. Interleaved pairs are rotated in the GEMV's store
  // (CudaTuning::gemv_rope, milestone 8b); NeoX, accumulating GEMVs and
  // kernels without the epilogue get rope() after the GEMV.
  struct Rope {
    const float* inv_freq = nullptr;  // rope_dim / 2 entries; null: no RoPE
    const int* dpos = nullptr;
    int64_t pos0 = 0;
    int heads = 0, head_dim = 0, rope_dim = 0;
    bool neox = false;
  } rope;
  // SwiGLU in the store (milestone 17, CudaTuning::gemv_glu): w's rows come
  // in (gate_i, up_i) pairs (upload_interleaved) and y[i] = silu(gate_i)
  // up_i, rows / 2 outputs -- the values w_down's SwiGLU load would make.
  // Slab GEMV of a block format in one slice only, not accumulating.
  bool glu = false;
  // Int8 x between GEMVs (milestone 36, CudaTuning::gemv_x8; the format:
  // weight_decode.cuh, XI8x16). x8_out (a plain, accumulating Q4_0 GEMV of
  // rows % 16 == 0: wo, down) writes, beside y, its outputs times `norm` (the
  // next RMSNorm's weight) in int8 with a scale per 16, and each 16 outputs'
  // sum of squares; x8_in (an RMSNorm GEMV over the same row: q|k|v,
  // gate|up, the output) reads those instead of x and norm. Both need the
  // pipelined int8 slab kernel with coalesced x in one slice
  // (gemv_x8_supported).
  struct X8 {
    int8_t* q = nullptr;          // [cols] codes
    float* dx = nullptr;          // [cols / 16] scales
    float* ss = nullptr;          // [cols / 16] sums of the outputs' squares (before the norm)
    const float* norm = nullptr;  // x8_out only
  };
  X8 x8_out, x8_in;
};
void gemv_act(const GpuWeight& w, const GemvAct& a, float* y, bool accumulate, cudaStream_t s);
// Whether w's GEMV can write (producer: rows % 16 == 0) or read GemvAct::X8
// under the current tuning (cuda_gemv_x8_launches counts the launches that did).
bool gemv_x8_supported(const GpuWeight& w, bool producer);
// Whether the slab GEMV takes GemvAct::glu for rows of t, cols wide (block
// formats, one column slice).
bool gemv_glu_supported(WeightType t, int64_t cols);
// --- the decode GEMV of a batch of tokens (gemv_batch.cu) -------------------
// Y[t][r] (+)= dot(W.row(r), X[t]) for 1 <= n <= kGemvBatchMax tokens (X
// [n][cols], Y [n][rows]), each weight read once for all of them; int8
// activations as the single-token GEMV's (CudaTuning::gemv_i8x; off: exact
// f32 products), or with CudaTuning::gemv_batch_h16 f16 ones
// (gemv_batch_h16, gemv_batch_h16.cu). scratch holds the converted
// activations; same_x: they are already there, made from this x by the last
// call with the same scratch and column count (w_gate then w_up). Q4_0 only
// (gemv_batch_supported); the model's other formats take gemm().
// X is made from a BatchAct as it is converted (batch_act.cuh, milestone 58):
// x itself, RMSNorm(x) * norm, or SwiGLU of a gate|up GEMV's output (x [n][2
// cols]: (gate_c, up_c) pairs, upload_interleaved's rows, or [gate | up]).
struct BatchAct {
  enum Kind { plain, rmsnorm, swiglu } kind = plain;
  const float* x = nullptr;
  const float* norm = nullptr;  // rmsnorm: cols floats
  float eps = 0;
  bool pairs = false;  // swiglu: interleaved pairs, else halves
  static BatchAct of(const float* x) { return BatchAct{plain, x}; }
};
constexpr int kGemvBatchMax = 32;
bool gemv_batch_supported(const GpuWeight& w);
void gemv_batch(const GpuWeight& w, const BatchAct& x, int n, float* y, bool accumulate, DeviceBuffer& scratch,
                cudaStream_t s, bool same_x = false);
void gemv_batch_h16(const GpuWeight& w, const BatchAct& x, int n, float* y, bool accumulate, DeviceBuffer& scratch,
                    cudaStream_t s, bool same_x);
// Decodes rows into a dense matrix [rows][cols] of f16 (half) or f32.
void dequantize(const GpuWeight& w, void* dst, bool to_f16, cudaStream_t s);
// dst[t][cols] = W.row(ids[t]) as f32 (embedding lookup; ids on the device).
void get_rows(const GpuWeight& w, const int32_t* ids, int n, float* dst, cudaStream_t s);

// --- a row's order of candidates (greedy.cu, top_k.cu) ---------------------
// A logit and its id as one key that orders like candidate_before
// (runtime/sampler.h) and the CPU's argmax: the larger value first, among
// equal values the lower id. NaN orders below every value (and above 0,
// which pads a list).
__device__ __forceinline__ unsigned long long logit_key(float v, int i) {
  unsigned u = __float_as_uint(v);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  if (v != v) u = 0;
  return (static_cast<unsigned long long>(u) << 32) | (0xFFFFFFFFu - static_cast<unsigned>(i));
}
// The logit and id of a key (a NaN's key gives a NaN).
inline void logit_key_decode(unsigned long long key, float* v, int32_t* id) {
  const unsigned u = static_cast<unsigned>(key >> 32);
  const unsigned bits = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
  std::memcpy(v, &bits, sizeof bits);
  *id = static_cast<int32_t>(0xFFFFFFFFu - static_cast<unsigned>(key & 0xFFFFFFFFull));
}

// --- top-k candidates on the device (top_k.cu) ------------------------------
// out[0, k) = the keys of the k first candidates of x[0, n) in logit_key
// order (1 <= k <= min(kMaxDeviceTopK, n)); part holds top_k_scratch_keys(n,
// k) keys. Two launches on s.
size_t top_k_scratch_keys(int n, int k);
void top_k_keys(const float* x, int n, int k, unsigned long long* part, unsigned long long* out, cudaStream_t s);

// --- greedy decoding on the device (greedy.cu) ------------------------------
// The state greedy_next keeps between its blocks; zero before the first
// step, and greedy_next leaves best and done zero again.
struct GreedyState {
  unsigned long long best;  // (value as ordered bits) << 32 | ~index, the largest so far
  unsigned int done;        // blocks finished (the last one decodes)
  unsigned int count;       // ids appended to the ring so far
};
// ids[0] = argmax(logits[0, n)) (lowest index among equal values, as the
// CPU's argmax), *dpos += 1 (when dpos is given), ring[count++ & ring_mask]
// = the same id (ring may be mapped host memory).
void greedy_next(const float* logits, int n, GreedyState* st, int32_t* ids, int* dpos, int32_t* ring, int ring_mask,
                 cudaStream_t s);

// --- elementwise ops (ops.cu) -----------------------------------------------
void rmsnorm(const float* x, const float* weight, int n_rows, int dim, float eps, float* y, cudaStream_t s);
// x [n_tok][n_heads][head_dim], token t at position pos0 + t; with dpos
// (device memory) pos0 = *dpos when the kernel runs (graph replay).
void rope(const float* inv_freq, int head_dim, int rope_dim, bool neox, float* x, int n_tok, int n_heads,
          int64_t pos0, cudaStream_t s, const int* dpos = nullptr);
void swiglu(float* gate, const float* up, size_t n, cudaStream_t s);
void add_bias(float* y, const float* bias, int n_rows, int width, cudaStream_t s);
void f32_to_f16(const float* x, __half* y, size_t n, cudaStream_t s);
// Fills x[n] with normal(0, 1) values from a counter-based hash (as f16).
void fill_random_f16(__half* x, size_t n, uint64_t seed, cudaStream_t s);

// Y[n][rows] = X[n][cols] * W^T (+ Y if accumulate) through dequantized
// weights and cuBLAS; `scratch` grows to hold the dequantized matrix and X.
void gemm(cublasHandle_t h, const GpuWeight& w, const float* x, int n, float* y, bool accumulate, CudaGemm g,
          DeviceBuffer& scratch, cudaStream_t s);

}  // namespace longkv::cuda

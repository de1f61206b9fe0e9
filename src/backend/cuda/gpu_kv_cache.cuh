// The KV-cache contract on the GPU (mirrors kv/kv_cache.h with device
// pointers and a stream): one cache holds one sequence's keys and values for
// one layer in device memory. The model calls append() and attend() per
// layer and never sees the storage, so quantized GPU caches slot in behind
// make_gpu_kv_cache() without touching the model.
#pragma once

#include <memory>
#include <string>

#include "backend/cuda/cuda_common.cuh"
#include "kv/kv_cache.h"
#include "kv/kv_mode.h"

namespace longkv::cuda {

// Scratch shared by the caches of a model (they run one after the other).
struct GpuAttnWorkspace {
  cublasHandle_t cublas = nullptr;
  CudaGemm gemm = CudaGemm::f16;
  DeviceBuffer a, b, c, d, e;
  DeviceBuffer kv;  // quantized caches' prefill: one layer's keys/values dequantized (f16 or f32)
  DeviceBuffer tickets;  // decode_block_dense: one counter per KV head, 0 between launches
  // The share of a wave the fused quantized step's v3 grid takes (1/N;
  // CudaTuning::batch_v3_wave_share in a batched step, 1 otherwise).
  int v3_wave_share = 1;
};

// RoPE that a fused decode step applies to its raw q and k (device data).
struct DecodeRope {
  const float* inv_freq = nullptr;  // rope_dim / 2 entries; null: q and k are used as given
  int rope_dim = 0;
  bool neox = false;
  // ":rot" inside the step (milestone 19, CudaTuning::rot_in_step): nonzero
  // = after RoPE, q, k and v are rotated by the normalized Walsh-Hadamard
  // matrix of one head (this is its factor 1/sqrt(head_dim); hadamard.cuh)
  // and the output is rotated back, so the inner cache of a rotated one
  // runs the step on the raw GEMV outputs.
  float hadamard = 0;
};

class GpuKvCache {
 public:
  virtual ~GpuKvCache() = default;
  // k, v: device f32 [n][n_kv_heads][head_dim], keys after RoPE.
  virtual void append(const float* k, const float* v, int n, cudaStream_t s) = 0;
  // Causal attention of the queries of the last n_q appended tokens (device
  // f32 [n_q][n_heads][head_dim]) over everything held -> out, same shape.
  virtual void attend(const float* q, int n_q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) = 0;
  // Appends n tokens of random keys/values (synthetic long contexts).
  virtual void fill_random(int n, uint64_t seed, cudaStream_t s) = 0;
  virtual KvFootprint footprint() const = 0;
  virtual int size() const = 0;
  virtual void clear() = 0;
  virtual std::string mode() const = 0;
  // Graph replay of single-token steps. set_step_position: from now on
  // single-token append/attend read the position (tokens held before the
  // append) from *dpos in device memory when they run. replay_key: false if
  // the next single-token step's launches depend on host values that change
  // per step (it must run directly); else appends words to *key that are
  // equal for two steps exactly when one captured step can replay as the
  // other. advance(1): the host state of a replayed step. host_state /
  // set_host_state: every host value a step changes, so that a step can be
  // captured ahead (its host side run) and the state put back.
  virtual void set_step_position(const int* dpos) { dpos_ = dpos; }
  virtual bool replay_key(std::vector<uint64_t>* key) const { return false; }
  virtual void advance(int n) { fail("KV mode '%s' cannot replay a step", mode().c_str()); }
  virtual std::vector<int64_t> host_state() const = 0;
  virtual void set_host_state(const std::vector<int64_t>& st) = 0;
  // One single-token step in one go (milestone 11, CudaTuning::attn_block):
  // q [n_heads][head_dim], k, v [n_kv_heads][head_dim] as the q|k|v GEMV
  // left them (before RoPE); rotates q and k to the step's position (*dpos),
  // appends k and v and attends -> out. decode_block_ok: whether this cache
  // can (else the caller rotates, then append() and attend()).
  virtual bool decode_block_ok(const DecodeRope& rope) const { return false; }
  virtual void decode_block(const float* q, const float* k, const float* v, const DecodeRope& rope, float* out,
                            GpuAttnWorkspace& ws, cudaStream_t s) {
    fail("KV mode '%s' has no fused decode step", mode().c_str());
  }
  // A batched step in one launch (milestone 55, decode_block_batch): the
  // quantized cache whose fused step this cache's decode_block runs and the
  // RoPE it takes (":rot" inside the step: its inner cache), or null when
  // its step is not that one.
  virtual GpuKvCache* batch_step_target(DecodeRope* rope) { return nullptr; }
  // Copies the stored code records to the host (quantized caches; tests).
  virtual void dump_codes(CudaKvDump* d) const { fail("KV mode '%s' has no code records", mode().c_str()); }
  const KvShape& shape() const { return shape_; }

 protected:
  explicit GpuKvCache(const KvShape& s) : shape_(s) {}
  KvShape shape_;
  const int* dpos_ = nullptr;
};

// GPU KV modes: "f16" (dense) and the post-RoPE scalar modes k<B>v<B> with
// B in {8, 4, 3, 2, 1}, any G of kv_codec.h, fit=mse and outliers ":o<pct>"
// (kv_quant_gpu.cu), ":rot" around them (kv_rotated_gpu.cu); anchors and
// pre-RoPE keys are CPU-only. Throws Error naming the supported modes.
std::unique_ptr<GpuKvCache> make_gpu_kv_cache(const std::string& mode, const KvShape& s);
// The quantized cache (mode already parsed to kind quant); throws for what it
// cannot hold (pre-RoPE, rotated, anchors, head_dim not 64/128).
std::unique_ptr<GpuKvCache> make_quant_gpu_kv_cache(const KvMode& mode, const KvShape& s);
// ":rot": the quantized cache of `mode` without the rotation, behind a
// Hadamard rotation of keys, values, queries and outputs (kv_rotated_gpu.cu).
std::unique_ptr<GpuKvCache> make_rotated_gpu_kv_cache(const KvMode& mode, const KvShape& s);
// Steady-state device bytes per token of one layer's cache in `mode`.
double gpu_kv_bytes_per_token(const std::string& mode, const KvShape& s);

// --- dense f16 attention kernels (attention.cu) ------------------------------
// Dense layout: K and V each [n_kv_heads][max_tokens][head_dim] f16, so one KV
// head's tokens are contiguous (head stride max_tokens * head_dim elements).
struct DenseKvView {
  const __half* k = nullptr;
  const __half* v = nullptr;
  int n_kv_heads = 0, group = 0, head_dim = 0;
  int max_tokens = 0;  // head stride in tokens
  int n_tokens = 0;    // tokens held (including the queries' own)
  // Decode only. With dev_n (device memory) the kernel reads the token count
  // as *dev_n + dev_add when it runs, so a captured graph replays at later
  // positions; the split count then comes from split_n (>= every count the
  // launch will see) and each split's length from the count on the device.
  const int* dev_n = nullptr;
  int dev_add = 0, split_n = 0;
  // Prefill with the f32 GEMM only: f32 copies [n_kv][n_tokens][head_dim]
  // used instead of converting k and v (a quantized cache dequantizes into
  // them, so no f16 rounding comes between its codes and the products).
  const float* k32 = nullptr;
  const float* v32 = nullptr;

  // Host-count view of n_tokens tokens in slots of max_tokens per KV head.
  static DenseKvView of(const __half* k, const __half* v, int n_kv_heads, int group, int head_dim, int max_tokens,
                        int n_tokens) {
    DenseKvView kv;
    kv.k = k;
    kv.v = v;
    kv.n_kv_heads = n_kv_heads;
    kv.group = group;
    kv.head_dim = head_dim;
    kv.max_tokens = max_tokens;
    kv.n_tokens = n_tokens;
    return kv;
  }
};

// One query row (n_q == 1): split-K flash-decoding with a merge of splits.
void attend_decode_dense(const DenseKvView& kv, const float* q, float* out, GpuAttnWorkspace& ws, cudaStream_t s);
// Splits the decode kernel uses for n_tokens (and tokens per split): one
// wave of the warps the kernel for (head_dim, group) keeps resident.
int decode_splits_for(int n_kv_heads, int n_tokens, int* tps, int head_dim, int group);
// The split kernel alone: decode_splits_for(n_kv_heads, n_tokens) partial
// states (o normalized, m, l) per query head, written at split indices
// split_base.. of part_o [n_heads][stride][D] and part_ml [n_heads][stride][2]
// (quantized caches put their own splits beside them).
// With pdl, launched with programmatic dependent launch: it may run beside
// the kernel before it (which must not write what it reads) and finishes only
// after that one (CudaTuning::decode_pdl).
void attend_decode_dense_parts(const DenseKvView& kv, const float* q, float* part_o, float* part_ml, int split_base,
                               int stride, cudaStream_t s, bool pdl = false);
// out [n_heads][D] = merge of the n_parts states of each query head (parts
// with l = 0 are empty).
// (pdl: launched early, it waits for the split kernels on the device.)
void merge_decode_parts(const float* part_o, const float* part_ml, int n_heads, int n_parts, int D, float* out,
                        cudaStream_t s, bool pdl = false);
// n_q rows at positions n_tokens - n_q ..: with the f16 GEMM (and
// CudaTuning::flash_prefill) through attend_prefill_flash, else S = Q K^T and
// O = P V through cuBLAS with a causal softmax in between (the f32 path).
void attend_prefill_dense(const DenseKvView& kv, const float* q, int n_q, float* out, GpuAttnWorkspace& ws,
                          cudaStream_t s);
// flash_prefill.cu: the same without S in memory, on tensor cores; head_dim 64 / 128.
void attend_prefill_flash(const DenseKvView& kv, const float* q, int n_q, float* out, cudaStream_t s);
// Writes n tokens of f32 k/v [n][n_kv_heads][head_dim] at token `pos`
// (*dpos when the kernel runs, if dpos is given).
void append_dense(__half* k_cache, __half* v_cache, int n_kv_heads, int head_dim, int max_tokens, int pos,
                  const float* k, const float* v, int n, cudaStream_t s, const int* dpos = nullptr);
// --- fused decode step (attention_block.cu, milestone 11) --------------------
// Whether decode_block_dense takes this shape and RoPE: <= 8 query heads per
// KV head, head_dim 64 / 128, interleaved RoPE (any even rope_dim) or NeoX
// over the whole head, or none.
bool decode_block_supported(int group, int head_dim, const DecodeRope& rope);
// The kernel's per-KV-head counters, zeroed; allocates (synchronously) only
// when short, so call it once outside graph capture (model construction).
void decode_block_reserve(GpuAttnWorkspace& ws, int n_kv_heads);
// One launch: q, k rotated to position p = *kv.dev_n (device memory, read
// when the kernel runs), k and v rounded to f16 into slot p + kv.dev_add - 1
// of k_cache / v_cache (the view's storage; dev_add <= 1: a quantized cache's
// fp16 part holds the tokens after its groups), and attention of q over
// slots [0, p + dev_add) -> out [n_heads][head_dim]. Splits sized from
// kv.split_n (>= p + dev_add for every replay). q, k, v as in
// GpuKvCache::decode_block.
// ext_parts > 0 (milestone 15): the first of the quantized cache's two
// launches; the v3 kernel behind it (QuantDecodeArgs::fuse) writes ext_parts
// block partials per query head at the start of ws.a / ws.b ([n_heads]
// [ext_parts + 1][D], [..][2]) and merges them with the one this launch
// writes last (one block per KV head; out is then written by that kernel).
void decode_block_dense(__half* k_cache, __half* v_cache, const DenseKvView& kv, const float* q, const float* k,
                        const float* v, const DecodeRope& rope, float* out, GpuAttnWorkspace& ws, cudaStream_t s,
                        int ext_parts = 0);
// A batched step's fused quantized decode in two launches instead of two a
// sequence (milestone 55, CudaTuning::batch_one_launch): sequence i's q, k, v
// (as decode_block takes them) at q + i q_stride, k and v + i kv_stride, its
// output at out + i out_stride, its partials and tickets in ws[i]; v3's
// split groups_per_warp groups a warp, or with blocks_per_head > 0 that many
// blocks a KV head (milestone 56; either way at least 4 groups a warp, more
// only past 255 blocks a KV head), a rule of each sequence's length alone,
// so a sequence's bits do not depend on the batch. false, with no launch and
// no state changed: some cache's step is not a quantized one-launch step the
// batched kernels take (the caller goes sequence by sequence).
bool decode_block_batch(GpuKvCache* const* caches, int n, const float* q, const float* k, const float* v,
                        int q_stride, int kv_stride, const DecodeRope& rope, float* out, size_t out_stride,
                        GpuAttnWorkspace* ws, int groups_per_warp, int blocks_per_head, cudaStream_t s);
// Split count for a decode launch that may replay at later token counts:
// n rounded up to a bucket (multiples of max(256, 2^floor(log2 n) / 8)).
int decode_split_bucket(int n);

}  // namespace longkv::cuda

// Internal to the quantized GPU KV cache: the geometry its kernels share and
// the decode launcher (kv_quant_decode.cu) that kv_quant_gpu.cu calls.
#pragma once

#include "backend/cuda/gpu_kv_cache.cuh"
#include "kv/kv_codec.h"

namespace longkv::cuda {

constexpr int kQuantGroup = kKvCodeBlock;  // group size of the fast kernels (32 = lanes of a warp)
constexpr int kQuantWarps = 4;             // warps per block of the decode kernels

// A record's stride in the GPU's code buffers: kv_group_layout's bytes
// rounded up to 16. Records without outliers are whole 16-byte units
// already; outlier entries (4 bytes each) can end one 4, 8 or 12 bytes
// short, and the v3 kernel copies records in 16-byte chunks.
constexpr size_t gpu_record_stride(size_t bytes) { return (bytes + 15) / 16 * 16; }

// One layer's code records and fp16 part, sizes in bytes (kv_group_layout).
struct QuantGeom {
  int n_kv = 0, D = 0, kbits = 0, vbits = 0;
  int G = kQuantGroup;  // tokens per group (a multiple of 32 dividing D)
  int max_groups = 0, sink_cap = 0, exact_cap = 0;
  // krec, vrec: a record's stride in the code buffers (gpu_record_stride).
  size_t krec = 0, vrec = 0, kscale = 0, kzero = 0, vscale = 0, vzero = 0;
  bool sym = false;
  bool mse = false;   // fit=mse ranges (kv_quant_fit.cuh)
  int outliers = 0;   // n_o entries a key and a value record (":o<pct>"; 0: none)
  size_t koff = 0, voff = 0;  // their offsets in a key / value record
};

// One launch of the quantized split kernel: warps (KV head, split) over
// n_splits splits of gps groups each, partial states (o, m, l) at split
// indices 0.. of part_o [n_heads][stride][D] / part_ml [n_heads][stride][2].
struct QuantDecodeArgs {
  bool mma = true;  // tensor-core kernel (false: the FMA kernel)
  bool pdl = false;  // v3 only: launched with PDL (waits for the kernel before it on the device)
  dim3 grid;
  const uint8_t* kc = nullptr;
  const uint8_t* vc = nullptr;
  QuantGeom geo;
  int group_q = 1, n_groups = 0, gps = 0, n_splits = 0;
  const float* q = nullptr;
  float scale = 1;
  float* part_o = nullptr;
  float* part_ml = nullptr;
  int stride = 0;
  // Milestone 15, v3 only: the quantized step's attention in two launches
  // (decode_block_dense with ext_parts, then this kernel behind it). q is
  // read before RoPE and rotated here to *dpos (rope.inv_freq null: as
  // given); the 4 warps of a block -- consecutive splits of one KV head:
  // n_splits is a multiple of 4 and the grid exactly n_kv * n_splits / 4
  // blocks -- meet in shared memory: one partial (m, l, unnormalized o) per
  // block and query head at index split / 4 of [n_heads][stride][D], stride
  // = n_splits / 4 + 1 (the decode block's partial last); the block that
  // finishes a KV head last (tickets) merges them into out.
  bool fuse = false;
  const int* dpos = nullptr;
  DecodeRope rope;
  int* tickets = nullptr;  // [n_kv], 0 between launches (GpuAttnWorkspace::tickets)
  float* out = nullptr;
};
// Launches it, or with `warps` set only reports how many of the kernel's
// warps stay resident on the GPU (cached per kernel).
void launch_quant_decode(const QuantDecodeArgs& a, cudaStream_t s, int* warps);
// The same with milestone 9's kernel (kv_quant_decode_v3.cu; tensor cores).
void launch_quant_decode_v3(const QuantDecodeArgs& a, cudaStream_t s, int* warps);
// Whether the v3 kernel takes this cache (G = 32 with 8/4/2-bit codes, <= 8
// query heads per KV head, head_dim 64 / 128; records with outliers only as
// milestone 67's one-launch step takes them, kv_quant_decode_v3.cu).
bool quant_decode_v3_takes(const QuantGeom& g, int group_q);
// A batched step's v3 launches in one (milestone 55): a[i] each a launch
// launch_quant_decode_v3 would take (fuse on, one geometry), sequence i of
// the launch; n <= kMaxBatchSeqs. _takes: whether the batched kernel exists
// for this geometry under the current tuning (the default one-launch forms).
bool quant_decode_v3_batch_takes(const QuantGeom& g, int group_q);
void launch_quant_decode_v3_batch(const QuantDecodeArgs* a, int n, cudaStream_t s);
// Whether the tensor-core kernels take this geometry (G = 32; 8-, 4- or
// 2-bit keys and values). Every other format of kv_codec.h (3 and 1 bits,
// G = 64 or 128) goes to the format-generic FMA kernel (kv_quant_decode_any.cu).
inline bool quant_decode_mma_geometry(const QuantGeom& g) {
  auto ok = [](int b) { return b == 8 || b == 4 || b == 2; };
  return g.G == kQuantGroup && ok(g.kbits) && ok(g.vbits);
}
inline bool quant_decode_fast(const QuantGeom& g) { return quant_decode_mma_geometry(g) && g.outliers == 0; }
// Records of that geometry with outliers: milestone 4's tensor-core kernel
// adds them (kv_quant_decode.cu, kOut; milestone 66), and in the one-launch
// step v3 does where quant_decode_v3_takes says so (milestone 67).
inline bool quant_decode_mma_outliers(const QuantGeom& g) { return quant_decode_mma_geometry(g) && g.outliers > 0; }
void launch_quant_decode_any(const QuantDecodeArgs& a, cudaStream_t s, int* warps);

// Code of element (packed, col) of a record's codes as kv_codec.cpp's
// rec_get reads it: plane words [rows][cols] of pb-bit fields, b = 3 as the
// 2-bit plane then the 1-bit plane (elems / 4 bytes in). Keys: packed =
// channel, col = token, cols = G; values: packed = token, col = channel,
// cols = D. For the generic (not the fast) paths.
__device__ __forceinline__ uint32_t quant_plane_field(const uint8_t* plane, int pb, int cols, int packed, int col) {
  const int n = 32 / pb;
  const uint32_t w = reinterpret_cast<const uint32_t*>(plane)[static_cast<size_t>(packed / n) * cols + col];
  return (w >> (pb * (packed % n))) & ((1u << pb) - 1);
}
__device__ __forceinline__ uint32_t quant_rec_code(const uint8_t* rec, int bits, int elems, int cols, int packed,
                                                   int col) {
  if (bits != 3) return quant_plane_field(rec, bits, cols, packed, col);
  return quant_plane_field(rec, 2, cols, packed, col) | quant_plane_field(rec + elems / 4, 1, cols, packed, col) << 2;
}

// An outlier entry's delta (kv_codec.h: c | t << 8 | f16(delta) << 16).
__device__ __forceinline__ float outlier_delta(uint32_t e) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(e >> 16)));
}
// Entry j of a record's outliers at byte `off`, or an empty one (t = c = 0,
// delta 0) past the n_o.
struct GpuOutlier {
  int t, c;
  float delta;
  bool valid;
};
__device__ __forceinline__ GpuOutlier gpu_outlier(const uint8_t* rec, size_t off, int j, int n_o) {
  const bool valid = j < n_o;
  const uint32_t e = valid ? __ldg(reinterpret_cast<const uint32_t*>(rec + off) + j) : 0u;
  return {static_cast<int>((e >> 8) & 0xff), static_cast<int>(e & 0xff),
          outlier_delta(e), valid};
}

// One read of 32 outlier entries, lane = entry, w[GP] its terms: the
// lanes that share `key` (a token or a channel) are summed in lane order,
// i.e. entry order, by the lowest of them, which returns true with the sum
// in sum[]; the others return false. So the caller's leaders add to
// distinct slots, and the sums do not depend on timing. Every lane of the
// warp calls it (the shuffles need the key's members).
template <int GP>
__device__ __forceinline__ bool outlier_lead_sum(const float (&w)[GP], int key, float (&sum)[GP]) {
  const unsigned same = __match_any_sync(0xffffffffu, key);
  const bool lead = static_cast<int>(threadIdx.x % 32) == __ffs(same) - 1;
#pragma unroll
  for (int h = 0; h < GP; ++h) sum[h] = w[h];
  for (unsigned mm = same & (same - 1); mm; mm &= mm - 1) {  // every member runs it: the shuffles need them
    const int src = __ffs(mm) - 1;
#pragma unroll
    for (int h = 0; h < GP; ++h) {
      const float x = __shfl_sync(same, w[h], src);
      if (lead) sum[h] += x;
    }
  }
  return lead;
}

}  // namespace longkv::cuda

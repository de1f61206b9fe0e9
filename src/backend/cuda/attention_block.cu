// The dense f16 cache's one-launch decode step (milestone 11): the host
// side -- split sizing, the workspace, the launch -- and the kernel's
// register-path instances (S = 0). The kernel, its design and the other
// instances: attention_block_kernel.cuh.
#include <algorithm>

#include "backend/cuda/attention_block_kernel.cuh"

namespace longkv::cuda {

namespace attn_block {
template void launch_block_staged<64, 0, false>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<128, 0, false>(const DecodeBlockArgs&, int, cudaStream_t, int*);
}  // namespace attn_block

using namespace attn_block;

namespace {

template <int D>
void launch_block(const DecodeBlockArgs& a, int group, int stages, cudaStream_t s, int* warps) {
  const bool mma = cuda_tuning().attn_block_mma;  // with stages only (0: the register path)
  switch (stages) {
    case 0: launch_block_staged<D, 0, false>(a, group, s, warps); break;
    case 2:
      if (mma) launch_block_staged<D, 2, true>(a, group, s, warps);
      else launch_block_staged<D, 2, false>(a, group, s, warps);
      break;
    case 3:
      if (mma) launch_block_staged<D, 3, true>(a, group, s, warps);
      else launch_block_staged<D, 3, false>(a, group, s, warps);
      break;
    case 4:  // tensor cores only (the FMA step's 4 stages would leave one block of 4 warps an SM)
      LONGKV_CHECK(mma, "CUDA decode block: 4 stages need the tensor-core step (attn_block_mma)");
      launch_block_staged<D, 4, true>(a, group, s, warps);
      break;
    default: fail("CUDA decode block: stages must be 0, 2, 3 or 4 (got %d)", stages);
  }
}

}  // namespace

bool decode_block_supported(int group, int head_dim, const DecodeRope& r) {
  if (group < 1 || group > 8 || (head_dim != 64 && head_dim != 128)) return false;
  if (!r.inv_freq) return true;
  return r.neox ? r.rope_dim == head_dim : r.rope_dim % 2 == 0 && r.rope_dim > 0 && r.rope_dim <= head_dim;
}

void decode_block_reserve(GpuAttnWorkspace& ws, int n_kv_heads) {
  const size_t bytes = sizeof(int) * std::max(1, n_kv_heads);
  if (ws.tickets.bytes() >= bytes) return;
  ws.tickets.resize(bytes);
  LONGKV_CUDA_CHECK(cudaMemset(ws.tickets.as(), 0, bytes));
}

namespace {

// The launch arguments both uses share; n_splits and ext are the caller's.
DecodeBlockArgs block_args(__half* k_cache, __half* v_cache, const DenseKvView& kv, const float* q, const float* k,
                           const float* v, const DecodeRope& rope, float* out, GpuAttnWorkspace& ws) {
  DecodeBlockArgs a;
  a.kc = k_cache;
  a.vc = v_cache;
  a.n_kv = kv.n_kv_heads;
  a.max_tokens = kv.max_tokens;
  a.dpos = kv.dev_n;
  a.tok_add = kv.dev_add - 1;
  a.q = q;
  a.k = k;
  a.v = v;
  a.rope = rope;
  a.scale = 1.0f / sqrtf(static_cast<float>(kv.head_dim));
  a.part_o = ws.a.as<float>();
  a.part_ml = ws.b.as<float>();
  a.tickets = ws.tickets.as<int>();
  a.out = out;
  return a;
}

}  // namespace

DecodeBlockArgs decode_block_ext_args(__half* k_cache, __half* v_cache, const DenseKvView& kv, const float* q,
                                      const float* k, const float* v, const DecodeRope& rope, float* out,
                                      GpuAttnWorkspace& ws, int ext_parts) {
  const int D = kv.head_dim, g = kv.group, n_kv = kv.n_kv_heads;
  LONGKV_CHECK(kv.dev_n && kv.dev_add <= 1 && decode_block_supported(g, D, rope) && ext_parts > 0 &&
                   ext_parts < kMaxBlocksPerHead,
               "CUDA decode block: needs the position in device memory, <= 8 query heads per KV head, head_dim "
               "64/128 and interleaved RoPE (or NeoX over the whole head)");
  // The fp16 part of a quantized cache (milestone 15) is short (sinks +
  // window, <= 163 tokens at r128:s4): one block per KV head, tiles in
  // registers (no dynamic shared memory, so no shared-memory split of its
  // own to ask the SMs for beside the v3 kernel's).
  LONGKV_CHECK(ws.a.bytes() >= sizeof(float) * n_kv * g * (ext_parts + 1) * D &&
                   ws.b.bytes() >= sizeof(float) * n_kv * g * (ext_parts + 1) * 2,
               "CUDA decode block: the quantized kernel's partials are not in the workspace");
  DecodeBlockArgs a = block_args(k_cache, v_cache, kv, q, k, v, rope, out, ws);
  a.ext = ext_parts;
  a.n_splits = kBlkWarps;
  return a;
}

namespace {
void launch_block_batch(void (*kern)(DecodeBlockBatch), dim3 grid, dim3 block, int carveout, cudaStream_t s,
                        const DecodeBlockBatch& b) {
  set_carveout(reinterpret_cast<const void*>(kern), carveout);
  launch_maybe_pdl(cuda_tuning().decode_pdl, kern, grid, block, 0, s, b);
}
}  // namespace

void launch_decode_block_batch(const DecodeBlockArgs* a, int n, int group, int head_dim, cudaStream_t s) {
  LONGKV_CHECK(n >= 1 && n <= kMaxBatchSeqs && group >= 1 && group <= 8 && (head_dim == 64 || head_dim == 128),
               "CUDA decode block: a batch of %d steps (1..%d), %d heads per KV head, head_dim %d", n,
               kMaxBatchSeqs, group, head_dim);
  DecodeBlockBatch b;
  unsigned cols = 0;
  for (int i = 0; i < n; ++i) {
    LONGKV_CHECK(a[i].ext > 0 && a[i].n_splits == kBlkWarps, "CUDA decode block: a batch takes quantized steps' "
                 "fp16 parts only");
    b.s[i] = a[i];
    cols = std::max(cols, static_cast<unsigned>(a[i].n_kv));
  }
  const dim3 grid(cols, n), block(kBlkWarps * 32);
  // CudaTuning::batch_carveout: the carveout v3's batched kernel asks for too.
  const int carve = cuda_tuning().batch_carveout ? 100 : cudaSharedmemCarveoutDefault;
#define LONGKV_BATCH_G(G_)                                                                                    \
  case G_:                                                                                                   \
    if (head_dim == 64) launch_block_batch(decode_block_batch_kernel<64, G_>, grid, block, carve, s, b);      \
    else launch_block_batch(decode_block_batch_kernel<128, G_>, grid, block, carve, s, b);                     \
    break;
  switch (group) {
    LONGKV_BATCH_G(1) LONGKV_BATCH_G(2) LONGKV_BATCH_G(3) LONGKV_BATCH_G(4)
    LONGKV_BATCH_G(5) LONGKV_BATCH_G(6) LONGKV_BATCH_G(7) LONGKV_BATCH_G(8)
  }
#undef LONGKV_BATCH_G
  LONGKV_CUDA_LAUNCHED();
}

void decode_block_dense(__half* k_cache, __half* v_cache, const DenseKvView& kv, const float* q, const float* k,
                        const float* v, const DecodeRope& rope, float* out, GpuAttnWorkspace& ws, cudaStream_t s,
                        int ext_parts) {
  const int D = kv.head_dim, g = kv.group, n_kv = kv.n_kv_heads;
  LONGKV_CHECK(kv.dev_n && kv.dev_add <= 1 && decode_block_supported(g, D, rope) && ext_parts >= 0 &&
                   ext_parts < kMaxBlocksPerHead,
               "CUDA decode block: needs the position in device memory, <= 8 query heads per KV head, head_dim "
               "64/128 and interleaved RoPE (or NeoX over the whole head)");
  if (ext_parts > 0) {
    const DecodeBlockArgs a = decode_block_ext_args(k_cache, v_cache, kv, q, k, v, rope, out, ws, ext_parts);
    if (D == 64) launch_block_staged<64, 0, false>(a, g, s, nullptr);
    else launch_block_staged<128, 0, false>(a, g, s, nullptr);
    LONGKV_CUDA_LAUNCHED();
    return;
  }
  // Splits as the split kernel sizes them (one wave of this kernel's warps
  // over the KV heads, >= 16 tokens each), in whole blocks: the target per
  // KV head is rounded down to whole blocks, so the grid never passes one
  // wave (3 blocks an SM had made 400 blocks for 396 slots, milestone 14).
  const int n = std::max(1, kv.split_n);
  const int stages = attn_block_stages_for(n);
  int warps = 132 * 16;
  if (D == 64) launch_block<64>(DecodeBlockArgs{}, g, stages, s, &warps);
  else launch_block<128>(DecodeBlockArgs{}, g, stages, s, &warps);
  const int target = std::max(kBlkWarps, warps / std::max(1, n_kv) / kBlkWarps * kBlkWarps);
  int tps = (n + target - 1) / target;
  tps = std::max(kMinSplitTokens, (tps + 15) / 16 * 16);
  const int splits = (n + tps - 1) / tps;
  const int nb = std::min(kMaxBlocksPerHead, (splits + kBlkWarps - 1) / kBlkWarps);
  const size_t n_heads = static_cast<size_t>(n_kv) * g;
  ws.a.reserve(n_heads * nb * D * sizeof(float));
  ws.b.reserve(n_heads * nb * 2 * sizeof(float));
  decode_block_reserve(ws, n_kv);
  DecodeBlockArgs a = block_args(k_cache, v_cache, kv, q, k, v, rope, out, ws);  // after the reservations
  a.n_splits = nb * kBlkWarps;
  if (D == 64) launch_block<64>(a, g, stages, s, nullptr);
  else launch_block<128>(a, g, stages, s, nullptr);
  LONGKV_CUDA_LAUNCHED();
}

}  // namespace longkv::cuda

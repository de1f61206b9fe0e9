// Causal prefill attention over the dense f16 KV layout without materializing
// S = Q K^T: a FlashAttention-2 style kernel on tensor cores (mma.sync
// m16n8k16, f16 operands, f32 accumulation) with the softmax done online in
// registers. The cuBLAS path in attention.cu (S in f32, softmax kernel, P V)
// stays as the f32 path and as the comparison for this one.
//
// Work split. For one KV head the g query heads of its group are packed into
// the M dimension (row m = r * g + j: query r, head j of the group), so one
// K/V tile in shared memory serves all of them. A block owns kBM = 128 packed
// rows of one KV head (8 warps x 16 rows) and walks the key tiles 0 .. the
// last one its rows can see; only tiles that cross some row's causal limit
// are masked. 128 rather than 64 rows per block: every block reads all keys
// it sees from L2, ~17 MB per KV head at 32K, so at 64 rows pp512 over 32K
// would pull ~4 GB per layer through L2, near its bandwidth at the target
// rate. (225 registers at D = 128: one block, 8 warps, per SM.) K/V tiles (kBN = 64 tokens) come through cp.async into a
// 2-stage ring, rows swizzled in 16-byte chunks so ldmatrix reads are free of
// bank conflicts.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cuda/flash_prefill.h"
#include "backend/cuda/gpu_kv_cache.cuh"
#include "backend/cuda/kv_quant_mma.cuh"

namespace longkv::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kBM = 16 * kWarps;  // packed query rows per block (16 per warp: one mma M tile)
constexpr int kBN = 64;           // keys per tile

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Fragment layouts (PTX ISA, mma.m16n8k16 f16): gid = lane / 4, tig = lane % 4.
//   A (16x16): reg0 (row gid, cols 2tig..+1), reg1 (row gid+8, same cols),
//              reg2 (row gid, cols 2tig+8..+9), reg3 (row gid+8, cols 2tig+8..+9);
//   B (16x8):  reg0 (k 2tig..+1, col gid), reg1 (k 2tig+8..+9, col gid);
//   C (16x8):  c0,c1 (row gid, cols 2tig..+1), c2,c3 (row gid+8, same cols).
// The C layout of two adjacent 8-key score tiles is the A layout of a 16-key
// P tile, so P goes from the S accumulators to the P V product in registers.
template <int D>
__global__ void __launch_bounds__(kWarps * 32, 1)
    flash_prefill_kernel(const __half* __restrict__ kc, const __half* __restrict__ vc, int max_tokens, int N,
                         int n_q, int g, int n_heads, const float* __restrict__ q, float qscale,
                         float* __restrict__ out) {
  constexpr int kChunks = D / 8;                        // 16-byte chunks per K/V row
  constexpr int kTile = kBN * D;                        // halves per K (or V) tile
  constexpr int kLoads = kBN * kChunks / (kWarps * 32);  // chunks per thread per tile
  static_assert(kBN * kChunks % (kWarps * 32) == 0, "tile chunks must split evenly over the block");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __half* smem = reinterpret_cast<__half*>(smem_raw);  // [stage][K tile | V tile]

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gid = lane / 4, tig = lane % 4;
  const int hk = blockIdx.y, M = n_q * g, p0 = N - n_q;
  // The last row tiles see the most keys: give them the lowest block ids so
  // they start first and the short ones fill in behind them.
  const int m_base = (gridDim.x - 1 - blockIdx.x) * kBM;
  const int n_end = p0 + min(n_q - 1, (m_base + kBM - 1) / g) + 1;  // keys any row of the block sees
  const int n_tiles = (n_end + kBN - 1) / kBN;
  // First tile whose last key lies past the smallest causal limit of the block.
  const int diag_from = (p0 + m_base / g + 1) / kBN;

  const __half* kh = kc + static_cast<size_t>(hk) * max_tokens * D;
  const __half* vh = vc + static_cast<size_t>(hk) * max_tokens * D;
  // Thread tid copies chunk tid % kChunks of rows tid / kChunks + i * kRowStep:
  // the same chunk and row % 8 for every i, so each copy is a fixed offset
  // from one source and one destination address.
  constexpr int kRowStep = kWarps * 32 / kChunks;
  const int ld_row = tid / kChunks, ld_c = tid % kChunks;
  const int ld_dst = 2 * swz<D>(ld_row, ld_c);  // bytes
  auto load_tile = [&](int t, int stage) {
    const uint32_t ks = smem_u32(smem + stage * 2 * kTile) + ld_dst, vs = ks + 2 * kTile;
    const size_t src = static_cast<size_t>(t * kBN + ld_row) * D + ld_c * 8;
    if ((t + 1) * kBN <= N) {
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        cp_async16_zfill(ks + 2 * i * kRowStep * D, kh + src + i * kRowStep * D, true);
        cp_async16_zfill(vs + 2 * i * kRowStep * D, vh + src + i * kRowStep * D, true);
      }
    } else {  // the last tile: rows past N are zero-filled, not read
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const bool ok = t * kBN + ld_row + i * kRowStep < N;
        cp_async16_zfill(ks + 2 * i * kRowStep * D, ok ? kh + src + i * kRowStep * D : kh, ok);
        cp_async16_zfill(vs + 2 * i * kRowStep * D, ok ? vh + src + i * kRowStep * D : vh, ok);
      }
    }
  };
  load_tile(0, 0);
  cp_async_commit();

  // This thread's two rows (gid and gid + 8 of the warp's 16); rows past M
  // (the last block's padding) get zero queries and are not stored.
  const int row_a = m_base + warp * 16 + gid, row_b = row_a + 8;
  const int lim_a = p0 + min(row_a / g, n_q - 1), lim_b = p0 + min(row_b / g, n_q - 1);  // last key seen
  auto q_row = [&](int row) -> const float* {
    if (row >= M) return nullptr;
    return q + (static_cast<size_t>(row / g) * n_heads + hk * g + row % g) * D;
  };
  const float* qa = q_row(row_a);
  const float* qb = q_row(row_b);
  auto q_pair = [&](const float* qr, int col) -> uint32_t {
    if (!qr) return 0;
    const float2 v = __ldg(reinterpret_cast<const float2*>(qr + col));
    return pack_half2(v.x * qscale, v.y * qscale);
  };
  // Q as A fragments for the D/16 k-steps, pre-scaled by log2(e)/sqrt(D) so
  // the softmax works in base 2 straight from the accumulators.
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qf[kk][0] = q_pair(qa, 16 * kk + 2 * tig);
    qf[kk][1] = q_pair(qb, 16 * kk + 2 * tig);
    qf[kk][2] = q_pair(qa, 16 * kk + 2 * tig + 8);
    qf[kk][3] = q_pair(qb, 16 * kk + 2 * tig + 8);
  }

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY, l_a = 0.0f, l_b = 0.0f;  // l: this thread's columns only

  // Per-lane parts of the ldmatrix addresses, as byte offsets into a tile
  // such that every (tile row block, chunk block) adds only an immediate. K
  // (the scores' B operand, not transposed): lanes 8i..8i+7 give tokens
  // 8nt + 0..7 of chunk 4kp + i; with kp = 2a + e the swizzled chunk is
  // 8a + ((4e + i) ^ row % 8), so two bases (e = 0, 1) cover all kp.
  // V (P V's B operand, transposed): lanes 8i..8i+7 give tokens
  // 16kk + 8(i % 2) + 0..7 of chunk 2dp + i / 2; with dp = 4a + e the chunk is
  // 8a + ((2e + i / 2) ^ row % 8): four bases.
  const int r8 = lane & 7;
  uint32_t k_off[2], v_off[4];
#pragma unroll
  for (int e = 0; e < 2; ++e) k_off[e] = 2 * (r8 * D + (((4 * e + (lane >> 3)) ^ r8) << 3));
#pragma unroll
  for (int e = 0; e < 4; ++e) v_off[e] = 2 * ((r8 + ((lane >> 3) & 1) * 8) * D + (((2 * e + (lane >> 4)) ^ r8) << 3));

  for (int t = 0; t < n_tiles; ++t) {
    const int stage = t & 1;
    if (t + 1 < n_tiles) load_tile(t + 1, stage ^ 1);
    cp_async_commit();  // possibly empty: keeps "all but the newest group" = tile t
    cp_async_wait<1>();
    __syncthreads();
    const uint32_t ks = smem_u32(smem + stage * 2 * kTile);
    const uint32_t vs = ks + kTile * 2;

    float s[kBN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kp = 0; kp < D / 32; ++kp) {
        uint32_t b[4];
        ldsm_x4(ks + k_off[kp % 2] + 2 * (nt * 8 * D + (kp / 2) * 64), b);
        mma_16816(s[nt], qf[2 * kp], make_uint2(b[0], b[1]));
        mma_16816(s[nt], qf[2 * kp + 1], make_uint2(b[2], b[3]));
      }
    }
    if (t >= diag_from) {
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt) {
        const int key = t * kBN + nt * 8 + 2 * tig;
        if (key > lim_a) s[nt][0] = -INFINITY;
        if (key + 1 > lim_a) s[nt][1] = -INFINITY;
        if (key > lim_b) s[nt][2] = -INFINITY;
        if (key + 1 > lim_b) s[nt][3] = -INFINITY;
      }
    }

    // Online softmax: the row max over the 4 lanes of a quad (they hold the
    // row's 64 keys between them), rescale what is held, then P = 2^(s - m).
    float mx_a = m_a, mx_b = m_b;
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) {
      mx_a = fmaxf(mx_a, fmaxf(s[nt][0], s[nt][1]));
      mx_b = fmaxf(mx_b, fmaxf(s[nt][2], s[nt][3]));
    }
#pragma unroll
    for (int o_ = 1; o_ <= 2; o_ <<= 1) {
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, o_));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, o_));
    }
    // Every row sees key 0, so the max is finite from the first tile on; the
    // guard only keeps a fully masked row from turning into NaN.
    const float base_a = mx_a == -INFINITY ? 0.0f : mx_a, base_b = mx_b == -INFINITY ? 0.0f : mx_b;
    const float corr_a = exp2_fast(m_a - base_a), corr_b = exp2_fast(m_b - base_b);
    m_a = mx_a;
    m_b = mx_b;
    l_a *= corr_a;
    l_b *= corr_b;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[i][0] *= corr_a;
      o[i][1] *= corr_a;
      o[i][2] *= corr_b;
      o[i][3] *= corr_b;
    }
    uint32_t p[kBN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float* sv = s[2 * kk + h];
        const float e0 = exp2_fast(sv[0] - base_a), e1 = exp2_fast(sv[1] - base_a);
        const float e2 = exp2_fast(sv[2] - base_b), e3 = exp2_fast(sv[3] - base_b);
        l_a += e0 + e1;
        l_b += e2 + e3;
        p[kk][2 * h] = pack_half2(e0, e1);
        p[kk][2 * h + 1] = pack_half2(e2, e3);
      }
    }

    // O += P V.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldsm_x4_trans(vs + v_off[dp % 4] + 2 * (kk * 16 * D + (dp / 4) * 64), b);
        mma_16816(o[2 * dp], p[kk], make_uint2(b[0], b[1]));
        mma_16816(o[2 * dp + 1], p[kk], make_uint2(b[2], b[3]));
      }
    }
    __syncthreads();  // the next iteration's load overwrites this stage
  }

#pragma unroll
  for (int o_ = 1; o_ <= 2; o_ <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, o_);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, o_);
  }
  const float inv_a = 1.0f / l_a, inv_b = 1.0f / l_b;
  if (qa) {
    float* dst = out + (qa - q) + 2 * tig;  // same [n_q][n_heads][D] layout as q
#pragma unroll
    for (int i = 0; i < D / 8; ++i)
      *reinterpret_cast<float2*>(dst + 8 * i) = make_float2(o[i][0] * inv_a, o[i][1] * inv_a);
  }
  if (qb) {
    float* dst = out + (qb - q) + 2 * tig;
#pragma unroll
    for (int i = 0; i < D / 8; ++i)
      *reinterpret_cast<float2*>(dst + 8 * i) = make_float2(o[i][2] * inv_b, o[i][3] * inv_b);
  }
}

template <int D>
void launch_flash(const DenseKvView& kv, const float* q, int n_q, float* out, cudaStream_t s) {
  constexpr size_t smem = size_t(2) * 2 * kBN * D * sizeof(__half);  // 2 stages of K and V tiles
  static const bool raised = [] {  // D = 128 needs more than the default 48 KiB
    LONGKV_CUDA_CHECK(cudaFuncSetAttribute(flash_prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
    return true;
  }();
  (void)raised;
  const int M = n_q * kv.group;
  const dim3 grid((M + kBM - 1) / kBM, kv.n_kv_heads);
  const float qscale = 1.4426950408889634f / std::sqrt(static_cast<float>(D));
  flash_prefill_kernel<D><<<grid, kWarps * 32, smem, s>>>(kv.k, kv.v, kv.max_tokens, kv.n_tokens, n_q, kv.group,
                                                         kv.n_kv_heads * kv.group, q, qscale, out);
  LONGKV_CUDA_LAUNCHED();
}

}  // namespace

void attend_prefill_flash(const DenseKvView& kv, const float* q, int n_q, float* out, cudaStream_t s) {
  if (n_q <= 0) return;
  LONGKV_CHECK(n_q <= kv.n_tokens, "flash prefill: %d query rows but only %d tokens held", n_q, kv.n_tokens);
  switch (kv.head_dim) {
    case 64: launch_flash<64>(kv, q, n_q, out, s); break;
    case 128: launch_flash<128>(kv, q, n_q, out, s); break;
    default: fail("flash prefill supports head_dim 64 and 128 (model has %d)", kv.head_dim);
  }
}

}  // namespace longkv::cuda

// --- speed comparison for the tests (flash_prefill.h) -----------------------
namespace longkv {
using namespace cuda;

namespace {

double median_ms(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double time_calls(F&& call, int reps) {
  cudaEvent_t e0, e1;
  LONGKV_CUDA_CHECK(cudaEventCreate(&e0));
  LONGKV_CUDA_CHECK(cudaEventCreate(&e1));
  call();  // warm-up: workspace growth, cuBLAS heuristics, the shared-memory attribute
  LONGKV_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms(reps);
  for (int r = 0; r < reps; ++r) {
    LONGKV_CUDA_CHECK(cudaEventRecord(e0));
    call();
    LONGKV_CUDA_CHECK(cudaEventRecord(e1));
    LONGKV_CUDA_CHECK(cudaEventSynchronize(e1));
    LONGKV_CUDA_CHECK(cudaEventElapsedTime(&ms[r], e0, e1));
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return median_ms(std::move(ms));
}

}  // namespace

CudaPrefillSpeed cuda_bench_prefill_attention(const KvShape& s, int n_ctx, int n_q, int reps) {
  LONGKV_CHECK(n_q >= 1 && n_q <= n_ctx && reps >= 1, "cuda_bench_prefill_attention: bad sizes");
  const size_t kv_elems = static_cast<size_t>(s.n_kv_heads) * n_ctx * s.head_dim;
  const size_t q_elems = static_cast<size_t>(n_q) * s.q_dim();
  DeviceBuffer k(kv_elems * sizeof(__half)), v(kv_elems * sizeof(__half));
  fill_random_f16(k.as<__half>(), kv_elems, 11, nullptr);
  fill_random_f16(v.as<__half>(), kv_elems, 12, nullptr);
  std::vector<float> qh(q_elems);
  uint64_t x = 0x2545F4914F6CDD1DULL;
  for (float& e : qh) {  // xorshift: uniform in [-1, 1)
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    e = static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f;
  }
  DeviceBuffer qb(q_elems * sizeof(float)), o_cublas(q_elems * sizeof(float)), o_flash(q_elems * sizeof(float));
  LONGKV_CUDA_CHECK(cudaMemcpy(qb.as(), qh.data(), qb.bytes(), cudaMemcpyHostToDevice));
  const DenseKvView kv =
      DenseKvView::of(k.as<__half>(), v.as<__half>(), s.n_kv_heads, s.group(), s.head_dim, n_ctx, n_ctx);
  GpuAttnWorkspace ws;
  ws.gemm = CudaGemm::f16;
  LONGKV_CUBLAS_CHECK(cublasCreate(&ws.cublas));
  CudaPrefillSpeed r;
  const bool flash_was = cuda_tuning().flash_prefill;
  cuda_tuning().flash_prefill = false;
  r.cublas_ms = time_calls([&] { attend_prefill_dense(kv, qb.as<float>(), n_q, o_cublas.as<float>(), ws, nullptr); },
                           reps);
  cuda_tuning().flash_prefill = flash_was;
  r.flash_ms = time_calls([&] { attend_prefill_flash(kv, qb.as<float>(), n_q, o_flash.as<float>(), nullptr); }, reps);
  cublasDestroy(ws.cublas);
  LONGKV_CUDA_CHECK(cudaGetLastError());
  std::vector<float> a(q_elems), b(q_elems);
  LONGKV_CUDA_CHECK(cudaMemcpy(a.data(), o_flash.as(), o_flash.bytes(), cudaMemcpyDeviceToHost));
  LONGKV_CUDA_CHECK(cudaMemcpy(b.data(), o_cublas.as(), o_cublas.bytes(), cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (size_t i = 0; i < q_elems; ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  r.nmse = den > 0 ? num / den : num;
  if (!std::isfinite(r.nmse)) r.nmse = INFINITY;
  double keys = 0;
  for (int i = 0; i < n_q; ++i) keys += n_ctx - n_q + i + 1;
  r.flops = 4.0 * s.head_dim * s.n_heads * keys;
  return r;
}

}  // namespace longkv

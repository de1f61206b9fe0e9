// Dense f16 attention on the GPU: split-K flash-decoding for one query row,
// cuBLAS-based causal attention for chunks of query rows (prefill).
#include <cfloat>

#include "backend/cuda/decode_tile.cuh"
#include "backend/cuda/gpu_kv_cache.cuh"
#include "backend/cuda/pdl.cuh"

namespace longkv::cuda {
namespace {

constexpr int kMaxG = 8;        // query heads per KV head handled by one block
constexpr int kDecodeWarps = 4;


// One warp per (KV head, split), all g query heads of the group at once, so
// each K/V byte is read once. Lanes split head_dim into 16-byte pieces (8
// dims; kLpt = D/8 lanes per token) and the warp covers 32/kLpt tokens per
// step, kSteps steps per tile: every lane issues 2*kSteps 16-byte loads (K and
// V) before using any. Scores are reduced over the kLpt lanes of a token by
// xor-shuffles; the tile's max is shared by the whole warp, so the online
// softmax state (m) is the same in every lane and the token groups' partial
// (l, acc) simply add at the end (the per-tile step: decode_tile.cuh, shared
// with the one-kernel decode step of attention_block.cu). Writes (o / l, m,
// l) per split.
template <int D, int G, int kSteps>
__global__ void __launch_bounds__(kDecodeWarps * 32)
    decode_split_kernel(const __half* __restrict__ kc, const __half* __restrict__ vc, int n_kv, int max_tokens,
                        int n_tok, int tps, const float* __restrict__ q, float scale, float* __restrict__ part_o,
                        float* __restrict__ part_ml, int n_splits, int split_base, int stride, const int* dev_n,
                        int dev_add) {
  constexpr int kLpt = D / 8, kTps = 32 / kLpt;
  // A merge launched with PDL behind this kernel may start now; when this
  // kernel itself runs beside the quantized split kernel (PDL), every thread
  // waits for that one before it exits, so the merge's wait covers both.
  pdl_trigger();
  if (dev_n) {  // graph replay: the count of this run, the splits of the launch
    n_tok = *dev_n + dev_add;
    tps = max(16, ((n_tok + n_splits - 1) / n_splits + 15) / 16 * 16);
  }
  const int lane = threadIdx.x % 32;
  const int gw = blockIdx.x * kDecodeWarps + threadIdx.x / 32;
  const int hk = gw / n_splits, split = gw % n_splits;
  if (hk >= n_kv) {
    pdl_wait();
    return;
  }
  const int sub = lane % kLpt, grp = lane / kLpt;
  float qr[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    const float* qh = q + static_cast<size_t>(hk * G + h) * D + 8 * sub;
    const float4 a = __ldg(reinterpret_cast<const float4*>(qh)), b = __ldg(reinterpret_cast<const float4*>(qh + 4));
    qr[h][0] = a.x * scale; qr[h][1] = a.y * scale; qr[h][2] = a.z * scale; qr[h][3] = a.w * scale;
    qr[h][4] = b.x * scale; qr[h][5] = b.y * scale; qr[h][6] = b.z * scale; qr[h][7] = b.w * scale;
  }
  const __half* kh = kc + static_cast<size_t>(hk) * max_tokens * D + 8 * sub;
  const __half* vh = vc + static_cast<size_t>(hk) * max_tokens * D + 8 * sub;
  const int t_begin = split * tps, t_end = min(n_tok, t_begin + tps);
  float m[G], l[G], acc[G][8];
  decode_init_state<G>(m, l, acc);
  for (int t0 = t_begin; t0 < t_end; t0 += kTps * kSteps) {
    uint4 kr[kSteps], vr[kSteps];
    bool ok[kSteps];
    decode_load_tile<D, kSteps>(kh, vh, t0, kTps, grp, t_begin, t_end, kr, vr, ok);
    decode_tile<D, G, kSteps>(qr, kr, vr, ok, m, l, acc);
  }
  decode_sum_groups<D, G>(l, acc);
  pdl_wait();
  if (grp != 0) return;
#pragma unroll
  for (int h = 0; h < G; ++h) {
    const size_t hq = static_cast<size_t>(hk) * G + h;
    const size_t pi = hq * stride + split_base + split;
    float* dst = part_o + pi * D + 8 * sub;
    const float inv = l[h] > 0 ? 1.0f / l[h] : 0.0f;
    reinterpret_cast<float4*>(dst)[0] = make_float4(acc[h][0] * inv, acc[h][1] * inv, acc[h][2] * inv, acc[h][3] * inv);
    reinterpret_cast<float4*>(dst)[1] = make_float4(acc[h][4] * inv, acc[h][5] * inv, acc[h][6] * inv, acc[h][7] * inv);
    if (sub == 0) {
      part_ml[pi * 2] = m[h];
      part_ml[pi * 2 + 1] = l[h];
    }
  }
}

// Blocks of (query head, 32 dimensions), 8 warps: the splits' weights
// l * exp(m - M) go to shared memory first, then warp w sums splits w, w+8,
// ... for its lane's dimension (independent loads, 4 in flight), and the 8
// partial sums meet in shared memory. (Milestone 3's one block per head with
// a serial pass over the splits cost ~30 us at 4K tokens.)
constexpr int kMergeWarps = 8;
__global__ void __launch_bounds__(kMergeWarps * 32)
    merge_splits_kernel(const float* __restrict__ part_o, const float* __restrict__ part_ml, int n_splits, int D,
                        float* __restrict__ out) {
  extern __shared__ float wsh[];  // [n_splits]
  __shared__ float red[kMergeWarps][33];
  pdl_wait();  // launched with PDL: the split kernels' states are complete from here on
  pdl_trigger();  // a PDL kernel behind (the next GEMV, the next decode) may launch and wait
  const int hq = blockIdx.x, tid = threadIdx.x, lane = tid % 32, w = tid / 32;
  const int d = blockIdx.y * 32 + lane;
  const float* ml = part_ml + static_cast<size_t>(hq) * n_splits * 2;
  float mm = -FLT_MAX;
  for (int s = tid; s < n_splits; s += blockDim.x)
    if (ml[2 * s + 1] > 0) mm = fmaxf(mm, ml[2 * s]);
  mm = warp_max(mm);
  if (lane == 0) red[w][32] = mm;
  __syncthreads();
  mm = -FLT_MAX;
  for (int k = 0; k < kMergeWarps; ++k) mm = fmaxf(mm, red[k][32]);
  __syncthreads();
  float ll = 0;
  for (int s = tid; s < n_splits; s += blockDim.x) {
    const float wt = ml[2 * s + 1] > 0 ? ml[2 * s + 1] * __expf(ml[2 * s] - mm) : 0.0f;
    wsh[s] = wt;
    ll += wt;
  }
  ll = warp_sum(ll);
  if (lane == 0) red[w][32] = ll;
  __syncthreads();
  ll = 0;
  for (int k = 0; k < kMergeWarps; ++k) ll += red[k][32];
  const float* po = part_o + static_cast<size_t>(hq) * n_splits * D + d;
  float o[4] = {0, 0, 0, 0};
  int s = w;
  for (; s + 3 * kMergeWarps < n_splits; s += 4 * kMergeWarps) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int su = s + u * kMergeWarps;
      o[u] = fmaf(po[static_cast<size_t>(su) * D], wsh[su], o[u]);
    }
  }
  for (; s < n_splits; s += kMergeWarps) o[0] = fmaf(po[static_cast<size_t>(s) * D], wsh[s], o[0]);
  __syncthreads();  // red[.][32] reads are done before red is reused
  red[w][lane] = (o[0] + o[1]) + (o[2] + o[3]);
  __syncthreads();
  if (w == 0) {
    float acc = 0;
    for (int k = 0; k < kMergeWarps; ++k) acc += red[k][lane];
    out[static_cast<size_t>(hq) * D + d] = ll > 0 ? acc / ll : 0.0f;
  }
}

__global__ void append_kernel(__half* __restrict__ kc, __half* __restrict__ vc, int n_kv, int D, int max_tokens,
                              int pos, const float* __restrict__ k, const float* __restrict__ v, int n,
                              const int* dpos) {
  if (dpos) pos = *dpos;
  const size_t total = static_cast<size_t>(n) * n_kv * D;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % D);
    const int h = static_cast<int>((i / D) % n_kv);
    const int t = static_cast<int>(i / (static_cast<size_t>(D) * n_kv));
    const size_t dst = (static_cast<size_t>(h) * max_tokens + pos + t) * D + d;
    kc[dst] = __float2half(k[i]);
    vc[dst] = __float2half(v[i]);
  }
}

// q [n][n_kv * g][D] -> qp [n_kv][n * g][D] (f16 or f32), rows (r, j) of one
// KV head contiguous for the batched GEMMs.
template <typename T>
__global__ void permute_q_kernel(const float* __restrict__ q, T* __restrict__ qp, int n, int n_kv, int g, int D) {
  const size_t total = static_cast<size_t>(n) * n_kv * g * D;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % D);
    const size_t rh = i / D;  // r * n_heads + hq
    const int hq = static_cast<int>(rh % (n_kv * g)), r = static_cast<int>(rh / (n_kv * g));
    const int hk = hq / g, j = hq % g;
    const size_t dst = ((static_cast<size_t>(hk) * n + r) * g + j) * D + d;
    if constexpr (sizeof(T) == 2) qp[dst] = __float2half(q[i]);
    else qp[dst] = q[i];
  }
}

__global__ void unpermute_o_kernel(const float* __restrict__ op, float* __restrict__ out, int n, int n_kv, int g,
                                   int D) {
  const size_t total = static_cast<size_t>(n) * n_kv * g * D;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(i % D);
    const size_t rh = i / D;
    const int hq = static_cast<int>(rh % (n_kv * g)), r = static_cast<int>(rh / (n_kv * g));
    const int hk = hq / g, j = hq % g;
    out[i] = op[((static_cast<size_t>(hk) * n + r) * g + j) * D + d];
  }
}

// Row (head, r, j) of S [rows][N]: scale, causal mask (keys <= p0 + r),
// softmax; writes P as f16 (p16) or in place as f32.
__global__ void causal_softmax_kernel(float* __restrict__ s, __half* __restrict__ p16, int N, int g, int n, int p0,
                                      float scale) {
  const size_t row = blockIdx.x;
  const int r = static_cast<int>((row / g) % n);
  const int valid = min(N, p0 + r + 1);
  float* sr = s + row * N;
  __shared__ float red[32];
  float mx = -FLT_MAX;
  for (int i = threadIdx.x; i < valid; i += blockDim.x) mx = fmaxf(mx, sr[i] * scale);
  mx = warp_max(mx);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = mx;
  __syncthreads();
  mx = -FLT_MAX;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) mx = fmaxf(mx, red[w]);
  __syncthreads();
  float sum = 0;
  for (int i = threadIdx.x; i < valid; i += blockDim.x) sum += __expf(sr[i] * scale - mx);
  sum = warp_sum(sum);
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = sum;
  __syncthreads();
  sum = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) sum += red[w];
  const float inv = 1.0f / sum;
  for (int i = threadIdx.x; i < N; i += blockDim.x) {
    const float pv = i < valid ? __expf(sr[i] * scale - mx) * inv : 0.0f;
    if (p16) p16[row * N + i] = __float2half(pv);
    else sr[i] = pv;
  }
}

// kc (f16, head stride max_tokens * D) -> dst f32 [n_kv][N][D].
__global__ void kv_to_f32_kernel(const __half* __restrict__ src, float* __restrict__ dst, int n_kv, int N, int D,
                                 int max_tokens) {
  const size_t total = static_cast<size_t>(n_kv) * N * D;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t per_head = static_cast<size_t>(N) * D;
    const size_t h = i / per_head, rest = i % per_head;
    dst[i] = __half2float(src[h * max_tokens * D + rest]);
  }
}

int grid_for(size_t n) { return static_cast<int>(std::min<size_t>((n + 255) / 256, 132 * 32)); }

}  // namespace

void append_dense(__half* k_cache, __half* v_cache, int n_kv_heads, int head_dim, int max_tokens, int pos,
                  const float* k, const float* v, int n, cudaStream_t s, const int* dpos) {
  const size_t total = static_cast<size_t>(n) * n_kv_heads * head_dim;
  if (total == 0) return;
  append_kernel<<<grid_for(total), 256, 0, s>>>(k_cache, v_cache, n_kv_heads, head_dim, max_tokens, pos, k, v, n,
                                                dpos);
  LONGKV_CUDA_LAUNCHED();
}

namespace {

// Launches the split kernel, or with `warps` set only reports how many of
// its warps the GPU holds at once (cached per instance).
template <int D>
void launch_decode(const DenseKvView& kv, const float* q, float scale, int tps, int splits, float* po, float* pml,
                   int split_base, int stride, cudaStream_t s, int* warps = nullptr, bool pdl = false) {
  const int nw = kv.n_kv_heads * splits, grid = (nw + kDecodeWarps - 1) / kDecodeWarps;
  const bool deep = cuda_tuning().dense_decode_steps >= 8;
#define LONGKV_DECODE_RUN(G_, S_)                                                                              \
  {                                                                                                            \
    auto* kern = decode_split_kernel<D, G_, S_>;                                                               \
    if (warps) {                                                                                               \
      static const int cached = resident_warps(kern, kDecodeWarps * 32);                                      \
      *warps = cached;                                                                                         \
    } else {                                                                                                   \
      launch_maybe_pdl(pdl, kern, dim3(grid), dim3(kDecodeWarps * 32), 0, s, kv.k, kv.v, kv.n_kv_heads,         \
                       kv.max_tokens, kv.n_tokens, tps, q, scale, po, pml, splits, split_base, stride, kv.dev_n,  \
                       kv.dev_add);                                                                           \
    }                                                                                                          \
  }
#define LONGKV_DECODE_G(G_)                      \
  case G_:                                       \
    if (deep) LONGKV_DECODE_RUN(G_, 8)           \
    else LONGKV_DECODE_RUN(G_, 4)                \
    break;
  switch (kv.group) {
    LONGKV_DECODE_G(1) LONGKV_DECODE_G(2) LONGKV_DECODE_G(3) LONGKV_DECODE_G(4)
    LONGKV_DECODE_G(5) LONGKV_DECODE_G(6) LONGKV_DECODE_G(7) LONGKV_DECODE_G(8)
    default: fail("CUDA decode attention supports up to %d query heads per KV head (model has %d)", kMaxG, kv.group);
  }
#undef LONGKV_DECODE_G
#undef LONGKV_DECODE_RUN
}

}  // namespace

int decode_split_bucket(int n) {
  int p = 1;
  while (p <= n / 2) p *= 2;
  const int q = std::max(256, p / 8);
  return (n + q - 1) / q * q;
}

int decode_splits_for(int n_kv_heads, int n_tokens, int* tps_out, int head_dim, int group) {
  // One wave of resident warps (one warp per split and KV head); splits of a
  // multiple of 16 tokens (whole tiles for D = 128 at 4 steps).
  DenseKvView kv;
  kv.n_kv_heads = n_kv_heads;
  kv.group = std::min(std::max(group, 1), kMaxG);
  int warps = 132 * 16;
  if (head_dim == 64) launch_decode<64>(kv, nullptr, 0, 0, 0, nullptr, nullptr, 0, 0, nullptr, &warps);
  else launch_decode<128>(kv, nullptr, 0, 0, 0, nullptr, nullptr, 0, 0, nullptr, &warps);
  const int target = std::max(1, warps / std::max(1, n_kv_heads));
  int tps = (n_tokens + target - 1) / target;
  tps = std::max(16, (tps + 15) / 16 * 16);
  if (tps_out) *tps_out = tps;
  return (n_tokens + tps - 1) / tps;
}

void attend_decode_dense_parts(const DenseKvView& kv, const float* q, float* part_o, float* part_ml, int split_base,
                               int stride, cudaStream_t s, bool pdl) {
  const int D = kv.head_dim, g = kv.group;
  LONGKV_CHECK(g <= kMaxG, "CUDA decode attention supports up to %d query heads per KV head (model has %d)", kMaxG,
               g);
  int tps = 0;
  const int splits = decode_splits_for(kv.n_kv_heads, kv.dev_n ? kv.split_n : kv.n_tokens, &tps, D, g);
  if (splits == 0) return;
  LONGKV_ASSERT(split_base + splits <= stride);
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  switch (D) {
    case 64: launch_decode<64>(kv, q, scale, tps, splits, part_o, part_ml, split_base, stride, s, nullptr, pdl); break;
    case 128: launch_decode<128>(kv, q, scale, tps, splits, part_o, part_ml, split_base, stride, s, nullptr, pdl); break;
    default: fail("CUDA decode attention supports head_dim 64 and 128 (model has %d)", D);
  }
  LONGKV_CUDA_LAUNCHED();
}

void merge_decode_parts(const float* part_o, const float* part_ml, int n_heads, int n_parts, int D, float* out,
                        cudaStream_t s, bool pdl) {
  const size_t smem = sizeof(float) * n_parts;
  LONGKV_CHECK(smem <= 48 * 1024, "CUDA decode attention: %d splits exceed the merge kernel's shared memory",
               n_parts);
  launch_maybe_pdl(pdl, merge_splits_kernel, dim3(n_heads, D / 32), dim3(kMergeWarps * 32), smem, s, part_o, part_ml,
                   n_parts, D, out);
  LONGKV_CUDA_LAUNCHED();
}

void attend_decode_dense(const DenseKvView& kv, const float* q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) {
  const int D = kv.head_dim, n_heads = kv.n_kv_heads * kv.group;
  const int splits = decode_splits_for(kv.n_kv_heads, kv.dev_n ? kv.split_n : kv.n_tokens, nullptr, D, kv.group);
  ws.a.reserve(static_cast<size_t>(n_heads) * splits * D * sizeof(float));
  ws.b.reserve(static_cast<size_t>(n_heads) * splits * 2 * sizeof(float));
  const bool pdl = cuda_tuning().decode_pdl;
  attend_decode_dense_parts(kv, q, ws.a.as<float>(), ws.b.as<float>(), 0, splits, s);
  merge_decode_parts(ws.a.as<float>(), ws.b.as<float>(), n_heads, splits, D, out, s, pdl);
}

void attend_prefill_dense(const DenseKvView& kv, const float* q, int n_q, float* out, GpuAttnWorkspace& ws,
                          cudaStream_t s) {
  if (ws.gemm == CudaGemm::f16 && cuda_tuning().flash_prefill && (kv.head_dim == 64 || kv.head_dim == 128)) {
    attend_prefill_flash(kv, q, n_q, out, s);  // tiled, S never in memory (flash_prefill.cu)
    return;
  }
  const int D = kv.head_dim, g = kv.group, n_kv = kv.n_kv_heads, N = kv.n_tokens, p0 = N - n_q;
  const int M = n_q * g;  // query rows per KV head
  const bool f16 = ws.gemm == CudaGemm::f16;
  const size_t qe = f16 ? 2 : 4;
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  // Heads per batch: keep the score matrix under ~2 GiB.
  const size_t s_head = static_cast<size_t>(M) * N * sizeof(float);
  const int hb = static_cast<int>(std::max<size_t>(1, std::min<size_t>(n_kv, (size_t(2) << 30) / s_head)));
  ws.a.reserve(static_cast<size_t>(n_kv) * M * D * qe);                    // Qp
  ws.b.reserve(static_cast<size_t>(hb) * s_head);                          // S (f32)
  if (f16) ws.c.reserve(static_cast<size_t>(hb) * M * N * 2);              // P (f16)
  ws.d.reserve(static_cast<size_t>(n_kv) * M * D * sizeof(float));         // Op
  const size_t qtotal = static_cast<size_t>(n_q) * n_kv * g * D;
  if (f16) permute_q_kernel<__half><<<grid_for(qtotal), 256, 0, s>>>(q, ws.a.as<__half>(), n_q, n_kv, g, D);
  else permute_q_kernel<float><<<grid_for(qtotal), 256, 0, s>>>(q, ws.a.as<float>(), n_q, n_kv, g, D);
  LONGKV_CUDA_LAUNCHED();

  const void* kp = kv.k;
  const void* vp = kv.v;
  long long kv_stride = static_cast<long long>(kv.max_tokens) * D;
  if (!f16 && kv.k32) {  // f32 copies given
    kp = kv.k32;
    vp = kv.v32;
    kv_stride = static_cast<long long>(N) * D;
  } else if (!f16) {  // the f32 path multiplies f32 copies of the keys and values
    const size_t per = static_cast<size_t>(n_kv) * N * D;
    ws.e.reserve(2 * per * sizeof(float));
    kv_to_f32_kernel<<<grid_for(per), 256, 0, s>>>(kv.k, ws.e.as<float>(), n_kv, N, D, kv.max_tokens);
    kv_to_f32_kernel<<<grid_for(per), 256, 0, s>>>(kv.v, ws.e.as<float>() + per, n_kv, N, D, kv.max_tokens);
    LONGKV_CUDA_LAUNCHED();
    kp = ws.e.as<float>();
    vp = ws.e.as<float>() + per;
    kv_stride = static_cast<long long>(N) * D;
  }
  const cudaDataType_t dt = f16 ? CUDA_R_16F : CUDA_R_32F;
  const size_t ke = f16 ? 2 : 4;
  LONGKV_CUBLAS_CHECK(cublasSetStream(ws.cublas, s));
  const float one = 1.0f, zero = 0.0f;
  for (int h0 = 0; h0 < n_kv; h0 += hb) {
    const int nb = std::min(hb, n_kv - h0);
    const auto* kb = static_cast<const uint8_t*>(kp) + static_cast<size_t>(h0) * kv_stride * ke;
    const auto* vb = static_cast<const uint8_t*>(vp) + static_cast<size_t>(h0) * kv_stride * ke;
    const auto* qb = ws.a.as<uint8_t>() + static_cast<size_t>(h0) * M * D * qe;
    // Column-major S^T [N x M] = K (read transposed) x Qp^T.
    LONGKV_CUBLAS_CHECK(cublasGemmStridedBatchedEx(ws.cublas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, D, &one, kb, dt, D,
                                                   kv_stride, qb, dt, D, static_cast<long long>(M) * D, &zero,
                                                   ws.b.as(), CUDA_R_32F, N, static_cast<long long>(M) * N, nb,
                                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    causal_softmax_kernel<<<nb * M, 256, 0, s>>>(ws.b.as<float>(), f16 ? ws.c.as<__half>() : nullptr, N, g, n_q,
                                                 p0, scale);
    LONGKV_CUDA_LAUNCHED();
    // Column-major Op^T [D x M] = V^T x P^T.
    const void* pb = f16 ? ws.c.as() : ws.b.as();
    auto* ob = ws.d.as<float>() + static_cast<size_t>(h0) * M * D;
    LONGKV_CUBLAS_CHECK(cublasGemmStridedBatchedEx(ws.cublas, CUBLAS_OP_N, CUBLAS_OP_N, D, M, N, &one, vb, dt, D,
                                                   kv_stride, pb, dt, N, static_cast<long long>(M) * N, &zero, ob,
                                                   CUDA_R_32F, D, static_cast<long long>(M) * D, nb,
                                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  unpermute_o_kernel<<<grid_for(qtotal), 256, 0, s>>>(ws.d.as<float>(), out, n_q, n_kv, g, D);
  LONGKV_CUDA_LAUNCHED();
}

}  // namespace longkv::cuda

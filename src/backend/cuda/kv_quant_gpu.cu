// Scalar-quantized KV cache on the GPU: the twin of kv/quant_cache with the
// code records of kv/kv_codec.h byte for byte (the header is the one
// description of the layout; kernels here read and write exactly it).
//
// Storage per layer, device memory:
//   k/v codes  [n_kv][max_groups][record]  kv_group_layout(G, d, bits), each
//              record at a multiple of gpu_record_stride(its bytes)
//   exact k/v  [n_kv][sink_cap + win_cap][d] f16: sinks at slots [0, sink_cap),
//              the residual window at [sink_cap, ...), oldest token first, so
//              the fp16 tokens every decode row sees are one contiguous prefix
//              of the slots (the dense split kernel reads them as they are).
// Token lifecycle as on the CPU (quant_cache.h): S sinks, then a window that
// is cut into a group of G tokens whenever it reaches R + G tokens. Every
// code width of kv_codec.h (8, 4, 3, 2, 1 bits) and G = 32, 64, 128 (a
// multiple of 32 dividing d) is stored, with fit=mse ranges and outliers
// as the reference codec makes them (kv_quant_fit.cuh); the tensor-core
// decode kernels take G = 32 with 8/4/2 bits (v3 with outliers only in the
// one-launch step), kv_quant_decode_any.cu every other format.
//
// append(n) is O(1) kernels for any n: the groups the n tokens complete are
// quantized in one launch straight from their sources (the old window's f16
// slots, or the f32 input rounded to f16, which is what the window would
// have held), then the surviving window is rebuilt (through a scratch copy
// when it shifts) and new sinks written.
//
// Decode (one query row; kernels in kv_quant_decode.cu, and milestone 9's
// default in kv_quant_decode_v3.cu) works from the codes: one warp per (KV head, run of
// groups), lanes = tokens for keys (word (j, t) of a key record is lane t's,
// so a warp load is 128 contiguous bytes), lanes = channels for values; the
// per-channel key scale is folded into the query (qs = q * s, one dot(q, z)
// per group), the per-token value scale into the probabilities (ps = p * s,
// sum_t p z per channel group kept per lane until the end). Each split writes
// (o, m, l) beside the dense split kernel's states of the fp16 part; one
// merge kernel combines them. No dequantized copy of the cache exists.
//
// Prefill (n_q > 1) dequantizes the layer's keys/values into a scratch
// buffer (GpuAttnWorkspace::kv) and runs the dense prefill path: f32 for the
// f32 GEMM (perplexity; the same values the CPU attends to, one f32 rounding
// of s*q + z), f16 for the f16 GEMM, which rounds quantized values once more
// (relative 2^-11; decode does not).
#include <cfloat>
#include <cstdio>

#include "backend/cuda/decode_block_args.cuh"
#include "backend/cuda/kv_quant_fit.cuh"
#include "backend/cuda/kv_quant_gpu.cuh"
#include "backend/cuda/pdl.cuh"

namespace longkv::cuda {
namespace {

// Source of position p while appending: the old window's f16 slot (p <
// old_total; slot sink_cap + p - old_ws) or the input row p - old_total
// rounded to f16 (what the window would have stored).
__device__ __forceinline__ float src_value(const __half* exact, const float* __restrict__ in, const QuantGeom& g, int h, int c,
                                           int p, int old_total, int old_ws) {
  if (p < old_total)
    return __half2float(exact[(static_cast<size_t>(h) * g.exact_cap + g.sink_cap + (p - old_ws)) * g.D + c]);
  return __half2float(__float2half_rn(in[static_cast<size_t>(p - old_total) * g.n_kv * g.D + h * g.D + c]));
}

// One block (128 threads) per (new group, KV head): the whole head's
// channels, from the old window's slots or the input rows (src_value).
__global__ void __launch_bounds__(128)
    quantize_groups_kernel(uint8_t* __restrict__ kcodes, uint8_t* __restrict__ vcodes,
                           const __half* __restrict__ ek, const __half* __restrict__ ev, const float* __restrict__ kin,
                           const float* __restrict__ vin, QuantGeom g, int grp0, int pos0, int old_total, int old_ws) {
  extern __shared__ float x_sh[];
  const int h = blockIdx.y, p0 = pos0 + blockIdx.x * g.G;  // position of token 0 of the group
  quantize_channels(kcodes, vcodes, g, grp0 + blockIdx.x, h, 0, g.D, x_sh, [&](bool keys, int t, int c) {
    return src_value(keys ? ek : ev, keys ? kin : vin, g, h, c, p0 + t, old_total, old_ws);
  });
}

// The steady cut (cut=attend, one group, no input rows): the window's
// oldest G slots become group grp, and its other nw slots move G slots
// down, in one launch instead of four (the quantize kernel, a rebuild in
// scratch, two copies back; docs/cuda-notes.md milestone 27). Block (x, h)
// owns channels [x W, x W + W) of KV head h (W = G: quantize_channels'
// runs), keys and values, and touches no other channel, so the blocks need
// no order between them. Every read comes before the barrier after it and
// every write after one: the group's tile goes to shared memory first, then
// each round of the move loads its slots' runs into registers (kCutRegs
// 16-byte chunks a thread), and stores them G slots lower after a barrier.
// A round reads slots above every slot the rounds before it wrote.
//
// early (a decode step's cut, launched right behind the q|k|v GEMV): the
// work comes before the PDL wait, so the cut runs beside that GEMV. Safe
// because it touches only this layer's cache, which no kernel of the step
// before it in the stream reads or writes (the previous step completed
// before this one started), and it still completes only after the GEMV (the
// wait at its end), so the decode block behind it sees q, k, v whole.
// Without early it waits first, as any kernel.
constexpr int kCutThreads = 256, kCutRegs = 4;


size_t cut_smem_bytes(int G) { return (quantize_smem_bytes(G, G) + 15) / 16 * 16 + 2 * sizeof(__half) * G * G; }

__global__ void __launch_bounds__(kCutThreads)
    cut_group_kernel(uint8_t* __restrict__ kcodes, uint8_t* __restrict__ vcodes, __half* ek, __half* ev, QuantGeom g,
                     int grp, int nw, bool early) {
  extern __shared__ float x_sh[];
  pdl_trigger();  // the decode block behind it may launch; it waits for this one
  if (!early) pdl_wait();
  const int G = g.G, D = g.D, W = G, h = blockIdx.y, c0 = blockIdx.x * W, tid = threadIdx.x, nt = blockDim.x;
  const size_t win = (static_cast<size_t>(h) * g.exact_cap + g.sink_cap) * D;
  const int cps = W / 8;  // 16-byte chunks of a slot's W channels
  // Chunk i of a run of slots: (kind, slot t, chunk ch) -> its address at slot offset `at`.
  auto chunk = [&](int i, int cnt, int at) {
    const int kind = i / (cnt * cps), r = i % (cnt * cps), t = r / cps, ch = r % cps;
    return reinterpret_cast<uint4*>((kind ? ev : ek) + win + static_cast<size_t>(at + t) * D + c0 + 8 * ch);
  };
  uint4* tile = reinterpret_cast<uint4*>(reinterpret_cast<char*>(x_sh) + (quantize_smem_bytes(G, W) + 15) / 16 * 16);
  for (int i = tid; i < 2 * G * cps; i += nt) tile[i] = *chunk(i, G, 0);  // [kind][t][W] f16
  // The first round's loads, in flight while the group is quantized.
  const int per_round = nt * kCutRegs / (2 * cps);
  uint4 r[kCutRegs];
  auto load_round = [&](int b0) {
    const int cnt = min(per_round, nw - b0);
#pragma unroll
    for (int j = 0; j < kCutRegs; ++j)
      if (tid + j * nt < 2 * cnt * cps) r[j] = *chunk(tid + j * nt, cnt, G + b0);
  };
  if (nw > 0) load_round(0);
  __syncthreads();
  const __half* th = reinterpret_cast<const __half*>(tile);
  quantize_channels(kcodes, vcodes, g, grp, h, c0, W, x_sh, [&](bool keys, int t, int c) {
    return __half2float(th[((keys ? 0 : G) + t) * W + (c - c0)]);
  });  // ends after a barrier: every tile and round-0 read is done
  for (int b0 = 0; b0 < nw; b0 += per_round) {
    if (b0 > 0) {
      load_round(b0);
      __syncthreads();
    }
    const int cnt = min(per_round, nw - b0);
#pragma unroll
    for (int j = 0; j < kCutRegs; ++j)
      if (tid + j * nt < 2 * cnt * cps) *chunk(tid + j * nt, cnt, b0) = r[j];
    __syncthreads();
  }
  if (early) pdl_wait();
}


// Writes positions p0 .. p0 + count - 1 (from src_value) to slots slot0 ..
// of dst (head stride dst_cap slots), keys and values.
// dst may be the exact buffer itself (then only input rows are read).
// With dpos (a steady single-token step, replayable): the position p0 =
// old_total is *dpos when the kernel runs and slot0 moves with it.
__global__ void place_tokens_kernel(__half* dk, __half* dv, int dst_cap, int slot0, const __half* ek, const __half* ev,
                                    const float* __restrict__ kin, const float* __restrict__ vin, QuantGeom g, int p0,
                                    int count, int old_total, int old_ws, const int* dpos) {
  pdl_trigger();  // the decode kernel behind it (PDL) may launch; it waits for this one
  // Launched with PDL itself (steady steps, CudaTuning::append_pdl): k, v
  // and the window it writes are safe to touch only from here on.
  pdl_wait();
  if (dpos) {
    slot0 += *dpos - p0;
    p0 = old_total = *dpos;
  }
  const size_t total = static_cast<size_t>(count) * g.n_kv * g.D;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % g.D);
    const int h = static_cast<int>((i / g.D) % g.n_kv);
    const int t = static_cast<int>(i / (static_cast<size_t>(g.D) * g.n_kv));
    const size_t dst = (static_cast<size_t>(h) * dst_cap + slot0 + t) * g.D + c;
    dk[dst] = __float2half_rn(src_value(ek, kin, g, h, c, p0 + t, old_total, old_ws));
    dv[dst] = __float2half_rn(src_value(ev, vin, g, h, c, p0 + t, old_total, old_ws));
  }
}


__device__ __forceinline__ void store_as(__half* p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void store_as(float* p, float x) { *p = x; }

// Dequantizes group records into dst [n_kv][N][D] (f16, or f32 for the f32
// prefill GEMM) at token tok0 + grp * G.
template <typename T>
__global__ void dequantize_groups_kernel(const uint8_t* __restrict__ kcodes, const uint8_t* __restrict__ vcodes,
                                         QuantGeom g, int tok0, int N, T* __restrict__ dk, T* __restrict__ dv) {
  const int grp = blockIdx.x, h = blockIdx.y, D = g.D, G = g.G;
  const size_t rid = static_cast<size_t>(h) * g.max_groups + grp;
  const uint8_t* kr = kcodes + rid * g.krec;
  const uint8_t* vr = vcodes + rid * g.vrec;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int t = i / D, c = i % D;
    const float kq = static_cast<float>(quant_rec_code(kr, g.kbits, G * D, G, c, t));
    const float vq = static_cast<float>(quant_rec_code(vr, g.vbits, G * D, D, t, c));
    const float ks = __half2float(reinterpret_cast<const __half*>(kr + g.kscale)[c]);
    const float kz = __half2float(reinterpret_cast<const __half*>(kr + g.kzero)[c]);
    const int si = (c / G) * G + t;
    const float vs = __half2float(reinterpret_cast<const __half*>(vr + g.vscale)[si]);
    const float vz = __half2float(reinterpret_cast<const __half*>(vr + g.vzero)[si]);
    const size_t dst = (static_cast<size_t>(h) * N + tok0 + grp * G + t) * D + c;
    store_as(dk + dst, fmaf(ks, kq, kz));
    store_as(dv + dst, fmaf(vs, vq, vz));
  }
  if (g.outliers == 0) return;
  // Then each record's outlier deltas, added as kv_dequantize_* adds them
  // (the f16 scratch of the f16 GEMM rounds once more). Entries with a +0
  // delta change nothing and are skipped: the unused ones all name (0, 0).
  __syncthreads();
  for (int i = threadIdx.x; i < 2 * g.outliers; i += blockDim.x) {
    const bool keys = i < g.outliers;
    const uint32_t e = reinterpret_cast<const uint32_t*>(keys ? kr + g.koff : vr + g.voff)[keys ? i : i - g.outliers];
    if ((e >> 16) == 0) continue;
    const int t = (e >> 8) & 0xff, c = e & 0xff;
    T* p = (keys ? dk : dv) + (static_cast<size_t>(h) * N + tok0 + grp * G + t) * D + c;
    store_as(p, static_cast<float>(*p) + outlier_delta(e));
  }
}

// Copies `count` slots (from slot s0 of src, head stride src_cap) to tokens
// t0.. of dst [n_kv][N][D].
template <typename T>
__global__ void copy_slots_kernel(const __half* __restrict__ sk, const __half* __restrict__ sv, int src_cap, int s0,
                                  int count, int n_kv, int D, int N, int t0, T* __restrict__ dk, T* __restrict__ dv) {
  const size_t total = static_cast<size_t>(count) * n_kv * D;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % D);
    const int t = static_cast<int>((i / D) % count);
    const int h = static_cast<int>(i / (static_cast<size_t>(D) * count));
    const size_t src = (static_cast<size_t>(h) * src_cap + s0 + t) * D + c;
    const size_t dst = (static_cast<size_t>(h) * N + t0 + t) * D + c;
    store_as(dk + dst, __half2float(sk[src]));
    store_as(dv + dst, __half2float(sv[src]));
  }
}

// Normal(0, 1) floats from a counter hash (Box-Muller), for synthetic contexts.
__global__ void random_normal_kernel(float* __restrict__ x, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u1 = (static_cast<float>(z >> 40) + 1.0f) * (1.0f / 16777216.0f);
    const float u2 = static_cast<float>((z >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
    x[i] = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

int grid_1d(size_t n) { return static_cast<int>(std::min<size_t>((n + 255) / 256, 132 * 32)); }


class QuantGpuCache final : public GpuKvCache {
 public:
  QuantGpuCache(const KvMode& mode, const KvShape& s) : GpuKvCache(s), mode_(mode) {
    const std::string name = mode.to_string();
    LONGKV_CHECK(s.max_tokens > 0, "GPU KV cache needs a positive capacity");
    LONGKV_CHECK(!(mode.anchor_pct > 0),
                 "KV mode '%s' is not available on the CUDA backend yet (anchor tokens ':a' are CPU-only)", name.c_str());
    LONGKV_CHECK(!mode.pre_rope,
                 "KV mode '%s' is not available on the CUDA backend yet (GPU quantized modes store post-RoPE keys)",
                 name.c_str());
    LONGKV_CHECK(!mode.rotate, "KV mode '%s': ':rot' is make_rotated_gpu_kv_cache's, around this cache", name.c_str());
    // Code widths 8, 4, 3, 2, 1 and G a multiple of 32 dividing head_dim are
    // what kv_codec.h allows (the mode parser and the layout checked them).
    LONGKV_CHECK(mode.group % kQuantGroup == 0 && s.head_dim % mode.group == 0,
                 "KV mode '%s' on the CUDA backend needs a group size that is a multiple of 32 and divides head_dim %d",
                 name.c_str(), s.head_dim);
    LONGKV_CHECK(s.head_dim == 64 || s.head_dim == 128,
                 "KV mode '%s' on the CUDA backend needs head_dim 64 or 128 (model has %d)", name.c_str(), s.head_dim);
    LONGKV_CHECK(s.n_kv_heads > 0 && s.n_heads % s.n_kv_heads == 0 && s.group() <= 8,
                 "KV mode '%s' on the CUDA backend supports up to 8 query heads per KV head (model has %d/%d)",
                 name.c_str(), s.n_heads, s.n_kv_heads);
    const int D = s.head_dim;
    G_ = mode.group;
    // Outliers: n_o entries a record, chosen among the whole record by one
    // block of quantize_groups_kernel's 128 threads (a thread a run: D <= 128).
    const int n_o = kv_outlier_count(mode.outlier_pct, G_, D);
    const KvGroupLayout kl = kv_group_layout(G_, D, mode.k_bits, n_o), vl = kv_group_layout(G_, D, mode.v_bits, n_o);
    geo_.G = G_;
    geo_.n_kv = s.n_kv_heads;
    geo_.D = D;
    geo_.kbits = mode.k_bits;
    geo_.vbits = mode.v_bits;
    geo_.sym = mode.symmetric;
    geo_.krec = gpu_record_stride(kl.bytes);
    geo_.vrec = gpu_record_stride(vl.bytes);
    geo_.kscale = kl.scale_offset;
    geo_.kzero = kl.zero_offset;
    geo_.vscale = vl.scale_offset;
    geo_.vzero = vl.zero_offset;
    geo_.mse = mode.fit_mse;
    geo_.outliers = n_o;
    geo_.koff = kl.outlier_offset;
    geo_.voff = vl.outlier_offset;
    if (!quant_decode_fast(geo_)) {  // once per process: every layer builds one cache
      const bool mma = quant_decode_mma_outliers(geo_), v3 = quant_decode_v3_takes(geo_, s.group());
      static bool told = false;
      if (!told)
        std::fprintf(stderr, "note: KV mode '%s' decodes on the GPU through %s (exact, but slower than the "
                             "tensor-core kernel of the g32 8/4/2-bit modes without outliers)\n", name.c_str(),
                     v3    ? "the v3 kernel in steady steps, which adds the outliers, and milestone 4's otherwise"
                     : mma ? "milestone 4's tensor-core kernel, which adds the outliers"
                           : "the format-generic kernel");
      told = true;
    }
    // Same capacities as QuantKvCache.
    sink_cap_ = std::min(mode.sinks, s.max_tokens);
    win_cap_ = static_cast<int>(std::min<int64_t>(static_cast<int64_t>(mode.residual) + G_, s.max_tokens));
    geo_.sink_cap = sink_cap_;
    geo_.exact_cap = sink_cap_ + win_cap_;  // grows with cut=attend's largest append (reserve_exact)
    geo_.max_groups = static_cast<int>(
        std::max<int64_t>(0, (static_cast<int64_t>(s.max_tokens) - mode.sinks - mode.residual) / G_));
    const size_t n_kv = s.n_kv_heads;
    k_codes_.resize(std::max<size_t>(1, n_kv * geo_.max_groups * geo_.krec));
    v_codes_.resize(std::max<size_t>(1, n_kv * geo_.max_groups * geo_.vrec));
    const size_t exact = n_kv * geo_.exact_cap * D * sizeof(__half);
    exact_k_.resize(exact);
    exact_v_.resize(exact);
    tmp_.resize(2 * n_kv * win_cap_ * D * sizeof(__half));
  }

  // cut=attend (the CPU cache's rules): the new tokens join the window, which
  // attend() cuts after their rows have read them; an append no attend()
  // followed is cut first. cut=append: groups are cut here.
  void append(const float* k, const float* v, int n, cudaStream_t s) override {
    LONGKV_CHECK(n >= 0 && static_cast<int64_t>(n_tokens_) + n <= shape_.max_tokens,
                 "KV cache full: %d + %d tokens exceed the capacity of %d", n_tokens_, n, shape_.max_tokens);
    if (n == 0) return;
    if (mode_.defer) {
      cut_window(s);
      reserve_exact(static_cast<int64_t>(sink_cap_) + n_window_ + n, s);
    }
    update(k, v, n, !mode_.defer, s);
  }

 private:
  // Adds n tokens (n = 0: none) and, with `cut`, cuts every group the window
  // then completes (from the window's slots and the new rows k, v).
  // cut_early: a decode step's cut right behind the q|k|v GEMV (decode_block),
  // whose kernel may then run beside it (cut_group_kernel).
  void update(const float* k, const float* v, int n, bool cut, cudaStream_t s, bool cut_early = false) {
    const int R = mode_.residual, D = geo_.D, n_kv = geo_.n_kv;
    // The CPU cache's per-token rules, summed over the n tokens.
    const int ns_add = (n_sinks_ < sink_cap_ && n_tokens_ == n_sinks_) ? std::min(sink_cap_ - n_sinks_, n) : 0;
    const int m = n - ns_add;
    const int w = n_window_ + m;
    const int G = G_;
    const int e = (cut && w >= R + G) ? (w - (R + G)) / G + 1 : 0;
    const int old_total = n_tokens_, sinks = n_sinks_ + ns_add;
    const int old_ws = sinks + n_groups_ * G;  // position of old window slot 0
    // A steady step (replay_key != 0) reads its position from the device.
    const bool steady = n == 1 && steady_next();
    decode_dev_ = steady;
    LONGKV_ASSERT(n_groups_ + e <= geo_.max_groups);
    __half* ek = exact_k_.as<__half>();
    __half* ev = exact_v_.as<__half>();
    // A decode step's cut (one group from the window, nothing appended): one
    // launch (cut_group_kernel; CudaTuning::quant_cut_fused).
    const size_t cut_smem = cut_smem_bytes(G);
    if (e == 1 && n == 0 && cuda_tuning().quant_cut_fused && cut_smem <= 48 * 1024 && geo_.outliers == 0) {
      const bool early = cut_early && cuda_tuning().pdl;
      launch_maybe_pdl(cuda_tuning().pdl, cut_group_kernel, dim3(D / G, n_kv), dim3(kCutThreads), cut_smem, s,
                       k_codes_.as<uint8_t>(), v_codes_.as<uint8_t>(), ek, ev, geo_, n_groups_, w - G, early);
      LONGKV_CUDA_LAUNCHED();
      n_groups_ += 1;
      n_window_ = w - G;
      return;
    }
    if (e > 0) {
      const size_t smem = quantize_smem_bytes(G, D, geo_.outliers);
      if (smem > 48 * 1024 && !smem_raised_) {  // G >= 96 at D = 128: past the default 48 KiB
        LONGKV_CUDA_CHECK(cudaFuncSetAttribute(quantize_groups_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem)));
        smem_raised_ = true;
      }
      quantize_groups_kernel<<<dim3(e, n_kv), 128, smem, s>>>(k_codes_.as<uint8_t>(), v_codes_.as<uint8_t>(), ek, ev,
                                                              k, v, geo_, n_groups_, old_ws, old_total, old_ws);
      LONGKV_CUDA_LAUNCHED();
    }
    const int nw = w - e * G, new_ws = old_ws + e * G, new_total = old_total + n;
    if (ns_add > 0) {
      place_tokens_kernel<<<grid_1d(static_cast<size_t>(ns_add) * n_kv * D), 256, 0, s>>>(
          ek, ev, geo_.exact_cap, old_total, ek, ev, k, v, geo_, old_total, ns_add, old_total, old_ws, nullptr);
      LONGKV_CUDA_LAUNCHED();
    }
    if (e == 0 && m > 0) {  // the window only grows: new tokens to their slots
      // A steady step's append starts while RoPE drains (milestone 11).
      launch_maybe_pdl(steady && cuda_tuning().append_pdl, place_tokens_kernel,
                       dim3(grid_1d(static_cast<size_t>(m) * n_kv * D)), dim3(256), 0, s, ek, ev, geo_.exact_cap,
                       sink_cap_ + (old_total + ns_add - old_ws), ek, ev, k, v, geo_, old_total + ns_add, m,
                       old_total, old_ws, steady ? dpos_ : nullptr);
      LONGKV_CUDA_LAUNCHED();
    } else if (e > 0 && nw > 0) {  // the window shifts: rebuild it in scratch, copy back
      __half* tk = tmp_.as<__half>();
      __half* tv = tk + static_cast<size_t>(n_kv) * win_cap_ * D;
      place_tokens_kernel<<<grid_1d(static_cast<size_t>(nw) * n_kv * D), 256, 0, s>>>(
          tk, tv, win_cap_, 0, ek, ev, k, v, geo_, new_ws, nw, old_total, old_ws, nullptr);
      LONGKV_CUDA_LAUNCHED();
      const size_t dpitch = static_cast<size_t>(geo_.exact_cap) * D * sizeof(__half);
      const size_t spitch = static_cast<size_t>(win_cap_) * D * sizeof(__half);
      const size_t width = static_cast<size_t>(nw) * D * sizeof(__half);
      LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(ek + static_cast<size_t>(sink_cap_) * D, dpitch, tk, spitch, width, n_kv,
                                          cudaMemcpyDeviceToDevice, s));
      LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(ev + static_cast<size_t>(sink_cap_) * D, dpitch, tv, spitch, width, n_kv,
                                          cudaMemcpyDeviceToDevice, s));
    }
    LONGKV_ASSERT(new_ws + nw == new_total);
    n_sinks_ = sinks;
    n_groups_ += e;
    n_window_ = nw;
    n_tokens_ = new_total;
  }

  // cut=attend: the groups the window holds, cut from its fp16 slots (the
  // same records cutting on append makes: those read the same f16 values).
  void cut_window(cudaStream_t s, bool early = false) {
    if (n_window_ >= mode_.residual + G_) update(nullptr, nullptr, 0, true, s, early);
  }

  // Room for `slots` fp16 slots per KV head (sinks + window). Only appends
  // larger than a decode step grow it: a steady step's slot is below the
  // initial sink_cap + R + G. Growing moves the buffers, so gen_ changes
  // the replay key (a captured step must not replay with the old ones).
  void reserve_exact(int64_t slots, cudaStream_t s) {
    if (slots <= geo_.exact_cap) return;
    const int D = geo_.D, n_kv = geo_.n_kv, old = geo_.exact_cap;
    const int cap = static_cast<int>(std::min<int64_t>(std::max<int64_t>(slots, old + old / 2),
                                                       static_cast<int64_t>(sink_cap_) + shape_.max_tokens));
    const size_t bytes = static_cast<size_t>(n_kv) * cap * D * sizeof(__half);
    DeviceBuffer nk(bytes), nv(bytes);
    const size_t used = static_cast<size_t>(sink_cap_ + n_window_) * D * sizeof(__half);
    if (used > 0) {
      const size_t sp = static_cast<size_t>(old) * D * sizeof(__half), dp = static_cast<size_t>(cap) * D * sizeof(__half);
      LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(nk.as(), dp, exact_k_.as(), sp, used, n_kv, cudaMemcpyDeviceToDevice, s));
      LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(nv.as(), dp, exact_v_.as(), sp, used, n_kv, cudaMemcpyDeviceToDevice, s));
    }
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s));  // the old buffers are freed below
    exact_k_ = std::move(nk);
    exact_v_ = std::move(nv);
    geo_.exact_cap = cap;
    ++gen_;
  }

 public:
  void attend(const float* q, int n_q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) override {
    LONGKV_CHECK(n_q >= 1 && n_q <= n_tokens_, "attend: %d query rows but %d tokens held", n_q, n_tokens_);
    if (n_q == 1) decode(q, out, ws, s);
    else prefill(q, n_q, out, ws, s);
    if (mode_.defer) cut_window(s);
  }

  // While no group exists (the first sinks + R + G - 1 tokens) every token
  // is in the fp16 part, slot = position once the sinks are full, so a
  // steady step is the dense cache's one-kernel step on the exact buffer
  // (milestone 11): the slot it writes holds the same bits place_tokens
  // would (one f16 rounding of the input). CudaTuning::quant_block.
  // Once groups exist (milestone 15, CudaTuning::quant_fused), a steady step
  // is two launches: the same decode block over the fp16 part (slot =
  // position - the groups' tokens; one partial per KV head), then beside it
  // the v3 kernel over the groups (q rotated inside, one partial per block),
  // whose last block per KV head merges them all. Steps that complete a
  // group keep the append + attend path.
  bool decode_block_ok(const DecodeRope& rope) const override {
    const CudaTuning& t = cuda_tuning();
    if (!(t.attn_block && t.quant_block && n_sinks_ == sink_cap_ && steady_next() &&
          decode_block_supported(shape_.group(), geo_.D, rope)))
      return false;
    return n_groups_ + uncut_groups() == 0 || (t.quant_fused && t.quant_decode_mma && t.quant_decode_v3 &&
                              quant_decode_v3_takes(geo_, shape_.group()));
  }
  void decode_block(const float* q, const float* k, const float* v, const DecodeRope& rope, float* out,
                    GpuAttnWorkspace& ws, cudaStream_t s) override {
    LONGKV_CHECK(decode_block_ok(rope), "quantized KV cache: the fused decode step applies only to steady steps "
                 "(window growing, sinks full) of a cache the v3 kernel takes");
    cut_window(s, true);  // an append no attend() followed (cut=attend); only the GEMV ran since
    ++n_window_;  // the host state of a steady append (advance)
    ++n_tokens_;
    decode_dev_ = true;
    // fp16 part: slots [0, sinks + window), count *dpos + 1 - groups' tokens, splits from exact_cap.
    DenseKvView kv = exact_view();
    if (n_groups_ == 0) return decode_block_dense(exact_k_.as<__half>(), exact_v_.as<__half>(), kv, q, k, v, rope,
                                                  out, ws, s);
    // v3 over the groups in whole blocks per KV head: one wave of its
    // resident warps less one block per KV head (the decode block's blocks,
    // ~229 registers each, take about one v3 block's room on their SMs;
    // a leaner decode block beside three v3 blocks and a whole wave measured
    // slower, docs/cuda-notes.md milestone 15), >= 4 groups a warp, <= 255
    // blocks a head (the merge takes up to 256 partials).
    const int n_kv = geo_.n_kv, D = geo_.D, n_heads = shape_.n_heads;
    int warps = 132 * 16;
    {  // the resident warps of the kernel launched below (with outliers, not the other steps' kernel)
      QuantDecodeArgs probe = quant_args(0, 0, nullptr, nullptr, nullptr, 0);
      probe.fuse = true;
      launch_quant_decode_v3(probe, s, &warps);
    }
    const int share = std::max(1, ws.v3_wave_share);  // a batched step's sequences: 1/share of the wave each
    const int room = warps / share / n_kv - (cuda_tuning().quant_fused_probe & 8 ? 0 : kQuantWarps);
    const int target = std::max(kQuantWarps, room / kQuantWarps * kQuantWarps);
    int gps = std::max(4, (n_groups_ + target - 1) / target);
    gps = std::max(gps, (n_groups_ + 255 * kQuantWarps - 1) / (255 * kQuantWarps));
    const int nbv = (n_groups_ + gps * kQuantWarps - 1) / (gps * kQuantWarps);
    const int stride = nbv + 1;
    ws.a.reserve(static_cast<size_t>(n_heads) * stride * D * sizeof(float));
    ws.b.reserve(static_cast<size_t>(n_heads) * stride * 2 * sizeof(float));
    decode_block_dense(exact_k_.as<__half>(), exact_v_.as<__half>(), kv, q, k, v, rope, out, ws, s, nbv);
    QuantDecodeArgs a = quant_args(gps, nbv * kQuantWarps, q, ws.a.as<float>(), ws.b.as<float>(), stride);
    a.grid = dim3(n_kv * nbv);
    a.fuse = true;
    a.dpos = dpos_;
    a.rope = rope;
    a.tickets = ws.tickets.as<int>();
    a.out = out;
    launch_quant_decode_v3(a, s, nullptr);
    LONGKV_CUDA_LAUNCHED();
  }

  // A batched step in one launch (decode_block_batch): this cache when its
  // step would be decode_block's two launches and the batched kernels take
  // its geometry.
  GpuKvCache* batch_step_target(DecodeRope* rope) override {
    return decode_block_ok(*rope) && n_groups_ + uncut_groups() > 0 && quant_decode_v3_batch_takes(geo_, shape_.group())
               ? this
               : nullptr;
  }
  // decode_block's host side for such a step: the cut and the state as
  // there, and the arguments of its two launches instead of the launches.
  // v3's split: gpw groups a warp, or (bph > 0) bph blocks a KV head; at
  // least 4 groups a warp and at most 255 blocks a KV head. A rule of this
  // sequence's length alone, so a sequence's bits do not depend on the
  // batch around it.
  void batch_step_args(const float* q, const float* k, const float* v, const DecodeRope& rope, float* out,
                       GpuAttnWorkspace& ws, int gpw, int bph, cudaStream_t s, attn_block::DecodeBlockArgs* blk,
                       QuantDecodeArgs* v3) {
    cut_window(s, true);
    ++n_window_;
    ++n_tokens_;
    decode_dev_ = true;
    LONGKV_CHECK(n_groups_ > 0, "quantized KV cache: a batched one-launch step needs groups");
    const int n_kv = geo_.n_kv, D = geo_.D, n_heads = shape_.n_heads;
    const int want = bph > 0 ? (n_groups_ + bph * kQuantWarps - 1) / (bph * kQuantWarps) : gpw;
    const int gps = std::max({4, want, (n_groups_ + 255 * kQuantWarps - 1) / (255 * kQuantWarps)});
    const int nbv = (n_groups_ + gps * kQuantWarps - 1) / (gps * kQuantWarps), stride = nbv + 1;
    ws.a.reserve(static_cast<size_t>(n_heads) * stride * D * sizeof(float));
    ws.b.reserve(static_cast<size_t>(n_heads) * stride * 2 * sizeof(float));
    decode_block_reserve(ws, n_kv);
    *blk = decode_block_ext_args(exact_k_.as<__half>(), exact_v_.as<__half>(), exact_view(), q, k, v, rope, out, ws,
                                 nbv);
    *v3 = quant_args(gps, nbv * kQuantWarps, q, ws.a.as<float>(), ws.b.as<float>(), stride);
    v3->grid = dim3(n_kv * nbv);
    v3->fuse = true;
    v3->dpos = dpos_;
    v3->rope = rope;
    v3->tickets = ws.tickets.as<int>();
    v3->out = out;
  }

  void fill_random(int n, uint64_t seed, cudaStream_t s) override {
    LONGKV_CHECK(n_tokens_ + static_cast<int64_t>(n) <= shape_.max_tokens,
                 "KV cache full: %d + %d tokens exceed the capacity of %d", n_tokens_, n, shape_.max_tokens);
    constexpr int kChunk = 4096;
    const size_t row = shape_.kv_dim();
    DeviceBuffer buf(2 * sizeof(float) * std::min(n, kChunk) * row + 1);
    for (int p = 0; p < n; p += kChunk) {
      const int c = std::min(kChunk, n - p);
      float* kb = buf.as<float>();
      float* vb = kb + static_cast<size_t>(c) * row;
      random_normal_kernel<<<grid_1d(2 * c * row), 256, 0, s>>>(kb, 2 * c * row, seed * 1000003 + p);
      LONGKV_CUDA_LAUNCHED();
      // No rows read these tokens: cut as they arrive (what cut=attend's next
      // append would do anyway), so the window stays within its first size.
      update(kb, vb, c, true, s);
    }
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s));  // buf is freed on return
  }

  KvFootprint footprint() const override {
    const KvQuantBytes b = kv_quant_bytes(shape_.n_kv_heads, shape_.head_dim, G_, n_groups_, geo_.krec, geo_.vrec,
                                          static_cast<size_t>(n_sinks_) + n_window_, n_tokens_);
    KvFootprint f;
    f.tokens = n_tokens_;
    f.gpu_bytes = b.k + b.v;
    f.capacity_bytes = k_codes_.bytes() + v_codes_.bytes() + exact_k_.bytes() + exact_v_.bytes() + tmp_.bytes();
    f.k_bits = b.k_bits;
    f.v_bits = b.v_bits;
    return f;
  }
  int size() const override { return n_tokens_; }
  // Steady steps (the window grows by one, no sink completes and, under
  // cut=append, no group) launch the same kernels with the same parameters
  // while the group and sink counts stay: the position comes from the
  // device. Under cut=attend the step after a group completed cuts it
  // first; its launches follow from the same counts plus the window's
  // length, so it is a key of its own (CudaTuning::graph_cut; before
  // milestone 27 it ran directly, as under cut=append the step that
  // completes a group still does).
  bool replay_key(std::vector<uint64_t>* key) const override {
    const int cut = uncut_groups();
    if (!steady_next() || (cut > 0 && !cuda_tuning().graph_cut)) return false;
    key->insert(key->end(), {gen_, static_cast<uint64_t>(n_groups_), static_cast<uint64_t>(n_sinks_),
                             cut > 0 ? static_cast<uint64_t>(n_window_) + 1 : 0});
    return true;
  }
  void advance(int n) override {
    LONGKV_CHECK(n == 1 && steady_next() && (uncut_groups() == 0 || cuda_tuning().graph_cut),
                 "quantized KV cache: only a steady single-token step can replay");
    if (const int e = uncut_groups()) {  // update()'s counts for the cut of e groups from the window
      n_groups_ += e;
      n_window_ -= e * G_;
    }
    ++n_window_;
    ++n_tokens_;
    decode_dev_ = true;
  }
  std::vector<int64_t> host_state() const override {
    return {n_tokens_, n_sinks_, n_groups_, n_window_, decode_dev_ ? 1 : 0};
  }
  void set_host_state(const std::vector<int64_t>& st) override {
    LONGKV_CHECK(st.size() == 5, "quantized KV cache: a host state of 5 values");
    n_tokens_ = static_cast<int>(st[0]);
    n_sinks_ = static_cast<int>(st[1]);
    n_groups_ = static_cast<int>(st[2]);
    n_window_ = static_cast<int>(st[3]);
    decode_dev_ = st[4] != 0;
  }
  void clear() override {
    n_tokens_ = n_sinks_ = n_groups_ = n_window_ = 0;
    decode_dev_ = false;
  }
  std::string mode() const override { return mode_.to_string(); }

  void dump_codes(CudaKvDump* d) const override {
    LONGKV_CUDA_CHECK(cudaDeviceSynchronize());
    // Records of kv_group_layout's bytes, back to back (on the GPU each
    // starts at a multiple of krec / vrec, the bytes rounded up to 16).
    d->k_rec = kv_group_layout(G_, geo_.D, geo_.kbits, geo_.outliers).bytes;
    d->v_rec = kv_group_layout(G_, geo_.D, geo_.vbits, geo_.outliers).bytes;
    d->n_groups = n_groups_;
    d->max_groups = geo_.max_groups;
    d->n_sinks = n_sinks_;
    d->n_window = n_window_;
    const size_t nk = static_cast<size_t>(geo_.n_kv) * geo_.max_groups;
    d->k_codes.resize(nk * d->k_rec);
    d->v_codes.resize(nk * d->v_rec);
    if (nk == 0) return;
    LONGKV_CUDA_CHECK(cudaMemcpy2D(d->k_codes.data(), d->k_rec, k_codes_.as(), geo_.krec, d->k_rec, nk,
                                   cudaMemcpyDeviceToHost));
    LONGKV_CUDA_CHECK(cudaMemcpy2D(d->v_codes.data(), d->v_rec, v_codes_.as(), geo_.vrec, d->v_rec, nk,
                                   cudaMemcpyDeviceToHost));
  }

 private:
  // fp16 part (sinks + window) as a dense view: a contiguous slot prefix.
  DenseKvView exact_view() const {
    DenseKvView kv = DenseKvView::of(exact_k_.as<__half>(), exact_v_.as<__half>(), geo_.n_kv, shape_.group(), geo_.D,
                                     geo_.exact_cap, n_sinks_ + n_window_);
    if (decode_dev_) {  // fp16 tokens after the append: *dpos + 1 - (groups' tokens)
      kv.dev_n = dpos_;
      kv.dev_add = 1 - n_groups_ * G_;
      kv.split_n = sink_cap_ + win_cap_;  // a steady step's count is below it, however far exact_cap grew
    }
    return kv;
  }

  // Groups cut_window() would cut now: an append no attend() followed
  // (cut=attend); the next append or fused step cuts them first.
  int uncut_groups() const {
    return mode_.defer && n_window_ >= mode_.residual + G_ ? (n_window_ - mode_.residual) / G_ : 0;
  }

  // Whether the next single-token append is steady (see replay_key).
  bool steady_next() const {
    if (!dpos_ || n_tokens_ + 1 > shape_.max_tokens) return false;
    if (n_sinks_ < sink_cap_ && n_tokens_ == n_sinks_) return false;
    const int w = n_window_ - uncut_groups() * G_;
    // Under cut=attend the step that completes a group is steady too
    // (milestone 19): its rows read the whole window in f16 and the group
    // is cut after them, by the next step, so only the window's room
    // (R + G slots) decides. Under cut=append its append cuts first.
    const int room = mode_.defer ? mode_.residual + G_ : mode_.residual + G_ - 1;
    return w + 1 <= room && sink_cap_ + w + 1 <= geo_.exact_cap;
  }

  // The quantized split kernel for this cache's shape: launched, or with
  // `warps` set only asked how many warps stay resident.
  QuantDecodeArgs quant_args(int gps, int qsplits, const float* q, float* po, float* pml, int stride) const {
    QuantDecodeArgs a;
    a.mma = cuda_tuning().quant_decode_mma;
    a.pdl = cuda_tuning().decode_pdl;
    a.kc = k_codes_.as<uint8_t>();
    a.vc = v_codes_.as<uint8_t>();
    a.geo = geo_;
    a.group_q = shape_.group();
    a.n_groups = n_groups_;
    a.gps = gps;
    a.n_splits = qsplits;
    a.q = q;
    a.scale = 1.0f / sqrtf(static_cast<float>(geo_.D));
    a.part_o = po;
    a.part_ml = pml;
    a.stride = stride;
    return a;
  }
  void launch_quant(dim3 grid, int gps, int qsplits, const float* q, float* po, float* pml, int stride, cudaStream_t s,
                    int* warps) {
    QuantDecodeArgs a = quant_args(gps, qsplits, q, po, pml, stride);
    a.grid = grid;
    if (quant_decode_fast(geo_) || quant_decode_mma_outliers(geo_)) launch_quant_decode(a, s, warps);
    else launch_quant_decode_any(a, s, warps);
  }

  void decode(const float* q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) {
    const int D = geo_.D, n_heads = shape_.n_heads, n_kv = geo_.n_kv;
    const DenseKvView ex = exact_view();
    const int dense_splits = decode_splits_for(n_kv, ex.dev_n ? ex.split_n : ex.n_tokens, nullptr, D, shape_.group());
    // Quantized splits: one wave of the kernel's resident warps over all KV
    // heads, at least 4 groups (128 tokens) each so the merge stays small.
    int gps = 0, qsplits = 0;
    if (n_groups_ > 0) {
      int warps = 132 * 16;
      launch_quant(dim3(1), 0, 0, nullptr, nullptr, nullptr, 0, s, &warps);
      const int target = std::max(1, warps / n_kv);
      gps = std::max(4, (n_groups_ + target - 1) / target);
      qsplits = (n_groups_ + gps - 1) / gps;
    }
    const int stride = qsplits + dense_splits;
    ws.a.reserve(static_cast<size_t>(n_heads) * stride * D * sizeof(float));
    ws.b.reserve(static_cast<size_t>(n_heads) * stride * 2 * sizeof(float));
    float* po = ws.a.as<float>();
    float* pml = ws.b.as<float>();
    if (qsplits > 0) {
      const dim3 grid((n_kv * qsplits + kQuantWarps - 1) / kQuantWarps);
      launch_quant(grid, gps, qsplits, q, po, pml, stride, s, nullptr);
      LONGKV_CUDA_LAUNCHED();
    }
    // With decode_pdl the fp16 part runs beside the quantized kernel's tail
    // and the merge is queued behind both (they write disjoint split slots).
    const bool pdl = cuda_tuning().decode_pdl;
    if (dense_splits > 0) attend_decode_dense_parts(ex, q, po, pml, qsplits, stride, s, pdl && qsplits > 0);
    merge_decode_parts(po, pml, n_heads, stride, D, out, s, pdl);
  }

  void prefill(const float* q, int n_q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) {
    const int D = geo_.D, n_kv = geo_.n_kv, N = n_tokens_;
    const size_t per = static_cast<size_t>(n_kv) * N * D;
    DenseKvView view = DenseKvView::of(nullptr, nullptr, n_kv, shape_.group(), D, N, N);
    if (ws.gemm == CudaGemm::f32) {  // f32 GEMMs: dequantize to f32, no f16 rounding of the codes' values
      ws.kv.reserve(2 * per * sizeof(float));
      float* dk = ws.kv.as<float>();
      stage_layer(dk, dk + per, s);
      view.k32 = dk;
      view.v32 = dk + per;
    } else {
      ws.kv.reserve(2 * per * sizeof(__half));
      __half* dk = ws.kv.as<__half>();
      stage_layer(dk, dk + per, s);
      view.k = dk;
      view.v = dk + per;
    }
    attend_prefill_dense(view, q, n_q, out, ws, s);
  }

  // Writes the layer's sinks, dequantized groups and window in token order
  // to dk/dv [n_kv][n_tokens][D].
  template <typename T>
  void stage_layer(T* dk, T* dv, cudaStream_t s) {
    const int D = geo_.D, n_kv = geo_.n_kv, N = n_tokens_;
    if (n_sinks_ > 0) {
      copy_slots_kernel<<<grid_1d(static_cast<size_t>(n_sinks_) * n_kv * D), 256, 0, s>>>(
          exact_k_.as<__half>(), exact_v_.as<__half>(), geo_.exact_cap, 0, n_sinks_, n_kv, D, N, 0, dk, dv);
      LONGKV_CUDA_LAUNCHED();
    }
    if (n_groups_ > 0) {
      dequantize_groups_kernel<<<dim3(n_groups_, n_kv), 256, 0, s>>>(k_codes_.as<uint8_t>(), v_codes_.as<uint8_t>(),
                                                                      geo_, n_sinks_, N, dk, dv);
      LONGKV_CUDA_LAUNCHED();
    }
    if (n_window_ > 0) {
      copy_slots_kernel<<<grid_1d(static_cast<size_t>(n_window_) * n_kv * D), 256, 0, s>>>(
          exact_k_.as<__half>(), exact_v_.as<__half>(), geo_.exact_cap, sink_cap_, n_window_, n_kv, D, N,
          n_sinks_ + n_groups_ * G_, dk, dv);
      LONGKV_CUDA_LAUNCHED();
    }
  }

  KvMode mode_;
  QuantGeom geo_;
  int G_ = kQuantGroup;  // tokens per group
  int sink_cap_ = 0, win_cap_ = 0;
  DeviceBuffer k_codes_, v_codes_, exact_k_, exact_v_, tmp_;
  int n_tokens_ = 0, n_sinks_ = 0, n_groups_ = 0, n_window_ = 0;
  bool smem_raised_ = false;  // quantize_groups_kernel's shared-memory limit raised for this G
  bool decode_dev_ = false;  // the last append was steady: decode reads the fp16 count from the device
  uint64_t gen_ = 0;         // times reserve_exact moved the fp16 buffers
};

}  // namespace

bool decode_block_batch(GpuKvCache* const* caches, int n, const float* q, const float* k, const float* v,
                        int q_stride, int kv_stride, const DecodeRope& rope, float* out, size_t out_stride,
                        GpuAttnWorkspace* ws, int groups_per_warp, int blocks_per_head, cudaStream_t s) {
  if (n < 1 || n > kMaxBatchSeqs) return false;
  QuantGpuCache* qc[kMaxBatchSeqs];
  DecodeRope ropes[kMaxBatchSeqs];
  for (int i = 0; i < n; ++i) {  // every cache first: no state changes unless all take the step
    ropes[i] = rope;
    qc[i] = dynamic_cast<QuantGpuCache*>(caches[i]->batch_step_target(&ropes[i]));
    if (!qc[i]) return false;  // one model's caches: one mode and shape (the launches check the geometry)
  }
  attn_block::DecodeBlockArgs blk[kMaxBatchSeqs];
  QuantDecodeArgs v3[kMaxBatchSeqs];
  for (int i = 0; i < n; ++i)
    qc[i]->batch_step_args(q + static_cast<size_t>(q_stride) * i, k + static_cast<size_t>(kv_stride) * i,
                           v + static_cast<size_t>(kv_stride) * i, ropes[i], out + out_stride * i, ws[i],
                           groups_per_warp, blocks_per_head, s, &blk[i], &v3[i]);
  launch_decode_block_batch(blk, n, qc[0]->shape().group(), qc[0]->shape().head_dim, s);
  launch_quant_decode_v3_batch(v3, n, s);
  return true;
}

std::unique_ptr<GpuKvCache> make_quant_gpu_kv_cache(const KvMode& mode, const KvShape& s) {
  return std::make_unique<QuantGpuCache>(mode, s);
}

double gpu_kv_bytes_per_token(const std::string& mode_str, const KvShape& s) {
  const KvMode mode = parse_kv_mode(mode_str);
  if (mode.kind == KvKind::f16) return static_cast<double>(s.kv_dim()) * 2 * sizeof(__half);
  LONGKV_CHECK(mode.kind == KvKind::quant, "KV mode '%s' is not available on the CUDA backend yet (GPU modes: f16 "
               "and the scalar codes k<B>v<B>)", mode_str.c_str());
  const int n_o = kv_outlier_count(mode.outlier_pct, mode.group, s.head_dim);
  const KvGroupLayout k = kv_group_layout(mode.group, s.head_dim, mode.k_bits, n_o);
  const KvGroupLayout v = kv_group_layout(mode.group, s.head_dim, mode.v_bits, n_o);
  const size_t rec = gpu_record_stride(k.bytes) + gpu_record_stride(v.bytes);
  return static_cast<double>(s.n_kv_heads) * static_cast<double>(rec) / mode.group;
}

}  // namespace longkv::cuda

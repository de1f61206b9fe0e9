// ":rot" on the GPU: the twin of kv/rotated_cache (RotatedKvCache). Keys
// and values are stored as H k and H v (H the normalized Walsh-Hadamard
// matrix of one head), queries are rotated the same way before the inner
// cache attends and its outputs rotated back (H H = I). The rotation is
// hadamard_rotate's butterfly, stage for stage, with the same single IEEE
// operations (adds, subtracts, one multiply by the same f32 1/sqrt(d)), so
// the stored vectors and therefore the codes equal the CPU cache's: at 2
// bits a last-bit difference would flip codes and move perplexity.
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gpu_kv_cache.cuh"
#include "backend/cuda/hadamard.cuh"
#include "backend/cuda/rope_rotate.cuh"

namespace longkv::cuda {
namespace {

// Rotates `count` vectors of d floats from src into dst (may alias). Block:
// d/2 threads (one butterfly each per stage) x kVecs vectors.
constexpr int kVecs = 4;
__global__ void hadamard_kernel(const float* __restrict__ src, float* dst, size_t count, int d, float scale) {
  extern __shared__ float x_sh[];
  const int p = threadIdx.x, vi = threadIdx.y;
  const size_t vec = static_cast<size_t>(blockIdx.x) * kVecs + vi;
  const bool live = vec < count;
  float* x = x_sh + vi * d;
  x[2 * p] = live ? src[vec * d + 2 * p] : 0.0f;
  x[2 * p + 1] = live ? src[vec * d + 2 * p + 1] : 0.0f;
  hadamard_stages(x_sh, kVecs, d, vi * (d / 2) + p, kVecs * (d / 2), [] { __syncthreads(); });
  if (live) {
    dst[vec * d + 2 * p] = __fmul_rn(x[2 * p], scale);
    dst[vec * d + 2 * p + 1] = __fmul_rn(x[2 * p + 1], scale);
  }
}

// A fused step's inputs (GpuKvCache::decode_block): the n_heads query and
// n_kv key vectors rotated by RoPE to position *dpos, then those and the n_kv
// value vectors by the butterfly -> qr, kr, vr. The bits rope_kernel then
// hadamard_kernel make: rope_rotate (rope_rotate.cuh) on pair j = (2j, 2j + 1)
// or (j, j + d/2) with frequency j, then the same stages.
__global__ void rope_hadamard_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                     const float* __restrict__ v, float* qr, float* kr, float* vr, int n_heads,
                                     int n_kv, int d, DecodeRope rope, const int* __restrict__ dpos, float scale) {
  extern __shared__ float x_sh[];
  const int p = threadIdx.x, vi = threadIdx.y;
  const int vec = blockIdx.x * kVecs + vi;
  const bool live = vec < n_heads + 2 * n_kv;
  const bool is_v = vec >= n_heads + n_kv;
  const int off = (vec < n_heads ? vec : is_v ? vec - n_heads - n_kv : vec - n_heads) * d;
  const float* src = (vec < n_heads ? q : is_v ? v : k) + off;
  float* dst = (vec < n_heads ? qr : is_v ? vr : kr) + off;
  float* x = x_sh + vi * d;
  if (live) {
    const int c0 = rope.neox ? p : 2 * p, c1 = rope.neox ? p + d / 2 : 2 * p + 1;
    float x0 = src[c0], x1 = src[c1];
    if (!is_v && rope.inv_freq != nullptr && (rope.neox || c0 < rope.rope_dim)) {
      float cs, sn;
      rope_cos_sin(*dpos, rope.inv_freq[p], cs, sn);
      const float2 r = rope_rotate(x0, x1, cs, sn);
      x0 = r.x;
      x1 = r.y;
    }
    x[c0] = x0;
    x[c1] = x1;
  } else {
    x[2 * p] = x[2 * p + 1] = 0.0f;
  }
  hadamard_stages(x_sh, kVecs, d, vi * (d / 2) + p, kVecs * (d / 2), [] { __syncthreads(); });
  if (live) {
    dst[2 * p] = __fmul_rn(x[2 * p], scale);
    dst[2 * p + 1] = __fmul_rn(x[2 * p + 1], scale);
  }
}

// 1/sqrt(d) as the CPU computes it: f32 sqrt, then f32 division (both
// correctly rounded on both sides).
float rotation_scale(int d) { return 1.0f / std::sqrt(static_cast<float>(d)); }

void rotate(const float* src, float* dst, size_t count, int d, cudaStream_t s) {
  if (count == 0) return;
  const float scale = rotation_scale(d);
  const dim3 block(d / 2, kVecs);
  const size_t blocks = (count + kVecs - 1) / kVecs;
  hadamard_kernel<<<static_cast<unsigned>(blocks), block, sizeof(float) * d * kVecs, s>>>(src, dst, count, d, scale);
  LONGKV_CUDA_LAUNCHED();
}

class RotatedGpuCache final : public GpuKvCache {
 public:
  explicit RotatedGpuCache(std::unique_ptr<GpuKvCache> inner) : GpuKvCache(inner->shape()), inner_(std::move(inner)) {
    const int d = shape_.head_dim;
    LONGKV_CHECK(d >= 2 && d <= 1024 && (d & (d - 1)) == 0,
                 "KV mode ':rot' needs a power-of-two head dimension (got %d)", d);
    // One fused step's rotated q | k | v | output, allocated once: a captured
    // step replays with these addresses.
    step_.resize(sizeof(float) * d * (2 * static_cast<size_t>(shape_.n_heads) + 2 * shape_.n_kv_heads));
  }

  // The inner cache's fused step on the raw q, k, v. Milestone 19
  // (CudaTuning::rot_in_step): the inner cache's own kernels rotate -- the
  // decode block q, k and v after RoPE, the v3 kernel its copy of q, and the
  // block that writes the merged output rotates it back (DecodeRope::hadamard,
  // hadamard.cuh) -- so :rot adds no launch. Milestone 18 (off): RoPE and the
  // rotation of q, k and v in one kernel, the inner step on the rotated
  // vectors without RoPE, then the output rotated back by a third. Same bits
  // as rope + append + attend either way.
  bool decode_block_ok(const DecodeRope& rope) const override {
    return decode_block_supported(shape_.group(), shape_.head_dim, rope) && inner_->decode_block_ok(inner_rope(rope));
  }
  GpuKvCache* batch_step_target(DecodeRope* rope) override {  // rotated inside the step: the inner cache's
    if (!cuda_tuning().rot_in_step || !dpos_ || !decode_block_ok(*rope)) return nullptr;
    *rope = inner_rope(*rope);
    return inner_->batch_step_target(rope);
  }
  void decode_block(const float* q, const float* k, const float* v, const DecodeRope& rope, float* out,
                    GpuAttnWorkspace& ws, cudaStream_t s) override {
    LONGKV_CHECK(decode_block_ok(rope) && dpos_, "KV mode ':rot': the fused decode step does not apply");
    if (cuda_tuning().rot_in_step) return inner_->decode_block(q, k, v, inner_rope(rope), out, ws, s);
    const int d = shape_.head_dim, nh = shape_.n_heads, nkv = shape_.n_kv_heads;
    float* qr = step_.as<float>();
    float* kr = qr + static_cast<size_t>(nh) * d;
    float* vr = kr + static_cast<size_t>(nkv) * d;
    float* outr = vr + static_cast<size_t>(nkv) * d;
    const int vecs = nh + 2 * nkv;
    rope_hadamard_kernel<<<(vecs + kVecs - 1) / kVecs, dim3(d / 2, kVecs), sizeof(float) * d * kVecs, s>>>(
        q, k, v, qr, kr, vr, nh, nkv, d, rope, dpos_, rotation_scale(d));
    LONGKV_CUDA_LAUNCHED();
    inner_->decode_block(qr, kr, vr, DecodeRope{}, outr, ws, s);
    rotate(outr, out, static_cast<size_t>(nh), d, s);
  }

  void append(const float* k, const float* v, int n, cudaStream_t s) override {
    const size_t count = static_cast<size_t>(n) * shape_.n_kv_heads;
    kv_.reserve(2 * count * shape_.head_dim * sizeof(float));
    float* kr = kv_.as<float>();
    float* vr = kr + count * shape_.head_dim;
    rotate(k, kr, count, shape_.head_dim, s);
    rotate(v, vr, count, shape_.head_dim, s);
    inner_->append(kr, vr, n, s);
  }
  void attend(const float* q, int n_q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) override {
    const size_t count = static_cast<size_t>(n_q) * shape_.n_heads;
    q_.reserve(count * shape_.head_dim * sizeof(float));
    rotate(q, q_.as<float>(), count, shape_.head_dim, s);
    inner_->attend(q_.as<float>(), n_q, out, ws, s);
    rotate(out, out, count, shape_.head_dim, s);
  }
  void fill_random(int n, uint64_t seed, cudaStream_t s) override { inner_->fill_random(n, seed, s); }
  KvFootprint footprint() const override { return inner_->footprint(); }
  int size() const override { return inner_->size(); }
  void clear() override { inner_->clear(); }
  std::string mode() const override {
    KvMode m = parse_kv_mode(inner_->mode());
    m.rotate = true;
    return m.to_string();
  }
  void set_step_position(const int* dpos) override {
    GpuKvCache::set_step_position(dpos);
    inner_->set_step_position(dpos);
  }
  bool replay_key(std::vector<uint64_t>* key) const override { return inner_->replay_key(key); }
  void advance(int n) override { inner_->advance(n); }
  std::vector<int64_t> host_state() const override { return inner_->host_state(); }
  void set_host_state(const std::vector<int64_t>& st) override { inner_->set_host_state(st); }
  void dump_codes(CudaKvDump* d) const override { inner_->dump_codes(d); }

 private:
  std::unique_ptr<GpuKvCache> inner_;
  DeviceBuffer kv_, q_;  // rotated keys|values of one append, rotated queries
  DeviceBuffer step_;    // decode_block's rotated q | k | v | output (milestone 18's path)

  // What the inner cache's fused step is given: RoPE as is, plus the
  // rotation inside its kernels (milestone 19) or none (milestone 18: the
  // vectors come rotated).
  DecodeRope inner_rope(const DecodeRope& rope) const {
    if (!cuda_tuning().rot_in_step) return DecodeRope{};
    DecodeRope r = rope;
    r.hadamard = rotation_scale(shape_.head_dim);
    return r;
  }
};

}  // namespace

std::unique_ptr<GpuKvCache> make_rotated_gpu_kv_cache(const KvMode& mode, const KvShape& s) {
  LONGKV_CHECK(!mode.pre_rope, "KV mode ':rot' cannot be combined with rope=pre (the rotation does not commute with "
                               "RoPE)");
  KvMode inner = mode;
  inner.rotate = false;
  return std::make_unique<RotatedGpuCache>(make_quant_gpu_kv_cache(inner, s));
}

}  // namespace longkv::cuda

// ":rot" on the GPU: the twin of kv/rotated_cache (RotatedKvCache). Keys
// and values are stored as H k and H v (H the normalized Walsh-Hadamard
// matrix of one head), queries are rotated the same way before the inner
// cache attends and its outputs rotated back (H H = I). The rotation is
// hadamard_rotate's butterfly, stage for stage, with the same single IEEE
// operations (adds, subtracts, one multiply by the same f32 1/sqrt(d)), so
// the stored vectors and therefore the codes equal the CPU cache's: at 2
// bits a last-bit difference would flip codes and move perplexity.
#include "backend/cuda/gpu_kv_cache.cuh"

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
  if (live) {
    x[2 * p] = src[vec * d + 2 * p];
    x[2 * p + 1] = src[vec * d + 2 * p + 1];
  }
  __syncthreads();
  for (int len = 1; len < d; len <<= 1) {
    // Butterfly p of this stage: (j, j + len), j = block start + offset.
    const int j = (p / len) * 2 * len + p % len;
    if (live) {
      const float a = x[j], b = x[j + len];
      x[j] = __fadd_rn(a, b);
      x[j + len] = __fsub_rn(a, b);
    }
    __syncthreads();
  }
  if (live) {
    dst[vec * d + 2 * p] = __fmul_rn(x[2 * p], scale);
    dst[vec * d + 2 * p + 1] = __fmul_rn(x[2 * p + 1], scale);
  }
}

void rotate(const float* src, float* dst, size_t count, int d, cudaStream_t s) {
  if (count == 0) return;
  // 1/sqrt(d) as the CPU computes it: f32 sqrt, then f32 division (both
  // correctly rounded on both sides).
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
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
  uint64_t replay_key() const override { return inner_->replay_key(); }
  void advance(int n) override { inner_->advance(n); }
  void dump_codes(CudaKvDump* d) const override { inner_->dump_codes(d); }

 private:
  std::unique_ptr<GpuKvCache> inner_;
  DeviceBuffer kv_, q_;  // rotated keys|values of one append, rotated queries
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

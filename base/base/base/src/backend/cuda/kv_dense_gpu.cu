// Dense f16 KV cache in device memory (layout in gpu_kv_cache.cuh): the GPU
// twin of kv/dense_cache, and the baseline the quantized GPU caches of
// milestone 3 (kv_quant_gpu.cu) are measured against.
#include "backend/cuda/gpu_kv_cache.cuh"

namespace longkv::cuda {
namespace {

class DenseF16GpuCache final : public GpuKvCache {
 public:
  explicit DenseF16GpuCache(const KvShape& s) : GpuKvCache(s) {
    LONGKV_CHECK(s.max_tokens > 0, "GPU KV cache needs a positive capacity");
    const size_t elems = static_cast<size_t>(s.n_kv_heads) * s.max_tokens * s.head_dim;
    k_.resize(elems * sizeof(__half));
    v_.resize(elems * sizeof(__half));
  }

  void append(const float* k, const float* v, int n, cudaStream_t s) override {
    LONGKV_CHECK(n_ + n <= shape_.max_tokens, "KV cache full: %d + %d tokens exceed the capacity of %d", n_, n,
                 shape_.max_tokens);
    append_dense(k_.as<__half>(), v_.as<__half>(), shape_.n_kv_heads, shape_.head_dim, shape_.max_tokens, n_, k, v,
                 n, s, n == 1 ? dpos_ : nullptr);
    n_ += n;
  }

  void attend(const float* q, int n_q, float* out, GpuAttnWorkspace& ws, cudaStream_t s) override {
    LONGKV_CHECK(n_q >= 1 && n_q <= n_, "attend: %d query rows but %d tokens held", n_q, n_);
    DenseKvView kv = DenseKvView::of(k_.as<__half>(), v_.as<__half>(), shape_.n_kv_heads, shape_.group(),
                                     shape_.head_dim, shape_.max_tokens, n_);
    if (n_q == 1 && dpos_) {  // the count after this step's append: *dpos + 1
      kv.dev_n = dpos_;
      kv.dev_add = 1;
      kv.split_n = decode_split_bucket(n_);
    }
    if (n_q == 1) attend_decode_dense(kv, q, out, ws, s);
    else attend_prefill_dense(kv, q, n_q, out, ws, s);
  }

  bool decode_block_ok(const DecodeRope& rope) const override {
    return cuda_tuning().attn_block && dpos_ && n_ + 1 <= shape_.max_tokens &&
           decode_block_supported(shape_.group(), shape_.head_dim, rope);
  }

  void decode_block(const float* q, const float* k, const float* v, const DecodeRope& rope, float* out,
                    GpuAttnWorkspace& ws, cudaStream_t s) override {
    LONGKV_CHECK(decode_block_ok(rope), "f16 KV cache: the fused decode step does not apply (full, no device "
                 "position, or an unsupported shape)");
    n_ += 1;  // as append(.., 1, ..): the count the split bucket (replay key) is taken from
    DenseKvView kv = DenseKvView::of(k_.as<__half>(), v_.as<__half>(), shape_.n_kv_heads, shape_.group(),
                                     shape_.head_dim, shape_.max_tokens, n_);
    kv.dev_n = dpos_;
    kv.dev_add = 1;
    kv.split_n = decode_split_bucket(n_);
    decode_block_dense(k_.as<__half>(), v_.as<__half>(), kv, q, k, v, rope, out, ws, s);
  }

  void fill_random(int n, uint64_t seed, cudaStream_t s) override {
    LONGKV_CHECK(n_ + n <= shape_.max_tokens, "KV cache full: %d + %d tokens exceed the capacity of %d", n_, n,
                 shape_.max_tokens);
    const size_t row = static_cast<size_t>(n) * shape_.head_dim;
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      const size_t off = (static_cast<size_t>(h) * shape_.max_tokens + n_) * shape_.head_dim;
      fill_random_f16(k_.as<__half>() + off, row, seed * 2 * 131 + h, s);
      fill_random_f16(v_.as<__half>() + off, row, seed * 2 * 131 + 65 + h, s);
    }
    n_ += n;
  }

  KvFootprint footprint() const override {
    KvFootprint f;
    f.tokens = n_;
    f.gpu_bytes = static_cast<size_t>(n_) * shape_.kv_dim() * 2 * sizeof(__half);
    f.capacity_bytes = k_.bytes() + v_.bytes();
    f.k_bits = f.v_bits = 16;
    return f;
  }
  int size() const override { return n_; }
  bool replay_key(std::vector<uint64_t>* key) const override {  // the split bucket of the next step's count
    if (n_ + 1 > shape_.max_tokens) return false;
    key->push_back(static_cast<uint64_t>(decode_split_bucket(n_ + 1)));
    return true;
  }
  std::vector<int64_t> host_state() const override { return {n_}; }
  void set_host_state(const std::vector<int64_t>& st) override { n_ = static_cast<int>(st.at(0)); }
  void advance(int n) override {
    LONGKV_CHECK(n_ + n <= shape_.max_tokens, "KV cache full: %d + %d tokens exceed the capacity of %d", n_, n,
                 shape_.max_tokens);
    n_ += n;
  }
  void clear() override { n_ = 0; }
  std::string mode() const override { return "f16"; }

 private:
  DeviceBuffer k_, v_;
  int n_ = 0;
};

}  // namespace

std::unique_ptr<GpuKvCache> make_gpu_kv_cache(const std::string& mode, const KvShape& s) {
  const KvMode m = parse_kv_mode(mode);
  if (m.kind == KvKind::f16) return std::make_unique<DenseF16GpuCache>(s);
  if (m.kind == KvKind::quant) return m.rotate ? make_rotated_gpu_kv_cache(m, s) : make_quant_gpu_kv_cache(m, s);
  fail("KV mode '%s' is not available on the CUDA backend yet (GPU modes: f16 and the scalar codes k<B>v<B>)",
       mode.c_str());
}

}  // namespace longkv::cuda

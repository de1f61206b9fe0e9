// The CUDA seam in a build without CUDA (-DLONGKV_CUDA=OFF): every entry
// point says so, so tools can fall back to the CPU with the reason.
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"

namespace longkv {

namespace {
constexpr const char* kNoCuda = "longkv was built without CUDA (-DLONGKV_CUDA=ON)";
}

bool cuda_available(std::string* why) {
  if (why) *why = kNoCuda;
  return false;
}
bool cuda_graphs_default() { return false; }
CudaTuning& cuda_tuning() {
  static CudaTuning t;
  return t;
}
std::string cuda_tuning_description() { return "none (no CUDA)"; }
int64_t cuda_gemv_x8_launches(bool) { return 0; }
int64_t cuda_gemv_one_kernel_launches() { return 0; }
std::string cuda_device_description() { fail("%s", kNoCuda); }
double cuda_copy_bandwidth_gbs(size_t) { fail("%s", kNoCuda); }
void cuda_memory_info(size_t*, size_t*) { fail("%s", kNoCuda); }

std::unique_ptr<CudaModel> CudaModel::create(const ModelWeights&, const CudaModelOptions&) { fail("%s", kNoCuda); }

void cuda_check_matmul(const WeightView&, const float*, int, float*, CudaGemm) { fail("%s", kNoCuda); }
void cuda_check_gemv_act(const WeightView&, int, const float*, const float*, float, const float*, float*,
                         const RopeTable*, int, int64_t) {
  fail("%s", kNoCuda);
}
void cuda_check_gemv_x8_chain(const WeightView&, const WeightView&, const float*, const float*, const float*, float,
                              bool, float*, float*, const RopeTable*, int, int64_t) {
  fail("%s", kNoCuda);
}
void cuda_check_ffn_glu(const WeightView&, const WeightView&, const WeightView&, const float*, const float*, float,
                        float*, float*) {
  fail("%s", kNoCuda);
}
void cuda_check_interleaved_gemm(const WeightView&, const WeightView&, const float*, int, float*, float*) {
  fail("%s", kNoCuda);
}
int32_t cuda_check_argmax(const float*, int, int) { fail("%s", kNoCuda); }
std::vector<std::pair<float, int32_t>> cuda_check_top_k(const float*, int, int) { fail("%s", kNoCuda); }
void cuda_check_rmsnorm(const float*, const float*, int, int, float, float*) { fail("%s", kNoCuda); }
void cuda_check_rope(const RopeTable&, float*, int, int, int64_t) { fail("%s", kNoCuda); }
void cuda_check_attention(const KvShape&, const std::string&, const float*, const float*, int, int, const float*, int,
                          float*, CudaGemm, CudaKvDump*) {
  fail("%s", kNoCuda);
}
void cuda_check_chunked_attention(const KvShape&, const std::string&, const float*, const float*, const float*,
                                  const std::vector<int>&, float*, CudaKvDump*) {
  fail("%s", kNoCuda);
}
void cuda_check_decode_steps(const KvShape&, const std::string&, const float*, const float*, int, int, int,
                             const float*, const RopeTable*, bool, float*, const float*, float*) {
  fail("%s", kNoCuda);
}
CudaAttnSpeed cuda_bench_decode_attention(const KvShape&, const std::string&, int) { fail("%s", kNoCuda); }
double cuda_kv_bytes_per_token(const std::string&, const KvShape&) { fail("%s", kNoCuda); }

void cuda_check_gemv_batch(const WeightView&, const float*, int, float*) { fail("%s", kNoCuda); }
void cuda_check_gemv_batch_act(const WeightView&, int, const float*, const float*, float, int, float*, float*) {
  fail("%s", kNoCuda);
}
CudaGemvSpeed cuda_bench_gemv(WeightType, int, int, int) { fail("%s", kNoCuda); }

}  // namespace longkv

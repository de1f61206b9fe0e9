// GpuLayer's upload (gpu_layer.cuh).
#include "backend/cuda/gpu_layer.cuh"

#include <initializer_list>

namespace longkv::cuda {

DeviceBuffer upload_floats(const std::vector<float>& v, cudaStream_t s) {
  DeviceBuffer b;
  if (v.empty()) return b;
  b.resize(v.size() * sizeof(float));
  LONGKV_CUDA_CHECK(cudaMemcpyAsync(b.as(), v.data(), b.bytes(), cudaMemcpyHostToDevice, s));
  return b;
}

namespace {
// The views of a stacked upload's parts into their fields.
void take_parts(const GpuWeight* parts, std::initializer_list<GpuWeight*> fields) {
  for (GpuWeight* f : fields) *f = *parts++;
}
}  // namespace

void GpuLayer::upload(const LayerWeights& L, cudaStream_t s) {
  attn_norm = upload_floats(L.attn_norm, s);
  ffn_norm = upload_floats(L.ffn_norm, s);
  bq = upload_floats(L.bq, s);
  bk = upload_floats(L.bk, s);
  bv = upload_floats(L.bv, s);
  const std::vector<const WeightView*> qkv{&L.wq, &L.wk, &L.wv}, gu{&L.w_gate, &L.w_up};
  if (stackable(qkv)) {
    GpuWeight parts[3];
    wqkv = upload_stacked(qkv, wq_buf, parts, s);
    take_parts(parts, {&wq, &wk, &wv});
  } else if (stackable({&L.wq, &L.wk})) {  // Q4_K_M's layers with a Q6_K attn_v: two GEMVs, not three
    GpuWeight parts[2];
    wqk = upload_stacked({&L.wq, &L.wk}, wq_buf, parts, s);
    take_parts(parts, {&wq, &wk});
    wv = upload_weight(L.wv, wv_buf, s);
  } else {
    wq = upload_weight(L.wq, wq_buf, s);
    wk = upload_weight(L.wk, wk_buf, s);
    wv = upload_weight(L.wv, wv_buf, s);
  }
  // SwiGLU in the gate|up GEMV's store (CudaTuning::gemv_glu): the slab
  // kernel of a block format in one slice, as gemv_act requires.
  const CudaTuning& t = cuda_tuning();
  glu = t.gemv_glu && stackable(gu) && L.w_gate.rows == L.w_up.rows && t.fuse_activation && !t.gemv_rows &&
        gemv_glu_supported(L.w_gate.type, L.w_gate.cols);
  if (glu) {
    GpuWeight parts[2];
    wgu = upload_interleaved(L.w_gate, L.w_up, wg_buf, parts, s);
    take_parts(parts, {&w_gate, &w_up});
  } else if (stackable(gu)) {
    GpuWeight parts[2];
    wgu = upload_stacked(gu, wg_buf, parts, s);
    take_parts(parts, {&w_gate, &w_up});
  } else {
    w_gate = upload_weight(L.w_gate, wg_buf, s);
    w_up = upload_weight(L.w_up, wu_buf, s);
  }
  wo = upload_weight(L.wo, wo_buf, s);
  w_down = upload_weight(L.w_down, wd_buf, s);
}

size_t GpuLayer::weight_bytes() const {
  return wq.nbytes() + wk.nbytes() + wv.nbytes() + wo.nbytes() +
         (glu ? wgu.nbytes() : w_gate.nbytes() + w_up.nbytes()) +  // glu: the parts are rows 2 ld apart
         w_down.nbytes();
}

}  // namespace longkv::cuda

// One transformer layer's weights resident on the GPU (CudaModel): the
// norms and biases as f32, the matrices in their stored formats, with
// wq|wk|wv and w_gate|w_up stacked in one buffer where they share a type and
// width (one GEMV each for a token, one batch GEMV each for a batched step;
// views of the parts for the GEMM path).
#pragma once

#include <vector>

#include "backend/cuda/cuda_common.cuh"
#include "model/model_weights.h"

namespace longkv::cuda {

// A host vector of floats on the device (empty: no allocation).
DeviceBuffer upload_floats(const std::vector<float>& v, cudaStream_t s);

struct GpuLayer {
  DeviceBuffer attn_norm, ffn_norm, bq, bk, bv;
  DeviceBuffer wq_buf, wk_buf, wv_buf, wo_buf, wg_buf, wu_buf, wd_buf;
  GpuWeight wq, wk, wv, wo, w_gate, w_up, w_down;
  GpuWeight wqkv, wgu;  // stacked (rows == 0: not stacked, separate GEMVs)
  GpuWeight wqk;        // q|k stacked where v alone takes another format (llama.cpp's mixes)
  bool glu = false;      // wgu's rows interleaved (gate_i, up_i): SwiGLU in its GEMV's store

  // Copies L's weights on stream s (the host copies must live until s has
  // run them); glu follows CudaTuning as the slab GEMV's store needs it.
  void upload(const LayerWeights& L, cudaStream_t s);
  // The matrices' device bytes, each stacked part counted once.
  size_t weight_bytes() const;
};

}  // namespace longkv::cuda

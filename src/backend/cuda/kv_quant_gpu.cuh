// Internal to the quantized GPU KV cache: the geometry its kernels share and
// the decode launcher (kv_quant_decode.cu) that kv_quant_gpu.cu calls.
#pragma once

#include "backend/cuda/gpu_kv_cache.cuh"
#include "kv/kv_codec.h"

namespace longkv::cuda {

constexpr int kQuantGroup = kKvCodeBlock;  // group size the GPU cache supports (32 = lanes of a warp)
constexpr int kQuantWarps = 4;             // warps per block of the decode kernels

// One layer's code records and fp16 part, sizes in bytes (kv_group_layout).
struct QuantGeom {
  int n_kv = 0, D = 0, kbits = 0, vbits = 0;
  int max_groups = 0, sink_cap = 0, exact_cap = 0;
  size_t krec = 0, vrec = 0, kscale = 0, kzero = 0, vscale = 0, vzero = 0;
  bool sym = false;
};

// One launch of the quantized split kernel: warps (KV head, split) over
// n_splits splits of gps groups each, partial states (o, m, l) at split
// indices 0.. of part_o [n_heads][stride][D] / part_ml [n_heads][stride][2].
struct QuantDecodeArgs {
  bool mma = true;  // tensor-core kernel (false: the FMA kernel)
  bool pdl = false;  // v3 only: launched with PDL (waits for the kernel before it on the device)
  dim3 grid;
  const uint8_t* kc = nullptr;
  const uint8_t* vc = nullptr;
  QuantGeom geo;
  int group_q = 1, n_groups = 0, gps = 0, n_splits = 0;
  const float* q = nullptr;
  float scale = 1;
  float* part_o = nullptr;
  float* part_ml = nullptr;
  int stride = 0;
};
// Launches it, or with `warps` set only reports how many of the kernel's
// warps stay resident on the GPU (cached per kernel).
void launch_quant_decode(const QuantDecodeArgs& a, cudaStream_t s, int* warps);
// The same with milestone 9's kernel (kv_quant_decode_v3.cu; tensor cores).
void launch_quant_decode_v3(const QuantDecodeArgs& a, cudaStream_t s, int* warps);

}  // namespace longkv::cuda

// Per-type CPU kernels: the CPU backend's twin of the WeightTypeTraits table
// in formats/weight_types.h (ggml's type_traits_cpu). Internal to the CPU
// backend; callers outside it use matmul.h.
#pragma once

#include <cstdint>

#include "formats/weight_types.h"

namespace longkv {

struct CpuWeightKernels {
  WeightType type;
  // dot of one stored row of n elements with f32 x[n]; weights are decoded in
  // registers and multiplied in f32 (no activation quantization).
  float (*dot)(const void* row, const float* x, int64_t n);
  // decode one stored row of n elements into dst[n].
  void (*dequantize)(const void* row, float* dst, int64_t n);
};

// Kernels for a supported type (every WeightType has an entry).
const CpuWeightKernels& cpu_weight_kernels(WeightType t);

// Instruction set the kernels were compiled for: "avx512", "avx2" or "scalar".
const char* cpu_weight_kernels_isa();

}  // namespace longkv

// CPU kernels of the 32-element block formats beside Q4_0 (Q4_1, Q5_0,
// Q5_1, IQ4_NL) and of IQ4_XS (weight_kernels_q32.cpp): the entries of
// cpu_weight_kernels() for those types in SIMD builds. Internal to the CPU
// backend; the layouts are formats/weight_types.h's.
#pragma once

#include <cstdint>

namespace longkv::cpu_q32 {

float dot_q4_1(const void* row, const float* x, int64_t n);
void dequant_q4_1(const void* row, float* dst, int64_t n);
float dot_q5_0(const void* row, const float* x, int64_t n);
void dequant_q5_0(const void* row, float* dst, int64_t n);
float dot_q5_1(const void* row, const float* x, int64_t n);
void dequant_q5_1(const void* row, float* dst, int64_t n);
float dot_iq4_nl(const void* row, const float* x, int64_t n);
void dequant_iq4_nl(const void* row, float* dst, int64_t n);
float dot_iq4_xs(const void* row, const float* x, int64_t n);
void dequant_iq4_xs(const void* row, float* dst, int64_t n);

}  // namespace longkv::cpu_q32

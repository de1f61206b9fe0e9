// Small vector kernels used by attention and the forward pass, each with a
// scalar reference twin (tests compare them on odd sizes).
#pragma once

#include <cstdint>

#include "core/fp16.h"

namespace longkv {

float vec_dot_f32(const float* a, const float* b, int n);
float vec_dot_f16(const float* a, const f16_t* b, int n);      // a · f32(b)
void vec_axpy_f32(float* y, const float* x, float alpha, int n);  // y += alpha x
void vec_axpy_f16(float* y, const f16_t* x, float alpha, int n);

float vec_dot_f32_ref(const float* a, const float* b, int n);
float vec_dot_f16_ref(const float* a, const f16_t* b, int n);
void vec_axpy_f32_ref(float* y, const float* x, float alpha, int n);
void vec_axpy_f16_ref(float* y, const f16_t* x, float alpha, int n);

}  // namespace longkv

// CPU matrix kernels over weight formats (the fast twins of the reference
// conversions in formats/weight_types.h).
//
// Activations are always f32; weights stay in their stored format and are
// decoded in registers (decode path) or in cache-sized tiles handed to
// OpenBLAS sgemm (prefill path). Results are f32 dot products of the exact
// dequantized weights with the f32 activations (no activation quantization),
// so they match a float32 reference on dequantized weights to rounding.
#pragma once

#include <cstdint>

#include "core/thread_pool.h"
#include "formats/weight_types.h"

namespace longkv {

// Dot product of one stored row (n elements of type t) with x[n].
// Fast SIMD version and its scalar reference twin.
float dot_row(WeightType t, const void* row, const float* x, int64_t n);
float dot_row_ref(WeightType t, const void* row, const float* x, int64_t n);

// Decode a stored row into f32 (fast version of to_float_ref).
void dequantize_row(WeightType t, const void* row, float* dst, int64_t n);

// y[r] = dot(W.row(r), x) for all rows; threads split the rows.
void matvec(const WeightView& w, const float* x, float* y, ThreadPool& pool);

// Y[i][r] = dot(W.row(r), X[i]) for i < n_tok: X is [n_tok][w.cols],
// Y is [n_tok][w.rows] (row strides ldx/ldy in floats). Uses matvec for
// small n_tok and dequantized tiles + sgemm otherwise.
void matmul(const WeightView& w, const float* x, int64_t ldx, float* y, int64_t ldy, int64_t n_tok,
            ThreadPool& pool);

// Copy row `r` of W (e.g. a token embedding) into dst[w.cols] as f32.
void get_row(const WeightView& w, int64_t r, float* dst);

}  // namespace longkv

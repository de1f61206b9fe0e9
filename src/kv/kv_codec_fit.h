// The reference codec's two searches (kv_codec_fit.cpp): fit=mse's
// least-squares refinement of a range and the greedy choice of outliers.
// Internal to kv_codec.cpp; the GPU quantizer (backend/cuda/kv_quant_fit.cuh)
// repeats them operation for operation, so both are compiled without
// floating-point contraction (-ffp-contract=off, CMakeLists.txt): every
// product and sum below is one IEEE operation, in the order written, on any
// host, and the GPU twin spells the same operations with __dmul_rn and
// friends (nvcc contracts too unless told not to).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/fp16.h"

namespace longkv {

// fit=mse (kv_codec.h, Numbers): from (scale, zero) of the min/max fit,
// alternate the codes of the current range and the least-squares (zero,
// scale) for those codes, rounded to fp16, while the group's squared error
// falls (at most 8 rounds). x[0], x[stride], ... x[(n-1) stride].
void kv_refine_range_mse(const float* x, int n, int stride, int bits, f16_t* scale, f16_t* zero);

// Outliers (kv_codec.h): the record's elements as `runs` range groups of n
// elements, element i of run r at x[r*run_stride + i*elem_stride]. Picks up
// to `count` of them greedily (the smallest or largest remaining element of
// the run whose removal shrinks its squared range the most; ties to the
// first run, then the low end; a run keeps >= 4 elements), marks each in
// mask[r*n + i] and returns (r, i) in the order picked.
std::vector<std::pair<int, int>> kv_select_outliers(const float* x, int runs, size_t run_stride, int n,
                                                    size_t elem_stride, int count, std::vector<uint8_t>& mask);

}  // namespace longkv

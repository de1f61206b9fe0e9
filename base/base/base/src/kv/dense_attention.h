// Attention of a group of query heads over one KV head's contiguous keys and
// values, producing a merge state per head. Shared by the dense cache and by
// the compressed caches' exact parts (recent window, sinks, anchors).
#pragma once

#include <cstdint>

#include "core/fp16.h"
#include "kv/attn_state.h"

namespace longkv {

// q: [g][d] queries of the g heads sharing this KV head; keys/values: [n][d]
// of T (float or f16_t); scores are q.k * scale. out: [g][d] outputs
// normalized within this block; states: [g] merge states. `scores` is
// scratch of g*n floats.
template <typename T>
void attend_block(const float* q, int g, int d, const T* keys, const T* values, int n, float scale,
                  float* out, AttnState* states, float* scores);

// Exact reference (double precision, one head): out[d] and lse.
template <typename T>
void attend_reference(const float* q, int d, const T* keys, const T* values, int n, float scale, float* out,
                      double* lse);

}  // namespace longkv

namespace longkv {

// Causal attention of a tile of consecutive query rows over one KV head
// through two sgemm calls (S = Q K^T, O = P V): the prefill path, where
// per-key dot products would be bound by horizontal sums.
//   q: [n_rows * g][d] (row r, head h at r * g + h), row r at absolute
//      position p0 + r, so it sees keys 0 .. p0 + r;
//   keys/values: f32 [p0 + n_rows][d];
//   out: [n_rows * g][d]; lse: [n_rows * g] (may be null);
//   scores: scratch of n_rows * g * (p0 + n_rows) floats.
void attend_tile_gemm(const float* q, int n_rows, int g, int d, int p0, const float* keys, const float* values,
                      float scale, float* out, float* lse, float* scores);

}  // namespace longkv

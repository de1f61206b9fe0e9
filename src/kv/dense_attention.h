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

// Internal to src/formats: the searched fits behind the K-quant encoders of
// weight_types.cpp, one 256-element super-block at a time. The encoders pack
// what these return into the layouts of weight_types.h; the decoders do not
// depend on how the values were chosen.
#pragma once

#include <cstdint>

#include "formats/weight_types.h"

namespace longkv::weight_refs {

// Q2_K, Q4_K, Q5_K: `subs` sub-blocks of `len` elements (subs * len = 256,
// subs <= 16); element e decodes to d * sc[s] * codes[e] - dmin * m[s] with
// s = e / len, codes 0..top, sc and m 0..smax, d and dmin >= 0.
struct KAffineFit {
  f16_t d, dmin;
  uint8_t sc[16], m[16];
  uint8_t codes[kQKK];
};
void k_affine_fit(const float* x, int subs, int len, int top, int smax, KAffineFit& f);

// Q3_K, Q6_K: 16 sub-blocks of 16; element e decodes to d * l[e / 16] *
// codes[e] with codes -cmax - 1..cmax and l lmin..lmax (lmin < 0 < lmax; d
// takes either sign).
struct KSymmetricFit {
  f16_t d;
  int l[16];
  int8_t codes[kQKK];
};
void k_symmetric_fit(const float* x, int cmax, int lmin, int lmax, KSymmetricFit& f);

}  // namespace longkv::weight_refs

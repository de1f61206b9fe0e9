// Device-side decoding of the weight block formats of formats/weight_types.h
// (the same structs the CPU uses): per element (dequantize, embedding rows)
// and per "lane part" of a block (the GEMV kernels).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "formats/weight_types.h"

namespace longkv::cuda {

__device__ __forceinline__ float ld_f16(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const uint16_t*>(p)));
}
__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

// Sub-block j (0..7) scale and min of a Q4_K block (same bit layout as
// q4_k_scale_min in formats/weight_types.cpp).
__device__ __forceinline__ void q4k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Element i of a stored row.
template <WeightType T>
__device__ __forceinline__ float decode_elem(const uint8_t* row, int64_t i) {
  if constexpr (T == WeightType::F32) {
    return reinterpret_cast<const float*>(row)[i];
  } else if constexpr (T == WeightType::F16) {
    return __half2float(reinterpret_cast<const __half*>(row)[i]);
  } else if constexpr (T == WeightType::BF16) {
    return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  } else if constexpr (T == WeightType::Q8_0) {
    const uint8_t* b = row + (i / kQK) * sizeof(BlockQ8_0);
    return ld_f16(b) * static_cast<float>(static_cast<int8_t>(b[2 + i % kQK]));
  } else if constexpr (T == WeightType::Q4_0) {
    const uint8_t* b = row + (i / kQK) * sizeof(BlockQ4_0);
    const int j = static_cast<int>(i % kQK);
    const int q = j < 16 ? (b[2 + j] & 0xF) : (b[2 + j - 16] >> 4);
    return ld_f16(b) * static_cast<float>(q - 8);
  } else if constexpr (T == WeightType::Q4_K) {
    const uint8_t* b = row + (i / kQKK) * sizeof(BlockQ4_K);
    const int e = static_cast<int>(i % kQKK), c = e / 64, w = e % 64;
    const uint8_t* qs = b + 16 + 32 * c;
    int sc, m;
    q4k_scale_min(b + 4, 2 * c + (w >= 32), &sc, &m);
    const int q = w < 32 ? (qs[w] & 0xF) : (qs[w - 32] >> 4);
    return ld_f16(b) * sc * q - ld_f16(b + 2) * m;
  } else {  // Q6_K
    const uint8_t* b = row + (i / kQKK) * sizeof(BlockQ6_K);
    const int e = static_cast<int>(i % kQKK), h = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
    const uint8_t* ql = b + 64 * h;
    const uint8_t* qh = b + 128 + 32 * h;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * h;
    const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
    const int q = ((quarter >= 2 ? lo >> 4 : lo & 0xF) | (((qh[l] >> (2 * quarter)) & 3) << 4)) - 32;
    return ld_f16(b + 208) * sc[l / 16 + 2 * quarter] * static_cast<float>(q);
  }
}

// GEMV geometry of the block formats: a warp copies a tile of kTile blocks
// per row into shared memory with 16-byte loads, then kLanes lanes share each
// block (32 / kLanes blocks per pass), each lane decoding its part and
// multiplying by x (read as float4 from global memory, cached in L1).
template <WeightType T>
struct GemvFormat;

template <>
struct GemvFormat<WeightType::Q8_0> {
  static constexpr int kTile = 32, kLanes = 4, kBytes = sizeof(BlockQ8_0), kElems = kQK;
  // Elements 8s..8s+7.
  __device__ static float dot(const uint8_t* b, int s, const float* x) {
    const float4 x0 = __ldg(reinterpret_cast<const float4*>(x + 8 * s));
    const float4 x1 = __ldg(reinterpret_cast<const float4*>(x + 8 * s + 4));
    const int8_t* q = reinterpret_cast<const int8_t*>(b + 2 + 8 * s);
    const float acc = q[0] * x0.x + q[1] * x0.y + q[2] * x0.z + q[3] * x0.w + q[4] * x1.x + q[5] * x1.y +
                      q[6] * x1.z + q[7] * x1.w;
    return ld_f16(b) * acc;
  }
};

template <>
struct GemvFormat<WeightType::Q4_0> {
  static constexpr int kTile = 32, kLanes = 4, kBytes = sizeof(BlockQ4_0), kElems = kQK;
  // Bytes 4s..4s+3: elements 4s.. (low nibbles) and 16+4s.. (high nibbles).
  __device__ static float dot(const uint8_t* b, int s, const float* x) {
    const float4 xl = __ldg(reinterpret_cast<const float4*>(x + 4 * s));
    const float4 xh = __ldg(reinterpret_cast<const float4*>(x + 16 + 4 * s));
    const uint8_t* q = b + 2 + 4 * s;
    const float acc = ((q[0] & 0xF) - 8) * xl.x + ((q[1] & 0xF) - 8) * xl.y + ((q[2] & 0xF) - 8) * xl.z +
                      ((q[3] & 0xF) - 8) * xl.w + ((q[0] >> 4) - 8) * xh.x + ((q[1] >> 4) - 8) * xh.y +
                      ((q[2] >> 4) - 8) * xh.z + ((q[3] >> 4) - 8) * xh.w;
    return ld_f16(b) * acc;
  }
};

template <>
struct GemvFormat<WeightType::Q4_K> {
  static constexpr int kTile = 8, kLanes = 32, kBytes = sizeof(BlockQ4_K), kElems = kQKK;
  // Lane l: chunk c = l / 8, bytes 4s..4s+3 of the chunk (s = l % 8).
  __device__ static float dot(const uint8_t* b, int l, const float* x) {
    const int c = l / 8, s = l % 8;
    int sc0, m0, sc1, m1;
    q4k_scale_min(b + 4, 2 * c, &sc0, &m0);
    q4k_scale_min(b + 4, 2 * c + 1, &sc1, &m1);
    const float4 xl = __ldg(reinterpret_cast<const float4*>(x + 64 * c + 4 * s));
    const float4 xh = __ldg(reinterpret_cast<const float4*>(x + 64 * c + 32 + 4 * s));
    const uint8_t* q = b + 16 + 32 * c + 4 * s;
    const float dl = (q[0] & 0xF) * xl.x + (q[1] & 0xF) * xl.y + (q[2] & 0xF) * xl.z + (q[3] & 0xF) * xl.w;
    const float dh = (q[0] >> 4) * xh.x + (q[1] >> 4) * xh.y + (q[2] >> 4) * xh.z + (q[3] >> 4) * xh.w;
    const float sl = xl.x + xl.y + xl.z + xl.w, sh = xh.x + xh.y + xh.z + xh.w;
    const float d = ld_f16(b), dmin = ld_f16(b + 2);
    return d * (sc0 * dl + sc1 * dh) - dmin * (m0 * sl + m1 * sh);
  }
};

template <>
struct GemvFormat<WeightType::Q6_K> {
  static constexpr int kTile = 8, kLanes = 32, kBytes = sizeof(BlockQ6_K), kElems = kQKK;
  // Lane l: half h = l / 16, positions i = 2(l%16), 2(l%16)+1 of the 32, each
  // giving elements 128h + i + {0, 32, 64, 96}.
  __device__ static float dot(const uint8_t* b, int l, const float* x) {
    const int h = l / 16, i0 = 2 * (l % 16);
    const uint8_t* ql = b + 64 * h;
    const uint8_t* qh = b + 128 + 32 * h;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * h + i0 / 16;
    const float* xb = x + 128 * h + i0;
    float acc[4] = {0, 0, 0, 0};
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int i = i0 + k;
      const int q0 = ((ql[i] & 0xF) | (((qh[i] >> 0) & 3) << 4)) - 32;
      const int q1 = ((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) - 32;
      const int q2 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) - 32;
      const int q3 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) - 32;
      acc[0] += q0 * __ldg(xb + k);
      acc[1] += q1 * __ldg(xb + k + 32);
      acc[2] += q2 * __ldg(xb + k + 64);
      acc[3] += q3 * __ldg(xb + k + 96);
    }
    return ld_f16(b + 208) * (sc[0] * acc[0] + sc[2] * acc[1] + sc[4] * acc[2] + sc[6] * acc[3]);
  }
};

}  // namespace longkv::cuda

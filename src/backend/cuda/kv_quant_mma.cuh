// Tensor-core pieces shared by the quantized decode kernels
// (kv_quant_decode.cu, kv_quant_decode_v3.cu), the f16 decode block
// (attention_block.cu, decode_tile_mma.cuh) and the flash prefill kernel: one
// m16n8k16 MMA, b-bit codes as exact f16 operands, hi/lo f16 splits of f32
// operands, cp.async, ldmatrix and the swizzled tile rows it reads.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace longkv::cuda {

// C += A * B, f16 in, f32 accumulate; fragments in the PTX ISA's layout
// (thread gid = lane / 4, tig = lane % 4).
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint2 b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b.x), "r"(b.y));
}

// f16x2 (1 + field f / 2^B, 1 + field f + 16/B / 2^B) of a word of B-bit
// fields: the two fields are 16 bits apart, so one shift puts both at the top
// of their halves' mantissas (f is a compile-time constant after unrolling).
template <int B>
__device__ __forceinline__ uint32_t code_pair(uint32_t x, int f) {
  constexpr uint32_t kM = ((1u << B) - 1) << (10 - B);
  const int sh = (10 - B) - B * f;
  const uint32_t y = sh >= 0 ? x << sh : x >> (-sh);
  return (y & (kM | (kM << 16))) | 0x3C003C00u;
}

// code_pair_pos: the same pair, but field f lands at mantissa bit
// code_pos<B>(f) of its half, i.e. the f16 value is 1 + q 2^(pos - 10): the
// other operand carries the factor 2^(10 - pos) instead of 2^B. The fields of
// one word then share a few shifts (B = 2: << 4 for fields 0-1, none for 2-4,
// >> 6 for 5-7; B = 4: every field at bit 4; B = 8: bit 2), so 16/B pairs
// cost a LOP3 each plus 2-3 shifts per word instead of a shift and a LOP3
// each. Positions stay in 4..8 for B <= 4 (factors <= 64) and 2 for B = 8
// (256, as code_pair), so f16 operand ranges stay as before for B = 8 and
// within 16x for B = 2.
template <int B>
__host__ __device__ constexpr int code_shift(int f) {
  return B == 2 ? (f < 2 ? 4 : f < 5 ? 0 : -6) : B == 4 ? 4 - 4 * f : (f == 0 ? 2 : -6);
}
template <int B>
__host__ __device__ constexpr int code_pos(int f) {
  return B * f + code_shift<B>(f);
}
// magic = 0x3C003C00 (the exponent of 1.0 in both halves), passed in a
// register so that the mask-and-or is one LOP3 (two immediates take two).
template <int B>
__device__ __forceinline__ uint32_t code_pair_pos(uint32_t x, int f, uint32_t magic) {
  const uint32_t m = ((1u << B) - 1) << code_pos<B>(f);
  const int sh = code_shift<B>(f);
  const uint32_t y = sh >= 0 ? x << sh : x >> (-sh);
  return (y & (m | (m << 16))) | magic;
}

// code_pair_sub: the same fields at the same bits, without the exponent:
// the f16 subnormal q 2^(pos - 24), exact (tensor cores take f16
// subnormals as they are). The other operand carries 2^(10 - pos) as with
// code_pair_pos, and the product lands 2^14 low, which the caller scales
// back once per output; there is no "1 +" part to subtract.
template <int B>
__device__ __forceinline__ uint32_t code_pair_sub(uint32_t x, int f) {
  const uint32_t m = ((1u << B) - 1) << code_pos<B>(f);
  const int sh = code_shift<B>(f);
  const uint32_t y = sh >= 0 ? x << sh : x >> (-sh);
  return y & (m | (m << 16));
}
constexpr float kCodeSubScale = 16384.0f;  // 2^14: code_pair_sub's operand against code_pair_pos's "q 2^(pos - 10)"
// One of the two forms, chosen at compile time (magic: code_pair_pos's
// exponent register, unused by the subnormal form).
template <int B, bool kOnePlus>
__device__ __forceinline__ uint32_t code_operand(uint32_t x, int f, uint32_t magic) {
  if constexpr (kOnePlus) return code_pair_pos<B>(x, f, magic);
  else return code_pair_sub<B>(x, f);
}

__device__ __forceinline__ uint32_t h2_bits(__half2 h) { return *reinterpret_cast<uint32_t*>(&h); }

// hi = f16(a), f16(b); lo = f16 of what hi missed (~22 significant bits together).
__device__ __forceinline__ void split_hi_lo(float a, float b, uint32_t* hi, uint32_t* lo) {
  const __half2 h = __floats2half2_rn(a, b);
  const float2 f = __half22float2(h);
  *hi = h2_bits(h);
  *lo = h2_bits(__floats2half2_rn(a - f.x, b - f.y));
}

// 16-byte global -> shared copy that bypasses registers (completes at
// cp_async_wait; other lanes see it after a __syncwarp).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared (a shared-window address), bypassing L1; with ok
// false the 16 bytes are zero-filled and nothing is read (tokens past the end
// may be uninitialized memory, and zeros times a zero weight stay zero).
__device__ __forceinline__ void cp_async16_zfill(uint32_t dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0) : "memory");
}

// Four 8x8 b16 matrices from shared memory: lanes 8i..8i+7 give the row
// addresses of matrix i; afterwards lane l holds row l / 4, elements
// 2 (l % 4) and +1 of each (with .trans: of each matrix's transpose).
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Halves from the start of a tile of D-half rows to chunk c (8 halves) of
// row `row`: the chunk index is xor-ed with row % 8, so the 8 rows one
// ldmatrix phase reads (same logical chunk, consecutive rows) sit in 8
// different bank groups.
template <int D>
__device__ __forceinline__ int swz(int row, int c) {
  return row * D + ((c ^ (row & 7)) << 3);
}

}  // namespace longkv::cuda

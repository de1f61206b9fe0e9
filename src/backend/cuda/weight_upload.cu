// Weight upload: stored rows copied to the GPU with the row stride padded to
// 16 bytes; the block formats whose blocks are not 16-byte multiples split
// into aligned bodies + tails (Q2_K, Q3_K and Q6_K repacked in unit order, Q5_0's
// and Q5_1's fifth bits and IQ4's codes reordered; weight_decode.cuh,
// weight_decode_q32.cuh), the layout the GEMV kernels (gemv.cu) load from.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/weight_decode.cuh"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace longkv::cuda {
namespace {

void put_word(uint8_t* p, uint32_t w) { std::memcpy(p, &w, 4); }

// A stored Q2_K / Q3_K block (formats/weight_types.h) in the GPU's unit
// order (weight_decode.cuh, LowBitUnit): body and tail as the split row has them.
void repack_low_bit_block(WeightType t, const uint8_t* src, uint8_t* body, uint8_t* tail) {
  const bool q3 = t == WeightType::Q3_K;
  const uint8_t* qs = src + (q3 ? offsetof(BlockQ3_K, qs) : offsetof(BlockQ2_K, qs));
  uint32_t q3_tail[4] = {};  // Q3_K: the tail's two halves, two words each
  for (int i = 0; i < 8; ++i) {
    const LowBitUnit n(i);
    uint32_t hbits = 0;
    for (int second = 0; second < 2; ++second) {
      const int j = n.p + 2 * second, s = n.sub(second);
      uint32_t codes = 0;
      for (int k = 0; k < 16; ++k) {
        const int l = 16 * n.lh + k;
        codes |= static_cast<uint32_t>((qs[32 * n.h + l] >> (2 * j)) & 3) << LowBitUnit::pos2(k);
        if (q3) hbits |= static_cast<uint32_t>((src[l] >> (4 * n.h + j)) & 1) << (LowBitUnit::pos1(k) + 4 * second);
      }
      put_word(body + 8 * i + 4 * second, codes);
      if (!q3) {
        body[64 + 2 * i + second] = src[offsetof(BlockQ2_K, scales) + s];
      } else {
        const uint8_t* sc = src + offsetof(BlockQ3_K, scales);
        const uint32_t v = ((sc[s % 8] >> (4 * (s / 8))) & 0xF) | (((sc[8 + s % 4] >> (2 * (s / 4))) & 3) << 4);
        q3_tail[i / 2] |= v << (12 * (i % 2) + 6 * second);
      }
    }
    if (q3) put_word(body + 64 + 4 * i, hbits);
  }
  if (q3) {
    const uint8_t* d = src + offsetof(BlockQ3_K, d);
    for (int k = 0; k < 4; ++k) put_word(tail + 4 * k, q3_tail[k] | static_cast<uint32_t>(d[k % 2]) << 24);
  } else {
    std::memcpy(tail, src + offsetof(BlockQ2_K, d), 4);
  }
}

// A stored Q6_K block's body in the GPU's order (weight_decode.cuh,
// Slab<Q6_K>): ql as stored, then each unit's high 2 bits and scales together.
void repack_q6_k_body(const uint8_t* src, uint8_t* body) {
  std::memcpy(body, src + offsetof(BlockQ6_K, ql), sizeof(BlockQ6_K::ql));
  const uint8_t* qh = src + offsetof(BlockQ6_K, qh);
  const uint8_t* sc = src + offsetof(BlockQ6_K, scales);
  for (int i = 0; i < 8; ++i) {
    const LowBitUnit n(i);
    for (int second = 0; second < 2; ++second) {
      const int quarter = n.p + 2 * second;
      uint32_t hi = 0;
      for (int t = 0; t < 16; ++t)
        hi |= static_cast<uint32_t>((qh[32 * n.h + 16 * n.lh + t] >> (2 * quarter)) & 3) << LowBitUnit::pos2(t);
      put_word(body + 128 + 8 * i + 4 * second, hi);
      body[192 + 2 * i + second] = sc[8 * n.h + 2 * quarter + n.lh];
    }
  }
}

// A stored Q5_K block in the GPU's order (weight_decode.cuh, Slab<Q5_K>):
// header and qs first, then each unit's fifth bits in one word.
void repack_q5_k_block(const uint8_t* src, uint8_t* dst) {
  std::memcpy(dst, src, 16);  // d, dmin, scales
  std::memcpy(dst + 16, src + offsetof(BlockQ5_K, qs), sizeof(BlockQ5_K::qs));
  const uint8_t* qh = src + offsetof(BlockQ5_K, qh);
  for (int i = 0; i < 8; ++i) {
    const int c = i / 2, p = i % 2;
    uint32_t w = 0;
    for (int t = 0; t < 16; ++t)
      for (int half = 0; half < 2; ++half)
        w |= static_cast<uint32_t>((qh[16 * p + t] >> (2 * c + half)) & 1) << (LowBitUnit::pos1(t) + 4 * half);
    put_word(dst + 144 + 4 * i, w);
  }
}

// The 32 fifth bits of a Q5_0 / Q5_1 block (qh, bit e: element e) in the
// GPU's order (q5_hbit_pos).
uint32_t q5_gpu_qh(const uint8_t* qh) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  uint32_t g = 0;
  for (int e = 0; e < kQK; ++e) g |= ((h >> e) & 1u) << q5_hbit_pos(e);
  return g;
}

// 32 IQ4 codes (16 bytes in Q4_0's nibble order) in the GPU's order
// (iq4_nibble_pos) and alphabet (iq4_gpu_code).
void iq4_gpu_codes(const uint8_t* qs, uint8_t* dst) {
  std::memset(dst, 0, kQK / 2);
  for (int e = 0; e < kQK; ++e) {
    const int c = e < 16 ? qs[e] & 0xF : qs[e - 16] >> 4, p = iq4_nibble_pos(e);
    dst[p / 2] = static_cast<uint8_t>(dst[p / 2] | iq4_gpu_code(c) << (4 * (p % 2)));
  }
}

// A split row of nb blocks: a block's body (body bytes from q_off) and its
// tail (the rest, from t_off).
struct SplitRow {
  WeightType t;
  int64_t nb;
  size_t body, tail, q_off, t_off;
  SplitRow(WeightType type, int64_t blocks)
      : t(type), nb(blocks), body(split_body_bytes(type)),
        tail(weight_traits(type).block_bytes + gpu_block_extra(type) - body),
        q_off(split_body_offset(type)), t_off(q_off == 0 ? body : 0) {}
};

// Stored block b (src) of a row into the GPU row dst: its body at b * body,
// its tail at nb * body + b * tail (Q5_0: qh' at 16 nb + 4b and d at
// 20 nb + 2b), reordered where weight_decode.cuh says so.
void split_block(const SplitRow& r, const uint8_t* src, uint8_t* dst, int64_t b) {
  const int64_t nb = r.nb;
  const size_t body = r.body, tail = r.tail;
  uint8_t* bd = dst + b * body;
  uint8_t* tl = dst + nb * body + tail * b;
  switch (r.t) {
    case WeightType::Q2_K:
    case WeightType::Q3_K:
      repack_low_bit_block(r.t, src, bd, tl);
      return;
    case WeightType::Q5_K:
      repack_q5_k_block(src, bd);
      return;
    case WeightType::Q6_K:
      repack_q6_k_body(src, bd);
      std::memcpy(tl, src + offsetof(BlockQ6_K, d), tail);
      return;
    case WeightType::Q5_0:
      std::memcpy(bd, src + offsetof(BlockQ5_0, qs), kQK / 2);
      put_word(dst + 16 * nb + 4 * b, q5_gpu_qh(src + offsetof(BlockQ5_0, qh)));
      std::memcpy(dst + 20 * nb + 2 * b, src + offsetof(BlockQ5_0, d), 2);
      return;
    case WeightType::Q5_1:
      std::memcpy(bd, src + offsetof(BlockQ5_1, qs), kQK / 2);
      std::memcpy(tl, src, 4);  // d, m
      put_word(tl + 4, q5_gpu_qh(src + offsetof(BlockQ5_1, qh)));
      return;
    case WeightType::IQ4_NL:
    case WeightType::IQ4_XS:
      for (size_t k = 0; k < body; k += kQK / 2) iq4_gpu_codes(src + r.q_off + k, bd + k);
      std::memcpy(tl, src + r.t_off, tail);
      return;
    default:
      std::memcpy(bd, src + r.q_off, body);
      std::memcpy(tl, src + r.t_off, tail);
  }
}

}  // namespace

GpuWeight upload_weight_to(const WeightView& w, uint8_t* dst0, cudaStream_t s, size_t dst_ld) {
  GpuWeight g;
  g.type = w.type;
  g.rows = w.rows;
  g.cols = w.cols;
  g.ld = gpu_row_stride(w.type, w.cols);  // the packed row; rows land dst_ld apart
  if (dst_ld == 0) dst_ld = g.ld;
  g.data = dst0;
  if (w.rows == 0) {
    g.ld = dst_ld;
    return g;
  }
  const int body = split_body_bytes(w.type);
  if (body == 0) {
    LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(dst0, dst_ld, w.data, w.row_stride(), w.row_stride(),
                                        static_cast<size_t>(w.rows), cudaMemcpyHostToDevice, s));
    g.ld = dst_ld;
    return g;
  }
  // Split rows: bodies first, then the tails (weight_decode.cuh: the f16 d
  // of Q4_0 / Q8_0 before their body, the K-quants' scales after it). Rows
  // go through a host buffer in ~32 MiB slices.
  const size_t bb = weight_traits(w.type).block_bytes;
  const int64_t nb = static_cast<int64_t>(w.row_stride() / bb);
  const SplitRow split(w.type, nb);
  const int64_t slice = std::max<int64_t>(1, (int64_t(32) << 20) / static_cast<int64_t>(g.ld));
  std::vector<uint8_t> tmp(static_cast<size_t>(std::min(slice, w.rows)) * g.ld, 0);
  for (int64_t r0 = 0; r0 < w.rows; r0 += slice) {
    const int64_t n = std::min(slice, w.rows - r0);
    for (int64_t r = 0; r < n; ++r) {
      const uint8_t* src = static_cast<const uint8_t*>(w.data) + static_cast<size_t>(r0 + r) * w.row_stride();
      uint8_t* dst = tmp.data() + static_cast<size_t>(r) * g.ld;
      for (int64_t b = 0; b < nb; ++b) split_block(split, src + b * bb, dst, b);
    }
    LONGKV_CUDA_CHECK(cudaMemcpy2DAsync(dst0 + static_cast<size_t>(r0) * dst_ld, dst_ld, tmp.data(), g.ld, g.ld,
                                        static_cast<size_t>(n), cudaMemcpyHostToDevice, s));
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s));  // tmp is reused
  }
  g.ld = dst_ld;
  return g;
}

GpuWeight upload_weight(const WeightView& w, DeviceBuffer& buf, cudaStream_t s) {
  buf.resize(gpu_row_stride(w.type, w.cols) * static_cast<size_t>(w.rows) + kWeightPadBytes);
  LONGKV_CUDA_CHECK(cudaMemsetAsync(buf.as(), 0, buf.bytes(), s));
  return upload_weight_to(w, buf.as<uint8_t>(), s);
}

bool stackable(const std::vector<const WeightView*>& ws) {
  for (const WeightView* w : ws)
    if (w->type != ws[0]->type || w->cols != ws[0]->cols) return false;
  return !ws.empty();
}

GpuWeight upload_stacked(const std::vector<const WeightView*>& ws, DeviceBuffer& buf, GpuWeight* parts,
                         cudaStream_t s) {
  LONGKV_CHECK(stackable(ws), "stacked weights need one type and one width");
  const size_t ld = gpu_row_stride(ws[0]->type, ws[0]->cols);
  int64_t rows = 0;
  for (const WeightView* w : ws) rows += w->rows;
  buf.resize(ld * static_cast<size_t>(rows) + kWeightPadBytes);
  LONGKV_CUDA_CHECK(cudaMemsetAsync(buf.as(), 0, buf.bytes(), s));
  int64_t r0 = 0;
  for (size_t i = 0; i < ws.size(); ++i) {
    parts[i] = upload_weight_to(*ws[i], buf.as<uint8_t>() + ld * static_cast<size_t>(r0), s);
    r0 += ws[i]->rows;
  }
  GpuWeight all = parts[0];
  all.rows = rows;
  return all;
}

GpuWeight upload_interleaved(const WeightView& a, const WeightView& b, DeviceBuffer& buf, GpuWeight* parts,
                             cudaStream_t s) {
  LONGKV_CHECK(stackable({&a, &b}) && a.rows == b.rows, "interleaved weights need one type, width and height");
  const size_t ld = gpu_row_stride(a.type, a.cols);
  buf.resize(2 * ld * static_cast<size_t>(a.rows) + kWeightPadBytes);
  LONGKV_CUDA_CHECK(cudaMemsetAsync(buf.as(), 0, buf.bytes(), s));
  parts[0] = upload_weight_to(a, buf.as<uint8_t>(), s, 2 * ld);
  parts[1] = upload_weight_to(b, buf.as<uint8_t>() + ld, s, 2 * ld);
  GpuWeight all = parts[0];
  all.rows = 2 * a.rows;
  all.ld = ld;
  return all;
}

}  // namespace longkv::cuda

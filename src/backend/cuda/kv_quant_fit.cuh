// The GPU twin of the reference codec's quantizer (kv/kv_codec.cpp and
// kv/kv_codec_fit.cpp): a group record's ranges (min/max, fit=mse's
// least-squares refinement), its outliers (":o<pct>") and its code planes,
// written byte for byte as kv_quantize_keys / kv_quantize_values write them
// (CudaQuant tests compare the records). Every float and double operation
// that decides a bit is an explicit _rn intrinsic in the reference's order:
// nvcc, like GNU C++, would otherwise fuse products into FMAs, and the
// reference is compiled without contraction (kv_codec_fit.h) except for the
// FMAs it spells out. Included by kv_quant_gpu.cu only.
#pragma once

#include "backend/cuda/kv_quant_gpu.cuh"

namespace longkv::cuda {

__device__ __forceinline__ unsigned short f2h_bits(float x) { return __half_as_ushort(__float2half_rn(x)); }
__device__ __forceinline__ float h2f_bits(unsigned short h) { return __half2float(__ushort_as_half(h)); }

// kv_fit_range's min/max fit, operation for operation. The CPU build
// (-march=native, GNU C++: -ffp-contract=fast) compiles the coverage test
// z + f * levels to one FMA, so it is an explicit fmaf here; the other steps
// are single IEEE operations in both.
__device__ void fit_range(float mn, float mx, int bits, bool sym, unsigned short* scale, unsigned short* zero) {
  if (sym) {
    const float amax = fmaxf(fabsf(mn), fabsf(mx));
    const int top = (1 << (bits - 1)) - 1;
    unsigned short s = 0;
    if (amax > 0) {
      s = f2h_bits(__fdiv_rn(amax, static_cast<float>(top)));
      for (int i = 0; i < 4 && !(__fmul_rn(h2f_bits(s), static_cast<float>(top)) >= amax) && s < 0x7bffu; ++i) ++s;
    }
    *scale = s;
    *zero = f2h_bits(__fmul_rn(-static_cast<float>(1 << (bits - 1)), h2f_bits(s)));
    return;
  }
  const int levels = (1 << bits) - 1;
  const unsigned short zb = f2h_bits(mn);
  const float z = h2f_bits(zb);
  const float span = __fsub_rn(mx, z);
  unsigned short s = 0;
  if (span > 0) {
    s = f2h_bits(__fdiv_rn(span, static_cast<float>(levels)));
    for (int i = 0; i < 4 && !(__fmaf_rn(h2f_bits(s), static_cast<float>(levels), z) >= mx) && s < 0x7bffu; ++i) ++s;
  }
  *scale = s;
  *zero = zb;
}

// kv_encode: clamp(floor((x - z) / s + 0.5), 0, 2^b - 1), 0 for s = 0.
__device__ __forceinline__ uint32_t encode(float x, float s, float z, int bits) {
  if (!(s > 0)) return 0;
  const float v = floorf(__fadd_rn(__fdiv_rn(__fsub_rn(x, z), s), 0.5f));
  const float top = static_cast<float>((1 << bits) - 1);
  return static_cast<uint32_t>(v < 0 ? 0.0f : (v > top ? top : v));
}

// kv_refine_range_mse (kv_codec_fit.cpp) over the elements elem(i), i < G,
// that mask m leaves in (all for m null; n of them), in that order, from
// (scale, zero) of the min/max fit.
template <class Elem>
__device__ void refine_range_mse(int G, Elem elem, const uint8_t* m, int n, int bits, unsigned short* scale,
                                 unsigned short* zero) {
  float z = h2f_bits(*zero), s = h2f_bits(*scale);
  if (!(s > 0)) return;
  auto sq_error = [&](float zz, float ss) {
    double e = 0;
    for (int i = 0; i < G; ++i) {
      if (m && m[i]) continue;
      const float v = elem(i);
      const double code = static_cast<double>(encode(v, ss, zz, bits));
      const double d = __dsub_rn(__dadd_rn(static_cast<double>(zz), __dmul_rn(static_cast<double>(ss), code)),
                                 static_cast<double>(v));
      e = __dadd_rn(e, __dmul_rn(d, d));
    }
    return e;
  };
  double best = sq_error(z, s);
  const double dn = static_cast<double>(n);
  for (int it = 0; it < 8; ++it) {
    double sc = 0, sx = 0, scc = 0, scx = 0;
    for (int i = 0; i < G; ++i) {
      if (m && m[i]) continue;
      const float v = elem(i);
      const double c = static_cast<double>(encode(v, s, z, bits));
      sc = __dadd_rn(sc, c);
      sx = __dadd_rn(sx, static_cast<double>(v));
      scc = __dadd_rn(scc, __dmul_rn(c, c));
      scx = __dadd_rn(scx, __dmul_rn(c, static_cast<double>(v)));
    }
    const double det = __dsub_rn(__dmul_rn(dn, scc), __dmul_rn(sc, sc));
    if (!(det > 0)) break;
    const double ls_s = __ddiv_rn(__dsub_rn(__dmul_rn(dn, scx), __dmul_rn(sc, sx)), det);
    const double ls_z = __ddiv_rn(__dsub_rn(sx, __dmul_rn(ls_s, sc)), dn);
    const float nz = h2f_bits(f2h_bits(__double2float_rn(ls_z)));
    const float ns = h2f_bits(f2h_bits(__double2float_rn(ls_s)));
    if (!(ns > 0)) break;
    const double e = sq_error(nz, ns);
    if (!(e < best)) break;
    best = e;
    z = nz;
    s = ns;
  }
  *zero = f2h_bits(z);
  *scale = f2h_bits(s);
}

// A record's range groups ("runs") for the outlier choice: D runs of G
// elements either way. Keys: run c = channel c over the G tokens (element
// i = token i); values: run r = t (D / G) + gi = token t's channel group gi
// (element i = channel gi G + i). mask index r G + i is the CPU's; the entry
// index is t << 8 | c.
struct OutlierRuns {
  bool keys;
  int G, D;
  __device__ int token(int r, int i) const { return keys ? i : r / (D / G); }
  __device__ int channel(int r, int i) const { return keys ? r : (r % (D / G)) * G + i; }
};

// Shared memory the outlier choice takes beyond quantize_channels' tile
// (G x D mask and sort orders as bytes, two entry lists, the reduction).
__host__ __device__ inline size_t outlier_smem_bytes(int G, int D, int n_o) {
  return n_o > 0 ? (2 * static_cast<size_t>(G) * D + 8 * static_cast<size_t>(n_o) + 15) / 16 * 16 + 2 * 4 * 16 : 0;
}

// kv_select_outliers (kv_codec_fit.cpp) on one block: thread r < D owns run
// r (blockDim.x >= D: quantize_groups_kernel's 128 threads, D <= 128). It
// sorts its run stably (insertion sort of byte indices) and keeps its ends
// lo, hi; each round every thread offers its run's better end (the low end
// on a tie, gains in double as the reference computes them), the block
// takes the largest gain (the lowest run, low end first, on a tie: the
// reference's scan order), and the winner moves its end and marks the
// element. Writes mask[r G + i] (zeroed here) and the picked entries t << 8
// | c, sorted, to ent[0..count) (0 past the last); returns how many.
__device__ int select_outliers_block(const OutlierRuns& ru, const float* x_sh, int ld, int count, uint8_t* mask,
                                     uint8_t* order, int* picked, int* ent, double* red_g, int* red_k) {
  const int G = ru.G, D = ru.D, tid = threadIdx.x, nt = blockDim.x, lane = tid % 32, warp = tid / 32;
  const int nw = (nt + 31) / 32;
  auto at = [&](int r, int i) { return x_sh[ru.token(r, i) * ld + ru.channel(r, i)]; };
  for (int i = tid; i < G * D; i += nt) mask[i] = 0;
  int lo = 0, hi = G - 1;
  uint8_t* o = order + static_cast<size_t>(tid) * G;
  if (tid < D) {
    for (int i = 0; i < G; ++i) {  // stable: an element moves only past larger ones
      const float v = at(tid, i);
      int j = i - 1;
      while (j >= 0 && at(tid, o[j]) > v) {
        o[j + 1] = o[j];
        --j;
      }
      o[j + 1] = static_cast<uint8_t>(i);
    }
  }
  __syncthreads();
  auto val = [&](int k) { return static_cast<double>(at(tid, o[k])); };
  int n = 0;
  for (; n < count; ++n) {
    double gain = 0;
    int key = -1;  // 2 r + side
    if (tid < D && hi - lo >= 4) {
      const double a = val(lo), b = val(hi);
      const double cur = __dmul_rn(__dsub_rn(b, a), __dsub_rn(b, a));
      const double l1 = val(lo + 1), h1 = val(hi - 1);
      const double g_lo = __dsub_rn(cur, __dmul_rn(__dsub_rn(b, l1), __dsub_rn(b, l1)));
      const double g_hi = __dsub_rn(cur, __dmul_rn(__dsub_rn(h1, a), __dsub_rn(h1, a)));
      if (g_lo > gain) gain = g_lo, key = 2 * tid;
      if (g_hi > gain) gain = g_hi, key = 2 * tid + 1;
    }
    for (int off = 16; off > 0; off /= 2) {  // larger gain, then the smaller key
      const double og = __shfl_xor_sync(0xffffffffu, gain, off);
      const int ok = __shfl_xor_sync(0xffffffffu, key, off);
      if (og > gain || (og == gain && ok >= 0 && (key < 0 || ok < key))) gain = og, key = ok;
    }
    double* rg = red_g + 4 * (n % 2);  // two slot sets: one barrier a round
    int* rk = red_k + 4 * (n % 2);
    if (lane == 0) rg[warp] = gain, rk[warp] = key;
    __syncthreads();
    gain = rg[0];
    key = rk[0];
    for (int w = 1; w < nw; ++w)
      if (rg[w] > gain || (rg[w] == gain && rk[w] >= 0 && (key < 0 || rk[w] < key))) gain = rg[w], key = rk[w];
    if (key < 0) break;  // every thread read the same slots: all leave together
    if (key / 2 == tid) {
      const int i = o[key % 2 == 0 ? lo++ : hi--];
      mask[tid * G + i] = 1;
      picked[n] = ru.token(tid, i) << 8 | ru.channel(tid, i);
    }
  }
  __syncthreads();
  for (int j = tid; j < count; j += nt) {  // rank sort of distinct entries
    if (j >= n) {
      ent[j] = 0;
      continue;
    }
    int rank = 0;
    for (int k = 0; k < n; ++k) rank += picked[k] < picked[j];
    ent[rank] = picked[j];
  }
  __syncthreads();
  return n;
}

// Shared memory of quantize_channels over W channels with n_o outliers a
// record (W = D then): x[G][W + 1] floats, scale and zero [W] u16, then
// outlier_smem_bytes.
__host__ __device__ inline size_t quantize_smem_bytes(int G, int W, int n_o = 0) {
  return (sizeof(float) * G * (W + 1) + 2 * sizeof(unsigned short) * W + 15) / 16 * 16 +
         outlier_smem_bytes(G, W, n_o);
}

// Sets field `packed` of word (packed / n, col) of a plane (no other field
// of that word is written by another thread: each thread builds whole words).
__device__ __forceinline__ uint32_t plane_bits_of(uint32_t code, int bits, int plane) {
  return bits != 3 ? code : (plane == 0 ? code & 3u : code >> 2);
}

// Channels [c0, c0 + W) of group grp, KV head h, keys then values, from
// the G x W tile that load(keys, t, c) gives (t: token of the group, c: the
// head's channel), staged in x_sh (quantize_smem_bytes). W is D or, for the
// steady cut, a multiple of G and of 32: key ranges run over one channel,
// value ranges over G channels of one token, and a code word over <= 32
// channels of one token (keys) or tokens of one channel (values), so
// disjoint channel runs quantize independently, to the same bits. Outliers
// choose among the whole record: g.outliers > 0 needs W = D and blockDim.x
// >= D. Called by every thread of the block; ends after a barrier.
template <class Load>
__device__ void quantize_channels(uint8_t* __restrict__ kcodes, uint8_t* __restrict__ vcodes, const QuantGeom& g,
                                  int grp, int h, int c0, int W, float* x_sh, Load load) {
  const int G = g.G, D = g.D, ld = W + 1, tid = threadIdx.x, nt = blockDim.x, n_o = g.outliers;
  auto x = [&](int t, int c) -> float& { return x_sh[t * ld + c]; };
  unsigned short* sc = reinterpret_cast<unsigned short*>(x_sh + G * ld);
  unsigned short* zr = sc + W;
  // The outlier choice's area (outlier_smem_bytes), 16-byte aligned.
  uint8_t* ext = reinterpret_cast<uint8_t*>(x_sh) + quantize_smem_bytes(G, W);
  uint8_t* mask = ext;
  uint8_t* order = mask + G * D;
  int* picked = reinterpret_cast<int*>(order + G * D);
  int* ent = picked + n_o;
  double* red_g = reinterpret_cast<double*>(ext + (2 * static_cast<size_t>(G) * D + 8 * n_o + 15) / 16 * 16);
  int* red_k = reinterpret_cast<int*>(red_g + 8);
  for (int which = 0; which < 2; ++which) {
    const bool keys = which == 0;
    const int bits = keys ? g.kbits : g.vbits;
    uint8_t* rec = (keys ? kcodes : vcodes) + (static_cast<size_t>(h) * g.max_groups + grp) * (keys ? g.krec : g.vrec);
    for (int i = tid; i < G * W; i += nt) {
      const int t = i / W, c = i % W;
      x(t, c) = load(keys, t, c0 + c);
    }
    __syncthreads();
    int n_picked = 0;
    if (n_o > 0) n_picked = select_outliers_block(OutlierRuns{keys, G, D}, x_sh, ld, n_o, mask, order, picked, ent,
                                                  red_g, red_k);
    // A range group's elements in order, the outliers left out (the
    // reference fits the same list: fit_unmasked).
    auto fit = [&](auto elem, const uint8_t* m, unsigned short* s_out, unsigned short* z_out) {
      float mn = 0, mx = 0;
      int cnt = 0;
      for (int i = 0; i < G; ++i) {
        if (m && m[i]) continue;
        const float v = elem(i);
        mn = cnt == 0 || v < mn ? v : mn;
        mx = cnt == 0 || v > mx ? v : mx;
        ++cnt;
      }
      fit_range(mn, mx, bits, g.sym, s_out, z_out);
      if (g.mse) refine_range_mse(G, elem, m, cnt, bits, s_out, z_out);
    };
    if (keys) {
      for (int c = tid; c < W; c += nt)  // per channel over the G tokens
        fit([&](int t) { return x(t, c); }, n_o > 0 ? mask + c * G : nullptr, &sc[c], &zr[c]);
    } else {
      for (int i = tid; i < W; i += nt) {  // per token over G channels: i = channel group * G + token
        const int t = i % G, cg = (i / G) * G;
        fit([&](int k) { return x(t, cg + k); }, n_o > 0 ? mask + t * D + cg : nullptr, &sc[i], &zr[i]);
      }
    }
    __syncthreads();
    // Key scales run over channels, value scales over (channel group, token):
    // either way entry c0 + i of the record is local entry i.
    unsigned short* rs = reinterpret_cast<unsigned short*>(rec + (keys ? g.kscale : g.vscale));
    unsigned short* rz = reinterpret_cast<unsigned short*>(rec + (keys ? g.kzero : g.vzero));
    for (int i = tid; i < W; i += nt) {
      rs[c0 + i] = sc[i];
      rz[c0 + i] = zr[i];
    }
    // Code planes (kv_codec.h): one for 8/4/2/1 bits; for 3 bits the 2-bit
    // plane of (q & 3), then the 1-bit plane of (q >> 2) G*D/4 bytes in.
    for (int plane = 0; plane < (bits == 3 ? 2 : 1); ++plane) {
      const int pb = bits != 3 ? bits : 2 - plane, n = 32 / pb;
      uint32_t* words = reinterpret_cast<uint32_t*>(rec + (plane ? G * D / 4 : 0));
      if (keys) {  // word (j, t): channels n*j .. n*j+n-1 of token t
        for (int i = tid; i < (W / n) * G; i += nt) {
          const int j = i / G, t = i % G;
          uint32_t w = 0;
          for (int k = 0; k < n; ++k) {
            const int c = n * j + k;
            w |= plane_bits_of(encode(x(t, c), h2f_bits(sc[c]), h2f_bits(zr[c]), bits), bits, plane) << (pb * k);
          }
          words[(c0 / n + j) * G + t] = w;
        }
      } else {  // word (j, c): tokens n*j .. n*j+n-1 of channel c
        for (int i = tid; i < (G / n) * W; i += nt) {
          const int j = i / W, c = i % W;
          uint32_t w = 0;
          for (int k = 0; k < n; ++k) {
            const int t = n * j + k, si = (c / G) * G + t;
            w |= plane_bits_of(encode(x(t, c), h2f_bits(sc[si]), h2f_bits(zr[si]), bits), bits, plane) << (pb * k);
          }
          words[j * D + c0 + c] = w;
        }
      }
    }
    // Outlier entries: c | t << 8 | f16(x - fma(s, code, z)) << 16, sorted,
    // unused ones 0 (W = D, c0 = 0 here).
    if (n_o > 0) {
      uint32_t* out = reinterpret_cast<uint32_t*>(rec + (keys ? g.koff : g.voff));
      for (int j = tid; j < n_o; j += nt) {
        uint32_t e = 0;
        if (j < n_picked) {
          const int t = ent[j] >> 8, c = ent[j] & 0xff, si = keys ? c : (c / G) * G + t;
          const float s = h2f_bits(sc[si]), z = h2f_bits(zr[si]), v = x(t, c);
          const float xq = __fmaf_rn(s, static_cast<float>(encode(v, s, z, bits)), z);
          e = static_cast<uint32_t>(ent[j]) | static_cast<uint32_t>(f2h_bits(__fsub_rn(v, xq))) << 16;
        }
        out[j] = e;
      }
    }
    __syncthreads();
  }
}

}  // namespace longkv::cuda

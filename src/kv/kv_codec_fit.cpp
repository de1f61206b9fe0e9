// kv_codec_fit.h: fit=mse's range refinement and the outlier choice, moved
// out of kv_codec.cpp so that this file alone is compiled with
// -ffp-contract=off (CMakeLists.txt). Before, GNU C++'s default contraction
// fused some of these products into FMAs where the host had them, so the
// choices could differ between machines; now they are the operations as
// written everywhere, and the GPU quantizer repeats them bit for bit.
#include "kv/kv_codec_fit.h"

#include <algorithm>

#include "kv/kv_codec.h"

namespace longkv {

void kv_refine_range_mse(const float* x, int n, int stride, int bits, f16_t* scale, f16_t* zero) {
  float z = f16_to_f32(*zero), s = f16_to_f32(*scale);
  if (!(s > 0)) return;
  // Squared error of (zz, ss) in double: each d = (zz + ss code) - v.
  auto sq_error = [&](float zz, float ss) {
    double e = 0;
    for (int i = 0; i < n; ++i) {
      const float v = x[static_cast<size_t>(i) * stride];
      const double d = static_cast<double>(zz) + static_cast<double>(ss) * kv_encode(v, ss, zz, bits) - v;
      e += d * d;
    }
    return e;
  };
  double best = sq_error(z, s);
  for (int it = 0; it < 8; ++it) {
    double sc = 0, sx = 0, scc = 0, scx = 0;
    for (int i = 0; i < n; ++i) {
      const float v = x[static_cast<size_t>(i) * stride];
      const double c = kv_encode(v, s, z, bits);
      sc += c;
      sx += v;
      scc += c * c;
      scx += c * v;
    }
    const double det = n * scc - sc * sc;  // 0 when every element has one code
    if (!(det > 0)) break;
    const double ls_s = (n * scx - sc * sx) / det, ls_z = (sx - ls_s * sc) / n;
    const float nz = f16_to_f32(f32_to_f16(static_cast<float>(ls_z)));
    const float ns = f16_to_f32(f32_to_f16(static_cast<float>(ls_s)));
    if (!(ns > 0)) break;
    const double e = sq_error(nz, ns);
    if (!(e < best)) break;
    best = e;
    z = nz;
    s = ns;
  }
  *zero = f32_to_f16(z);
  *scale = f32_to_f16(s);
}

std::vector<std::pair<int, int>> kv_select_outliers(const float* x, int runs, size_t run_stride, int n,
                                                    size_t elem_stride, int count, std::vector<uint8_t>& mask) {
  std::vector<std::pair<int, int>> picked;
  if (count <= 0) return picked;
  std::vector<int> order(static_cast<size_t>(runs) * n), lo(runs, 0), hi(runs, n - 1);
  auto at = [&](int r, int i) { return x[r * run_stride + i * elem_stride]; };
  for (int r = 0; r < runs; ++r) {
    int* o = &order[static_cast<size_t>(r) * n];
    for (int i = 0; i < n; ++i) o[i] = i;
    std::stable_sort(o, o + n, [&](int a, int b) { return at(r, a) < at(r, b); });
  }
  auto val = [&](int r, int k) { return static_cast<double>(at(r, order[static_cast<size_t>(r) * n + k])); };
  for (int it = 0; it < count; ++it) {
    int best_r = -1, best_side = 0;
    double best_gain = 0;
    for (int r = 0; r < runs; ++r) {
      if (hi[r] - lo[r] < 4) continue;  // keep >= 4 elements to fit a range to
      const double a = val(r, lo[r]), b = val(r, hi[r]);
      const double cur = (b - a) * (b - a);
      const double g_lo = cur - (b - val(r, lo[r] + 1)) * (b - val(r, lo[r] + 1));
      const double g_hi = cur - (val(r, hi[r] - 1) - a) * (val(r, hi[r] - 1) - a);
      if (g_lo > best_gain) best_gain = g_lo, best_r = r, best_side = 0;
      if (g_hi > best_gain) best_gain = g_hi, best_r = r, best_side = 1;
    }
    if (best_r < 0) break;
    const int k = best_side == 0 ? lo[best_r]++ : hi[best_r]--;
    const int i = order[static_cast<size_t>(best_r) * n + k];
    mask[best_r * static_cast<size_t>(n) + i] = 1;
    picked.emplace_back(best_r, i);
  }
  return picked;
}

}  // namespace longkv

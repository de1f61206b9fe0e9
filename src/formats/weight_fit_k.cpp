// The K-quants' searched fits (weight_fit_k.h): our own search, after the
// idea of ggml's K-quant quantizers (score candidate steps by the least-squares
// fit of their codes), not its code.
//
// 1. Per sub-block, candidate steps around the one whose codes just span the
//    data, some of them clipping its ends; for each, the nearest codes, then
//    the step (and offset) that minimise the squared error for those codes,
//    in closed form. The best candidate is refined by alternating nearest
//    codes and least squares while its error falls.
// 2. Per super-block, the fp16 d (and dmin) that make the largest sub-block
//    step (offset) the largest integer scale (min); each sub-block's integer
//    scale (min) is the nearest multiple or a neighbour of it, whichever
//    loses least once the codes are re-rounded against the step actually
//    stored. The codes are always the nearest for the stored values.
//
// The symmetric fit (Q3_K, Q6_K) weighs each element's squared error by
// |x| + rms / 2 (rms over the super-block). On the evaluation model (KL to
// its Q8_0 predictions, `longkv perplexity --ctx 256 --chunks 10 --kv f32
// --kl-base`) that takes Q3_K's KL from 0.167 to 0.153, at a perplexity of
// 470 instead of 458 (Q8_0: 443), and leaves Q6_K's at 0.0021; the same
// weights raise Q2_K's and Q4_K's KL (0.553 -> 0.571, 0.0362 -> 0.0370), so
// the affine fits count every error alike.
#include "formats/weight_fit_k.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace longkv::weight_refs {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Levels added to the code range a candidate step spreads over the data
// (> 0 clips its ends for a finer step). More, or a wider span, lowers the
// squared error of gaussian data by under 1% at three times the time.
constexpr float kExtraLevels[] = {-0.5f, -0.25f, 0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.5f};
// Rounds of (nearest codes, least squares) after the best candidate.
constexpr int kRefits = 3;

// ---------------------------------------------------------------------------
// Affine: x ~ s * q + b with q = 0..top, s >= 0 and b <= 0 (code 0's value is
// -dmin * m, which cannot pass 0).

struct AffineSums {
  float n = 0.0f, q = 0.0f, qq = 0.0f, x = 0.0f, qx = 0.0f;
  void add(float qi, float xi) {
    n += 1.0f;
    q += qi;
    qq += qi * qi;
    x += xi;
    qx += qi * xi;
  }
};

// The least-squares (s, b) for the codes behind `a` within the constraints
// (on b = 0, s alone; for s = 0, b alone); returns the squared error, xx
// being the sum of x^2.
float affine_solve(const AffineSums& a, float xx, float& s, float& b) {
  const float det = a.n * a.qq - a.q * a.q;
  s = 0.0f;
  b = a.x / a.n;
  if (det > 0.0f) {
    s = (a.n * a.qx - a.q * a.x) / det;
    b = (a.qq * a.x - a.q * a.qx) / det;
  }
  if (b > 0.0f) {
    b = 0.0f;
    s = a.qq > 0.0f ? a.qx / a.qq : 0.0f;
  }
  if (s < 0.0f) {
    s = 0.0f;
    b = std::min(0.0f, a.x / a.n);
  }
  return xx - 2.0f * (s * a.qx + b * a.x) + s * s * a.qq + 2.0f * s * b * a.q + b * b * a.n;
}

// The sums of the codes nearest x ~ q / inv + b.
AffineSums affine_sums(const float* x, int len, float top, float inv, float b) {
  AffineSums a;
  for (int l = 0; l < len; ++l) a.add(std::clamp(std::nearbyint((x[l] - b) * inv), 0.0f, top), x[l]);
  return a;
}

// Codes 0..top of `len` elements nearest for x ~ s * q - o into q (may be
// null); returns the squared error.
float affine_codes(const float* x, int len, int top, float s, float o, uint8_t* q) {
  const float inv = s > 0.0f ? 1.0f / s : 0.0f, ft = static_cast<float>(top);
  float err = 0.0f;
  for (int l = 0; l < len; ++l) {
    const float qf = std::clamp(std::nearbyint((x[l] + o) * inv), 0.0f, ft);
    const float r = s * qf - o - x[l];
    err += r * r;
    if (q != nullptr) q[l] = static_cast<uint8_t>(qf);
  }
  return err;
}

struct AffineStep {
  float s, o;  // x ~ s * q - o
};

AffineStep affine_search(const float* x, int len, int top) {
  float lo = 0.0f, hi = x[0], xx = 0.0f;
  for (int l = 0; l < len; ++l) {
    lo = std::min(lo, x[l]);
    hi = std::max(hi, x[l]);
    xx += x[l] * x[l];
  }
  if (!(hi > lo)) return {0.0f, -lo};  // every element equal and <= 0
  const float ft = static_cast<float>(top);
  float best = kInf, s = 0.0f, b = lo;
  for (const float extra : kExtraLevels) {
    float cs, cb;
    const float err = affine_solve(affine_sums(x, len, ft, (ft + extra) / (hi - lo), lo), xx, cs, cb);
    if (err < best) {
      best = err;
      s = cs;
      b = cb;
    }
  }
  for (int r = 0; r < kRefits && s > 0.0f; ++r) {
    float cs, cb;
    const float err = affine_solve(affine_sums(x, len, ft, 1.0f / s, b), xx, cs, cb);
    if (!(err < best)) break;
    best = err;
    s = cs;
    b = cb;
  }
  return {s, -b};
}

// ---------------------------------------------------------------------------
// Symmetric: x ~ s * q with q = -cmax - 1..cmax, s of either sign.

// Codes of `len` elements nearest for x ~ s * q into q (may be null);
// returns the weighted squared error.
float symmetric_codes(const float* x, const float* w, int len, int cmax, float s, int8_t* q) {
  const float inv = s != 0.0f ? 1.0f / s : 0.0f, hi = static_cast<float>(cmax), lo = -hi - 1.0f;
  float err = 0.0f;
  for (int l = 0; l < len; ++l) {
    const float qf = std::clamp(std::nearbyint(x[l] * inv), lo, hi);
    const float r = s * qf - x[l];
    err += w[l] * r * r;
    if (q != nullptr) q[l] = static_cast<int8_t>(qf);
  }
  return err;
}

// The least-squares step for the codes nearest x * inv; `gain` is
// (x.q)^2 / (q.q) (weighted), by which it lowers the error below sum w x^2.
float symmetric_step(const float* x, const float* w, int len, float lo, float hi, float inv, float& gain) {
  float xq = 0.0f, qq = 0.0f;
  for (int l = 0; l < len; ++l) {
    const float q = std::clamp(std::nearbyint(x[l] * inv), lo, hi);
    xq += w[l] * x[l] * q;
    qq += w[l] * q * q;
  }
  gain = qq > 0.0f ? xq * xq / qq : 0.0f;
  return qq > 0.0f ? xq / qq : 0.0f;
}

// Candidates put the element of largest magnitude near either end of the
// codes (one longer on the negative side).
float symmetric_search(const float* x, const float* w, int len, int cmax) {
  float amax = 0.0f, mx = 0.0f;
  for (int l = 0; l < len; ++l) {
    if (std::fabs(x[l]) > amax) {
      amax = std::fabs(x[l]);
      mx = x[l];
    }
  }
  if (amax == 0.0f) return 0.0f;
  const float hi = static_cast<float>(cmax), lo = -hi - 1.0f;
  float best = -1.0f, s = 0.0f;
  for (const float end : {lo, hi}) {
    for (const float extra : kExtraLevels) {
      float gain;
      const float cs = symmetric_step(x, w, len, lo, hi, (end + std::copysign(extra, end)) / mx, gain);
      if (gain > best) {
        best = gain;
        s = cs;
      }
    }
  }
  for (int r = 0; r < kRefits && s != 0.0f; ++r) {
    float gain;
    const float cs = symmetric_step(x, w, len, lo, hi, 1.0f / s, gain);
    if (!(gain > best)) break;
    best = gain;
    s = cs;
  }
  return s;
}

}  // namespace

void k_affine_fit(const float* x, int subs, int len, int top, int smax, KAffineFit& f) {
  AffineStep sub[16];
  float s_big = 0.0f, o_big = 0.0f;
  for (int j = 0; j < subs; ++j) {
    sub[j] = affine_search(x + len * j, len, top);
    s_big = std::max(s_big, sub[j].s);
    o_big = std::max(o_big, sub[j].o);
  }
  const float limit = static_cast<float>(smax);
  f.d = f32_to_f16(s_big / limit);
  f.dmin = f32_to_f16(o_big / limit);
  const float d = f16_to_f32(f.d), dmin = f16_to_f32(f.dmin);
  for (int j = 0; j < subs; ++j) {
    const float* xj = x + len * j;
    const int sc0 = d > 0.0f ? static_cast<int>(std::clamp(std::nearbyint(sub[j].s / d), 0.0f, limit)) : 0;
    const int m0 = dmin > 0.0f ? static_cast<int>(std::clamp(std::nearbyint(sub[j].o / dmin), 0.0f, limit)) : 0;
    float best = kInf;
    for (int sc = std::max(0, sc0 - 1); sc <= std::min(smax, sc0 + 1); ++sc) {
      for (int m = std::max(0, m0 - 1); m <= std::min(smax, m0 + 1); ++m) {
        const float err = affine_codes(xj, len, top, d * static_cast<float>(sc), dmin * static_cast<float>(m), nullptr);
        if (err < best) {
          best = err;
          f.sc[j] = static_cast<uint8_t>(sc);
          f.m[j] = static_cast<uint8_t>(m);
        }
      }
    }
    affine_codes(xj, len, top, d * static_cast<float>(f.sc[j]), dmin * static_cast<float>(f.m[j]), f.codes + len * j);
  }
}

void k_symmetric_fit(const float* x, int cmax, int lmin, int lmax, KSymmetricFit& f) {
  float ms = 0.0f;
  for (int e = 0; e < kQKK; ++e) ms += x[e] * x[e];
  const float half_rms = 0.5f * std::sqrt(ms / static_cast<float>(kQKK));
  float w[kQKK];
  for (int e = 0; e < kQKK; ++e) w[e] = std::fabs(x[e]) + half_rms;
  float s[16], big = 0.0f;
  for (int j = 0; j < 16; ++j) {
    s[j] = symmetric_search(x + 16 * j, w + 16 * j, 16, cmax);
    if (std::fabs(s[j]) > std::fabs(big)) big = s[j];
  }
  // The step of largest magnitude takes lmin, the longer side of the scales
  // (an all-zero block: d = +0).
  f.d = f32_to_f16(big != 0.0f ? big / static_cast<float>(lmin) : 0.0f);
  const float d = f16_to_f32(f.d);
  for (int j = 0; j < 16; ++j) {
    const float* xj = x + 16 * j;
    const float* wj = w + 16 * j;
    const float lf = d != 0.0f ? std::nearbyint(s[j] / d) : 0.0f;
    const int l0 = static_cast<int>(std::clamp(lf, static_cast<float>(lmin), static_cast<float>(lmax)));
    float best = kInf;
    for (int l = std::max(lmin, l0 - 1); l <= std::min(lmax, l0 + 1); ++l) {
      const float err = symmetric_codes(xj, wj, 16, cmax, d * static_cast<float>(l), nullptr);
      if (err < best) {
        best = err;
        f.l[j] = l;
      }
    }
    symmetric_codes(xj, wj, 16, cmax, d * static_cast<float>(f.l[j]), f.codes + 16 * j);
  }
}

}  // namespace longkv::weight_refs

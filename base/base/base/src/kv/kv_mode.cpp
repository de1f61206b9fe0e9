#include "kv/kv_mode.h"

#include <cstdlib>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace longkv {

const char* const kKvModeGrammar =
    "f32, f16 or k<bits>v<bits>[:g<group>][:r<window>][:s<sinks>][:rope=pre|post][:sym][:rot][:fit=minmax|mse][:cut=attend|append][:o<pct>][:a<pct>[:anchor=kdev|attn]] "
    "with bits in {8,4,3,2,1}, e.g. k4v2:g32:r128:s4";

std::string KvMode::to_string() const {
  if (kind == KvKind::f32) return "f32";
  if (kind == KvKind::f16) return "f16";
  std::string s = strprintf("k%dv%d:g%d:r%d:s%d:rope=%s", k_bits, v_bits, group, residual, sinks,
                            pre_rope ? "pre" : "post");
  if (symmetric) s += ":sym";
  if (rotate) s += ":rot";
  if (fit_mse) s += ":fit=mse";
  if (!defer) s += ":cut=append";
  if (outlier_pct > 0) s += strprintf(":o%g", outlier_pct);
  if (anchor_pct > 0) s += strprintf(":a%g", anchor_pct);
  if (anchor_pct > 0 && anchor_score == KvAnchorScore::attn) s += ":anchor=attn";
  return s;
}

std::string KvMode::warning() const {
  if (kind == KvKind::quant && k_bits < v_bits)
    return strprintf("%s gives keys fewer bits than values; keys carry outlier channels and are the more "
                     "sensitive half, so K bits >= V bits is the recommended default",
                     to_string().c_str());
  return {};
}

static bool parse_uint(const std::string& s, int* out) {
  if (s.empty() || s.size() > 7) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  *out = std::atoi(s.c_str());
  return true;
}

// A decimal like "2", "0.5" or "1.25" (no sign, no exponent).
static bool parse_decimal(const std::string& s, double* out) {
  if (s.empty() || s.size() > 8 || s.front() == '.' || s.back() == '.') return false;
  int dots = 0;
  for (char c : s) {
    if (c == '.') ++dots;
    else if (c < '0' || c > '9') return false;
  }
  if (dots > 1) return false;
  *out = std::atof(s.c_str());
  return true;
}

static bool valid_bits(int b) { return b == 8 || b == 4 || b == 3 || b == 2 || b == 1; }

KvMode parse_kv_mode(const std::string& text) {
  std::vector<std::string> fields;
  std::stringstream ss(text);
  for (std::string f; std::getline(ss, f, ':');) fields.push_back(f);
  if (!text.empty() && text.back() == ':') fields.push_back("");
  LONGKV_CHECK(!fields.empty() && !fields[0].empty(), "empty KV mode: expected %s", kKvModeGrammar);

  KvMode m;
  const std::string& head = fields[0];
  if (head == "f32" || head == "f16") {
    LONGKV_CHECK(fields.size() == 1, "KV mode '%s': dense mode %s takes no options", text.c_str(), head.c_str());
    m.kind = head == "f32" ? KvKind::f32 : KvKind::f16;
    m.k_bits = m.v_bits = head == "f32" ? 32 : 16;
    return m;
  }
  const size_t vpos = head.find('v');
  int kb = 0, vb = 0;
  if (head.size() < 4 || head[0] != 'k' || vpos == std::string::npos || !parse_uint(head.substr(1, vpos - 1), &kb) ||
      !parse_uint(head.substr(vpos + 1), &vb))
    fail("unknown KV cache mode '%s': expected %s", text.c_str(), kKvModeGrammar);
  LONGKV_CHECK(valid_bits(kb) && valid_bits(vb), "KV mode '%s': bits must be 8, 4, 3, 2 or 1 (got k%d v%d)",
               text.c_str(), kb, vb);
  m.kind = KvKind::quant;
  m.k_bits = kb;
  m.v_bits = vb;
  bool seen_g = false, seen_r = false, seen_s = false, seen_rope = false, seen_sym = false, seen_rot = false,
       seen_o = false, seen_a = false, seen_as = false, seen_fit = false, seen_cut = false;
  for (size_t i = 1; i < fields.size(); ++i) {
    const std::string& f = fields[i];
    auto once = [&](bool& seen) {
      LONGKV_CHECK(!seen, "KV mode '%s': field '%s' given twice", text.c_str(), f.c_str());
      seen = true;
    };
    int v = 0;
    if (f.size() > 1 && f[0] == 'g' && parse_uint(f.substr(1), &v)) {
      once(seen_g);
      LONGKV_CHECK(v >= 8 && v <= 1024 && v % 8 == 0, "KV mode '%s': group size %d must be a multiple of 8 in [8, 1024]",
                   text.c_str(), v);
      m.group = v;
    } else if (f.size() > 1 && f[0] == 'r' && f.rfind("rope", 0) != 0 && parse_uint(f.substr(1), &v)) {
      once(seen_r);
      LONGKV_CHECK(v <= 1000000, "KV mode '%s': residual window %d is absurd", text.c_str(), v);
      m.residual = v;
    } else if (f.size() > 1 && f[0] == 's' && f != "sym" && parse_uint(f.substr(1), &v)) {
      once(seen_s);
      LONGKV_CHECK(v <= 100000, "KV mode '%s': %d sink tokens is absurd", text.c_str(), v);
      m.sinks = v;
    } else if (f == "rope=pre" || f == "rope=post") {
      once(seen_rope);
      m.pre_rope = f == "rope=pre";
    } else if (f == "sym") {
      once(seen_sym);
      m.symmetric = true;
    } else if (f == "rot") {
      once(seen_rot);
      m.rotate = true;
    } else if (f == "fit=minmax" || f == "fit=mse") {
      once(seen_fit);
      m.fit_mse = f == "fit=mse";
    } else if (f == "cut=attend" || f == "cut=append" || f == "defer") {
      // "defer" is the older spelling of cut=attend, the default since it
      // became one; commands in the docs still use it.
      once(seen_cut);
      m.defer = f != "cut=append";
    } else if (double pct = 0; f.size() > 1 && f[0] == 'o' && parse_decimal(f.substr(1), &pct)) {
      once(seen_o);
      LONGKV_CHECK(pct > 0 && pct <= 10, "KV mode '%s': outlier share %s%% must be in (0, 10]", text.c_str(),
                   f.substr(1).c_str());
      m.outlier_pct = pct;
    } else if (double pct = 0; f.size() > 1 && f[0] == 'a' && parse_decimal(f.substr(1), &pct)) {
      once(seen_a);
      LONGKV_CHECK(pct > 0 && pct <= 10, "KV mode '%s': anchor share %s%% must be in (0, 10]", text.c_str(),
                   f.substr(1).c_str());
      m.anchor_pct = pct;
    } else if (f == "anchor=kdev" || f == "anchor=attn") {
      once(seen_as);
      m.anchor_score = f == "anchor=attn" ? KvAnchorScore::attn : KvAnchorScore::kdev;
    } else {
      fail("KV mode '%s': unknown field '%s' (expected %s)", text.c_str(), f.c_str(), kKvModeGrammar);
    }
  }
  LONGKV_CHECK(!(m.rotate && m.pre_rope), "KV mode '%s': ':rot' needs keys after RoPE; drop 'rope=pre' or ':rot'",
               text.c_str());
  LONGKV_CHECK(!(m.anchor_pct > 0 && m.pre_rope),
               "KV mode '%s': anchor tokens ':a' need keys after RoPE (anchored groups are not position-contiguous, "
               "so pre-RoPE groups could not be rotated as runs); drop 'rope=pre' or ':a'",
               text.c_str());
  LONGKV_CHECK(!seen_as || seen_a, "KV mode '%s': ':anchor=' chooses how anchor tokens are picked and needs ':a<P>'",
               text.c_str());
  LONGKV_CHECK(m.defer || !(m.anchor_pct > 0),
               "KV mode '%s': anchored modes (':a<P>') always cut groups after attention; drop ':cut=append'",
               text.c_str());
  LONGKV_CHECK(!(m.symmetric && m.fit_mse),
               "KV mode '%s': 'fit=mse' refits asymmetric ranges; drop ':sym' or 'fit=mse'", text.c_str());
  LONGKV_CHECK(!(m.symmetric && (m.k_bits == 1 || m.v_bits == 1)),
               "KV mode '%s': symmetric 1-bit codes cannot represent zero; drop ':sym' or use 2+ bits", text.c_str());
  return m;
}

}  // namespace longkv

#include "model/weight_mix.h"

namespace longkv {

bool parse_weight_mix(const std::string& name, WeightMix* out) {
  WeightMix w;
  std::string base = name;
  if (base.size() > 2 && (base.substr(base.size() - 2) == "_m" || base.substr(base.size() - 2) == "_M")) {
    base.resize(base.size() - 2);
    w.k_m = true;
  }
  if (!parse_weight_type(base, &w.base)) return false;
  if (w.k_m && w.base != WeightType::Q3_K && w.base != WeightType::Q4_K && w.base != WeightType::Q5_K) return false;
  w.name = std::string(weight_traits(w.base).name) + (w.k_m ? "_M" : "");
  *out = w;
  return true;
}

std::string weight_mix_names() {
  std::string out;
  for (uint32_t id = 0; id < 64; ++id) {
    const WeightTypeTraits* t = weight_type_traits(id);
    if (t == nullptr) continue;
    std::string name = t->name;
    for (char& c : name) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    out += (out.empty() ? "" : ", ") + name;
  }
  return out + "; q3_k_m, q4_k_m, q5_k_m";
}

bool more_bits_layer(int layer, int n_layers) {
  const int eighth = n_layers / 8;
  return layer < eighth || layer >= 7 * n_layers / 8 || (layer - eighth) % 3 == 2;
}

WeightType mix_matrix_type(const WeightMix& wt, MatrixRole role, int layer, int n_layers) {
  if (!wt.k_m) return wt.base;
  if (role == MatrixRole::output) return WeightType::Q6_K;
  if (wt.base == WeightType::Q3_K) {
    switch (role) {
      case MatrixRole::attn_v: return layer < 2 ? WeightType::Q5_K : WeightType::Q4_K;
      case MatrixRole::ffn_down: return layer < n_layers / 16 ? WeightType::Q5_K : WeightType::Q4_K;
      case MatrixRole::attn_output: return WeightType::Q4_K;
      default: return wt.base;
    }
  }
  const bool more = (role == MatrixRole::attn_v || role == MatrixRole::ffn_down) && more_bits_layer(layer, n_layers);
  return more ? WeightType::Q6_K : wt.base;
}

}  // namespace longkv

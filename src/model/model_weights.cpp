#include "model/model_weights.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace longkv {


// Counts what a decode step reads in full: every layer matrix and the output
// projection. The token embedding is only gathered one row per token, so it
// counts only when it doubles as the (tied) output.
size_t ModelWeights::weight_bytes() const {
  size_t total = output.nbytes();
  for (const auto& l : layers) {
    for (const WeightView* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      total += m->nbytes();
    }
  }
  return total;
}

std::string ModelWeights::weight_types() const {
  std::vector<std::pair<size_t, WeightType>> bytes;  // per type, in first-seen order
  auto add = [&](const WeightView& m) {
    if (!m) return;
    for (auto& [n, t] : bytes) {
      if (t == m.type) {
        n += m.nbytes();
        return;
      }
    }
    bytes.emplace_back(m.nbytes(), m.type);
  };
  add(tok_embd);
  if (output.data != tok_embd.data) add(output);
  for (const auto& l : layers)
    for (const WeightView* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) add(*m);
  std::stable_sort(bytes.begin(), bytes.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string s;
  for (const auto& [n, t] : bytes) {
    if (!s.empty()) s += '+';  // appended, not "+" + name: GCC 12 warns (-Wrestrict) on that insert
    s += weight_traits(t).name;
  }
  return s;
}

}  // namespace longkv

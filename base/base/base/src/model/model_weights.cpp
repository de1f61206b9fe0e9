#include "model/model_weights.h"

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

}  // namespace longkv

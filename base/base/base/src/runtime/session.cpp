#include "runtime/session.h"

#include <algorithm>

#include "core/error.h"

namespace longkv {

Session::Session(LlamaModel& model, const std::string& kv_mode, int max_tokens)
    : model_(model), caches_(model.make_caches(kv_mode, max_tokens)), max_tokens_(max_tokens) {
  logits_.resize(model.config().n_vocab);
}

const std::vector<float>& Session::prefill(std::span<const int32_t> tokens, int batch,
                                           const std::function<void(int, int)>& progress) {
  LONGKV_CHECK(!tokens.empty(), "empty prompt");
  LONGKV_CHECK(pos_ + static_cast<int64_t>(tokens.size()) <= max_tokens_,
               "prompt of %zu tokens does not fit the context of %d tokens (%d used)", tokens.size(), max_tokens_,
               pos_);
  batch = std::max(1, batch);
  const int n = static_cast<int>(tokens.size());
  for (int i = 0; i < n; i += batch) {
    const int m = std::min(batch, n - i);
    const bool last = i + m == n;
    model_.forward(tokens.data() + i, m, pos_, caches_, last ? logits_.data() : nullptr, false);
    pos_ += m;
    if (progress) progress(i + m, n);
  }
  return logits_;
}

const std::vector<float>& Session::decode(int32_t token) {
  LONGKV_CHECK(pos_ < max_tokens_, "context full (%d tokens)", max_tokens_);
  model_.forward(&token, 1, pos_, caches_, logits_.data(), false);
  ++pos_;
  return logits_;
}

KvFootprint Session::footprint() const { return total_footprint(caches_); }

}  // namespace longkv

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

void Session::decode_batch(std::span<Session* const> sessions, const int32_t* tokens, std::vector<float>* logits) {
  LONGKV_CHECK(!sessions.empty(), "decode_batch: no session");
  LlamaModel& model = sessions[0]->model_;
  std::vector<std::vector<std::unique_ptr<KvCache>>*> seqs;
  for (Session* s : sessions) {
    LONGKV_CHECK(&s->model_ == &model, "decode_batch: sessions of different models");
    LONGKV_CHECK(s->pos_ < s->max_tokens_, "context full (%d tokens)", s->max_tokens_);
    seqs.push_back(&s->caches_);
  }
  const int n = static_cast<int>(sessions.size());
  logits->resize(static_cast<size_t>(n) * model.config().n_vocab);
  model.forward_batch(tokens, n, seqs.data(), logits->data());
  for (Session* s : sessions) ++s->pos_;
}

KvFootprint Session::footprint() const { return total_footprint(caches_); }

}  // namespace longkv

// One generation session: a model, one KV cache per layer, the position.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kv/kv_cache.h"
#include "model/llama_model.h"

namespace longkv {

class Session {
 public:
  // Caches are built from kv_mode with room for max_tokens.
  Session(LlamaModel& model, const std::string& kv_mode, int max_tokens);

  // Feeds tokens in chunks of `batch`; returns the logits of the last one.
  // progress(done, total) is called after each chunk when set.
  const std::vector<float>& prefill(std::span<const int32_t> tokens, int batch,
                                    const std::function<void(int, int)>& progress = {});
  // Feeds one token; returns the logits for the next.
  const std::vector<float>& decode(int32_t token);
  // Feeds tokens[i] to sessions[i] for every session at once, the sessions
  // of one model (LlamaModel::forward_batch: each matrix read once for all
  // of them); logits [n][n_vocab], the next-token logits of each.
  static void decode_batch(std::span<Session* const> sessions, const int32_t* tokens, std::vector<float>* logits);

  int pos() const { return pos_; }
  int max_tokens() const { return max_tokens_; }
  const std::vector<std::unique_ptr<KvCache>>& caches() const { return caches_; }
  // Sum of footprints over layers (bits are those of layer 0).
  KvFootprint footprint() const;
  std::string kv_mode() const { return caches_.empty() ? "" : caches_[0]->mode(); }

 private:
  LlamaModel& model_;
  std::vector<std::unique_ptr<KvCache>> caches_;
  std::vector<float> logits_;
  int pos_ = 0;
  int max_tokens_ = 0;
};

}  // namespace longkv

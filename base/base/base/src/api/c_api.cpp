// The C API (include/longkv/longkv.h) over the C++ engine.
#include "longkv/longkv.h"

#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "core/error.h"
#include "core/thread_pool.h"
#include "model/llama_model.h"
#include "model/model_loader.h"
#include "runtime/session.h"
#include "tokenizer/spm_tokenizer.h"

struct longkv_model {
  longkv::LoadedModel loaded;
  std::unique_ptr<longkv::SpmTokenizer> tokenizer;
  std::unique_ptr<longkv::ThreadPool> pool;
  std::unique_ptr<longkv::LlamaModel> model;
};

struct longkv_session {
  longkv_model* model;
  std::unique_ptr<longkv::Session> session;
};

namespace {

thread_local std::string g_last_error;

// Runs fn, turning exceptions into the thread's last error and `fallback`.
template <typename F, typename R>
R guarded(F&& fn, R fallback) {
  try {
    g_last_error.clear();
    return fn();
  } catch (const std::bad_alloc&) {
    g_last_error = "out of memory";
  } catch (const std::exception& e) {
    g_last_error = e.what();
  }
  return fallback;
}

}  // namespace

extern "C" {

const char* longkv_last_error(void) { return g_last_error.c_str(); }

longkv_model* longkv_model_load(const char* model_path, const char* tokenizer_path, int n_threads) {
  return guarded(
      [&]() -> longkv_model* {
        LONGKV_CHECK(model_path, "model path is NULL");
        auto m = std::make_unique<longkv_model>();
        m->loaded = longkv::load_model(model_path);
        std::optional<longkv::Vocab> vocab = m->loaded.vocab;
        if (tokenizer_path) vocab = longkv::vocab_from_llama2c(tokenizer_path, m->loaded.weights.cfg.n_vocab);
        LONGKV_CHECK(vocab.has_value(), "%s carries no vocabulary: pass a tokenizer path", model_path);
        m->tokenizer = std::make_unique<longkv::SpmTokenizer>(std::move(*vocab));
        m->pool = std::make_unique<longkv::ThreadPool>(n_threads);
        m->model = std::make_unique<longkv::LlamaModel>(m->loaded.weights, *m->pool);
        return m.release();
      },
      static_cast<longkv_model*>(nullptr));
}

void longkv_model_free(longkv_model* model) { delete model; }
int32_t longkv_model_n_vocab(const longkv_model* model) { return model ? model->loaded.weights.cfg.n_vocab : -1; }
int32_t longkv_model_ctx_len(const longkv_model* model) { return model ? model->loaded.weights.cfg.ctx_len : -1; }

int32_t longkv_tokenize(const longkv_model* model, const char* text, size_t len, int add_bos, int32_t* ids,
                        int32_t capacity) {
  return guarded(
      [&]() -> int32_t {
        LONGKV_CHECK(model && (text || len == 0), "NULL model or text");
        const auto out = model->tokenizer->encode(std::string_view(text ? text : "", len), add_bos != 0);
        const int32_t n = static_cast<int32_t>(out.size());
        if (ids) std::memcpy(ids, out.data(), sizeof(int32_t) * static_cast<size_t>(std::min(n, capacity)));
        return n;
      },
      int32_t{-1});
}

int32_t longkv_token_to_text(const longkv_model* model, int32_t prev, int32_t id, char* buf, size_t buf_size) {
  return guarded(
      [&]() -> int32_t {
        LONGKV_CHECK(model && buf && buf_size > 0, "NULL model or buffer");
        const std::string s = model->tokenizer->decode_token(prev, id);
        LONGKV_CHECK(s.size() < buf_size, "buffer of %zu bytes too small for %zu", buf_size, s.size() + 1);
        std::memcpy(buf, s.c_str(), s.size() + 1);
        return static_cast<int32_t>(s.size());
      },
      int32_t{-1});
}

longkv_session* longkv_session_new(longkv_model* model, const char* kv_mode, int32_t max_tokens) {
  return guarded(
      [&]() -> longkv_session* {
        LONGKV_CHECK(model && kv_mode, "NULL model or KV mode");
        LONGKV_CHECK(max_tokens > 0, "max_tokens must be positive (got %d)", max_tokens);
        auto s = std::make_unique<longkv_session>();
        s->model = model;
        s->session = std::make_unique<longkv::Session>(*model->model, kv_mode, max_tokens);
        return s.release();
      },
      static_cast<longkv_session*>(nullptr));
}

void longkv_session_free(longkv_session* session) { delete session; }

int longkv_session_feed(longkv_session* session, const int32_t* ids, int32_t n, float* logits) {
  return guarded(
      [&]() -> int {
        LONGKV_CHECK(session && ids && n > 0, "NULL session/ids or n <= 0");
        const std::vector<float>& lg = n == 1 && session->session->pos() > 0
                                           ? session->session->decode(ids[0])
                                           : session->session->prefill(std::span<const int32_t>(ids, n), 512);
        if (logits) std::memcpy(logits, lg.data(), lg.size() * sizeof(float));
        return 0;
      },
      -1);
}

int32_t longkv_session_pos(const longkv_session* session) { return session ? session->session->pos() : -1; }
size_t longkv_session_kv_bytes(const longkv_session* session) {
  return session ? session->session->footprint().bytes() : 0;
}

}  // extern "C"

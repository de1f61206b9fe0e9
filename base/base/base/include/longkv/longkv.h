/* longkv C API: load a model, tokenize, generate with a chosen KV-cache mode.
 *
 * A thin, stable layer over the C++ engine for embedding from other
 * languages. Every function that can fail returns NULL or a negative value
 * and leaves a one-line message for longkv_last_error() (per thread).
 * Objects are not thread-safe; use one session per thread.
 */
#ifndef LONGKV_LONGKV_H
#define LONGKV_LONGKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct longkv_model longkv_model;
typedef struct longkv_session longkv_session;

/* Message of the last failed call on this thread ("" if none). */
const char* longkv_last_error(void);

/* Loads a GGUF file, llama2.c checkpoint or Hugging Face directory.
 * tokenizer_path may be NULL (use the model's vocabulary). n_threads <= 0:
 * all cores. */
longkv_model* longkv_model_load(const char* model_path, const char* tokenizer_path, int n_threads);
void longkv_model_free(longkv_model* model);
int32_t longkv_model_n_vocab(const longkv_model* model);
int32_t longkv_model_ctx_len(const longkv_model* model);

/* Tokenizes UTF-8 text into ids (with BOS if add_bos). Returns the number
 * of tokens; if it exceeds capacity only `capacity` are written. */
int32_t longkv_tokenize(const longkv_model* model, const char* text, size_t len, int add_bos, int32_t* ids,
                        int32_t capacity);
/* Appends the text of token `id` following `prev` to buf (NUL-terminated);
 * returns its length, or -1 on error. */
int32_t longkv_token_to_text(const longkv_model* model, int32_t prev, int32_t id, char* buf, size_t buf_size);

/* A session with its own KV cache (mode string as the CLI's --kv, e.g.
 * "f16") for at most max_tokens tokens. */
longkv_session* longkv_session_new(longkv_model* model, const char* kv_mode, int32_t max_tokens);
void longkv_session_free(longkv_session* session);
/* Feeds tokens; writes the logits of the last one to logits[n_vocab] if
 * non-NULL. Returns 0, or -1 on error. */
int longkv_session_feed(longkv_session* session, const int32_t* ids, int32_t n, float* logits);
/* Tokens held and KV-cache bytes in use. */
int32_t longkv_session_pos(const longkv_session* session);
size_t longkv_session_kv_bytes(const longkv_session* session);

#ifdef __cplusplus
}
#endif

#endif /* LONGKV_LONGKV_H */

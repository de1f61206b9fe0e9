/* Compiled as C: the public header is valid C, and the C API generates the
 * expected greedy text of stories260K. Usage: c_api_smoke MODEL TOKENIZER EXPECTED_FILE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "longkv/longkv.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL TOKENIZER EXPECTED\n", argv[0]);
    return 2;
  }
  longkv_model* m = longkv_model_load(argv[1], argv[2], 1);
  if (!m) {
    fprintf(stderr, "load failed: %s\n", longkv_last_error());
    return 1;
  }
  /* A bad mode is reported, not fatal. */
  if (longkv_session_new(m, "k9v9", 16) != NULL || strstr(longkv_last_error(), "k9v9") == NULL) {
    fprintf(stderr, "bad KV mode not reported: '%s'\n", longkv_last_error());
    return 1;
  }
  const int n_vocab = longkv_model_n_vocab(m);
  float* logits = malloc(sizeof(float) * (size_t)n_vocab);
  longkv_session* s = longkv_session_new(m, "f16", 128);
  int32_t tok = 1, prev = 1; /* BOS */
  char text[4096] = "", piece[64];
  if (longkv_session_feed(s, &tok, 1, logits) != 0) return 1;
  for (int i = 0; i < 100; ++i) {
    int best = 0;
    for (int v = 1; v < n_vocab; ++v)
      if (logits[v] > logits[best]) best = v;
    if (longkv_token_to_text(m, prev, best, piece, sizeof piece) < 0) return 1;
    strncat(text, piece, sizeof text - strlen(text) - 1);
    prev = best;
    if (i < 99 && longkv_session_feed(s, &prev, 1, logits) != 0) return 1;
  }
  FILE* f = fopen(argv[3], "rb");
  char want[4096] = "";
  size_t n = f ? fread(want, 1, sizeof want - 1, f) : 0;
  if (f) fclose(f);
  want[n] = '\0';
  if (n > 0 && want[n - 1] == '\n') want[n - 1] = '\0';
  const int ok = strcmp(text, want) == 0 && longkv_session_pos(s) == 100 && longkv_session_kv_bytes(s) > 0;
  printf("%s\n%s\n", ok ? "c api: ok" : "c api: MISMATCH", text);
  longkv_session_free(s);
  longkv_model_free(m);
  free(logits);
  return ok ? 0 : 1;
}

/* examples/generate.c — generate text with a model compiled by `kiln compile`.
 *
 *   generate MODEL.kiln PROMPT [N_TOKENS]
 *
 * Wraps PROMPT in the model's chat template as a user turn, prefills it, then decodes
 * greedily up to N_TOKENS tokens (default 64), stopping early at an end-of-generation
 * token, and streams the text to stdout followed by a newline: the same text as
 * `kiln run MODEL --chat --prompt PROMPT --max-tokens N_TOKENS`. Statistics go to stderr.
 * With KILN_GENERATE_LOGITS=FILE in the environment, every logits vector it samples from
 * (n_vocab floats, native byte order) is appended to FILE: tests/cross compares builds.
 * Exits 0, or prints kiln_last_error() and exits 1.
 *
 * Plain C: it sees only model.h (the compiled model) and kiln/kiln.h (the runtime).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

static int fail(const char* what, kiln_status s) {
  fprintf(stderr, "generate: %s: %s: %s\n", what, kiln_status_str(s), kiln_last_error());
  return 1;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s MODEL.kiln PROMPT [N_TOKENS]\n", argv[0]);
    return 2;
  }
  const char* path = argv[1];
  const char* prompt = argv[2];
  char* end = NULL;
  long n_gen = argc == 4 ? strtol(argv[3], &end, 10) : 64;
  if ((argc == 4 && (end == argv[3] || *end != '\0')) || n_gen < 0 || n_gen > 1000000) {
    fprintf(stderr, "generate: N_TOKENS must be a number 0..1000000, not '%s'\n", argv[3]);
    return 2;
  }

  int rc = 1;
  kiln_model* model = NULL;
  kiln_session* session = NULL;
  kiln_sampler* sampler = NULL;
  char* text = NULL;
  int32_t* tokens = NULL;
  float* logits = NULL;
  char* piece = NULL;
  FILE* dump = NULL; /* KILN_GENERATE_LOGITS */
  size_t piece_cap = 64;
  kiln_status s;
  const double t_load = now_s();

  if ((s = kiln_model_load(KILN_MODEL, path, &model)) != KILN_OK) {
    rc = fail("loading the model", s);
    goto done;
  }
  if ((s = kiln_session_init(model, NULL, &session)) != KILN_OK) {
    rc = fail("creating a session", s);
    goto done;
  }
  if ((s = kiln_sampler_init(NULL, &sampler)) != KILN_OK) { /* NULL: greedy */
    rc = fail("creating the sampler", s);
    goto done;
  }

  /* Chat template: ask for the size, then render. */
  kiln_chat_message msg = {"user", prompt};
  size_t len = 0;
  s = kiln_chat_apply(model, NULL, &msg, 1, 1, NULL, 0, &len);
  if (s != KILN_OK && s != KILN_ERR_BUFFER_TOO_SMALL) {
    rc = fail("applying the chat template", s);
    goto done;
  }
  if (!(text = malloc(len + 1))) goto oom;
  if ((s = kiln_chat_apply(model, NULL, &msg, 1, 1, text, len + 1, &len)) != KILN_OK) {
    rc = fail("applying the chat template", s);
    goto done;
  }

  /* Tokens: ask for the count, then tokenize (special tokens of the template parsed). */
  int32_t n_prompt = 0;
  s = kiln_tokenize(model, text, len, 1, 1, NULL, 0, &n_prompt);
  if (s != KILN_OK && s != KILN_ERR_BUFFER_TOO_SMALL) {
    rc = fail("tokenizing the prompt", s);
    goto done;
  }
  if (!(tokens = malloc(sizeof(int32_t) * (size_t)(n_prompt > 0 ? n_prompt : 1)))) goto oom;
  if ((s = kiln_tokenize(model, text, len, 1, 1, tokens, n_prompt, &n_prompt)) != KILN_OK) {
    rc = fail("tokenizing the prompt", s);
    goto done;
  }
  if (n_prompt == 0) {
    fprintf(stderr, "generate: the prompt encodes to no tokens\n");
    goto done;
  }
  if ((long)n_prompt + n_gen > kiln_model_max_context(model)) {
    fprintf(stderr, "generate: the prompt (%d tokens) plus %ld new tokens exceed the compiled "
            "context of %d\n", n_prompt, n_gen, kiln_model_max_context(model));
    goto done;
  }

  const int32_t n_vocab = kiln_model_n_vocab(model);
  if (!(logits = malloc(sizeof(float) * (size_t)n_vocab)) || !(piece = malloc(piece_cap))) goto oom;

  const double t0 = now_s();
  const int32_t stream = 0;
  if ((s = kiln_prefill(session, tokens, n_prompt, stream, logits)) != KILN_OK) {
    rc = fail("prefill", s);
    goto done;
  }
  const double t1 = now_s();
  const char* dump_path = getenv("KILN_GENERATE_LOGITS");
  if (dump_path && *dump_path) dump = fopen(dump_path, "wb");
  if (dump_path && *dump_path && !dump) {
    fprintf(stderr, "generate: cannot write %s (KILN_GENERATE_LOGITS)\n", dump_path);
    goto done;
  }
  long generated = 0;
  for (long i = 0; i < n_gen; ++i) {
    int32_t next;
    if (dump) fwrite(logits, sizeof(float), (size_t)n_vocab, dump);
    if ((s = kiln_sampler_sample(sampler, logits, n_vocab, &next)) != KILN_OK) {
      rc = fail("sampling", s);
      goto done;
    }
    if (kiln_token_is_eog(model, next)) break;
    ++generated;
    s = kiln_token_to_piece(model, next, piece, piece_cap, &len);
    if (s == KILN_ERR_BUFFER_TOO_SMALL) {
      char* bigger = realloc(piece, len + 1);
      if (!bigger) goto oom;
      piece = bigger;
      piece_cap = len + 1;
      s = kiln_token_to_piece(model, next, piece, piece_cap, &len);
    }
    if (s != KILN_OK) {
      rc = fail("token to text", s);
      goto done;
    }
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    if (i + 1 == n_gen) break;
    if ((s = kiln_decode(session, &next, &stream, 1, logits)) != KILN_OK) {
      rc = fail("decode", s);
      goto done;
    }
  }
  const double t2 = now_s();
  fputc('\n', stdout);
  fprintf(stderr, "[generate] %s | %d threads | load %.2f s | prompt %d tokens in %.2f s "
          "(%.1f tok/s) | generated %ld tokens in %.2f s (%.2f tok/s)\n", kiln_model_name(model),
          kiln_session_n_threads(session), t0 - t_load, n_prompt, t1 - t0, n_prompt / (t1 - t0),
          generated, t2 - t1, generated > 1 ? (double)(generated - 1) / (t2 - t1) : 0.0);
  rc = 0;
  goto done;

oom:
  fprintf(stderr, "generate: out of memory\n");
done:
  if (dump) fclose(dump);
  free(piece);
  free(logits);
  free(tokens);
  free(text);
  kiln_sampler_free(sampler);
  kiln_session_free(session);
  kiln_model_free(model);
  return rc;
}

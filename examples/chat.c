/* examples/chat.c — a multi-turn conversation with a model compiled by `kiln compile`.
 *
 *   chat MODEL.kiln [N_TOKENS]
 *
 * Each line on stdin is a user message; the reply (greedy, up to N_TOKENS tokens, default
 * 128) streams to stdout followed by a newline. Every turn renders the whole conversation
 * with the model's chat template, then keeps the tokens the session already holds that
 * the rendering starts with (kiln_session_truncate drops the rest) and prefills only what
 * follows: the reply's own tokens are in the KV cache already, so a turn costs its new
 * message, not the history. Greedy replies are those of `kiln chat MODEL --adapter-slots 0`
 * on the same conversation. Statistics go to stderr; exits 0 at end of input, or prints
 * kiln_last_error() and exits 1.
 *
 * Plain C: it sees only model.h (the compiled model) and kiln/kiln.h (the runtime).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

typedef struct {
  char* role;
  char* content;
} message;

static int fail(const char* what, kiln_status s) {
  fprintf(stderr, "chat: %s: %s: %s\n", what, kiln_status_str(s), kiln_last_error());
  return 1;
}

static char* copy_of(const char* s, size_t n) {
  char* c = malloc(n + 1);
  if (c) memcpy(c, s, n), c[n] = '\0';
  return c;
}

/* The conversation's tokens up to the assistant's next turn, in *out (malloc'd). */
static kiln_status render(const kiln_model* model, const message* msgs, size_t n, int32_t** out, int32_t* n_out) {
  kiln_chat_message* cm = malloc(sizeof(kiln_chat_message) * (n ? n : 1));
  char* text = NULL;
  size_t len = 0;
  kiln_status s = KILN_ERR_OUT_OF_MEMORY;
  if (!cm) return s;
  for (size_t i = 0; i < n; ++i) cm[i].role = msgs[i].role, cm[i].content = msgs[i].content;
  s = kiln_chat_apply(model, NULL, cm, n, 1, NULL, 0, &len);
  if (s == KILN_OK || s == KILN_ERR_BUFFER_TOO_SMALL) {
    s = KILN_ERR_OUT_OF_MEMORY;
    if ((text = malloc(len + 1))) s = kiln_chat_apply(model, NULL, cm, n, 1, text, len + 1, &len);
  }
  if (s == KILN_OK) {
    s = kiln_tokenize(model, text, len, 1, 1, NULL, 0, n_out);
    if (s == KILN_OK || s == KILN_ERR_BUFFER_TOO_SMALL) {
      s = KILN_ERR_OUT_OF_MEMORY;
      if ((*out = malloc(sizeof(int32_t) * (size_t)(*n_out > 0 ? *n_out : 1))))
        s = kiln_tokenize(model, text, len, 1, 1, *out, *n_out, n_out);
    }
  }
  free(text);
  free(cm);
  return s;
}

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s MODEL.kiln [N_TOKENS]\n", argv[0]);
    return 2;
  }
  char* end = NULL;
  const long n_gen = argc == 3 ? strtol(argv[2], &end, 10) : 128;
  if ((argc == 3 && (end == argv[2] || *end != '\0')) || n_gen < 1 || n_gen > 1000000) {
    fprintf(stderr, "chat: N_TOKENS must be a number 1..1000000, not '%s'\n", argv[2]);
    return 2;
  }
  int rc = 1;
  kiln_model* model = NULL;
  kiln_session* session = NULL;
  kiln_sampler* sampler = NULL;
  message* msgs = NULL;
  size_t n_msgs = 0;
  int32_t *held = NULL, *toks = NULL, *reply = NULL;
  int32_t n_held = 0;
  float* logits = NULL;
  char *piece = NULL, *line = NULL, *text = NULL;
  size_t piece_cap = 64, line_cap = 0, text_len = 0;
  const int32_t stream = 0;
  kiln_status s;

  if ((s = kiln_model_load(KILN_MODEL, argv[1], &model)) != KILN_OK) { rc = fail("loading the model", s); goto done; }
  if ((s = kiln_session_init(model, NULL, &session)) != KILN_OK) { rc = fail("creating a session", s); goto done; }
  if ((s = kiln_sampler_init(NULL, &sampler)) != KILN_OK) { rc = fail("creating the sampler", s); goto done; }
  const int32_t n_vocab = kiln_model_n_vocab(model), ctx = kiln_model_max_context(model);
  if (!(logits = malloc(sizeof(float) * (size_t)n_vocab)) || !(piece = malloc(piece_cap)) ||
      !(reply = malloc(sizeof(int32_t) * (size_t)n_gen)))
    goto oom;

  ssize_t got;
  while ((got = getline(&line, &line_cap, stdin)) >= 0) {
    while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
    if (got == 0) continue;
    message* grown = realloc(msgs, sizeof(message) * (n_msgs + 2));
    if (!grown) goto oom;
    msgs = grown;
    if (!(msgs[n_msgs].role = copy_of("user", 4)) || !(msgs[n_msgs].content = copy_of(line, (size_t)got))) goto oom;
    ++n_msgs;
    int32_t n_toks = 0;
    free(toks), toks = NULL;
    if ((s = render(model, msgs, n_msgs, &toks, &n_toks)) != KILN_OK) { rc = fail("rendering the conversation", s); goto done; }
    if ((long)n_toks + n_gen > ctx) {
      fprintf(stderr, "chat: the conversation (%d tokens) plus %ld new tokens exceed the context of %d\n", n_toks,
              n_gen, ctx);
      goto done;
    }
    /* Keep what the session holds that the rendering starts with; at least one token is
     * prefilled, for the logits of the reply's first token. */
    int32_t keep = 0;
    while (keep < n_held && keep + 1 < n_toks && held[keep] == toks[keep]) ++keep;
    if ((s = kiln_session_truncate(session, stream, keep)) != KILN_OK) { rc = fail("truncate", s); goto done; }
    if ((s = kiln_prefill(session, toks + keep, n_toks - keep, stream, logits)) != KILN_OK) {
      rc = fail("prefill", s);
      goto done;
    }
    fprintf(stderr, "[chat] %d tokens reused, %d prefilled\n", keep, n_toks - keep);

    long n_reply = 0;
    text_len = 0;
    for (;;) {
      int32_t next;
      if ((s = kiln_sampler_sample(sampler, logits, n_vocab, &next)) != KILN_OK) { rc = fail("sampling", s); goto done; }
      if (kiln_token_is_eog(model, next)) break;
      reply[n_reply++] = next;
      size_t len = 0;
      s = kiln_token_to_piece(model, next, piece, piece_cap, &len);
      if (s == KILN_ERR_BUFFER_TOO_SMALL) {
        char* bigger = realloc(piece, len + 1);
        if (!bigger) goto oom;
        piece = bigger, piece_cap = len + 1;
        s = kiln_token_to_piece(model, next, piece, piece_cap, &len);
      }
      if (s != KILN_OK) { rc = fail("token to text", s); goto done; }
      fwrite(piece, 1, len, stdout);
      fflush(stdout);
      char* t = realloc(text, text_len + len + 1);
      if (!t) goto oom;
      text = t;
      memcpy(text + text_len, piece, len);
      text_len += len;
      text[text_len] = '\0';
      if (n_reply == n_gen) break;
      if ((s = kiln_decode(session, &next, &stream, 1, logits)) != KILN_OK) { rc = fail("decode", s); goto done; }
    }
    fputc('\n', stdout);
    fflush(stdout);
    /* The session holds the rendering and the reply's decoded tokens (not the last one when
     * the reply stopped at N_TOKENS, nor an end-of-generation token). */
    n_held = kiln_session_position(session, stream);
    int32_t* h = realloc(held, sizeof(int32_t) * (size_t)(n_toks + n_reply > 0 ? n_toks + n_reply : 1));
    if (!h) goto oom;
    held = h;
    memcpy(held, toks, sizeof(int32_t) * (size_t)n_toks);
    memcpy(held + n_toks, reply, sizeof(int32_t) * (size_t)n_reply);
    if (!(msgs[n_msgs].role = copy_of("assistant", 9)) || !(msgs[n_msgs].content = copy_of(text ? text : "", text_len)))
      goto oom;
    ++n_msgs;
  }
  rc = 0;
  goto done;

oom:
  fprintf(stderr, "chat: out of memory\n");
done:
  for (size_t i = 0; i < n_msgs; ++i) free(msgs[i].role), free(msgs[i].content);
  free(msgs);
  free(held), free(toks), free(reply), free(logits), free(piece), free(line), free(text);
  kiln_sampler_free(sampler);
  kiln_session_free(session);
  kiln_model_free(model);
  return rc;
}

/* kiln/kiln.h — the kiln runtime (libkiln_rt): run a model compiled by `kiln compile`.
 *
 * An app links the artifact (libmodel.a, whose model.h names a const kiln_compiled_model)
 * and libkiln_rt.a, then:
 *
 *   kiln_model* model;    kiln_model_load(KILN_MODEL, "model.kiln", &model);
 *   kiln_session* s;      kiln_session_init(model, NULL, &s);
 *   kiln_tokenize(...);   kiln_prefill(s, tokens, n, 0, logits);
 *   loop:                 kiln_sampler_sample(...); kiln_decode(s, &tok, &stream, 1, logits);
 *
 * Conventions
 * - Every call that can fail returns a kiln_status (KILN_OK = 0). On failure,
 *   kiln_last_error() gives a message for this thread naming the file, tensor or argument
 *   at fault. Nothing here aborts or lets a C++ exception out, whatever the input.
 * - Objects are created with _init/_load and released with _free (NULL is accepted).
 * - A model is read-only once loaded: its tokenizer calls may run on any thread. A session
 *   is used by one thread at a time and must be freed before its model.
 * - Output strings: a call writes len bytes plus a NUL when buf_size > len, and sets *len;
 *   if the buffer is too small it returns KILN_ERR_BUFFER_TOO_SMALL, still sets *len (so
 *   the caller can retry with len + 1 bytes), and writes nothing. Token arrays alike.
 */
#ifndef KILN_KILN_H
#define KILN_KILN_H

#include <stddef.h>
#include <stdint.h>

#include "kiln/model_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* ---- status ------------------------------------------------------------------------ */

typedef enum kiln_status {
  KILN_OK = 0,
  KILN_ERR_INVALID_ARGUMENT = 1, /* a null pointer, bad token id, stream, count or size */
  KILN_ERR_IO = 2,               /* a file cannot be opened or mapped */
  KILN_ERR_FORMAT = 3,           /* not a model.kiln file, truncated or malformed */
  KILN_ERR_VERSION = 4,          /* a model.kiln format version this runtime does not read */
  KILN_ERR_CHECKSUM = 5,         /* model.kiln data does not match its checksum */
  KILN_ERR_MODEL_MISMATCH = 6,   /* model.kiln and the compiled code do not belong together
                                    (ABI version, model hash, weight size, limits) */
  KILN_ERR_CONTEXT_FULL = 7,     /* the stream has no room for the tokens (max_context) */
  KILN_ERR_BUFFER_TOO_SMALL = 8, /* an output buffer is too small; the size was reported */
  KILN_ERR_TOKENIZER = 9,        /* the tokenizer or chat template cannot be used */
  KILN_ERR_OUT_OF_MEMORY = 10,
  KILN_ERR_INTERNAL = 11,        /* a bug in kiln; kiln_last_error() says where */
  KILN_ERR_NOT_FINITE = 12       /* a step's logits hold NaN or +inf, so no token can be chosen
                                    (an adapter or adapter scale too large for the model, or
                                    corrupt weights); the streams are left as before the call */
} kiln_status;

/* A constant name for a status ("KILN_ERR_CONTEXT_FULL"); never NULL. */
KILN_API const char* kiln_status_str(kiln_status status);

/* The message of the last failed call on this thread ("" if none). Valid until the next
 * kiln call on this thread. */
KILN_API const char* kiln_last_error(void);

/* ---- model ------------------------------------------------------------------------- */

typedef struct kiln_model kiln_model;

/* Maps the model.kiln at `path` and checks it against the compiled code `code` (the
 * artifact's KILN_MODEL): the file's magic, format version, size and checksum, the
 * code's ABI version, the model hash, the weight blob's size and the compiled limits. */
KILN_API kiln_status kiln_model_load(const kiln_compiled_model* code, const char* path,
                                     kiln_model** out);
KILN_API void kiln_model_free(kiln_model* model);

/* Getters return 0 (or "") for a NULL model. */
KILN_API int32_t kiln_model_n_vocab(const kiln_model* model);
KILN_API int32_t kiln_model_max_streams(const kiln_model* model);
KILN_API int32_t kiln_model_max_context(const kiln_model* model); /* tokens per stream */
KILN_API int32_t kiln_model_max_rows(const kiln_model* model);    /* tokens per step */
/* Threads a step can use: the compile's --threads (the profile's by default); a session
 * asking for more gets this many. */
KILN_API int32_t kiln_model_max_threads(const kiln_model* model);
KILN_API const char* kiln_model_name(const kiln_model* model);

/* ---- session: KV cache, scratch arena, threads -------------------------------------- */

typedef struct kiln_session kiln_session;

typedef struct kiln_session_params {
  int32_t n_threads; /* threads per step (the caller's included); <= 0 means 2; clamped to
                        the compiled code's max_threads */
  int32_t kv_copies; /* nonzero: kiln_session_copy_stream copies KV rows; 0 (the default): the
                        streams share the rows' memory pages where the system allows (the
                        memory is not inherited by a fork()ed child: see kiln_session_init) */
} kiln_session_params;

KILN_API kiln_session_params kiln_session_default_params(void);

/* Allocates the arena and the (zeroed) KV cache of every stream, 64-byte aligned, and
 * starts n_threads - 1 worker threads. params may be NULL (defaults). A session belongs to
 * the process that made it: in a fork()ed child its threads (and shared KV pages) are
 * gone, so every call that runs a step or touches its cache returns
 * KILN_ERR_INVALID_ARGUMENT there; the child may free it, or make its own. */
KILN_API kiln_status kiln_session_init(const kiln_model* model, const kiln_session_params* params,
                                       kiln_session** out);
KILN_API void kiln_session_free(kiln_session* session);
KILN_API int32_t kiln_session_n_threads(const kiln_session* session);

/* Appends n >= 1 tokens to `stream` (in chunks of max_rows tokens per step). If logits is
 * not NULL it receives the n_vocab logits after the last token. KILN_ERR_CONTEXT_FULL
 * (and nothing is run) if position + n > max_context. */
KILN_API kiln_status kiln_prefill(kiln_session* session, const int32_t* tokens, int32_t n,
                                  int32_t stream, float* logits);

/* Appends n[i] >= 1 tokens (tokens[i][0..n[i])) to each of n_streams distinct streams,
 * the rows of all of them in the same steps (up to max_rows rows per step): the style
 * requests of several streams after a shared, copied prompt cost one pass over the weights
 * instead of one per stream. Each stream's results are those kiln_prefill gives it alone.
 * If logits is not NULL it receives [n_streams][n_vocab] floats, row i after the last
 * token of streams[i]. Nothing is run if any argument is bad or a stream lacks room. */
KILN_API kiln_status kiln_prefill_streams(kiln_session* session, const int32_t* const* tokens,
                                          const int32_t* n, const int32_t* streams,
                                          int32_t n_streams, float* logits);

/* As kiln_prefill, but logits (if not NULL) receives [n][n_vocab] floats: row i is the
 * logits after tokens[i] (what perplexity and scoring need). */
KILN_API kiln_status kiln_prefill_all_logits(kiln_session* session, const int32_t* tokens,
                                             int32_t n, int32_t stream, float* logits);

/* Appends one token to each of n distinct streams in a single step (1 <= n <= max_streams):
 * tokens[i] goes to streams[i]. If logits is not NULL it receives [n][n_vocab] floats,
 * row i for streams[i]. */
KILN_API kiln_status kiln_decode(kiln_session* session, const int32_t* tokens,
                                 const int32_t* streams, int32_t n, float* logits);

#define KILN_ALL_STREAMS (-1)

/* Empties `stream` (or every stream for KILN_ALL_STREAMS): position 0, KV zeroed. */
KILN_API kiln_status kiln_session_reset(kiln_session* session, int32_t stream);

/* Makes `dst` hold the first n_tokens tokens of `src` (dst's position becomes n_tokens): a
 * prompt prefilled once serves several streams. The rows' whole memory pages are shared
 * between the streams rather than copied (on Linux and Android, unless the session's
 * kv_copies is set): S streams of one prompt hold and read its KV once. Results are the
 * same either way; a later reset or truncation of either stream keeps the other's rows. */
KILN_API kiln_status kiln_session_copy_stream(kiln_session* session, int32_t src, int32_t dst,
                                              int32_t n_tokens);

/* Keeps the first n_tokens tokens of `stream` and drops the rest (their KV rows zeroed;
 * the position becomes n_tokens, 0 <= n_tokens <= position): a chat that re-renders its
 * history prefills only what differs from the tokens already held. */
KILN_API kiln_status kiln_session_truncate(kiln_session* session, int32_t stream, int32_t n_tokens);

/* Tokens held by `stream`, or -1 (with kiln_last_error) for a bad session or stream. */
KILN_API int32_t kiln_session_position(const kiln_session* session, int32_t stream);

/* ---- LoRA adapters (models compiled with `kiln compile --lora-slots K`) --------------- */

/* A model compiled with LoRA slots takes adapters at run time: each session holds K slots
 * (slot 0 is the zero adapter, the base model; slots 1..K-1 take adapters), and each
 * stream reads one slot. Streams on different slots still share one forward pass.
 * Switching a stream's adapter is an index change: no recompilation, no weight copy.
 * Adapters are PEFT folders (adapter_config.json + adapter_model.safetensors), an
 * adapter_model.safetensors path, or llama.cpp GGUF LoRA files, checked against the
 * model's compiled LoRA descriptor: targets, dims, rank <= lora_rank, dtypes. */

KILN_API int32_t kiln_model_lora_slots(const kiln_model* model); /* K; 0: no LoRA */
KILN_API int32_t kiln_model_lora_rank(const kiln_model* model);  /* the largest rank R */

/* Reads the adapter at `path` into `slot` (1..K-1), replacing what the slot held. On any
 * error the slot is left as it was and the message names the file and tensor:
 * KILN_ERR_IO when the path cannot be read, KILN_ERR_FORMAT when what is read is refused
 * (including a scale lora_alpha / r beyond +-1e4). */
KILN_API kiln_status kiln_adapter_load(kiln_session* session, const char* path, int32_t slot);

/* Empties `slot` (it becomes the zero adapter); streams reading it fall back to slot 0. */
KILN_API kiln_status kiln_adapter_free(kiln_session* session, int32_t slot);

/* Makes `stream` read `slot` (0: no adapter) from its next step on, with the adapter's
 * own scale (alpha / r) times `scale` (1 = as trained). The scale is held per slot: two
 * streams on one slot with different scales are refused (load the adapter twice), as is a
 * product beyond +-1e6. Slot 0 is accepted by models without LoRA slots too (a no-op). */
KILN_API kiln_status kiln_stream_set_adapter(kiln_session* session, int32_t stream, int32_t slot,
                                             float scale);

/* The slot `stream` reads, or -1 (with kiln_last_error) for a bad session or stream. */
KILN_API int32_t kiln_stream_adapter(const kiln_session* session, int32_t stream);

typedef struct kiln_adapter_info {
  int32_t loaded;         /* 0: the slot holds the zero adapter */
  int32_t rank;           /* the adapter's rank (<= lora_rank) */
  int32_t n_targets;      /* projections it adapts */
  float scale;            /* the slot's scale now (adapter scale times stream scale) */
  uint64_t weight_bytes;  /* the adapter's own factors, f32: sum of rank * (in + out) * 4 */
  uint64_t slot_bytes;    /* what every slot reserves in the session (rank padded to R) */
  char name[64];          /* the folder or file name, truncated */
} kiln_adapter_info;

KILN_API kiln_status kiln_adapter_query(const kiln_session* session, int32_t slot,
                                        kiln_adapter_info* info);

/* ---- sampling ----------------------------------------------------------------------- */

typedef struct kiln_sampler kiln_sampler;

typedef struct kiln_sampler_params {
  float temperature; /* 0 = greedy (argmax, lowest id on ties) */
  int32_t top_k;     /* 0 = no limit */
  float top_p;       /* 1 = no limit; in (0, 1] */
  uint64_t seed;
} kiln_sampler_params;

/* Greedy: temperature 0, top_k 40, top_p 0.95, seed 0. */
KILN_API kiln_sampler_params kiln_sampler_default_params(void);
KILN_API kiln_status kiln_sampler_init(const kiln_sampler_params* params, kiln_sampler** out);
KILN_API void kiln_sampler_free(kiln_sampler* sampler);
/* Picks a token from n_vocab logits. Logits holding NaN or +inf, or only -inf, are refused
 * with KILN_ERR_NOT_FINITE. */
KILN_API kiln_status kiln_sampler_sample(kiln_sampler* sampler, const float* logits,
                                         int32_t n_vocab, int32_t* token);

/* ---- DS2D: self-speculative tree decoding --------------------------------------------
 *
 * A faster kiln_decode with the same output (docs/ds2d.md). Each step drafts likely
 * continuations of every stream without a draft model (n-gram lookup over the stream's
 * own text; the compiled early-exit entry when the artifact has one), merges them into a
 * token tree, fills one of the compiled tree templates with it, and checks the whole tree
 * in one forward pass (the template's verify entry). The longest path that decoding
 * would have produced is accepted, its KV rows moved into place, the rest dropped. Greedy
 * samplers give token-for-token the output of kiln_decode; samplers with temperature > 0
 * keep their exact distribution (speculative sampling over the tree).
 * The template is chosen each step from recent acceptance and the measured cost of each
 * verify entry; when drafts do not pay the step is a plain kiln_decode.
 *
 *   kiln_prefill(s, prompt, n, stream, logits);  root = sample(logits);
 *   kiln_ds2d_begin(d, stream, prompt, n);
 *   loop: kiln_ds2d_step(d, &root, &stream, 1, NULL, out, cap, &n_out);
 *         emit out[0..n_out);  root = out[n_out - 1];
 */

typedef struct kiln_ds2d kiln_ds2d;

typedef struct kiln_ds2d_params {
  int32_t ngram_min;       /* shortest suffix the n-gram drafter matches (default 1) */
  int32_t ngram_max;       /* longest (default 4); longer matches are tried first */
  int32_t max_candidates;  /* continuations drafted per stream, step and source (n-gram
                              lookup; token recycling) (default 6) */
  int32_t early_exit;      /* 1: also draft with the early-exit entry when the compiled model
                              has one and it pays (default 1) */
  int32_t early_exit_len;  /* tokens an early-exit draft proposes (default 3) */
  int32_t template_index;  /* -1: choose each step (default); >= 0: always this template
                              (plain decode only where it does not fit) */
  float ewma;              /* weight of the newest observation in the running averages of
                              acceptance and cost (default 0.1) */
  int32_t recycle;         /* 1: also draft from the model's own recent predictions (token
                              recycling: the top next tokens every computed row gave after
                              its token). Default 0: on 2-core x86 its extra verify passes
                              cost more than they gain (docs/ds2d.md) */
  int32_t corpus_replies;  /* 1: when kiln_ds2d_begin starts a stream's next reply, the text
                              it held (prompt and reply) joins the controller's corpus, so
                              later replies on any stream draft from earlier ones; not when
                              the new text goes on from it (a chat's next turn). Default 0:
                              the corpus grows with every reply, and the streams' texts meet
                              (one user's words can then be drafted, though never output, for
                              another's reply) */
} kiln_ds2d_params;

/* Most tokens a controller's corpus holds (kiln_ds2d_add_corpus and corpus_replies); its
 * index takes about 100-200 bytes per token. */
#define KILN_DS2D_MAX_CORPUS_TOKENS (1 << 20)

#define KILN_DS2D_MAX_TEMPLATES 16

typedef struct kiln_ds2d_stats {
  int64_t steps;             /* kiln_ds2d_step calls */
  int64_t verify_passes;     /* steps that ran a verify entry */
  int64_t plain_steps;       /* steps that fell back to plain decode */
  int64_t stream_passes;     /* (stream, verify pass) pairs */
  int64_t tokens;            /* tokens produced over all streams */
  int64_t drafted;           /* draft tokens checked (tree nodes holding a draft) */
  int64_t accepted;          /* draft tokens accepted */
  int64_t early_exit_drafts; /* early-exit draft passes run */
  double draft_seconds, verify_seconds, plain_seconds;
  int32_t n_templates;
  int32_t template_nodes[KILN_DS2D_MAX_TEMPLATES];
  int64_t template_uses[KILN_DS2D_MAX_TEMPLATES];      /* verify passes per template */
  double template_seconds[KILN_DS2D_MAX_TEMPLATES];    /* measured cost of one pass, 1 stream */
  double plain_step_seconds;                           /* measured cost of a decode step */
  int64_t corpus_tokens;                               /* tokens in the corpus */
} kiln_ds2d_stats;

KILN_API kiln_ds2d_params kiln_ds2d_default_params(void);

/* A DS2D controller over `session` (which it uses until kiln_ds2d_free; free it first).
 * Works with any compiled model; without tree templates (compiled before DS2D, or with
 * none) every step is a plain decode. Calibrates first: times a plain step, each verify
 * entry and the draft entry three times (after a warm-up round) on rows past the end of
 * the emptiest stream, which no stream has written, and again 512 rows further on (less
 * if the context ends sooner). That takes about 0.3 s for SmolLM2 with the default
 * templates on two desktop cores, more if the streams are already far into the context
 * (it was 0.6 s at 2048 rows when it timed the end of the context), so make one controller per
 * session and reuse it: kiln_ds2d_begin starts each new reply. params may be NULL. */
KILN_API kiln_status kiln_ds2d_init(kiln_session* session, const kiln_ds2d_params* params,
                                    kiln_ds2d** out);
KILN_API void kiln_ds2d_free(kiln_ds2d* ds2d);

/* Tokens one step may produce per stream at most (out_stride for kiln_ds2d_step). */
KILN_API int32_t kiln_ds2d_max_step_tokens(const kiln_ds2d* ds2d);

/* Starts the drafter's text of `stream` over: the tokens it holds (e.g. the prompt just
 * prefilled). The drafter then follows what kiln_ds2d_step accepts. */
KILN_API kiln_status kiln_ds2d_begin(kiln_ds2d* ds2d, int32_t stream, const int32_t* tokens,
                                     int32_t n);

/* One step for n distinct streams (as kiln_decode): roots[i] is the token last chosen for
 * streams[i], not yet in its cache. The root and the accepted drafts enter the cache; row
 * i of out (out + i * out_stride) receives the tokens produced — the accepted drafts, then
 * the token chosen after them, which is the next root — and out_n[i] their count (1 or
 * more). samplers: NULL for greedy, or one sampler per stream (samplers[i] may be NULL:
 * greedy). out_stride must be >= kiln_ds2d_max_step_tokens. KILN_ERR_NOT_FINITE when logits
 * a stream would take a token from hold NaN or +inf (the message names the stream and its
 * adapter slot): no stream changes, as if the call had not been made, so after fixing the
 * cause (a stream's adapter or scale) the same call can be made again. */
KILN_API kiln_status kiln_ds2d_step(kiln_ds2d* ds2d, const int32_t* roots, const int32_t* streams,
                                    int32_t n, kiln_sampler* const* samplers, int32_t* out,
                                    int32_t out_stride, int32_t* out_n);

/* Adds a text (n token ids) to the controller's corpus: n-gram lookup then also drafts,
 * for every stream, what followed a stream's last tokens in the corpus (matches of
 * max(3, ngram_min) to max(3, ngram_max) tokens: shorter ones, from another text, guess
 * poorly; their accuracy is learnt like every source's).
 * Texts the model itself tends to write pay most: its replies to other prompts, earlier
 * turns of a chat. Refused (nothing added) when a token is outside the vocabulary or the
 * corpus would exceed KILN_DS2D_MAX_CORPUS_TOKENS. */
KILN_API kiln_status kiln_ds2d_add_corpus(kiln_ds2d* ds2d, const int32_t* tokens, int32_t n);

/* Empties the controller's corpus and forgets how well its drafts did, as at
 * kiln_ds2d_init. Each stream still drafts from its own text, but the texts the streams
 * hold now never join the corpus (corpus_replies), even when a stream goes on from its
 * text. For an app that serves another user next (so that none of the last one's words is
 * drafted for them), or whose corpus has reached KILN_DS2D_MAX_CORPUS_TOKENS (after which
 * corpus_replies adds nothing). */
KILN_API kiln_status kiln_ds2d_clear_corpus(kiln_ds2d* ds2d);

KILN_API kiln_status kiln_ds2d_get_stats(const kiln_ds2d* ds2d, kiln_ds2d_stats* out);

/* ---- tokenizer and chat template ---------------------------------------------------- */

/* Text (text_len bytes, UTF-8) to token ids. add_special: add BOS/EOS as the vocabulary
 * asks; parse_special: text spelling a control token becomes that token. *n_tokens gets
 * the count; tokens may be NULL when capacity is 0 (a size query). */
KILN_API kiln_status kiln_tokenize(const kiln_model* model, const char* text, size_t text_len,
                                   int add_special, int parse_special, int32_t* tokens,
                                   int32_t capacity, int32_t* n_tokens);

/* The text of one token as streamed output shows it (special tokens rendered). */
KILN_API kiln_status kiln_token_to_piece(const kiln_model* model, int32_t token, char* buf,
                                         size_t buf_size, size_t* len);

/* Token ids to text. render_special: control tokens produce their text; remove_special:
 * drop the BOS/EOS the vocabulary adds. */
KILN_API kiln_status kiln_detokenize(const kiln_model* model, const int32_t* tokens, int32_t n,
                                     int render_special, int remove_special, char* buf,
                                     size_t buf_size, size_t* len);

/* 1 if `token` ends generation (EOS, EOT, <|im_end|>, ...), else 0. */
KILN_API int kiln_token_is_eog(const kiln_model* model, int32_t token);

typedef struct kiln_chat_message {
  const char* role; /* "system", "user", "assistant", ... (NUL-terminated) */
  const char* content;
} kiln_chat_message;

/* Renders a conversation with the model's chat template (tmpl NULL), or with `tmpl` (a
 * family name: "chatml", "llama2", "llama3", or a template text of one of those families;
 * kiln recognises a template by its form and does not run arbitrary Jinja, so other text
 * gives KILN_ERR_TOKENIZER). add_assistant: end with the header of an assistant turn. */
KILN_API kiln_status kiln_chat_apply(const kiln_model* model, const char* tmpl,
                                     const kiln_chat_message* messages, size_t n_messages,
                                     int add_assistant, char* buf, size_t buf_size, size_t* len);

#ifdef __cplusplus
}
#endif

#endif /* KILN_KILN_H */

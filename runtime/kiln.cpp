// runtime/kiln.cpp — the C API of libkiln_rt (include/kiln/kiln.h).
//
// Every entry point validates its arguments before touching the compiled code, reports
// failures as a status plus a thread-local message, and catches every C++ exception
// (guarded()). The step path (kiln_prefill, kiln_decode) allocates nothing: the session
// owns scratch rows for max_rows tokens and writes logits straight into the caller's
// buffer.
#include "kiln/kiln.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "frontend/chat_template.h"
#include "frontend/tokenizer.h"
#include "runtime/adapters.h"
#include "runtime/cpu_features.h"
#include "runtime/model_file.h"
#include "runtime/session.h"
#include "runtime/sampler.h"
#include "runtime/thread_pool.h"

using kiln::ModelFile;
using kiln::ModelFileErrc;

thread_local char kiln::rt::g_last_error[1024];

using kiln::rt::fail;
using kiln::rt::g_last_error;
using kiln::rt::guarded;
using kiln::rt::copy_out;

namespace {

struct StepJob {
  kiln_session* s;
  kiln_session::StepFn fn;
};

void run_step(void* ctx, int32_t tid, int32_t n) {
  auto* j = static_cast<StepJob*>(ctx);
  j->fn(&j->s->args, tid, n);
}

// One step over the first `rows` scratch rows (kiln_session::step_entry picks the entry).
void step(kiln_session* s, int64_t rows, int64_t logit_rows, float* logits) {
  s->args.n_rows = rows;
  s->args.n_logit_rows = logit_rows;
  s->args.logits = logit_rows > 0 ? logits : nullptr;
  StepJob job{s, s->step_entry(rows)};
  s->pool->run(run_step, &job);
}

kiln_status check_code(const kiln_compiled_model* c) {
  if (c->abi_version != KILN_ABI_VERSION)
    return fail(KILN_ERR_MODEL_MISMATCH, "kiln_model_load: the compiled model has ABI version %u, "
                "this runtime speaks %u (rebuild with a matching kiln)", c->abi_version,
                KILN_ABI_VERSION);
  const char* name = c->name ? c->name : "?";
  if (c->format_version != kiln::kModelFileVersion)
    return fail(KILN_ERR_VERSION, "kiln_model_load: compiled model '%s' reads model.kiln format "
                "version %u, this runtime reads %u", name, c->format_version,
                kiln::kModelFileVersion);
  const char* bad = nullptr;
  if (!c->step) bad = "step is NULL";
  else if (c->n_vocab < 1 || c->n_vocab > INT32_MAX) bad = "n_vocab is out of range";
  else if (c->max_rows < 1 || c->max_rows > INT32_MAX) bad = "max_rows is out of range";
  else if (c->max_streams < 1 || c->max_streams > 1 << 16) bad = "max_streams is out of range";
  else if (c->max_context < 1 || c->max_context > INT32_MAX) bad = "max_context is out of range";
  else if (c->max_threads < 1) bad = "max_threads is below 1";
  else if (c->kv_stream_bytes != 0 &&
           c->kv_bytes / c->kv_stream_bytes != static_cast<uint64_t>(c->max_streams))
    bad = "kv_bytes is not max_streams * kv_stream_bytes";
  else if (c->kv_stream_bytes == 0 && c->kv_bytes != 0)
    bad = "kv_bytes is not max_streams * kv_stream_bytes";
  else if (c->n_kv_blocks < 0 || (c->n_kv_blocks > 0 && !c->kv_blocks))
    bad = "the KV block table is missing";
  for (int64_t b = 0; !bad && b < c->n_kv_blocks; ++b) {
    const kiln_kv_block& blk = c->kv_blocks[b];
    if (blk.row_bytes == 0 || blk.row_bytes > c->kv_stream_bytes ||
        static_cast<uint64_t>(c->max_context) > (c->kv_stream_bytes - blk.offset) / blk.row_bytes ||
        blk.offset > c->kv_stream_bytes)
      bad = "a KV block lies outside the stream's KV region";
  }
  if (!bad) bad = kiln::check_lora_descriptor(c);
  if (bad)
    return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_model_load: compiled model '%s': %s", name, bad);
  if (c->cpu_features) {
    const std::string missing = kiln::first_missing_cpu_feature(c->cpu_features);
    if (!missing.empty()) {
#if defined(__x86_64__)
      const char* hint = " (e.g. x86-64-v3 for most x86-64 PCs)";
#else
      const char* hint = "";
#endif
      return fail(KILN_ERR_MODEL_MISMATCH, "kiln_model_load: compiled model '%s' (profile %s) uses %s, which this "
                  "CPU lacks; compile it with a profile this CPU meets%s",
                  name, c->profile ? c->profile : "?", missing.c_str(), hint);
    }
  }
  return KILN_OK;
}

kiln_status status_of(ModelFileErrc e) {
  switch (e) {
    case ModelFileErrc::kNone: return KILN_ERR_INTERNAL;
    case ModelFileErrc::kIo: return KILN_ERR_IO;
    case ModelFileErrc::kFormat: return KILN_ERR_FORMAT;
    case ModelFileErrc::kVersion: return KILN_ERR_VERSION;
    case ModelFileErrc::kChecksum: return KILN_ERR_CHECKSUM;
  }
  return KILN_ERR_INTERNAL;
}

}  // namespace

namespace kiln {
SessionAdapters* session_adapters(kiln_session* s) { return &s->lora; }
const SessionAdapters* session_adapters(const kiln_session* s) { return &s->lora; }
kiln_status set_last_error(kiln_status st, const std::string& message) {
  return fail(st, "%s", message.c_str());
}
}  // namespace kiln

extern "C" {

const char* kiln_status_str(kiln_status status) {
  switch (status) {
    case KILN_OK: return "KILN_OK";
    case KILN_ERR_INVALID_ARGUMENT: return "KILN_ERR_INVALID_ARGUMENT";
    case KILN_ERR_IO: return "KILN_ERR_IO";
    case KILN_ERR_FORMAT: return "KILN_ERR_FORMAT";
    case KILN_ERR_VERSION: return "KILN_ERR_VERSION";
    case KILN_ERR_CHECKSUM: return "KILN_ERR_CHECKSUM";
    case KILN_ERR_MODEL_MISMATCH: return "KILN_ERR_MODEL_MISMATCH";
    case KILN_ERR_CONTEXT_FULL: return "KILN_ERR_CONTEXT_FULL";
    case KILN_ERR_BUFFER_TOO_SMALL: return "KILN_ERR_BUFFER_TOO_SMALL";
    case KILN_ERR_TOKENIZER: return "KILN_ERR_TOKENIZER";
    case KILN_ERR_OUT_OF_MEMORY: return "KILN_ERR_OUT_OF_MEMORY";
    case KILN_ERR_INTERNAL: return "KILN_ERR_INTERNAL";
    case KILN_ERR_NOT_FINITE: return "KILN_ERR_NOT_FINITE";
  }
  return "KILN_ERR_UNKNOWN";
}

const char* kiln_last_error(void) { return g_last_error; }

// ---- model ----------------------------------------------------------------------------

kiln_status kiln_model_load(const kiln_compiled_model* code, const char* path, kiln_model** out) {
  return guarded("kiln_model_load", [&]() -> kiln_status {
    if (!out) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_model_load: out is NULL");
    *out = nullptr;
    if (!code) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_model_load: code is NULL");
    if (!path) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_model_load: path is NULL");
    if (kiln_status s = check_code(code); s != KILN_OK) return s;
    const char* cname = code->name ? code->name : "?";

    ModelFileErrc errc = ModelFileErrc::kNone;
    auto file = ModelFile::open(path, &errc);
    if (!file.ok()) return fail(status_of(errc), "%s", file.error().message.c_str());
    const ModelFile& f = *file;
    if (f.model_hash() != code->model_hash)
      return fail(KILN_ERR_MODEL_MISMATCH, "%s: model hash 0x%016llx, the compiled model '%s' "
                  "expects 0x%016llx (use the model.kiln written with this libmodel.a)", path,
                  (unsigned long long)f.model_hash(), cname, (unsigned long long)code->model_hash);
    if (f.weights().size() != code->weights_bytes)
      return fail(KILN_ERR_MODEL_MISMATCH, "%s: the weight blob is %zu bytes, the compiled model "
                  "'%s' expects %llu", path, f.weights().size(), cname,
                  (unsigned long long)code->weights_bytes);
    const kiln::ModelLimits lim = f.limits();
    const kiln::ModelHparams hp = f.hparams();
    struct { const char* what; int64_t file, code; } pairs[] = {
        {"n_vocab", hp.n_vocab, code->n_vocab},
        {"n_layer", hp.n_layer, code->n_layer},
        {"max_rows", lim.max_rows, code->max_rows},
        {"max_streams", lim.max_streams, code->max_streams},
        {"max_context", lim.max_context, code->max_context},
    };
    for (const auto& p : pairs)
      if (p.file != p.code)
        return fail(KILN_ERR_MODEL_MISMATCH, "%s: %s is %lld, the compiled model '%s' has %lld",
                    path, p.what, (long long)p.file, cname, (long long)p.code);

    auto tok = kiln::Tokenizer::create(f.vocab());
    if (!tok.ok()) return fail(KILN_ERR_TOKENIZER, "%s: %s", path, tok.error().message.c_str());
    if (tok->vocab_size() > code->n_vocab)
      return fail(KILN_ERR_MODEL_MISMATCH, "%s: the tokenizer has %d tokens, more than n_vocab "
                  "%lld", path, tok->vocab_size(), (long long)code->n_vocab);

    auto m = std::make_unique<kiln_model>();
    m->code = code;
    m->tokenizer.emplace(std::move(tok).value());
    m->chat_template = std::string(f.chat_template());
    m->name = std::string(f.name());
    m->n_vocab = static_cast<int32_t>(code->n_vocab);
    m->file = std::move(file).value();
    *out = m.release();
    return KILN_OK;
  });
}

void kiln_model_free(kiln_model* model) { delete model; }

// (check_code() keeps these limits within int32_t.)
int32_t kiln_model_n_vocab(const kiln_model* m) { return m ? m->n_vocab : 0; }
int32_t kiln_model_max_streams(const kiln_model* m) {
  return m ? (int32_t)m->code->max_streams : 0;
}
int32_t kiln_model_max_context(const kiln_model* m) {
  return m ? (int32_t)m->code->max_context : 0;
}
int32_t kiln_model_max_rows(const kiln_model* m) { return m ? (int32_t)m->code->max_rows : 0; }
int32_t kiln_model_max_threads(const kiln_model* m) {
  return m ? (int32_t)std::min<int64_t>(m->code->max_threads, INT32_MAX) : 0;
}
const char* kiln_model_name(const kiln_model* m) { return m ? m->name.c_str() : ""; }
int32_t kiln_model_lora_slots(const kiln_model* m) { return m ? (int32_t)m->code->lora_slots : 0; }
int32_t kiln_model_lora_rank(const kiln_model* m) { return m ? (int32_t)m->code->lora_rank : 0; }

// ---- session --------------------------------------------------------------------------

namespace {
kiln_status kv_remap_failed(const char* fn) {
  return fail(KILN_ERR_OUT_OF_MEMORY, "%s: the system refused to remap the KV cache's shared pages (too many "
              "memory mappings: raise vm.max_map_count, or create sessions with kv_copies set)", fn);
}
}  // namespace

kiln_session_params kiln_session_default_params(void) {
  kiln_session_params p;
  p.n_threads = 2;
  p.kv_copies = 0;
  return p;
}

kiln_status kiln_session_init(const kiln_model* model, const kiln_session_params* params,
                              kiln_session** out) {
  return guarded("kiln_session_init", [&]() -> kiln_status {
    if (!out) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_init: out is NULL");
    *out = nullptr;
    if (!model) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_init: model is NULL");
    const kiln_compiled_model* c = model->code;
    int64_t n_threads = params ? params->n_threads : 2;
    if (n_threads <= 0) n_threads = 2;
    if (n_threads > c->max_threads) n_threads = c->max_threads;

    auto s = std::make_unique<kiln_session>();
    s->owner = getpid();
    s->model = model;
    s->code = c;
    if (!s->arena.allocate(c->arena_bytes))
      return fail(KILN_ERR_OUT_OF_MEMORY, "kiln_session_init: cannot allocate the %llu-byte arena "
                  "of '%s'", (unsigned long long)c->arena_bytes, model->name.c_str());
    const bool share = !(params && params->kv_copies);
    if (!s->kv.allocate(c->kv_stream_bytes, (int32_t)c->max_streams,
                        std::span<const kiln_kv_block>(c->kv_blocks, (size_t)c->n_kv_blocks), share))
      return fail(KILN_ERR_OUT_OF_MEMORY, "kiln_session_init: cannot allocate the %llu-byte KV "
                  "cache of '%s'", (unsigned long long)c->kv_bytes, model->name.c_str());
    if (!s->adapters.allocate(c->adapter_bytes))
      return fail(KILN_ERR_OUT_OF_MEMORY, "kiln_session_init: cannot allocate the %llu-byte "
                  "adapter region of '%s'", (unsigned long long)c->adapter_bytes, model->name.c_str());
    const auto rows = static_cast<size_t>(c->max_rows);
    s->adapter_slots.assign(rows, 0);
    s->lora.code = c;
    s->lora.file = &model->file;
    s->lora.region = s->adapters.data();
    s->lora.stream_slot.assign(static_cast<size_t>(c->max_streams), 0);
    s->lora.stream_scale.assign(static_cast<size_t>(c->max_streams), 1.0f);
    s->lora.slots.assign(static_cast<size_t>(c->lora_slots), kiln::AdapterSlot{});
    s->pos.assign(static_cast<size_t>(c->max_streams), 0);
    s->seen.assign(static_cast<size_t>(c->max_streams), 0);
    s->tokens.assign(rows, 0);
    s->positions.assign(rows, 0);
    s->streams.assign(rows, 0);
    s->logit_rows.assign(rows, 0);
    s->pool = std::make_unique<kiln::ThreadPool>(static_cast<int32_t>(n_threads));

    kiln_step_args& a = s->args;
    a.tokens = s->tokens.data();
    a.positions = s->positions.data();
    a.streams = s->streams.data();
    a.logit_rows = s->logit_rows.data();
    auto w = model->file.weights();
    a.weights = w.empty() ? nullptr : w.data();
    a.arena = s->arena.data();
    a.kv = s->kv.data();
    a.barrier = kiln::ThreadPool::barrier_fn;
    a.barrier_ctx = s->pool.get();
    a.adapter_slots = s->adapter_slots.data();
    a.adapters = s->adapters.data();
    *out = s.release();
    return KILN_OK;
  });
}

void kiln_session_free(kiln_session* session) {
  // In a fork()ed child the worker threads do not exist: joining them would wait forever,
  // so the pool's memory is left to the child's exit instead.
  if (session && session->owner != getpid()) (void)session->pool.release();
  delete session;
}

int32_t kiln_session_n_threads(const kiln_session* s) { return s ? s->pool->n_threads() : 0; }

namespace {

// kiln_prefill and kiln_prefill_all_logits: the same chunked steps; `all` asks each step
// for the logits of every row (written at the rows' offsets in `logits`) instead of the
// last row of the last step.
kiln_status prefill(const char* fn, kiln_session* s, const int32_t* tokens, int32_t n,
                    int32_t stream, float* logits, bool all) {
  return guarded(fn, [&]() -> kiln_status {
    if (kiln_status e = usable_session(fn, s); e != KILN_OK) return e;
    const kiln_compiled_model* c = s->code;
    if (!tokens) return fail(KILN_ERR_INVALID_ARGUMENT, "%s: tokens is NULL", fn);
    if (n < 1) return fail(KILN_ERR_INVALID_ARGUMENT, "%s: n is %d, expected >= 1", fn, n);
    if (stream < 0 || stream >= c->max_streams)
      return fail(KILN_ERR_INVALID_ARGUMENT, "%s: stream %d is out of range [0, %lld)",
                  fn, stream, (long long)c->max_streams);
    // The length first: n past the context is refused before tokens[] is read that far.
    int32_t& pos = s->pos[static_cast<size_t>(stream)];
    if (static_cast<int64_t>(pos) + n > c->max_context)
      return fail(KILN_ERR_CONTEXT_FULL, "%s: stream %d holds %d tokens; %d more exceed "
                  "max_context %lld", fn, stream, pos, n, (long long)c->max_context);
    for (int32_t i = 0; i < n; ++i)
      if (!s->model->has_token(tokens[i]))
        return fail(KILN_ERR_INVALID_ARGUMENT, "%s: tokens[%d] = %d is not a token id "
                    "(n_vocab %d)", fn, i, tokens[i], s->model->n_vocab);
    for (int32_t done = 0; done < n;) {
      const int32_t rows = static_cast<int32_t>(std::min<int64_t>(c->max_rows, n - done));
      for (int32_t r = 0; r < rows; ++r) {
        s->tokens[r] = tokens[done + r];
        s->positions[r] = pos + r;
        s->streams[r] = stream;
        s->adapter_slots[r] = s->lora.stream_slot[static_cast<size_t>(stream)];
      }
      if (all) {
        for (int32_t r = 0; r < rows; ++r) s->logit_rows[r] = r;
        step(s, rows, logits ? rows : 0,
             logits ? logits + static_cast<size_t>(done) * static_cast<size_t>(s->model->n_vocab) : nullptr);
      } else {
        s->logit_rows[0] = rows - 1;
        step(s, rows, done + rows == n && logits ? 1 : 0, logits);
      }
      done += rows;
      pos += rows;
    }
    return KILN_OK;
  });
}

}  // namespace

kiln_status kiln_prefill_streams(kiln_session* s, const int32_t* const* tokens, const int32_t* n,
                                 const int32_t* streams, int32_t n_streams, float* logits) {
  static const char* fn = "kiln_prefill_streams";
  return guarded(fn, [&]() -> kiln_status {
    if (kiln_status e = usable_session(fn, s); e != KILN_OK) return e;
    const kiln_compiled_model* c = s->code;
    if (!tokens || !n || !streams)
      return fail(KILN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !tokens ? "tokens" : !n ? "n" : "streams");
    if (n_streams < 1 || n_streams > c->max_streams)
      return fail(KILN_ERR_INVALID_ARGUMENT, "%s: n_streams is %d, expected 1..%lld (max_streams)", fn,
                  n_streams, (long long)c->max_streams);
    // Check everything before running anything; `seen` marks the streams listed so far.
    kiln_status st = KILN_OK;
    int32_t marked = 0;
    for (int32_t i = 0; i < n_streams && st == KILN_OK; ++i) {
      const int32_t sm = streams[i];
      if (sm < 0 || sm >= c->max_streams) {
        st = fail(KILN_ERR_INVALID_ARGUMENT, "%s: streams[%d] = %d is out of range [0, %lld)", fn, i, sm,
                  (long long)c->max_streams);
        break;
      }
      if (s->seen[static_cast<size_t>(sm)]) {
        st = fail(KILN_ERR_INVALID_ARGUMENT, "%s: streams[%d] = %d is listed twice", fn, i, sm);
        break;
      }
      s->seen[static_cast<size_t>(sm)] = 1;
      marked = i + 1;
      if (!tokens[i] || n[i] < 1)
        st = fail(KILN_ERR_INVALID_ARGUMENT, "%s: stream %d: %s", fn, sm,
                  !tokens[i] ? "tokens is NULL" : "n is below 1");
      else if (static_cast<int64_t>(s->pos[static_cast<size_t>(sm)]) + n[i] > c->max_context)
        st = fail(KILN_ERR_CONTEXT_FULL, "%s: stream %d holds %d tokens; %d more exceed max_context %lld", fn,
                  sm, s->pos[static_cast<size_t>(sm)], n[i], (long long)c->max_context);
      for (int32_t k = 0; st == KILN_OK && k < n[i]; ++k)
        if (!s->model->has_token(tokens[i][k]))
          st = fail(KILN_ERR_INVALID_ARGUMENT, "%s: stream %d: tokens[%d] = %d is not a token id (n_vocab %d)",
                    fn, sm, k, tokens[i][k], s->model->n_vocab);
    }
    for (int32_t j = 0; j < marked; ++j) s->seen[static_cast<size_t>(streams[j])] = 0;
    if (st != KILN_OK) return st;
    // Rows stream after stream, in steps of max_rows; a step's logit rows are the last
    // rows of the streams that end in it, which are consecutive in stream order.
    const size_t V = static_cast<size_t>(s->model->n_vocab);
    int32_t stream_i = 0, tok_k = 0, first_logit = 0;
    while (stream_i < n_streams) {
      int32_t rows = 0, n_logits = 0;
      while (rows < c->max_rows && stream_i < n_streams) {
        const int32_t sm = streams[stream_i];
        int32_t& pos = s->pos[static_cast<size_t>(sm)];
        s->tokens[rows] = tokens[stream_i][tok_k];
        s->positions[rows] = pos++;
        s->streams[rows] = sm;
        s->adapter_slots[rows] = s->lora.stream_slot[static_cast<size_t>(sm)];
        ++rows;
        if (++tok_k == n[stream_i]) {
          s->logit_rows[n_logits++] = rows - 1;
          ++stream_i;
          tok_k = 0;
        }
      }
      step(s, rows, logits ? n_logits : 0, logits ? logits + static_cast<size_t>(first_logit) * V : nullptr);
      first_logit += n_logits;
    }
    return KILN_OK;
  });
}

kiln_status kiln_prefill(kiln_session* s, const int32_t* tokens, int32_t n, int32_t stream,
                         float* logits) {
  return prefill("kiln_prefill", s, tokens, n, stream, logits, false);
}

kiln_status kiln_prefill_all_logits(kiln_session* s, const int32_t* tokens, int32_t n,
                                    int32_t stream, float* logits) {
  return prefill("kiln_prefill_all_logits", s, tokens, n, stream, logits, true);
}

kiln_status kiln_decode(kiln_session* s, const int32_t* tokens, const int32_t* streams, int32_t n,
                        float* logits) {
  return guarded("kiln_decode", [&]() -> kiln_status {
    if (kiln_status e = usable_session("kiln_decode", s); e != KILN_OK) return e;
    const kiln_compiled_model* c = s->code;
    if (!tokens) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_decode: tokens is NULL");
    if (!streams) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_decode: streams is NULL");
    const int64_t max_n = std::min(c->max_streams, c->max_rows);
    if (n < 1 || n > max_n)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_decode: n is %d, expected 1..%lld (max_streams)",
                  n, (long long)max_n);
    kiln_status st = KILN_OK;
    int32_t i = 0;
    for (; i < n && st == KILN_OK; ++i) {
      const int32_t t = tokens[i], sm = streams[i];
      if (sm < 0 || sm >= c->max_streams)
        st = fail(KILN_ERR_INVALID_ARGUMENT, "kiln_decode: streams[%d] = %d is out of range "
                  "[0, %lld)", i, sm, (long long)c->max_streams);
      else if (s->seen[static_cast<size_t>(sm)])
        st = fail(KILN_ERR_INVALID_ARGUMENT, "kiln_decode: streams[%d] = %d is listed twice", i,
                  sm);
      else if (!s->model->has_token(t))
        st = fail(KILN_ERR_INVALID_ARGUMENT, "kiln_decode: tokens[%d] = %d is not a token id "
                  "(n_vocab %d)", i, t, s->model->n_vocab);
      else if (s->pos[static_cast<size_t>(sm)] >= c->max_context)
        st = fail(KILN_ERR_CONTEXT_FULL, "kiln_decode: stream %d is full (max_context %lld)", sm,
                  (long long)c->max_context);
      else
        s->seen[static_cast<size_t>(sm)] = 1;
    }
    for (int32_t j = 0; j < i; ++j)  // clear the marks of the streams checked
      if (streams[j] >= 0 && streams[j] < c->max_streams)
        s->seen[static_cast<size_t>(streams[j])] = 0;
    if (st != KILN_OK) return st;
    for (int32_t r = 0; r < n; ++r) {
      s->tokens[r] = tokens[r];
      s->positions[r] = s->pos[static_cast<size_t>(streams[r])];
      s->streams[r] = streams[r];
      s->adapter_slots[r] = s->lora.stream_slot[static_cast<size_t>(streams[r])];
      s->logit_rows[r] = r;
    }
    step(s, n, logits ? n : 0, logits);
    for (int32_t r = 0; r < n; ++r) ++s->pos[static_cast<size_t>(streams[r])];
    return KILN_OK;
  });
}

kiln_status kiln_session_reset(kiln_session* s, int32_t stream) {
  return guarded("kiln_session_reset", [&]() -> kiln_status {
    if (kiln_status e = usable_session("kiln_session_reset", s); e != KILN_OK) return e;
    const kiln_compiled_model* c = s->code;
    if (stream != KILN_ALL_STREAMS && (stream < 0 || stream >= c->max_streams))
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_reset: stream %d is out of range "
                  "[0, %lld) and not KILN_ALL_STREAMS", stream, (long long)c->max_streams);
    if (stream == KILN_ALL_STREAMS) {
      if (!s->kv.zero_all()) return kv_remap_failed("kiln_session_reset");
      std::fill(s->pos.begin(), s->pos.end(), 0);
    } else if (s->pos[static_cast<size_t>(stream)] != 0) {  // else nothing written since the last reset
      if (!s->kv.zero_rows(stream, 0, s->pos[static_cast<size_t>(stream)])) return kv_remap_failed("kiln_session_reset");
      s->pos[static_cast<size_t>(stream)] = 0;
    }
    return KILN_OK;
  });
}

kiln_status kiln_session_copy_stream(kiln_session* s, int32_t src, int32_t dst, int32_t n_tokens) {
  return guarded("kiln_session_copy_stream", [&]() -> kiln_status {
    if (kiln_status e = usable_session("kiln_session_copy_stream", s); e != KILN_OK) return e;
    const kiln_compiled_model* c = s->code;
    for (int32_t k : {src, dst})
      if (k < 0 || k >= c->max_streams)
        return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_copy_stream: stream %d is out of range "
                    "[0, %lld)", k, (long long)c->max_streams);
    if (src == dst)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_copy_stream: source and destination are "
                  "both stream %d", src);
    if (n_tokens < 0 || n_tokens > s->pos[static_cast<size_t>(src)])
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_copy_stream: stream %d holds %d tokens, "
                  "cannot copy %d", src, s->pos[static_cast<size_t>(src)], n_tokens);
    // Row p of every K and V buffer of the layer stack, for p < n_tokens (the table was
    // checked against kv_stream_bytes at load).
    if (!s->kv.copy_rows(src, dst, n_tokens)) {
      s->pos[static_cast<size_t>(dst)] = 0;  // unusable until a reset succeeds
      return kv_remap_failed("kiln_session_copy_stream");
    }
    s->pos[static_cast<size_t>(dst)] = n_tokens;
    return KILN_OK;
  });
}

kiln_status kiln_session_truncate(kiln_session* s, int32_t stream, int32_t n_tokens) {
  return guarded("kiln_session_truncate", [&]() -> kiln_status {
    if (kiln_status e = usable_session("kiln_session_truncate", s); e != KILN_OK) return e;
    const kiln_compiled_model* c = s->code;
    if (stream < 0 || stream >= c->max_streams)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_truncate: stream %d is out of range "
                  "[0, %lld)", stream, (long long)c->max_streams);
    const int32_t held = s->pos[static_cast<size_t>(stream)];
    if (n_tokens < 0 || n_tokens > held)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_truncate: stream %d holds %d tokens, "
                  "cannot keep %d", stream, held, n_tokens);
    // Rows n_tokens..held-1 of every K and V buffer, as kiln_session_reset zeroes all rows.
    if (!s->kv.zero_rows(stream, n_tokens, held)) return kv_remap_failed("kiln_session_truncate");
    s->pos[static_cast<size_t>(stream)] = n_tokens;
    return KILN_OK;
  });
}

int32_t kiln_session_position(const kiln_session* s, int32_t stream) {
  if (!s) {
    fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_position: session is NULL");
    return -1;
  }
  if (stream < 0 || stream >= s->code->max_streams) {
    fail(KILN_ERR_INVALID_ARGUMENT, "kiln_session_position: stream %d is out of range [0, %lld)",
         stream, (long long)s->code->max_streams);
    return -1;
  }
  return s->pos[static_cast<size_t>(stream)];
}

// ---- sampling -------------------------------------------------------------------------

kiln_sampler_params kiln_sampler_default_params(void) {
  kiln::SamplerParams d;
  kiln_sampler_params p;
  p.temperature = d.temperature;
  p.top_k = d.top_k;
  p.top_p = d.top_p;
  p.seed = d.seed;
  return p;
}

kiln_status kiln_sampler_init(const kiln_sampler_params* params, kiln_sampler** out) {
  return guarded("kiln_sampler_init", [&]() -> kiln_status {
    if (!out) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_sampler_init: out is NULL");
    *out = nullptr;
    kiln_sampler_params p = params ? *params : kiln_sampler_default_params();
    if (!(p.temperature >= 0.0f) || std::isinf(p.temperature))
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_sampler_init: temperature %g, expected a finite "
                  "value >= 0", (double)p.temperature);
    if (p.top_k < 0)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_sampler_init: top_k %d, expected >= 0", p.top_k);
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_sampler_init: top_p %g, expected (0, 1]",
                  (double)p.top_p);
    kiln::SamplerParams sp;
    sp.temperature = p.temperature;
    sp.top_k = p.top_k;
    sp.top_p = p.top_p;
    sp.seed = p.seed;
    *out = new kiln_sampler{kiln::Sampler(sp)};
    return KILN_OK;
  });
}

void kiln_sampler_free(kiln_sampler* sampler) { delete sampler; }

kiln_status kiln_sampler_sample(kiln_sampler* sampler, const float* logits, int32_t n_vocab,
                                int32_t* token) {
  return guarded("kiln_sampler_sample", [&]() -> kiln_status {
    if (!sampler) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_sampler_sample: sampler is NULL");
    if (!logits) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_sampler_sample: logits is NULL");
    if (!token) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_sampler_sample: token is NULL");
    if (n_vocab < 1)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_sampler_sample: n_vocab is %d", n_vocab);
    const std::span<const float> lg(logits, static_cast<size_t>(n_vocab));
    if (int64_t bad; !kiln::Sampler::usable(lg, &bad))
      return fail(KILN_ERR_NOT_FINITE, "kiln_sampler_sample: %s", kiln::Sampler::unusable_reason(lg, bad).c_str());
    *token = sampler->sampler.sample(lg);
    return KILN_OK;
  });
}

// ---- tokenizer and chat ---------------------------------------------------------------

kiln_status kiln_tokenize(const kiln_model* model, const char* text, size_t text_len,
                          int add_special, int parse_special, int32_t* tokens, int32_t capacity,
                          int32_t* n_tokens) {
  return guarded("kiln_tokenize", [&]() -> kiln_status {
    if (!model) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_tokenize: model is NULL");
    if (!n_tokens) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_tokenize: n_tokens is NULL");
    if (!text && text_len) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_tokenize: text is NULL");
    if (capacity < 0) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_tokenize: capacity is %d, expected >= 0", capacity);
    if (!tokens && capacity > 0)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_tokenize: tokens is NULL (capacity %d)", capacity);
    std::vector<int32_t> ids = model->tokenizer->encode(
        std::string_view(text ? text : "", text_len), add_special != 0, parse_special != 0);
    if (ids.size() > static_cast<size_t>(INT32_MAX))
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_tokenize: text gives over 2^31 tokens");
    *n_tokens = static_cast<int32_t>(ids.size());
    if (ids.size() > static_cast<size_t>(capacity))
      return fail(KILN_ERR_BUFFER_TOO_SMALL, "kiln_tokenize: %zu tokens do not fit in %d",
                  ids.size(), capacity);
    if (!ids.empty()) std::memcpy(tokens, ids.data(), ids.size() * sizeof(int32_t));
    return KILN_OK;
  });
}

kiln_status kiln_token_to_piece(const kiln_model* model, int32_t token, char* buf,
                                size_t buf_size, size_t* len) {
  return guarded("kiln_token_to_piece", [&]() -> kiln_status {
    if (!model) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_token_to_piece: model is NULL");
    if (!model->has_token(token))
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_token_to_piece: %d is not a token id (n_vocab "
                  "%d)", token, model->n_vocab);
    return copy_out("kiln_token_to_piece", model->tokenizer->piece(token), buf, buf_size, len);
  });
}

kiln_status kiln_detokenize(const kiln_model* model, const int32_t* tokens, int32_t n,
                            int render_special, int remove_special, char* buf, size_t buf_size,
                            size_t* len) {
  return guarded("kiln_detokenize", [&]() -> kiln_status {
    if (!model) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_detokenize: model is NULL");
    if (n < 0) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_detokenize: n is %d, expected >= 0", n);
    if (!tokens && n > 0) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_detokenize: tokens is NULL (n %d)", n);
    for (int32_t i = 0; i < n; ++i)
      if (!model->has_token(tokens[i]))
        return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_detokenize: tokens[%d] = %d is not a token "
                    "id (n_vocab %d)", i, tokens[i], model->n_vocab);
    std::string text = model->tokenizer->decode(
        std::span<const int32_t>(tokens, static_cast<size_t>(n)), render_special != 0,
        remove_special != 0);
    return copy_out("kiln_detokenize", text, buf, buf_size, len);
  });
}

int kiln_token_is_eog(const kiln_model* model, int32_t token) {
  return model && model->tokenizer->is_eog(token) ? 1 : 0;
}

kiln_status kiln_chat_apply(const kiln_model* model, const char* tmpl,
                            const kiln_chat_message* messages, size_t n_messages,
                            int add_assistant, char* buf, size_t buf_size, size_t* len) {
  return guarded("kiln_chat_apply", [&]() -> kiln_status {
    if (!model) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_chat_apply: model is NULL");
    if (!messages && n_messages > 0)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_chat_apply: messages is NULL");
    std::vector<kiln::ChatMessage> msgs;
    msgs.reserve(n_messages);
    for (size_t i = 0; i < n_messages; ++i) {
      if (!messages[i].role || !messages[i].content)
        return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_chat_apply: messages[%zu].%s is NULL", i,
                    messages[i].role ? "content" : "role");
      msgs.push_back({messages[i].role, messages[i].content});
    }
    if (tmpl && !*tmpl)
      return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_chat_apply: tmpl is empty (NULL uses the model's template)");
    std::string_view t = tmpl ? std::string_view(tmpl) : std::string_view(model->chat_template);
    auto text = kiln::apply_chat_template(t, msgs, add_assistant != 0);
    if (!text.ok())
      return fail(KILN_ERR_TOKENIZER, "kiln_chat_apply: %s%s%s",
                  tmpl ? "" : model->file.path().c_str(), tmpl ? "" : ": ",
                  text.error().message.c_str());
    return copy_out("kiln_chat_apply", *text, buf, buf_size, len);
  });
}

}  // extern "C"

// runtime/session.h — libkiln_rt's internal objects (kiln_model, kiln_session,
// kiln_sampler) and its error helpers, shared by kiln.cpp (the C API) and ds2d.cpp (the
// DS2D controller, which runs verify steps and moves KV rows of a session). Not installed.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "frontend/tokenizer.h"
#include "kiln/kiln.h"
#include "runtime/adapters.h"
#include "runtime/kv_cache.h"
#include "runtime/model_file.h"
#include "runtime/sampler.h"
#include "runtime/thread_pool.h"

namespace kiln::rt {

// ---- errors -------------------------------------------------------------------------

// A fixed buffer, so that reporting an error (even "out of memory") cannot fail.
extern thread_local char g_last_error[1024];  // defined in kiln.cpp

[[gnu::format(printf, 2, 3)]] inline kiln_status fail(kiln_status s, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_last_error, sizeof g_last_error, fmt, ap);
  va_end(ap);
  return s;
}

template <typename F>
kiln_status guarded(const char* fn, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(KILN_ERR_OUT_OF_MEMORY, "%s: out of memory", fn);
  } catch (const std::system_error& e) {
    return fail(KILN_ERR_OUT_OF_MEMORY, "%s: out of system resources: %s", fn, e.what());
  } catch (const std::exception& e) {
    return fail(KILN_ERR_INTERNAL, "%s: internal error: %s", fn, e.what());
  } catch (...) {
    return fail(KILN_ERR_INTERNAL, "%s: internal error", fn);
  }
}

// Copies `s` to a caller buffer by the convention of kiln.h.
inline kiln_status copy_out(const char* fn, std::string_view s, char* buf, size_t buf_size, size_t* len) {
  if (!len) return fail(KILN_ERR_INVALID_ARGUMENT, "%s: len is NULL", fn);
  *len = s.size();
  if (buf_size <= s.size())
    return fail(KILN_ERR_BUFFER_TOO_SMALL, "%s: the result needs %zu bytes (with the NUL), the "
                "buffer has %zu", fn, s.size() + 1, buf_size);
  if (!buf)
    return fail(KILN_ERR_INVALID_ARGUMENT, "%s: buf is NULL but buf_size is %zu", fn, buf_size);
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  return KILN_OK;
}

// ---- zeroed, 64-byte aligned regions -------------------------------------------------

// Anonymous mappings: page-aligned, zero, and backed by memory only where written (the
// arena and the adapter region; the KV cache is a KvCache, runtime/kv_cache.h).
class Region {
 public:
  Region() = default;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region() {
    if (p_) munmap(p_, size_);
  }
  bool allocate(uint64_t bytes) {
    if (bytes > SIZE_MAX / 2) return false;  // 32-bit hosts
    size_ = bytes == 0 ? 64 : static_cast<size_t>(bytes);
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    p_ = static_cast<uint8_t*>(p);
    return true;
  }
  uint8_t* data() const { return p_; }

 private:
  uint8_t* p_ = nullptr;
  size_t size_ = 0;
};

}  // namespace kiln::rt

// ---- objects --------------------------------------------------------------------------

struct kiln_model {
  const kiln_compiled_model* code = nullptr;
  kiln::ModelFile file;
  std::optional<kiln::Tokenizer> tokenizer;
  std::string chat_template;
  std::string name;
  int32_t n_vocab = 0;
  bool has_token(int32_t t) const { return t >= 0 && t < n_vocab; }  // every entry point checks ids
};

struct kiln_session {
  // The process that made it: a fork()ed child has none of its worker threads (a step
  // would wait for them forever) and, with shared KV pages, no cache (kv_cache.cpp), so
  // the entry points refuse a session there (usable_session) instead of hanging.
  pid_t owner = 0;
  const kiln_model* model = nullptr;
  const kiln_compiled_model* code = nullptr;
  kiln::rt::Region arena;
  kiln::rt::KvCache kv;  // streams copied from one another share the prompt's pages
  kiln::rt::Region adapters;                     // adapter_bytes, zero: every slot the zero adapter
  std::vector<int32_t> adapter_slots;  // max_rows: each row's slot, from its stream's
  kiln::SessionAdapters lora;          // slots and each stream's adapter (adapters.cpp)
  std::unique_ptr<kiln::ThreadPool> pool;
  std::vector<int32_t> pos;   // tokens held by each stream
  std::vector<uint8_t> seen;  // decode: streams listed so far
  std::vector<int32_t> tokens, positions, streams, logit_rows;  // max_rows each
  kiln_step_args args{};

  using StepFn = void (*)(const kiln_step_args*, int32_t, int32_t);
  // The entry for an ordinary step over the first `rows` scratch rows: the base entry
  // (no LoRA side paths, ABI 6) when the model has one and no row is on an adapter, else
  // the step. Both give the same bits for such rows; the base one is faster.
  StepFn step_entry(int64_t rows) const {
    if (!code->step_base) return code->step;
    for (int64_t r = 0; r < rows; ++r)
      if (adapter_slots[(size_t)r] != 0) return code->step;
    return code->step_base;
  }
};

// NULL, or used in another process than the one that made it: a status and a message
// naming `fn`; KILN_OK when `s` can run steps here.
inline kiln_status usable_session(const char* fn, const kiln_session* s) {
  if (!s) return kiln::rt::fail(KILN_ERR_INVALID_ARGUMENT, "%s: session is NULL", fn);
  if (s->owner != getpid())
    return kiln::rt::fail(KILN_ERR_INVALID_ARGUMENT, "%s: the session was made by process %d, not this one (%d): a fork()ed "
                "child cannot use its parent's sessions (their threads and KV cache stay behind); make a new one",
                fn, (int)s->owner, (int)getpid());
  return KILN_OK;
}

struct kiln_sampler {
  kiln::Sampler sampler;
};


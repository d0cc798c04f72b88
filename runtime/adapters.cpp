// runtime/adapters.cpp — loading LoRA adapters into a session's slots.
//
// The compiled model describes where each target's A and B live in the adapter region
// (kiln_lora_target, model_abi.h); this file reads an adapter with the same validated
// readers the compiler uses (frontend/adapter.cpp: PEFT, GGUF LoRA), checks it against
// that table, and writes it into one slot, zero-padding its rank to the compiled R. A
// load is all-or-nothing: the adapter is read and checked completely before the slot is
// touched. Switching a stream's adapter only changes the slot index its rows carry.
#include "runtime/adapters.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <new>
#include <sys/stat.h>

#include <fmt/format.h>

#include "frontend/adapter.h"
#include "frontend/lora_names.h"
#include "runtime/model_file.h"

namespace kiln {

const char* check_lora_descriptor(const kiln_compiled_model* c) {
  if (c->lora_slots == 0) return c->n_lora_targets == 0 ? nullptr : "LoRA targets without LoRA slots";
  if (c->lora_slots < 1 || c->lora_slots > 4096) return "lora_slots is out of range";
  if (c->lora_rank < 1 || c->lora_rank > 64) return "lora_rank is out of range";
  if (c->n_lora_targets < 1 || !c->lora_targets) return "the LoRA target table is missing";
  const uint64_t K = (uint64_t)c->lora_slots, R = (uint64_t)c->lora_rank;
  if (c->lora_scale_offset > c->adapter_bytes || (c->adapter_bytes - c->lora_scale_offset) / 4 < K)
    return "the LoRA scales lie outside the adapter region";
  for (int64_t i = 0; i < c->n_lora_targets; ++i) {
    const kiln_lora_target& t = c->lora_targets[i];
    if (t.module < 0 || t.module >= lora_names::kNumModules || t.layer < 0 || t.layer >= c->n_layer)
      return "a LoRA target names an unknown layer or module";
    if (t.in < 1 || t.out < 1 || t.in > (1 << 20) || t.out > (1 << 20)) return "a LoRA target has bad dims";
    if (t.a_slot_stride != R * (uint64_t)t.in * 4 || t.b_slot_stride != R * (uint64_t)t.out * 4)
      return "a LoRA target's slot strides do not match its dims";
    for (auto [off, stride] : {std::pair{t.a_offset, t.a_slot_stride}, std::pair{t.b_offset, t.b_slot_stride}})
      if (off > c->adapter_bytes || (c->adapter_bytes - off) / K < stride)
        return "a LoRA target lies outside the adapter region";
    if (t.rank_offset > c->adapter_bytes || (c->adapter_bytes - t.rank_offset) / 4 < K || t.rank_offset % 4)
      return "a LoRA target's ranks lie outside the adapter region";
  }
  return nullptr;
}

}  // namespace kiln

namespace {

using kiln::SessionAdapters;

kiln_status fail(kiln_status s, std::string m) { return kiln::set_last_error(s, m); }

template <typename F>
kiln_status guarded(const char* fn, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return fail(KILN_ERR_OUT_OF_MEMORY, fmt::format("{}: out of memory", fn));
  } catch (const std::exception& e) {
    return fail(KILN_ERR_INTERNAL, fmt::format("{}: internal error: {}", fn, e.what()));
  } catch (...) {
    return fail(KILN_ERR_INTERNAL, fmt::format("{}: internal error", fn));
  }
}

const kiln_lora_target* find_target(const kiln_compiled_model* c, int64_t layer, int module) {
  for (int64_t i = 0; i < c->n_lora_targets; ++i)
    if (c->lora_targets[i].layer == layer && c->lora_targets[i].module == module) return &c->lora_targets[i];
  return nullptr;
}

// The base the readers check against: the compiled descriptor.
kiln::LoraBase base_of(const SessionAdapters& a) {
  kiln::LoraBase b;
  const kiln_compiled_model* c = a.code;
  b.path = c->name ? c->name : "?";
  auto hp = a.file->hparams();
  b.arch = std::string(a.file->arch());
  b.n_layer = c->n_layer;
  b.n_head = hp.n_head;
  b.n_head_kv = hp.n_head_kv;
  b.shape = [c](int64_t layer, int module) -> kiln::Result<std::pair<int64_t, int64_t>> {
    if (const kiln_lora_target* t = find_target(c, layer, module)) return std::pair<int64_t, int64_t>{t->in, t->out};
    std::string compiled;
    for (int m = 0; m < kiln::lora_names::kNumModules; ++m)
      if (find_target(c, 0, m)) compiled += fmt::format("{}{}", compiled.empty() ? "" : ",", kiln::lora_names::kModules[m].name);
    return kiln::make_error("the model '{}' takes no adapter on {} of layer {} (compiled with --lora-targets={})",
                            c->name ? c->name : "?", kiln::lora_names::kModules[module].peft, layer, compiled);
  };
  return b;
}

void write_rank(SessionAdapters& a, const kiln_lora_target& t, int32_t slot, int32_t rank) {
  std::memcpy(a.region + t.rank_offset + (uint64_t)slot * 4, &rank, 4);
}

void write_scale(SessionAdapters& a, int32_t slot) {
  float v = a.slots[(size_t)slot].scale;
  std::memcpy(a.region + a.code->lora_scale_offset + (uint64_t)slot * 4, &v, 4);
}

// Bounds on the scales, far beyond any trained adapter's (lora_alpha / r is ~0.5-64), so
// that a slot's scale times a side path can never overflow the step's floats to inf/NaN.
constexpr float kMaxAdapterScale = 1e4f;  // the adapter's own lora_alpha / r
constexpr float kMaxSlotScale = 1e6f;     // times the stream's multiplier

kiln_status check_slot_scale(const char* fn, float adapter_scale, float multiplier) {
  const float v = adapter_scale * multiplier;
  if (!std::isfinite(v) || std::fabs(v) > kMaxSlotScale)
    return fail(KILN_ERR_INVALID_ARGUMENT, fmt::format("{}: the adapter's scale {} times the stream's {} is {}, "
                                                       "beyond +-{}", fn, adapter_scale, multiplier, v, kMaxSlotScale));
  return KILN_OK;
}

kiln_status check_slot(const char* fn, const kiln_session* s, int32_t slot, bool allow_zero) {
  if (!s) return fail(KILN_ERR_INVALID_ARGUMENT, fmt::format("{}: session is NULL", fn));
  const SessionAdapters* a = kiln::session_adapters(s);
  if (a->code->lora_slots == 0)
    return fail(KILN_ERR_INVALID_ARGUMENT, fmt::format("{}: the model '{}' was compiled without LoRA slots (kiln "
                                                       "compile --lora-slots K)", fn, a->code->name ? a->code->name : "?"));
  if (slot < (allow_zero ? 0 : 1) || slot >= a->code->lora_slots)
    return fail(KILN_ERR_INVALID_ARGUMENT, fmt::format("{}: slot {} is out of range [{}, {}){}", fn, slot,
                                                       allow_zero ? 0 : 1, a->code->lora_slots,
                                                       allow_zero ? "" : " (slot 0 is the zero adapter)"));
  return KILN_OK;
}

}  // namespace

extern "C" {

kiln_status kiln_adapter_load(kiln_session* s, const char* path, int32_t slot) {
  return guarded("kiln_adapter_load", [&]() -> kiln_status {
    if (kiln_status st = check_slot("kiln_adapter_load", s, slot, false); st != KILN_OK) return st;
    if (!path) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_adapter_load: path is NULL");
    SessionAdapters& a = *kiln::session_adapters(s);
    const kiln_compiled_model* c = a.code;
    // A path that cannot be read is an I/O error; what is read and refused, a format error.
    struct stat path_st {};
    if (::stat(path, &path_st) != 0)
      return fail(KILN_ERR_IO, fmt::format("kiln_adapter_load: {}: cannot open: {}", path, std::strerror(errno)));
    if (!S_ISREG(path_st.st_mode) && !S_ISDIR(path_st.st_mode))
      return fail(KILN_ERR_IO, fmt::format("kiln_adapter_load: {}: not a file (a GGUF adapter) or a folder (PEFT)",
                                           path));
    kiln::LoraOptions opts;
    opts.max_rank = c->lora_rank;
    auto ad = kiln::load_lora_adapter(path, base_of(a), opts);
    if (!ad.ok()) return fail(KILN_ERR_FORMAT, fmt::format("kiln_adapter_load: {}", ad.error().message));
    if (!std::isfinite(ad->scale) || std::fabs(ad->scale) > kMaxAdapterScale)
      return fail(KILN_ERR_FORMAT, fmt::format("kiln_adapter_load: {}: the adapter's scale (lora_alpha / r) is {}, "
                                               "expected a finite value within +-{}", path, ad->scale,
                                               kMaxAdapterScale));
    // Streams already on this slot keep their scale multiplier.
    float mult = 1.0f;
    for (size_t k = 0; k < a.stream_slot.size(); ++k)
      if (a.stream_slot[k] == slot) { mult = a.stream_scale[k]; break; }
    if (kiln_status st = check_slot_scale("kiln_adapter_load", ad->scale, mult); st != KILN_OK) return st;
    // Checked in full: now write the slot. Targets the adapter leaves out get rank 0 (the
    // code skips them) and zero factors.
    const uint64_t R = (uint64_t)c->lora_rank;
    for (int64_t i = 0; i < c->n_lora_targets; ++i) {
      const kiln_lora_target& t = c->lora_targets[i];
      std::memset(a.region + t.a_offset + (uint64_t)slot * t.a_slot_stride, 0, t.a_slot_stride);
      std::memset(a.region + t.b_offset + (uint64_t)slot * t.b_slot_stride, 0, t.b_slot_stride);
      write_rank(a, t, slot, 0);
    }
    uint64_t bytes = 0;
    for (const kiln::LoraTarget& lt : ad->targets) {
      const kiln_lora_target* t = find_target(c, lt.layer, lt.module);  // present: base_of checked
      if (!t || lt.in != t->in || lt.out != t->out || (uint64_t)lt.rank > R) return fail(KILN_ERR_INTERNAL, "kiln_adapter_load: descriptor changed");
      auto* A = reinterpret_cast<float*>(a.region + t->a_offset + (uint64_t)slot * t->a_slot_stride);
      auto* B = reinterpret_cast<float*>(a.region + t->b_offset + (uint64_t)slot * t->b_slot_stride);
      // A [rank, in] fills the first rank rows of [R, in]; B [out, rank], transposed, the
      // first rank rows of [R, out]. The code reads those rows only (the target's rank).
      std::memcpy(A, lt.a.data(), lt.a.size() * sizeof(float));
      for (int64_t o = 0; o < lt.out; ++o)
        for (int64_t r = 0; r < lt.rank; ++r) B[r * lt.out + o] = lt.b[(size_t)(o * lt.rank + r)];
      write_rank(a, *t, slot, (int32_t)lt.rank);
      bytes += (uint64_t)lt.rank * (uint64_t)(lt.in + lt.out) * 4;
    }
    kiln::AdapterSlot& sl = a.slots[(size_t)slot];
    sl.loaded = true;
    sl.rank = (int32_t)ad->rank;
    sl.n_targets = (int32_t)ad->targets.size();
    sl.adapter_scale = ad->scale;
    sl.weight_bytes = bytes;
    sl.name = ad->name;
    sl.scale = sl.adapter_scale * mult;
    write_scale(a, slot);
    return KILN_OK;
  });
}

kiln_status kiln_adapter_free(kiln_session* s, int32_t slot) {
  return guarded("kiln_adapter_free", [&]() -> kiln_status {
    if (kiln_status st = check_slot("kiln_adapter_free", s, slot, false); st != KILN_OK) return st;
    SessionAdapters& a = *kiln::session_adapters(s);
    a.slots[(size_t)slot] = kiln::AdapterSlot{};
    write_scale(a, slot);  // scale 0: the kernel skips the slot's rows
    for (int64_t i = 0; i < a.code->n_lora_targets; ++i) write_rank(a, a.code->lora_targets[i], slot, 0);
    for (size_t k = 0; k < a.stream_slot.size(); ++k)
      if (a.stream_slot[k] == slot) a.stream_slot[k] = 0, a.stream_scale[k] = 1.0f;
    return KILN_OK;
  });
}

kiln_status kiln_stream_set_adapter(kiln_session* s, int32_t stream, int32_t slot, float scale) {
  return guarded("kiln_stream_set_adapter", [&]() -> kiln_status {
    // "No adapter" is what every stream of a model without LoRA slots already has: asking
    // for it succeeds, so an app needs no special case for such models.
    if (s && slot == 0 && kiln::session_adapters(s)->code->lora_slots == 0) {
      const int64_t streams = kiln::session_adapters(s)->code->max_streams;
      if (stream < 0 || stream >= streams)
        return fail(KILN_ERR_INVALID_ARGUMENT,
                    fmt::format("kiln_stream_set_adapter: stream {} is out of range [0, {})", stream, streams));
      return KILN_OK;
    }
    if (kiln_status st = check_slot("kiln_stream_set_adapter", s, slot, true); st != KILN_OK) return st;
    SessionAdapters& a = *kiln::session_adapters(s);
    if (stream < 0 || stream >= (int32_t)a.stream_slot.size())
      return fail(KILN_ERR_INVALID_ARGUMENT, fmt::format("kiln_stream_set_adapter: stream {} is out of range [0, {})",
                                                         stream, a.stream_slot.size()));
    if (!std::isfinite(scale))
      return fail(KILN_ERR_INVALID_ARGUMENT, fmt::format("kiln_stream_set_adapter: scale {} is not finite", scale));
    if (slot != 0) {
      if (!a.slots[(size_t)slot].loaded)
        return fail(KILN_ERR_INVALID_ARGUMENT, fmt::format("kiln_stream_set_adapter: slot {} holds no adapter "
                                                           "(kiln_adapter_load)", slot));
      for (size_t k = 0; k < a.stream_slot.size(); ++k)
        if ((int32_t)k != stream && a.stream_slot[k] == slot && a.stream_scale[k] != scale)
          return fail(KILN_ERR_INVALID_ARGUMENT,
                      fmt::format("kiln_stream_set_adapter: stream {} reads slot {} with scale {}; the scale is "
                                  "held per slot, so load the adapter into a second slot for scale {}",
                                  k, slot, a.stream_scale[k], scale));
      kiln::AdapterSlot& sl = a.slots[(size_t)slot];
      if (kiln_status st = check_slot_scale("kiln_stream_set_adapter", sl.adapter_scale, scale); st != KILN_OK)
        return st;
      sl.scale = sl.adapter_scale * scale;
      write_scale(a, slot);
    }
    a.stream_slot[(size_t)stream] = slot;
    a.stream_scale[(size_t)stream] = slot == 0 ? 1.0f : scale;
    return KILN_OK;
  });
}

int32_t kiln_stream_adapter(const kiln_session* s, int32_t stream) {
  if (!s) {
    fail(KILN_ERR_INVALID_ARGUMENT, "kiln_stream_adapter: session is NULL");
    return -1;
  }
  const SessionAdapters& a = *kiln::session_adapters(s);
  if (stream < 0 || stream >= (int32_t)a.stream_slot.size()) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         fmt::format("kiln_stream_adapter: stream {} is out of range [0, {})", stream, a.stream_slot.size()));
    return -1;
  }
  return a.stream_slot[(size_t)stream];
}

kiln_status kiln_adapter_query(const kiln_session* s, int32_t slot, kiln_adapter_info* info) {
  return guarded("kiln_adapter_query", [&]() -> kiln_status {
    if (kiln_status st = check_slot("kiln_adapter_query", s, slot, true); st != KILN_OK) return st;
    if (!info) return fail(KILN_ERR_INVALID_ARGUMENT, "kiln_adapter_query: info is NULL");
    const SessionAdapters& a = *kiln::session_adapters(s);
    const kiln::AdapterSlot& sl = a.slots[(size_t)slot];
    std::memset(info, 0, sizeof *info);
    info->loaded = sl.loaded;
    info->rank = sl.rank;
    info->n_targets = sl.n_targets;
    info->scale = sl.scale;
    info->weight_bytes = sl.weight_bytes;
    for (int64_t i = 0; i < a.code->n_lora_targets; ++i)
      info->slot_bytes += a.code->lora_targets[i].a_slot_stride + a.code->lora_targets[i].b_slot_stride;
    std::strncpy(info->name, sl.name.c_str(), sizeof info->name - 1);
    return KILN_OK;
  });
}

}  // extern "C"

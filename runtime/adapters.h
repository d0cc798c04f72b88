// runtime/adapters.h — LoRA slots of a session (the kiln_adapter_* / kiln_stream_*adapter
// calls of kiln.h, in adapters.cpp). kiln.cpp owns the session and hands this part over.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/kiln.h"

namespace kiln {

class ModelFile;

struct AdapterSlot {
  bool loaded = false;
  int32_t rank = 0, n_targets = 0;
  float adapter_scale = 0.0f;  // alpha / r (or rsLoRA's), from the adapter
  float scale = 0.0f;          // what the compiled code reads: adapter_scale * stream scale
  uint64_t weight_bytes = 0;
  std::string name;
};

// One session's adapter state. The step reads `row_slot` (kiln_step_args.adapter_slots),
// which prefill and decode fill from `stream_slot`.
struct SessionAdapters {
  const kiln_compiled_model* code = nullptr;
  const ModelFile* file = nullptr;  // hyperparameters (heads, for PEFT q/k rows)
  uint8_t* region = nullptr;        // adapter_bytes: the lora.* inputs
  std::vector<int32_t> stream_slot;  // per stream; 0 = no adapter
  std::vector<float> stream_scale;   // per stream, multiplies the slot's adapter scale
  std::vector<AdapterSlot> slots;    // lora_slots
};

// Checks the LoRA descriptor of compiled code (part of kiln_model_load); nullptr if sound,
// else what is wrong.
const char* check_lora_descriptor(const kiln_compiled_model* c);

// The session's adapter state (kiln.cpp), and setting the thread's error message.
SessionAdapters* session_adapters(kiln_session* s);
const SessionAdapters* session_adapters(const kiln_session* s);
kiln_status set_last_error(kiln_status s, const std::string& message);

}  // namespace kiln

// tools/kiln/engine.h — what `kiln run` generates with: compiled code or the interpreter.
//
// Both engines take a stream's next tokens and return the logits after the last one.
// The compiled engine is the real thing: the model compiled ahead of time (cached in
// ~/.cache/kiln/compiled, keyed by the model file, the options and this kiln binary),
// model.o linked in memory by LLVM's JIT, model.kiln loaded by libkiln_rt.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "codegen/loaded_artifact.h"
#include "support/result.h"

namespace kiln::cli {

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const char* name() const = 0;
  // Appends tokens at the stream's current position; returns the last token's logits.
  virtual Result<std::vector<float>> step(const std::vector<int32_t>& tokens) = 0;
  // As step, but returns the logits after every token: [tokens.size()][n_vocab].
  virtual Result<std::vector<float>> step_all_logits(const std::vector<int32_t>& tokens) = 0;
  // Empties the stream: the next step starts at position 0 with an empty KV cache.
  virtual Status reset() = 0;
  // Loads a LoRA adapter into slot 1 and applies it; returns its name.
  virtual Result<std::string> set_adapter(const std::string& path, float scale) {
    return make_error("{}: this engine takes no adapters", path);
  }
};

struct EngineOptions {
  std::string model_path;
  std::string artifact_dir;  // use this compiled artifact instead of the cache
  int64_t max_context = 2048;
  std::string kv_type = "f16";  // KV cache elements: f16 or f32
  int64_t max_streams = 1;
  int64_t max_rows = 64;     // tokens per compiled step (prefill chunk)
  int64_t threads = 2;
  bool int8_activations = true;
  std::string quantize = "none";  // as kiln compile --quantize: float weights to int4 groups
  int64_t lora_slots = 0;  // > 0: compile with LoRA slots (all targets, rank lora_rank)
  int64_t lora_slots_needed = -1;  // slots the run uses (an artifact must have them); < 0: lora_slots
  int64_t lora_rank = 16;
  bool progress = true;
};

// The context an artifact was compiled for (its model.h's KILN_MODEL_MAX_CONTEXT), read
// without loading it, so prompts can be checked against it before any work.
Result<int64_t> artifact_max_context(const std::string& dir);

// The compiled model for `o` (compiled into the cache first if needed), loaded with one
// session of o.max_streams streams at least; an artifact given in o.artifact_dir must
// hold o.max_context tokens per stream.
Result<std::unique_ptr<LoadedArtifact>> open_compiled_session(const EngineOptions& o);

Result<std::unique_ptr<Engine>> make_interpreter_engine(const EngineOptions& o);
Result<std::unique_ptr<Engine>> make_compiled_engine(const EngineOptions& o);

}  // namespace kiln::cli

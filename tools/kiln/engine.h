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

#include "codegen/jit.h"
#include "runtime/include/kiln/kiln.h"
#include "support/result.h"

namespace kiln::cli {

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const char* name() const = 0;
  // Appends tokens at the stream's current position; returns the last token's logits.
  virtual Result<std::vector<float>> step(const std::vector<int32_t>& tokens) = 0;
};

struct EngineOptions {
  std::string model_path;
  std::string artifact_dir;  // use this compiled artifact instead of the cache
  int64_t max_context = 2048;
  int64_t max_streams = 1;
  int64_t threads = 2;
  bool progress = true;
};

// A compiled model loaded through libkiln_rt, with one session (for multi-stream use).
struct CompiledSession {
  ~CompiledSession();
  std::unique_ptr<JitObject> code;
  kiln_model* model = nullptr;
  kiln_session* session = nullptr;
};
Result<std::unique_ptr<CompiledSession>> open_compiled_session(const EngineOptions& o);

Result<std::unique_ptr<Engine>> make_interpreter_engine(const EngineOptions& o);
Result<std::unique_ptr<Engine>> make_compiled_engine(const EngineOptions& o);

}  // namespace kiln::cli

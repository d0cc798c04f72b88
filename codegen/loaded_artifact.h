// codegen/loaded_artifact.h — a compiled artifact loaded into this process: model.o
// linked by the JIT, model.kiln opened by libkiln_rt, one session. What `kiln run`, the
// benchmarks and the end-to-end tests use; apps link libmodel.a instead.
#pragma once

#include <memory>
#include <string>

#include "codegen/codegen.h"
#include "codegen/jit.h"
#include "runtime/include/kiln/kiln.h"
#include "support/result.h"

namespace kiln {

struct LoadedArtifact {
  ~LoadedArtifact();
  std::unique_ptr<JitObject> code;
  kiln_model* model = nullptr;
  kiln_session* session = nullptr;
  int32_t n_vocab() const { return kiln_model_n_vocab(model); }
};

// Loads DIR/model.o and DIR/model.kiln and opens a session with `threads` threads.
Result<std::unique_ptr<LoadedArtifact>> load_artifact(const std::string& dir, int threads,
                                                      const std::string& symbol = kDefaultModelSymbol);

}  // namespace kiln

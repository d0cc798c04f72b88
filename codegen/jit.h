// codegen/jit.h — loads a compiled model.o into this process (for `kiln run` and tests).
//
// The same object bytes an app links are linked in memory by LLVM's ORC JIT; no code
// is generated here. The returned model stays valid while the JitObject lives.
#pragma once

#include <memory>
#include <string>

#include "runtime/include/kiln/model_abi.h"
#include "support/result.h"

namespace kiln {

class JitObject {
 public:
  ~JitObject();
  static Result<std::unique_ptr<JitObject>> load(const std::string& object_bytes, const std::string& symbol);
  const kiln_compiled_model* model() const { return model_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  const kiln_compiled_model* model_ = nullptr;
};

}  // namespace kiln

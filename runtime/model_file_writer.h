// runtime/model_file_writer.h — writes model.kiln (layout: runtime/model_file.h).
//
// Used by the compiler only (library kiln_model_writer). The bytes depend on the contents
// alone: the same ModelFileContents gives a byte-identical file, so compiling twice gives
// identical artifacts.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "frontend/tokenizer.h"
#include "runtime/model_file.h"
#include "support/result.h"

namespace kiln {

struct ModelFileContents {
  uint64_t model_hash = 0;   // the compiler's hash of the weight layout; the compiled code
                             // carries the same value in kiln_compiled_model.model_hash
  std::string name;          // e.g. "smollm2_135m_instruct"
  std::string arch;          // e.g. "llama"
  std::string profile;       // e.g. "host"
  std::string target;        // LLVM target triple
  ModelHparams hparams;
  ModelLimits limits;        // must equal the compiled code's max_rows/max_streams/max_context
  VocabData vocab;
  std::string chat_template;           // "" if the model has none
  std::vector<TensorRecord> tensors;   // each inside `weights`
  std::span<const uint8_t> weights;    // the blob; the compiled code's weights_bytes
};

// The whole file in memory: header + flatbuffer. Errors name what is wrong (a tensor
// outside the blob, vocabulary arrays of the wrong length, a blob over 2 GiB).
Result<std::string> model_file_bytes(const ModelFileContents& c);

// model_file_bytes, written to `path` atomically (temporary file + rename).
Status write_model_file(const std::string& path, const ModelFileContents& c);

}  // namespace kiln

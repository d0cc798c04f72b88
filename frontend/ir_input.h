// frontend/ir_input.h — graph IR text as a compiler input: `kiln dump` prints a model's
// graph, a user edits it, and `kiln dump` / `kiln compile` read it back. IR text names its
// weights (weight {name = "..."}) and does not hold them: they come from the GGUF model or
// checkpoint folder it was dumped from.
#pragma once

#include <memory>
#include <string>

#include "frontend/gguf.h"
#include "ir/graph.h"
#include "support/result.h"

namespace kiln {

// Whether `path` is IR text: "-" (stdin), a name ending in .kir, or a file whose first
// line starts with "graph " or "//" (a GGUF starts with "GGUF", a folder is not a file).
bool is_ir_text(const std::string& path);

// How messages name an input path: "-" is "<stdin>".
inline std::string input_name(const std::string& path) { return path == "-" ? "<stdin>" : path; }

// Reads and parses IR text from `path` ("-": stdin). Not verified: the caller attaches
// weights first where it has them, then verifies.
Result<Graph> read_ir_text(const std::string& path);

// Gives `g`'s weight nodes the tensors of `model` (opened from `model_path`). Refuses a
// graph printed after pack-weights: it interleaves rows in memory only, and a model file
// holds them as GGUF rows.
Status attach_model_weights(Graph& g, const std::string& ir_path, std::shared_ptr<const GgufFile> model,
                            const std::string& model_path);

}  // namespace kiln

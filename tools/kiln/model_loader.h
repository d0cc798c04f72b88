// tools/kiln/model_loader.h — opening a model file or IR text for the CLI commands.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "frontend/gguf.h"
#include "frontend/ir_input.h"
#include "frontend/llama.h"
#include "frontend/tokenizer.h"
#include "ir/graph.h"
#include "support/result.h"

namespace kiln::cli {

struct LoadedGraph {
  std::shared_ptr<const GgufFile> gguf;  // null when the graph came from IR text
  LlamaConfig config;
  Graph graph;
};

// IR text (is_ir_text) is parsed; anything else is a GGUF model or checkpoint folder that
// is lowered with `opts`. Text IR that names weights gets them from `weights_from`, a
// GGUF path, when given.
Result<LoadedGraph> load_graph(const std::string& path, const LlamaBuildOptions& opts,
                               const std::string& weights_from = {});

// What run and perplexity read of a model themselves: its tokenizer and chat template (a
// checkpoint folder's tensors are not translated for this; the engine compiles from the
// model itself, or a given artifact holds it). IR text is refused with the way to run it.
struct ModelText {
  Tokenizer tokenizer;
  std::optional<std::string> chat_template;
};
Result<ModelText> load_model_text(const std::string& path);

}  // namespace kiln::cli

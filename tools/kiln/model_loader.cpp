// tools/kiln/model_loader.cpp — see model_loader.h.
#include "tools/kiln/model_loader.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "frontend/hf_checkpoint.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "support/file.h"

namespace kiln::cli {

static bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_ir_text(const std::string& path) {
  if (path == "-" || ends_with(path, ".kir")) return true;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  char head[8] = {};
  f.read(head, sizeof head);
  const std::string_view h(head, (size_t)f.gcount());
  return h.substr(0, 6) == "graph " || h.substr(0, 2) == "//";
}

Result<LoadedGraph> load_graph(const std::string& path, const LlamaBuildOptions& opts,
                               const std::string& weights_from) {
  if (is_ir_text(path)) {
    std::string text;
    if (path == "-") text.assign(std::istreambuf_iterator<char>(std::cin), {});
    else {
      KILN_ASSIGN(text, read_file(path));
    }
    KILN_ASSIGN(Graph g, parse_graph(text, path == "-" ? "<stdin>" : path));
    LoadedGraph lg{nullptr, {}, std::move(g)};
    if (!weights_from.empty()) {
      // pack-weights interleaves rows in memory only: a model file holds them as GGUF rows.
      for (const Node* n : lg.graph.nodes_of(Op::Weight))
        if (n->int_attr("packed_rows").value_or(0) > 0)
          return make_error("{}: weight \"{}\" has packed_rows, but {} holds its rows unpacked (pack-weights "
                            "rewrites them in memory only): dump the IR before pack-weights to read it back",
                            path, *n->str_attr("name"), weights_from);
      KILN_ASSIGN(auto f, open_model_file(weights_from));
      lg.gguf = std::shared_ptr<const GgufFile>(std::move(f));
      lg.graph.set_weights(std::make_shared<GgufWeights>(lg.gguf));
    }
    KILN_TRY(verify(lg.graph));
    return lg;
  }
  KILN_ASSIGN(auto f, open_model_file(path));
  std::shared_ptr<const GgufFile> file(std::move(f));
  KILN_ASSIGN(LlamaConfig cfg, read_llama_config(*file));
  KILN_ASSIGN(Graph g, build_llama_graph(file, cfg, opts));
  KILN_TRY(verify(g));
  return LoadedGraph{file, cfg, std::move(g)};
}

Result<ModelText> load_model_text(const std::string& path) {
  KILN_ASSIGN(auto file, open_model_file(path, /*with_tensors=*/false));
  // A GGUF's hyperparameters are checked here, before any compile; a folder's were
  // checked by its translation (which left out the tensors read_llama_config needs).
  if (!is_hf_checkpoint(path)) { KILN_TRY(read_llama_config(*file)); }
  KILN_ASSIGN(VocabData vocab, vocab_from_gguf(*file));
  KILN_ASSIGN(Tokenizer tok, Tokenizer::create(std::move(vocab)));
  std::optional<std::string> chat_template;
  if (const GgufValue* t = file->find("tokenizer.chat_template"); t && t->as_string())
    chat_template = std::string(*t->as_string());
  return ModelText{std::move(tok), std::move(chat_template)};
}

}  // namespace kiln::cli

// tools/kiln/model_loader.cpp — see model_loader.h.
#include "tools/kiln/model_loader.h"

#include "frontend/hf_checkpoint.h"
#include "ir/verifier.h"

namespace kiln::cli {

Result<LoadedGraph> load_graph(const std::string& path, const LlamaBuildOptions& opts,
                               const std::string& weights_from) {
  if (is_ir_text(path)) {
    KILN_ASSIGN(Graph g, read_ir_text(path));
    LoadedGraph lg{nullptr, {}, std::move(g)};
    if (!weights_from.empty()) {
      KILN_ASSIGN(auto f, open_model_file(weights_from));
      lg.gguf = std::shared_ptr<const GgufFile>(std::move(f));
      KILN_TRY(attach_model_weights(lg.graph, input_name(path), lg.gguf, weights_from));
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
  if (is_ir_text(path))  // it holds neither weights nor a tokenizer
    return make_error("{0} is IR text, which holds no weights or tokenizer: compile it with `kiln compile {0} "
                      "--weights MODEL -o DIR`, then run `kiln run MODEL --artifact DIR`", input_name(path));
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

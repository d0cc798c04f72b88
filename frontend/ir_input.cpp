// frontend/ir_input.cpp — see ir_input.h.
#include "frontend/ir_input.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include "frontend/llama.h"
#include "ir/text.h"
#include "support/file.h"

namespace kiln {

bool is_ir_text(const std::string& path) {
  if (path == "-" || (path.size() >= 4 && path.compare(path.size() - 4, 4, ".kir") == 0)) return true;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream f(path, std::ios::binary);
  char head[8] = {};
  f.read(head, sizeof head);
  const std::string_view h(head, (size_t)f.gcount());
  return h.substr(0, 6) == "graph " || h.substr(0, 2) == "//";
}

Result<Graph> read_ir_text(const std::string& path) {
  std::string text;
  if (path == "-") text.assign(std::istreambuf_iterator<char>(std::cin), {});
  else {
    KILN_ASSIGN(text, read_file(path));
  }
  return parse_graph(text, input_name(path));
}

Status attach_model_weights(Graph& g, const std::string& ir_path, std::shared_ptr<const GgufFile> model,
                            const std::string& model_path) {
  for (const Node* n : g.nodes_of(Op::Weight))
    if (n->int_attr("packed_rows").value_or(0) > 0)
      return make_error("{}: weight \"{}\" has packed_rows, but {} holds its rows unpacked (pack-weights "
                        "rewrites them in memory only): dump the IR before pack-weights to read it back",
                        ir_path, *n->str_attr("name"), model_path);
  g.set_weights(std::make_shared<GgufWeights>(std::move(model)));
  return {};
}

}  // namespace kiln

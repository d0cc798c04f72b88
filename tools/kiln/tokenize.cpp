// tools/kiln/tokenize.cpp — `kiln tokenize MODEL`: text to token ids and back with the
// model's own tokenizer, the one `kiln run` and the runtime use (as llama.cpp's
// llama-tokenize does for it, so the two can be compared on the same text).
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "frontend/hf_checkpoint.h"
#include "frontend/tokenizer.h"
#include "tools/kiln/args.h"
#include "tools/kiln/commands.h"

namespace kiln::cli {

static const CommandSpec kTokenizeCommand = {
    .name = "tokenize",
    .help = "usage: kiln tokenize MODEL (--text TEXT | --file FILE | --decode IDS) [options]\n\n"
            "Encodes text with the model's tokenizer and prints the token ids as a list (as\n"
            "llama.cpp's llama-tokenize --ids does), or decodes ids back to text. Without\n"
            "--special and --add-special the text is taken literally and nothing is added.",
    .options = {
        {"text", "TEXT", "the text to encode"},
        {"file", "FILE", "encode the bytes of FILE as they are ('-': standard input)"},
        {"decode", "IDS", "decode token ids instead (comma- or space-separated) and print the text"},
        {"special", "", "text that spells a control token (<|im_start|>, <s>, ...) becomes that token"},
        {"add-special", "", "add BOS / EOS where the vocabulary asks for them"},
        {"pieces", "", "print one token per line: its id and its text (escaped), not a list of ids"},
    },
    .operand = "MODEL",
};

namespace {

// Bytes outside printable ASCII as \n, \t, \xNN, so that every piece is one visible line.
std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20 || c == 0x7F) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  return out;
}

// "12, 7 99" -> ids; an error names the item that is not an id of the vocabulary.
Result<std::vector<int32_t>> parse_ids(const std::string& list, int32_t vocab) {
  std::vector<int32_t> ids;
  std::string item;
  std::istringstream in(list);
  for (std::string word; in >> word;) {
    std::istringstream parts(word);
    while (std::getline(parts, item, ',')) {
      if (item.empty()) continue;
      size_t used = 0;
      long long v = -1;
      try { v = std::stoll(item, &used); } catch (...) { used = 0; }
      if (used != item.size() || v < 0 || v >= vocab)
        return make_error("--decode: '{}' is not a token id of this vocabulary (0..{})", item, vocab - 1);
      ids.push_back(static_cast<int32_t>(v));
    }
  }
  return ids;
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  int status = 0;
  const auto args = parse_command(argc, argv, kTokenizeCommand, status);
  if (!args) return status;
  const int inputs = args->get("text").has_value() + args->get("file").has_value() + args->get("decode").has_value();
  if (inputs != 1) {
    fmt::print(stderr, "kiln tokenize: give exactly one of --text, --file and --decode\n");
    return 2;
  }
  auto fail = [](const std::string& m) { fmt::print(stderr, "kiln tokenize: {}\n", m); return 1; };
  auto model = open_model_file(args->positional()[0], /*with_tensors=*/false);
  if (!model.ok()) return fail(model.error().message);
  auto vocab = vocab_from_gguf(**model);
  if (!vocab.ok()) return fail(vocab.error().message);
  auto tok = Tokenizer::create(std::move(*vocab));
  if (!tok.ok()) return fail(tok.error().message);

  if (auto list = args->get("decode")) {
    auto ids = parse_ids(*list, tok->vocab_size());
    if (!ids.ok()) return fail(ids.error().message);
    fmt::print("{}\n", tok->decode(*ids, /*render_special=*/true, /*remove_special=*/false));
    return 0;
  }
  std::string text;
  if (auto t = args->get("text")) {
    text = *t;
  } else {
    const std::string path = *args->get("file");
    if (path == "-") {
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else {
      std::ifstream in(path, std::ios::binary);
      if (!in) return fail(fmt::format("{}: cannot open", path));
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (in.bad()) return fail(fmt::format("{}: read failed", path));
    }
  }
  const std::vector<int32_t> ids = tok->encode(text, args->flag("add-special"), args->flag("special"));
  if (args->flag("pieces")) {
    for (int32_t id : ids) fmt::print("{}\t{}\n", id, escaped(tok->piece(id)));
  } else {
    fmt::print("[{}]\n", fmt::join(ids, ", "));
  }
  return 0;
}

}  // namespace kiln::cli

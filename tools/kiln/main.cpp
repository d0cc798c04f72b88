// tools/kiln/main.cpp — the `kiln` command: dispatch to subcommands.
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/kiln/commands.h"

namespace {

constexpr const char* kUsage = R"(kiln — ahead-of-time compiler for LLaMA-family models

usage: kiln <command> [options]

commands:
  inspect MODEL            show a model's GGUF metadata, hyperparameters and tensors
  dump MODEL|FILE.kir      lower a model (or read IR text), run passes, print the IR
  compile MODEL -o DIR     compile ahead of time: model.o, libmodel.a, model.h, model.kiln
  run MODEL --prompt TEXT  generate text with the compiled model (or --interpreter)
  chat MODEL               a conversation: one message per line on stdin, replies on stdout;
                           /adapter PATH switches LoRA adapters mid-conversation
  perplexity MODEL --file TEXT
                           perplexity on a text, measured as llama.cpp's llama-perplexity does
  tokenize MODEL --text TEXT
                           text to token ids (or --decode ids to text) with the model's tokenizer

MODEL is a GGUF file or a Hugging Face LLaMA checkpoint folder (config.json,
model.safetensors or its shards, tokenizer.json, tokenizer_config.json).
Run `kiln <command> --help` for the options of each command.
The default model is SmolLM2-135M-Instruct (scripts/setup.sh fetches it).

exit status: 0 done; 1 the work failed (a model, adapter, artifact or text was refused,
or writing failed), with the reason on stderr; 2 the command line is wrong (an unknown
option, a missing argument, a bad value or combination), nothing done.
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  if (cmd == "--version") { std::puts("kiln 0.1.0"); return 0; }
  if (cmd == "inspect") return kiln::cli::cmd_inspect(argc, argv);
  if (cmd == "dump") return kiln::cli::cmd_dump(argc, argv);
  if (cmd == "run") return kiln::cli::cmd_run(argc, argv);
  if (cmd == "chat") return kiln::cli::cmd_chat(argc, argv);
  if (cmd == "compile") return kiln::cli::cmd_compile(argc, argv);
  if (cmd == "perplexity") return kiln::cli::cmd_perplexity(argc, argv);
  if (cmd == "tokenize") return kiln::cli::cmd_tokenize(argc, argv);
  std::fprintf(stderr, "kiln: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}

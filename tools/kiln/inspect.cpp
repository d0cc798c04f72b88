// tools/kiln/inspect.cpp — `kiln inspect MODEL`: metadata, hyperparameters, tensors.
#include <cstdint>
#include <cstdio>
#include <map>

#include <fmt/format.h>

#include "frontend/gguf.h"
#include "frontend/hf_checkpoint.h"
#include "frontend/llama.h"
#include "support/log.h"
#include "tools/kiln/args.h"
#include "tools/kiln/commands.h"

namespace kiln::cli {

static const std::vector<OptionSpec> kInspectOptions = {
    {"tensors", "", "list every tensor (default: a summary by type)"},
    {"all-metadata", "", "print every metadata value whole: all items of arrays (the vocabulary too) and long "
                         "strings such as the chat template (otherwise 8 items and 120 characters)"},
};

int cmd_inspect(int argc, char** argv) {
  const CommandSpec spec = {
    .name = "inspect",
    .help = "usage: kiln inspect MODEL [options]\n\nShows the model's GGUF metadata (for a Hugging Face checkpoint folder: the GGUF\nkiln translates it to), the "
            "LLaMA hyperparameters kiln reads from it, and its tensors.",
    .options = kInspectOptions,
    .operand = "MODEL",
  };
  int status = 0;
  const auto args = parse_command(argc, argv, spec, status);
  if (!args) return status;
  auto f = open_model_file(args->positional()[0]);
  if (!f.ok()) { fmt::print(stderr, "kiln inspect: {}\n", f.error().message); return 1; }
  const GgufFile& g = **f;
  fmt::print("file: {}\nGGUF version {}, {} metadata keys, {} tensors, alignment {}, data at byte {}, {} bytes\n\n",
             g.path(), g.version(), g.metadata().size(), g.tensors().size(), g.alignment(),
             g.data_offset(), g.file_size());
  fmt::print("metadata:\n");
  const bool all = args->flag("all-metadata");
  for (auto& [k, v] : g.metadata())
    fmt::print("  {:<44} {}\n", k, all ? v.to_display(SIZE_MAX, SIZE_MAX) : v.to_display());

  auto cfg = read_llama_config(g);
  if (cfg.ok()) {
    const LlamaConfig& c = *cfg;
    fmt::print("\nhyperparameters ({}):\n  vocab {}  embedding {}  layers {}  heads {}  kv heads {}  "
               "head dim {}\n  feed-forward {}  context {}  rope base {}  rope dims {}  rms eps {}  "
               "output {}\n",
               c.arch, c.n_vocab, c.n_embd, c.n_layer, c.n_head, c.n_head_kv, c.head_dim, c.n_ff,
               c.n_ctx_train, c.rope_theta, c.n_rot, c.rms_eps,
               c.tied_output ? "tied to token_embd" : "separate");
  } else {
    fmt::print("\nhyperparameters: not a model kiln can lower: {}\n", cfg.error().message);
  }

  std::map<std::string, std::pair<size_t, uint64_t>> by_type;
  uint64_t total = 0;
  for (auto& t : g.tensors()) {
    auto& e = by_type[std::string(dtype_name(t.type))];
    e.first++;
    e.second += t.nbytes;
    total += t.nbytes;
  }
  fmt::print("\ntensors: {} ({:.1f} MiB)\n", g.tensors().size(), total / 1048576.0);
  for (auto& [t, e] : by_type)
    fmt::print("  {:<6} {:>5} tensors {:>10.1f} MiB\n", t, e.first, e.second / 1048576.0);
  if (args->flag("tensors")) {
    fmt::print("\n  {:<32} {:<6} {:<16} {:>12} {:>12}\n", "name", "type", "shape", "bytes", "offset");
    for (auto& t : g.tensors())
      fmt::print("  {:<32} {:<6} {:<16} {:>12} {:>12}\n", t.name, dtype_name(t.type),
                 fmt::format("[{}]", fmt::join(logical_shape(t), ",")), t.nbytes, t.offset);
  }
  return 0;
}

}  // namespace kiln::cli

// tools/kiln/dump.cpp — `kiln dump`: lower a model (or read IR text), run passes, print.
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "frontend/llama.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/pass.h"
#include "support/file.h"
#include "support/log.h"
#include "tools/kiln/args.h"
#include "tools/kiln/commands.h"
#include "tools/kiln/model_loader.h"

namespace kiln::cli {

static const std::vector<OptionSpec> kDumpOptions = {
    {"passes", "LIST", "comma-separated passes to run, in order (see --list-passes)"},
    {"list-passes", "", "list the registered passes and exit"},
    {"print-after", "PASS", "print the IR after PASS (repeatable)", true},
    {"print-after-all", "", "print the IR after every pass"},
    {"verify-each", "", "run the verifier after every pass"},
    {"time-passes", "", "report how long each pass took"},
    {"format", "text|dot", "output format (default text; dot for Graphviz)"},
    {"weights", "MODEL", "for IR text input: the GGUF file its weight nodes refer to"},
    {"ctx", "N", "KV cache rows per stream when lowering a model (default 2048)"},
    {"streams", "S", "streams when lowering a model (default 1)"},
    {"kv-type", "T", "KV cache elements when lowering a model: f16 (the default) or f32"},
    {"max-rows", "N", "graph attribute max_rows for freeze-base/plan-memory (default 64; IR text keeps its own "
                      "unless given)"},
    {"threads", "N", "graph attribute max_threads for plan-memory (default 2; IR text keeps its own unless given)"},
    {"all-logits", "", "when lowering: logits for every token, not just the last"},
    {"graph-attr", "NAME=VALUE", "set a graph attribute before the passes, e.g. a pass option such as lora_slots=2, "
                                 "group_size=64 or ds2d_nodes=8 (integer, float or string; repeatable)", true},
    {"o", "FILE", "write the result to FILE (atomically) instead of stdout"},
};

// NAME=VALUE of --graph-attr: an integer, else a float, else a string (quotes optional).
static Result<std::pair<std::string, Attr>> parse_graph_attr(const std::string& a) {
  const size_t eq = a.find('=');
  if (eq == std::string::npos || eq == 0) return make_error("expected NAME=VALUE");
  std::string name = a.substr(0, eq), value = a.substr(eq + 1);
  for (char c : name)
    if (!std::isalnum((unsigned char)c) && c != '_') return make_error("'{}' is not an attribute name", name);
  if (value.empty()) return make_error("no value after '='");
  errno = 0;
  char* end = nullptr;
  const long long i = std::strtoll(value.c_str(), &end, 10);
  if (*end == '\0' && errno == 0) return std::make_pair(name, Attr{(int64_t)i});
  errno = 0;
  const double d = std::strtod(value.c_str(), &end);
  if (*end == '\0' && errno == 0 && std::isfinite(d)) return std::make_pair(name, Attr{d});
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
  return std::make_pair(name, Attr{value});
}

int cmd_dump(int argc, char** argv) {
  const CommandSpec spec = {
    .name = "dump",
    .help = "usage: kiln dump MODEL|FILE.kir|- [options]\n\nLowers a model (a GGUF file or a Hugging Face checkpoint "
            "folder) into kiln's\ngraph IR (or parses IR text), verifies it, runs the requested passes "
            "and prints\nthe result.",
    .options = kDumpOptions,
    .operand = "MODEL or FILE.kir",
    .standalone = {"list-passes"},
  };
  int status = 0;
  const auto args = parse_command(argc, argv, spec, status);
  if (!args) return status;
  if (args->flag("list-passes")) {
    for (auto& p : registered_passes()) fmt::print("  {:<16} {}\n", p.name, p.summary);
    return 0;
  }
  auto ctx = args->get_int("ctx", 2048, 1, 1 << 20);
  if (!ctx.ok()) { fmt::print(stderr, "kiln dump: {}\n", ctx.error().message); return 2; }
  std::string format = args->get("format").value_or("text");
  if (format != "text" && format != "dot") {
    fmt::print(stderr, "kiln dump: --format must be text or dot, got '{}'\n", format);
    return 2;
  }
  auto streams = args->get_int("streams", 1, 1, 256);
  auto rows = args->get_int("max-rows", 64, 1, 4096);
  auto threads = args->get_int("threads", 2, 1, 256);
  for (auto* r : {&streams, &rows, &threads})
    if (!r->ok()) { fmt::print(stderr, "kiln dump: {}\n", r->error().message); return 2; }
  LlamaBuildOptions opts;
  auto kv = kv_cache_type(args->get("kv-type").value_or("f16"));
  if (!kv.ok()) { fmt::print(stderr, "kiln dump: --kv-type: {}\n", kv.error().message); return 2; }
  opts.kv_type = *kv;
  opts.max_context = *ctx;
  opts.max_streams = *streams;
  opts.all_logits = args->flag("all-logits");
  const bool ir_input = is_ir_text(args->positional()[0]);
  if (ir_input)  // IR text is a graph already: lowering's options would be silently ignored
    for (const char* o : {"ctx", "streams", "kv-type", "all-logits"})
      if (args->get(o) || args->flag(o))
        return usage_error("dump", fmt::format("--{} applies when lowering a model; IR text is already a graph", o));
  std::vector<std::pair<std::string, Attr>> graph_attrs;
  for (const std::string& a : args->all("graph-attr")) {
    auto parsed = parse_graph_attr(a);
    if (!parsed.ok()) return usage_error("dump", fmt::format("--graph-attr {}: {}", a, parsed.error().message));
    graph_attrs.push_back(std::move(*parsed));
  }
  auto lg = load_graph(args->positional()[0], opts, args->get("weights").value_or(""));
  if (!lg.ok()) { fmt::print(stderr, "kiln dump: {}\n", lg.error().message); return 1; }

  // The limits compile gives the backend passes; IR text keeps its own unless told.
  if (!ir_input || args->get("max-rows")) lg->graph.set_attr("max_rows", (int64_t)*rows);
  if (!ir_input || args->get("threads")) lg->graph.set_attr("max_threads", (int64_t)*threads);
  for (auto& [name, value] : graph_attrs) lg->graph.set_attr(name, value);
  if (Status v = verify(lg->graph); !v.ok()) { fmt::print(stderr, "kiln dump: {}\n", v.error().message); return 1; }
  PassManagerOptions pm_opts;
  pm_opts.verify_each = args->flag("verify-each");
  pm_opts.print_after_all = args->flag("print-after-all");
  pm_opts.print_after = args->all("print-after");
  pm_opts.time_passes = args->flag("time-passes");
  PassManager pm(pm_opts);
  if (auto p = args->get("passes")) {
    Status s = pm.add_pipeline(*p);
    if (!s.ok()) { fmt::print(stderr, "kiln dump: {}\n", s.error().message); return 2; }
  }
  for (auto& name : pm_opts.print_after) {
    if (!find_pass(name)) { fmt::print(stderr, "kiln dump: --print-after: unknown pass '{}'\n", name); return 2; }
    if (!pm.has(name))
      spdlog::warn("--print-after {}: the pass is not in --passes ({}), so nothing is printed for it", name,
                   pm.pipeline().empty() ? "none given" : pm.pipeline());
  }
  Status s = pm.run(lg->graph);
  if (!s.ok()) { fmt::print(stderr, "kiln dump: {}\n", s.error().message); return 1; }
  // What is printed verifies, as opt's output does, whether or not --verify-each was given.
  if (Status v = verify(lg->graph); !v.ok()) {
    fmt::print(stderr, "kiln dump: after {}: {}\n", pm.pipeline(), v.error().message);
    return 1;
  }

  std::string text = format == "dot" ? graph_to_dot(lg->graph) : print_graph(lg->graph);
  if (auto out = args->get("o")) {
    Status w = write_file_atomic(*out, text);
    if (!w.ok()) { fmt::print(stderr, "kiln dump: {}\n", w.error().message); return 1; }
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
  }
  return 0;
}

}  // namespace kiln::cli

// tools/kiln/compile.cpp — `kiln compile MODEL -o DIR`: the ahead-of-time compile.
#include <fmt/format.h>

#include "codegen/compile.h"
#include "frontend/llama.h"
#include "support/log.h"
#include "tools/kiln/args.h"
#include "tools/kiln/commands.h"
#include "frontend/ir_input.h"

namespace kiln::cli {

static const std::vector<OptionSpec> kCompileOptions = {
    {"o", "DIR", "artifact folder to write (required): model.o, libmodel.a, model.h, model.kiln"},
    {"weights", "MODEL", "with IR text: the GGUF or checkpoint folder it was dumped from, which holds its weights, "
                         "tokenizer and metadata (required)"},
    {"profile", "NAME", "target profile (default host; see --list-profiles)"},
    {"list-profiles", "", "list the target profiles and exit"},
    {"max-rows", "N", "most tokens one step processes, the prefill chunk (default 64; IR text: its max_rows)"},
    {"streams", "S", "streams decoded together in one pass (default 1; not with IR text, whose KV caches are set)"},
    {"ctx", "N", "context length: KV cache rows per stream (default 2048; not with IR text)"},
    {"kv-type", "T", "KV cache elements: f16 (half the memory, the default) or f32 (not with IR text)"},
    {"threads", "N", "most threads the step runs on (default: the profile's)"},
    {"quantize", "TYPE", "quantize float weights: int4 (= q4_1), q4_0, q4_1 or none (default none)"},
    {"group-size", "N", "elements per INT4 scale, a multiple of 32 (default: the profile's group_size)"},
    {"quantize-head", "TYPE", "embedding and LM head with --quantize: q8_0 (default) or int4"},
    {"float-activations", "", "keep activations float in quantized matmuls (exact; slower decode)"},
    {"pack-weights", "MODE", "interleave q4/q8 weights 16 rows at a time for the packed kernels: auto (default: "
                             "where the profile has them, AVX512-VNNI or AArch64 dotprod), on, off"},
    {"lora-slots", "K", "LoRA adapters resident at once, slot 0 the zero adapter (default 0: no LoRA)"},
    {"lora-rank", "R", "the largest adapter rank the model takes (default 16)"},
    {"lora-targets", "LIST", "projections that take adapters (default q,k,v,o,gate,up,down)"},
    {"ds2d-templates", "LIST", "DS2D tree verify entry points: node budgets, e.g. 4,8,16,32 (the default); "
                               "none for no templates. Each must fit --max-rows; S streams use those with "
                               "S*nodes <= max-rows"},
    {"ds2d-topology", "T", "shape of the DS2D templates: deep (default: per-rank acceptance 0.8,0.15,0.05, "
                           "a long chain with branches), tree (0.5,0.2,0.1,...: wide near the root), chain, "
                           "or per-rank acceptance probabilities such as 0.6,0.2,0.1"},
    {"ds2d-draft-layers", "K|LIST", "DS2D self-draft entry: the first K layers, then the final norm and LM "
                                    "head (default: a quarter of the layers; 0: none), or the layers of LIST "
                                    "(e.g. 0-9,20-29: middle layers skipped)"},
    {"symbol", "NAME", "C name of the compiled model in model.h (default kiln_model_code); model.h's macros take "
                       "its name in capitals (--symbol=model_a: MODEL_A, MODEL_A_N_VOCAB, ...; KILN_MODEL... for "
                       "the default), so two models' headers can be included together"},
    {"emit", "KINDS", "also write asm (model.s) and/or llvm (model.ll), comma-separated"},
    {"passes", "LIST", "extra graph passes to run before the backend's own"},
    {"print-after", "PASS", "print the IR after PASS to stderr (repeatable)", true},
    {"print-after-all", "", "print the IR after every pass to stderr"},
    {"verify-each", "", "verify the IR after every pass"},
    {"time-passes", "", "report how long each pass took"},
    {"quiet", "", "print nothing but errors (no progress, no summary)"},
};

int cmd_compile(int argc, char** argv) {
  const CommandSpec spec = {
    .name = "compile",
    .help = "usage: kiln compile MODEL -o DIR [options]\n       kiln compile GRAPH.kir --weights MODEL -o DIR [options]\n\n"
            "MODEL: a GGUF file or a Hugging Face checkpoint folder. GRAPH.kir: graph IR text as\n`kiln dump` "
            "prints it (edited or not), compiled as it stands with MODEL's weights.\nCompiles the model ahead of time for a "
            "target profile. DIR receives model.o and\nlibmodel.a (the model's code), model.h (its C "
            "declaration and sizes) and model.kiln\n(weights, tokenizer, metadata), written atomically.",
    .options = kCompileOptions,
    .operand = "MODEL",
    .required = {{"o", "-o DIR"}},
    .standalone = {"list-profiles"},
  };
  int status = 0;
  const auto args = parse_command(argc, argv, spec, status);
  if (!args) return status;
  if (args->flag("list-profiles")) {
    for (auto& p : profile_names()) {
      auto prof = find_profile(p);
      if (prof.ok()) fmt::print("  {:<12} {} (cpu {}, weight prefetch {})\n", p, prof->triple, prof->cpu,
                               weight_prefetch_name(prof->weight_prefetch));
      else fmt::print("  {:<12} unusable: {}\n", p, prof.error().message);
    }
    return 0;
  }
  auto fail = [](const std::string& m) { fmt::print(stderr, "kiln compile: {}\n", m); return 1; };
  CompileRequest req;
  req.model_path = args->positional()[0];
  const bool ir_input = is_ir_text(req.model_path);
  if (ir_input) {
    // The text's state buffers already fix what these would lower: refused, not ignored.
    for (const char* opt : {"ctx", "streams", "kv-type"})
      if (args->get(opt))
        return usage_error("compile", fmt::format("--{} sizes the KV caches of a model being lowered; {} is IR text, "
                                                  "whose state buffers already have theirs (edit them there)",
                                                  opt, req.model_path));
    if (!args->get("weights"))
      return usage_error("compile", fmt::format("{} is IR text, which names its weights without holding them: give "
                                                "the model it was dumped from with --weights MODEL", req.model_path));
    req.weights_path = *args->get("weights");
  } else if (args->get("weights")) {
    return usage_error("compile", fmt::format("--weights is for IR text input; {} is a model, which holds its own",
                                              req.model_path));
  }
  req.out_dir = *args->get("o");
  req.profile = args->get("profile").value_or("host");
  auto rows = args->get_int("max-rows", 64, 1, 4096);
  auto streams = args->get_int("streams", 1, 1, 256);
  auto ctx = args->get_int("ctx", 2048, 16, 1 << 20);
  auto threads = args->get_int("threads", 0, 0, 256);
  auto lora_slots = args->get_int("lora-slots", 0, 0, 256);
  auto lora_rank = args->get_int("lora-rank", 16, 1, 64);
  for (auto* r : {&rows, &streams, &ctx, &threads, &lora_slots, &lora_rank})
    if (!r->ok()) { fmt::print(stderr, "kiln compile: {}\n", r->error().message); return 2; }
  req.max_rows = ir_input && !args->get("max-rows") ? 0 : *rows;  // 0: the IR text's own
  req.max_streams = *streams;
  req.max_context = *ctx;
  req.kv_type = args->get("kv-type").value_or("f16");
  if (auto t = kv_cache_type(req.kv_type); !t.ok()) {
    fmt::print(stderr, "kiln compile: --kv-type: {}\n", t.error().message);
    return 2;
  }
  req.threads = *threads;
  req.lora_slots = *lora_slots;
  req.lora_rank = *lora_rank;
  if (auto t = args->get("lora-targets")) req.lora_targets = *t;
  req.symbol = args->get("symbol").value_or(kDefaultModelSymbol);
  req.int8_activations = !args->flag("float-activations");
  req.quantize = args->get("quantize").value_or("none");
  req.quantize_head = args->get("quantize-head").value_or("q8_0");
  req.pack_weights = args->get("pack-weights").value_or("auto");
  if (req.pack_weights != "auto" && req.pack_weights != "on" && req.pack_weights != "off") {
    fmt::print(stderr, "kiln compile: --pack-weights takes auto, on or off; got '{}'\n", req.pack_weights);
    return 2;
  }
  if (req.quantize != "none" && req.quantize != "int4" && req.quantize != "q4_0" && req.quantize != "q4_1") {
    fmt::print(stderr, "kiln compile: --quantize takes int4, q4_0, q4_1 or none; got '{}'\n", req.quantize);
    return 2;
  }
  if (req.quantize_head != "q8_0" && req.quantize_head != "int4") {
    fmt::print(stderr, "kiln compile: --quantize-head takes q8_0 or int4; got '{}'\n", req.quantize_head);
    return 2;
  }
  auto group = args->get_int("group-size", 0, 0, 4096);
  if (!group.ok()) { fmt::print(stderr, "kiln compile: {}\n", group.error().message); return 2; }
  if (*group % 32 != 0) { fmt::print(stderr, "kiln compile: --group-size must be a multiple of 32, got {}\n", *group); return 2; }
  req.group_size = *group;
  for (char c : req.symbol)
    if (!std::isalnum((unsigned char)c) && c != '_') {
      fmt::print(stderr, "kiln compile: --symbol must be a C identifier, got '{}'\n", req.symbol);
      return 2;
    }
  if (auto emit = args->get("emit")) {
    for (size_t b = 0; b <= emit->size();) {
      size_t e = emit->find(',', b);
      if (e == std::string::npos) e = emit->size();
      std::string k = emit->substr(b, e - b);
      if (k == "asm") req.emit_assembly = true;
      else if (k == "llvm") req.emit_llvm = true;
      else if (k == "obj" || k.empty()) {}
      else { fmt::print(stderr, "kiln compile: --emit takes obj, asm, llvm; got '{}'\n", k); return 2; }
      b = e + 1;
    }
  }
  req.ds2d_templates = args->get("ds2d-templates").value_or(req.ds2d_templates);
  req.ds2d_topology = args->get("ds2d-topology").value_or(req.ds2d_topology);
  if (auto spec = args->get("ds2d-draft-layers"); spec && spec->find_first_of(",-") != std::string::npos) {
    // A layer list: "0-9,20-29".
    for (size_t b = 0; b <= spec->size();) {
      size_t e = std::min(spec->find(',', b), spec->size());
      std::string item = spec->substr(b, e - b);
      char* end = nullptr;
      long lo = std::strtol(item.c_str(), &end, 10), hi = lo;
      if (*end == '-') hi = std::strtol(end + 1, &end, 10);
      if (item.empty() || *end || lo < 0 || hi < lo || hi > 4096) {
        fmt::print(stderr, "kiln compile: --ds2d-draft-layers: '{}' is not a layer or a range A-B\n", item);
        return 2;
      }
      for (long l = lo; l <= hi; ++l) req.ds2d_draft_keep.push_back(l);
      b = e + 1;
    }
  } else {
    auto draft = args->get_int("ds2d-draft-layers", -1, 0, 1024);
    if (!draft.ok()) { fmt::print(stderr, "kiln compile: {}\n", draft.error().message); return 2; }
    req.ds2d_draft_layers = *draft;
  }
  req.extra_passes = args->get("passes").value_or("");
  req.pass_options.verify_each = args->flag("verify-each");
  req.pass_options.print_after_all = args->flag("print-after-all");
  req.pass_options.print_after = args->all("print-after");
  req.pass_options.time_passes = args->flag("time-passes");
  req.progress = !args->flag("quiet");
  if (Status st = check_compile_request(req); !st.ok()) return usage_error("compile", st.error().message);
  auto sum = compile_model(req);
  if (!sum.ok()) return fail(sum.error().message);
  if (args->flag("quiet")) return 0;
  fmt::print(stderr,
             "[kiln] compiled {} for {} ({}) in {:.1f} s: {} specialised kernels, model.o {:.1f} KiB, weights "
             "{:.1f} MiB, arena {:.1f} MiB, KV {:.1f} MiB, hash {:016x}\n",
             input_name(req.model_path), sum->triple, sum->cpu, sum->seconds, sum->kernels, sum->object_bytes / 1024.0,
             sum->weights_bytes / 1048576.0, sum->arena_bytes / 1048576.0, sum->kv_bytes / 1048576.0,
             sum->model_hash);
  if (!sum->tree_templates.empty() || sum->draft_layers)
    fmt::print(stderr, "[kiln] DS2D: verify templates of {} nodes, a draft of {} layers\n",
               sum->tree_templates.empty() ? "no" : fmt::format("{}", fmt::join(sum->tree_templates, ",")),
               sum->draft_layers);
  return 0;
}

}  // namespace kiln::cli

// codegen/compile.h — the whole compile pipeline, as one short function a tool calls.
//
//   GGUF --lower--> graph --passes--> planned graph --LLVM--> model.o
//                                  \-> frozen weights + tokenizer --> model.kiln
//   artifact DIR: model.o, libmodel.a, model.h, model.kiln (+ model.s, model.ll on request)
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

#include "codegen/codegen.h"
#include "passes/pass.h"
#include "support/result.h"

namespace kiln {

struct CompileRequest {
  std::string model_path;            // GGUF, checkpoint folder, or IR text (frontend/ir_input.h)
  std::string weights_path;          // for IR text: the GGUF or folder holding its weights,
                                     // tokenizer and metadata
  std::string out_dir;               // artifact folder (replaced atomically)
  std::string profile = "host";
  int64_t max_rows = 64;             // tokens per step (prefill chunk); IR text: 0 keeps its own
  int64_t max_streams = 1;           // these three size the KV caches a GGUF is lowered with;
  int64_t max_context = 2048;        // IR text has its caches already
  std::string kv_type = "f16";       // KV cache elements: f16 (half the bytes) or f32
  int64_t threads = 0;               // 0: the profile's
  bool int8_activations = true;      // quantized matmuls round activations to int8 blocks
                                     // where the profile has an integer dot product
  std::string quantize = "none";     // int4|q4_0|q4_1|none: quantize-int4 on float weights
  int64_t group_size = 0;            // elements per INT4 scale; 0: the profile's
  std::string quantize_head = "q8_0";  // embedding/LM head policy: q8_0|int4
  std::string pack_weights = "auto";   // auto|on|off: pack-weights (auto: where codegen has packed kernels)
  int64_t lora_slots = 0;            // LoRA slots K (slot 0 the zero adapter); 0: no LoRA
  int64_t lora_rank = 16;            // the compiled maximum adapter rank R
  std::string lora_targets = "q,k,v,o,gate,up,down";  // modules that take adapters
  std::string symbol = kDefaultModelSymbol;  // codegen/codegen.h
  bool emit_assembly = false;        // also write model.s
  bool emit_llvm = false;            // also write model.ll
  // DS2D (docs/architecture.md): verify entry points for these tree templates (node
  // budgets; "" or "none": none) with this topology (passes/ds2d_unroll.h), and the
  // early-exit draft entry through the first ds2d_draft_layers layers (-1: a quarter of
  // the layers; 0: none). A template must fit max_rows; with S streams the runtime can
  // use the templates of S * n_nodes <= max_rows. (Of the default list, those that fit.)
  std::string ds2d_templates = "4,8,16,32";  // = kDefaultDs2dTemplates
  std::string ds2d_topology = "deep";  // = kDefaultDs2dTopology
  int64_t ds2d_draft_layers = -1;
  std::vector<int64_t> ds2d_draft_keep;  // if set: the draft runs these layers instead
                                         // (middle layers skipped, e.g. 0-9 and 20-29)
  std::string extra_passes;          // run before the backend's own (e.g. "cse,dce")
  PassManagerOptions pass_options;   // dumps, verify-each, timing
  bool progress = true;
};

struct CompileSummary {
  uint64_t model_hash = 0;
  uint64_t weights_bytes = 0, arena_bytes = 0, kv_bytes = 0, object_bytes = 0;
  size_t kernels = 0;
  std::vector<int64_t> tree_templates;  // node counts of the DS2D verify entry points
  int64_t draft_layers = 0;
  double seconds = 0;
  std::string triple, cpu;
};

// The passes every compile runs, in order.
// fuse-dequant-matmul first: codegen has no dequant kernel (quantized matmuls read blocks).
// The SwiGLU and norm fusions pay for decode (qmatmul.c's header has the measurements)
// and give the unfused kernels' bits; they do nothing with --float-activations.
// pack-weights after them (it packs a weight only when all its users have packed kernels),
// controlled by the graph attribute pack_weights that compile_model sets from the profile.
inline constexpr const char* kBackendPipeline =
    "fuse-dequant-matmul,fuse-matmul-swiglu,fuse-rmsnorm-matmul,pack-weights,cse,dce,freeze-base,plan-memory";

// The request's options that need no model: the output folder (see compile_model), the
// profile, the extra passes and --print-after names, the LoRA targets, the DS2D templates
// and topology. compile_model checks them first; `kiln compile` calls it to tell a bad
// command line (exit 2) from a failed compile (exit 1).
Status check_compile_request(const CompileRequest& req);

// Compiles req.model_path into the artifact folder req.out_dir: a new path, an empty
// folder or an earlier artifact's folder (holding model.kiln), which is replaced at once
// when the compile has succeeded; a file or a folder of other things is refused.
Result<CompileSummary> compile_model(const CompileRequest& req);

// The DS2D entry graphs made from the planned step graph `g` (after kBackendPipeline):
// one verify graph per template of `templates` ("4,8,16"; "" or "none": none) with
// `topology` — `g` with the template unrolled into its attention (ds2d-unroll), so it
// shares g's memory plan — and the draft graph through the first `draft_layers` layers
// (0: none): g's first layers, planned again for their arena, with g's KV offsets and
// KV sizes (its state buffers are g's first ones, in the same order).
struct Ds2dGraphs {
  std::vector<Graph> verify;  // ascending template size
  std::optional<Graph> draft;
  int64_t draft_layers = 0;  // layers the draft runs
};
Result<Ds2dGraphs> ds2d_graphs(const Graph& g, std::string_view templates, std::string_view topology,
                               int64_t draft_layers);
// The same with the draft running `draft_layers` (any proper subset; empty: no draft);
// `unroll` are the options of each template's ds2d-unroll run (compile passes its
// --print-after, --verify-each and --time-passes).
Result<Ds2dGraphs> ds2d_graphs(const Graph& g, std::string_view templates, std::string_view topology,
                               const std::vector<int64_t>& draft_layers, const PassManagerOptions& unroll = {});
// Plans a draft graph `d` made from the planned step graph `g` (llama_draft_graph): its
// own arena, g's KV offsets and sizes. `passes_first` (a pass list) run on d before, in
// the same pipeline: d comes in with g's plan, which a change to its values voids.
Status plan_draft(const Graph& g, Graph& d, std::string_view passes_first = {});
// The base entry of a step graph `g` compiled with LoRA slots (after kBackendPipeline): g
// with every LoRA side path removed (add(m, lora(...)) becomes m), the fusions the side
// paths had blocked run again (fuse-rmsnorm-matmul, fuse-matmul-swiglu), and planned as
// plan_draft plans: its own arena, g's weights and KV layout. The runtime runs it for the
// steps in which no row has an adapter, so a LoRA build decodes on the zero adapter as
// fast as a build without LoRA (the same bits: lora_add copies the projection for slot 0,
// and the fused kernels give the unfused ones' bits).
Result<Graph> base_entry_graph(const Graph& g);

}  // namespace kiln

// codegen/compile.cpp — see compile.h. Each step is named; the names show in progress
// output and in --time-passes.
#include "codegen/compile.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <unistd.h>

#include <fmt/format.h>
#include <llvm/Object/ArchiveWriter.h>
#include <llvm/Support/MemoryBuffer.h>

#include "frontend/chat_template.h"
#include "frontend/gguf_names.h"
#include "frontend/hf_checkpoint.h"
#include "frontend/ir_input.h"
#include "frontend/llama.h"
#include "frontend/tokenizer.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/ds2d_unroll.h"
#include "passes/freeze_base.h"
#include "passes/lora_as_input.h"
#include "passes/pass.h"
#include "runtime/hash64.h"
#include "runtime/include/kiln/model_abi.h"
#include "runtime/model_file_writer.h"
#include "support/file.h"
#include "support/log.h"
#include "support/progress.h"

namespace kiln {
namespace fs = std::filesystem;

namespace {

Result<std::string> archive_of(const std::string& object) {
  std::vector<llvm::NewArchiveMember> members;
  members.emplace_back(llvm::MemoryBufferRef(llvm::StringRef(object.data(), object.size()), "model.o"));
  auto buf = llvm::writeArchiveToBuffer(members, /*WriteSymtab=*/true, llvm::object::Archive::K_GNU,
                                        /*Deterministic=*/true, /*Thin=*/false);
  if (!buf) return make_error("cannot build libmodel.a: {}", llvm::toString(buf.takeError()));
  return std::string((*buf)->getBufferStart(), (*buf)->getBufferSize());
}

}  // namespace

Status plan_draft(const Graph& g, Graph& d, std::string_view passes_first) {
  PassManager pm;
  if (!passes_first.empty()) KILN_TRY(pm.add_pipeline(passes_first));
  KILN_TRY(pm.add_pipeline("plan-memory"));
  KILN_TRY(pm.run(d));
  // The draft's state buffers are some of g's: they keep g's offsets and KV sizes.
  std::map<std::string, int64_t, std::less<>> kv;
  for (const Node* s : g.nodes_of(Op::State)) kv[std::string(*s->str_attr("name"))] = *s->int_attr("kv_offset");
  for (Node* s : d.nodes_of(Op::State)) {
    auto it = kv.find(*s->str_attr("name"));
    if (it == kv.end()) return make_error("internal: the draft has a state buffer the step lacks at {}", s->loc());
    s->set_attr("kv_offset", it->second);
  }
  d.set_attr("kv_stream_bytes", *g.int_attr("kv_stream_bytes"));
  d.set_attr("kv_bytes", *g.int_attr("kv_bytes"));
  return verify(d);
}

// Whether a --ds2d-templates value asks for any verify template ("" and "none": no).
static bool wants_templates(std::string_view templates) { return !templates.empty() && templates != "none"; }

Result<Ds2dGraphs> ds2d_graphs(const Graph& g, std::string_view templates, std::string_view topology,
                               int64_t k) {
  std::vector<int64_t> first;
  for (int64_t l = 0; l < k; ++l) first.push_back(l);
  return ds2d_graphs(g, templates, topology, first);
}

Result<Graph> base_entry_graph(const Graph& g) {
  KILN_ASSIGN(Graph b, clone_graph(g));
  for (Node* n : b.nodes()) {
    if (n->op() == Op::Add && n->operands().size() == 2 && n->operand(1)->op() == Op::Lora)
      b.replace_all_uses(n, n->operand(0));
    if (n->op() == Op::MatMulSwiGlu && n->operands().size() == 11) {  // its side paths go too
      Node* f = b.insert_before(n, Op::MatMulSwiGlu, {n->operand(0), n->operand(1), n->operand(2)}, n->type(),
                                n->attrs(), n->loc());
      b.replace_all_uses(n, f);
    }
  }
  KILN_TRY(plan_draft(g, b, "dce,fuse-matmul-swiglu,fuse-rmsnorm-matmul,dce"));
  bool side_paths = !b.nodes_of(Op::Lora).empty();
  for (const Node* n : b.nodes_of(Op::MatMulSwiGlu)) side_paths |= n->operands().size() == 11;
  if (side_paths) return make_error("internal: the base entry graph still has LoRA side paths");
  return b;
}

Result<Ds2dGraphs> ds2d_graphs(const Graph& g, std::string_view templates, std::string_view topology,
                               const std::vector<int64_t>& draft, const PassManagerOptions& unroll) {
  Ds2dGraphs out;
  if (wants_templates(templates)) {
    KILN_ASSIGN(std::vector<int64_t> budgets, ds2d_budgets(templates));
    for (int64_t n : budgets) {
      if (n > *g.int_attr("max_rows"))
        return make_error("--ds2d-templates: a {}-node template does not fit --max-rows {} (a verify step has "
                          "n_streams * n_nodes rows)", n, *g.int_attr("max_rows"));
      KILN_ASSIGN(Graph v, clone_graph(g));
      v.set_attr("ds2d_nodes", n);
      v.set_attr("ds2d_topology", std::string(topology));
      PassManager pm(unroll);
      KILN_TRY(pm.add_pipeline("ds2d-unroll"));
      KILN_TRY(pm.run(v));
      KILN_TRY(verify(v));
      out.verify.push_back(std::move(v));
    }
  }
  if (!draft.empty()) {
    KILN_ASSIGN(Graph d, llama_draft_graph(g, draft));
    KILN_TRY(plan_draft(g, d));
    out.draft_layers = (int64_t)d.nodes_of(Op::Attention).size();
    out.draft = std::move(d);
  }
  return out;
}

namespace {

// What the graph's KV caches hold (its state buffers, [S, C, F] each): a graph lowered
// here has the request's streams, context and type; IR text has its own.
struct KvShape {
  int64_t streams = 0, context = 0;
  std::string type;
};
Result<KvShape> kv_shape(const Graph& g, const CompileRequest& req) {
  KvShape k{req.max_streams, req.max_context, req.kv_type};
  bool first = true;
  for (const Node* n : g.nodes_of(Op::State)) {
    const TensorType& t = n->type();
    if (t.rank() != 3) return make_error("state {} at {} is {}: a KV cache is [streams, context, row]",
                                         n->str_attr("name").value_or("?"), n->loc(), t.str());
    KvShape here{t.shape[0], t.shape[1], std::string(dtype_name(t.dtype))};
    if (!first && (here.streams != k.streams || here.context != k.context || here.type != k.type))
      return make_error("state {} at {} is {}, but the first KV cache holds {} streams of {} {} rows: the "
                        "runtime sizes every cache alike", n->str_attr("name").value_or("?"), n->loc(), t.str(),
                        k.streams, k.context, k.type);
    k = here;
    first = false;
  }
  return k;
}

// model.h. Its macros are named after the symbol (--symbol=model_a: MODEL_A,
// MODEL_A_N_VOCAB, ...), so two models' headers can be included in one file; the default
// symbol keeps the names KILN_MODEL, KILN_MODEL_N_VOCAB, ...
std::string header_of(const CompileRequest& req, const Graph& g, const KvShape& kv, const TargetProfile& p,
                      uint64_t hash, int64_t n_vocab, const Ds2dGraphs& ds2d, const std::string& cpu_features) {
  std::string prefix = req.symbol == kDefaultModelSymbol ? "KILN_MODEL" : req.symbol;
  for (auto& c : prefix) c = (char)std::toupper((unsigned char)c);
  const std::string guard = prefix + "_H_";
  auto attr = [&](const char* k) { return g.int_attr(k).value_or(0); };
  std::string out = fmt::format(
      "/* Generated by kiln from {} for profile '{}' ({}, cpu {}). Do not edit.\n"
      " * Link libmodel.a and libkiln_rt.a; load model.kiln with kiln_model_load({}, path). */\n"
      "#ifndef {}\n#define {}\n\n#include \"kiln/kiln.h\"\n\n"
      "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n"
      "extern const kiln_compiled_model {};\n"
      "#ifdef __cplusplus\n}}\n#endif\n\n"
      "#define {}_SYMBOL {}\n#define {} (&{})\n",
      fs::path(input_name(req.model_path)).filename().string(), p.name, p.triple, p.cpu, prefix, guard, guard, req.symbol, prefix,
      req.symbol, prefix, req.symbol);
  auto def = [&](std::string_view name, const std::string& value) {
    out += fmt::format("#define {}_{} {}\n", prefix, name, value);
  };
  def("HASH", fmt::format("0x{:016x}ull", hash));
  def("N_VOCAB", std::to_string(n_vocab));
  def("MAX_ROWS", std::to_string(attr("max_rows")));
  def("MAX_STREAMS", std::to_string(kv.streams));
  def("MAX_CONTEXT", std::to_string(kv.context));
  def("MAX_THREADS", std::to_string(attr("max_threads")));
  def("WEIGHTS_BYTES", fmt::format("{}ull", attr("weights_bytes")));
  def("ARENA_BYTES", fmt::format("{}ull", attr("arena_bytes")));
  def("KV_BYTES", fmt::format("{}ull", attr("kv_bytes")));
  def("KV_STREAM_BYTES", fmt::format("{}ull", attr("kv_stream_bytes")));
  def("KV_TYPE", fmt::format("\"{}\" /* KV cache elements */", kv.type));
  def("LORA_SLOTS", std::to_string(attr("lora_slots")));
  def("LORA_RANK", std::to_string(attr("lora_rank")));
  // kiln_model_load refuses the model on a CPU without one of these
  def("CPU_FEATURES", fmt::format("\"{}\"", cpu_features));
  // DS2D: the templates' parent arrays (the same as model->tree_templates) and the draft depth.
  def("DS2D_DRAFT_LAYERS", std::to_string(ds2d.draft_layers));
  def("DS2D_TEMPLATES", std::to_string(ds2d.verify.size()));
  for (const Graph& v : ds2d.verify) {
    const DenseData* p = nullptr;
    if (auto it = v.attrs().find("ds2d_parent"); it != v.attrs().end()) p = std::get_if<DenseData>(&it->second);
    if (p)
      out += fmt::format("/* tree of {} nodes, parent[]: {{{}}} */\n", p->i32.size(), fmt::join(p->i32, ", "));
  }
  out += fmt::format("\n#endif /* {} */\n", guard);
  return out;
}

// The artifact folder `dir` names, if kiln may write it there: a new path, an empty folder
// or an earlier artifact (a folder holding model.kiln), which is replaced. Anything else is
// refused: compiling into a file or into a folder of other things would delete them.
Result<fs::path> artifact_target(const std::string& dir) {
  if (dir.empty()) return make_error("the output folder's path is empty");
  std::error_code ec;
  fs::path target = fs::absolute(dir, ec);
  if (ec) return make_error("{}: not a usable output path: {}", dir, ec.message());
  target = target.lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/" and "." name the folder
  if (target == target.root_path()) return make_error("{}: cannot write an artifact over the root folder", dir);
  const fs::file_status st = fs::symlink_status(target, ec);
  if (!fs::exists(st)) return target;
  if (!fs::is_directory(st))
    return make_error("{} exists and is not a folder; the artifact is a folder of files (give a new path)", dir);
  if (!fs::is_empty(target, ec) && !fs::exists(target / "model.kiln", ec))
    return make_error("{} is a folder that holds no kiln artifact (no model.kiln); refusing to replace it "
                      "(give a new path or an earlier artifact's folder)", dir);
  return target;
}

// Writes every file into a fresh folder next to `dir`, then swaps it into place, so a
// failed compile never leaves a partial artifact and readers never see a mix.
Status publish(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& files) {
  KILN_ASSIGN(fs::path target, artifact_target(dir));
  fs::path tmp = target;
  tmp += fmt::format(".tmp.{}", ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return make_error("{}: cannot create: {}", tmp.string(), ec.message());
  for (auto& [name, bytes] : files) {
    Status s = write_file_atomic((tmp / name).string(), bytes);
    if (!s.ok()) {
      fs::remove_all(tmp, ec);
      return s;
    }
  }
  fs::path old = target;
  old += fmt::format(".old.{}", ::getpid());
  bool had = fs::exists(target);
  if (had) {
    fs::rename(target, old, ec);
    if (ec) {
      std::error_code ec2;  // keep ec: it is the reason
      fs::remove_all(tmp, ec2);
      return make_error("{}: cannot replace: {}", target.string(), ec.message());
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    std::error_code ec2;
    if (had) fs::rename(old, target, ec2);
    fs::remove_all(tmp, ec2);
    return make_error("{}: cannot move the new artifact into place: {}", target.string(), ec.message());
  }
  if (had) fs::remove_all(old, ec);
  return Status::success();
}

}  // namespace

Status check_compile_request(const CompileRequest& req) {
  KILN_TRY(artifact_target(req.out_dir));
  KILN_TRY(find_profile(req.profile));
  if (!req.extra_passes.empty()) {
    PassManager pm;
    if (Status s = pm.add_pipeline(req.extra_passes); !s.ok()) return make_error("--passes: {}", s.error().message);
    // Passes compile runs from its own options, which also size the runtime's tables:
    // named in --passes they would run with the pass's defaults instead.
    for (auto [pass, option] : {std::pair{"lora-as-input", "--lora-slots K (and --lora-rank, --lora-targets)"},
                                std::pair{"quantize-int4", "--quantize (and --group-size, --quantize-head)"},
                                std::pair{"ds2d-unroll", "--ds2d-templates (and --ds2d-topology)"}})
      if (pm.has(pass)) return make_error("--passes: {} is run by compile itself; use {}", pass, option);
  }
  for (const std::string& name : req.pass_options.print_after)
    if (!find_pass(name)) return make_error("--print-after: unknown pass '{}'", name);
  if (req.lora_slots > 0)
    if (auto t = parse_lora_targets(req.lora_targets); !t.ok()) return make_error("--lora-targets: {}", t.error().message);
  if (wants_templates(req.ds2d_templates)) {
    KILN_ASSIGN(std::vector<int64_t> budgets, ds2d_budgets(req.ds2d_templates));
    for (int64_t n : budgets) KILN_TRY(ds2d_template(n, req.ds2d_topology));
  }
  return Status::success();
}

Result<CompileSummary> compile_model(const CompileRequest& req) {
  auto t0 = std::chrono::steady_clock::now();
  Progress progress(5, req.progress);
  CompileSummary sum;

  // IR text (frontend/ir_input.h) is compiled as it stands, with the weights, tokenizer
  // and metadata of the model file it names its tensors in (req.weights_path).
  const bool from_ir = is_ir_text(req.model_path);
  const std::string& model_path = from_ir ? req.weights_path : req.model_path;
  const std::string ir_name = input_name(req.model_path);
  progress.stage("reading " + fs::path(model_path).filename().string());
  KILN_TRY(check_compile_request(req));  // refused now, not after the whole compile
  KILN_ASSIGN(TargetProfile profile, find_profile(req.profile));
  if (req.threads > 0) profile.threads = req.threads;
  if (req.max_rows < (from_ir ? 0 : 1) || req.max_rows > 4096) return make_error("max rows {} is outside 1..4096", req.max_rows);
  KILN_ASSIGN(auto file, open_model_file(model_path));
  std::shared_ptr<const GgufFile> gguf(std::move(file));
  KILN_ASSIGN(LlamaConfig cfg, read_llama_config(*gguf));
  KILN_ASSIGN(VocabData vocab, vocab_from_gguf(*gguf));
  KILN_ASSIGN(Tokenizer tok, Tokenizer::create(vocab));  // validates before we spend time
  (void)tok;
  std::string chat_template;
  if (const GgufValue* t = gguf->find(gguf_names::kChatTemplate); t && t->as_string())
    chat_template = std::string(*t->as_string());

  Graph g;
  if (from_ir) {
    progress.stage("reading IR text " + fs::path(ir_name).filename().string());
    KILN_ASSIGN(g, read_ir_text(req.model_path));
    KILN_TRY(attach_model_weights(g, ir_name, gguf, model_path));
    KILN_TRY(verify(g));  // before the checks below read its outputs and caches
    // The text's own max_rows stands unless the request sets it. Not its max_threads: a
    // dump records the host's, and the thread count is the target profile's (--threads).
    if (req.max_rows > 0 || !g.int_attr("max_rows")) g.set_attr("max_rows", req.max_rows > 0 ? req.max_rows : 64);
    if (*g.int_attr("max_rows") > 4096)
      return make_error("{}: max_rows = {} is outside 1..4096 (--max-rows N sets it)", ir_name, *g.int_attr("max_rows"));
    const Node* logits = g.find_output("logits");
    if (!logits) return make_error("{}: no output named \"logits\": the runtime reads a step's logits from it", ir_name);
    if (logits->type().rank() != 2 || logits->type().shape[1] != cfg.n_vocab)
      return make_error("{}: the logits output at {} is {}, but {} has a vocabulary of {} tokens ([?,{}] expected)",
                        ir_name, logits->loc(), logits->type().str(), model_path, cfg.n_vocab, cfg.n_vocab);
    // Text printed after lora-as-input has its adapter inputs already, sized by them.
    if (req.lora_slots > 0 && !g.nodes_of(Op::Lora).empty())
      return make_error("{}: the graph takes LoRA adapters already (lora_slots = {}, lora_rank = {}): its adapter "
                        "inputs fix slots, rank and targets, so --lora-slots cannot change them (leave it out, or "
                        "dump the graph before lora-as-input)", ir_name, g.int_attr("lora_slots").value_or(0),
                        g.int_attr("lora_rank").value_or(0));
    // The layers the graph has, for the metadata and the early-exit draft.
    cfg.n_layer = (int64_t)g.nodes_of(Op::Attention).size();
  } else {
    progress.stage("lowering to graph IR");
    LlamaBuildOptions bopts;
    bopts.max_context = req.max_context;
    KILN_ASSIGN(bopts.kv_type, kv_cache_type(req.kv_type));
    bopts.max_streams = req.max_streams;
    KILN_ASSIGN(g, build_llama_graph(gguf, cfg, bopts));
    g.set_attr("max_rows", req.max_rows);
  }
  const int64_t max_rows = *g.int_attr("max_rows");
  KILN_ASSIGN(const KvShape cache, kv_shape(g, req));
  g.set_attr("max_threads", profile.threads);
  // Int8 activations where the profile has the kernels; elsewhere float ones (the fused
  // rms_matmul and matmul_swiglu exist only in int8 form, so the fusions must not run).
  const bool int8_activations = req.int8_activations && has_int8_kernels(profile);
  if (req.int8_activations && !int8_activations)
    spdlog::warn("profile {} has no int8 matmul kernels (AVX2 on x86-64, dotprod on AArch64): float activations",
                 profile.name);
  g.set_attr("int8_activations", int64_t{int8_activations ? 1 : 0});
  {  // pack-weights: on where codegen has packed kernels (int8 activations only)
    const bool can = int8_activations && has_packed_kernels(profile);
    if (req.pack_weights != "auto" && req.pack_weights != "on" && req.pack_weights != "off")
      return make_error("pack_weights = \"{}\": expected auto, on or off", req.pack_weights);
    if (req.pack_weights == "on" && !can)
      return make_error("--pack-weights=on: profile {} has no packed kernels{} (they need AVX512-VNNI on "
                        "x86-64 or dotprod on AArch64)",
                        profile.name, int8_activations ? "" : " with float activations");
    g.set_attr("pack_weights", int64_t{req.pack_weights != "off" && can ? 16 : 0});
  }
  if (req.quantize != "none") {
    g.set_attr("quantize", req.quantize);
    g.set_attr("group_size", req.group_size > 0 ? req.group_size : profile.group_size);
    g.set_attr("quantize_head", req.quantize_head);
  }
  KILN_TRY(verify(g));

  progress.stage("running passes");
  PassManager pm(req.pass_options);
  if (req.quantize != "none") KILN_TRY(pm.add_pipeline("quantize-int4"));
  if (req.lora_slots > 0) {  // adapters as runtime inputs (passes/lora_as_input.cpp)
    g.set_attr("lora_slots", req.lora_slots);
    g.set_attr("lora_rank", req.lora_rank);
    g.set_attr("lora_targets", req.lora_targets);
    KILN_TRY(pm.add_pipeline("lora-as-input"));
  }
  if (!req.extra_passes.empty()) KILN_TRY(pm.add_pipeline(req.extra_passes));
  KILN_TRY(pm.add_pipeline(kBackendPipeline));
  const bool unrolls = wants_templates(req.ds2d_templates);
  for (const std::string& name : req.pass_options.print_after)
    if (!pm.has(name) && !(name == "ds2d-unroll" && unrolls))  // that one runs on each template's copy
      spdlog::warn("--print-after {}: the pass is not in this compile's pipeline ({}{}); add it with --passes", name,
                   pm.pipeline(), unrolls ? ", then ds2d-unroll per template" : "");
  KILN_TRY(pm.run(g));
  KILN_TRY(verify(g));
  auto* frozen = dynamic_cast<const FrozenWeights*>(g.weights().get());
  if (!frozen) return make_error("internal: freeze-base did not freeze the weights");

  if (req.ds2d_draft_layers >= cfg.n_layer)
    return make_error("--ds2d-draft-layers {}: the model has {} layers (a draft takes 0..{} of them)",
                      req.ds2d_draft_layers, cfg.n_layer, cfg.n_layer - 1);
  std::vector<int64_t> draft = req.ds2d_draft_keep;
  if (draft.empty())
    for (int64_t l = 0; l < (req.ds2d_draft_layers < 0 ? default_draft_layers(cfg.n_layer) : req.ds2d_draft_layers); ++l)
      draft.push_back(l);
  std::string templates = req.ds2d_templates;
  if (templates == kDefaultDs2dTemplates) {  // the defaults that fit max_rows (explicit ones must)
    templates.clear();
    std::vector<int64_t> budgets = ds2d_budgets(kDefaultDs2dTemplates).value();
    for (int64_t n : budgets)
      if (n <= max_rows) templates += (templates.empty() ? "" : ",") + std::to_string(n);
    if (templates.empty()) templates = "none";
  }
  auto ds2d_built = ds2d_graphs(g, templates, req.ds2d_topology, draft, req.pass_options);
  if (!ds2d_built.ok() && from_ir && !draft.empty())
    return make_error("{} (the DS2D draft entry needs the first layers as `kiln dump` lowers them; "
                      "--ds2d-draft-layers 0 compiles without it)", ds2d_built.error().message);
  KILN_ASSIGN(Ds2dGraphs ds2d, std::move(ds2d_built));
  if (ds2d.draft)  // one arena serves every entry point
    g.set_attr("arena_bytes", std::max(*g.int_attr("arena_bytes"), *ds2d.draft->int_attr("arena_bytes")));
  std::optional<Graph> base;  // the step without LoRA side paths, for steps without adapters
  if (!g.nodes_of(Op::Lora).empty()) {
    KILN_ASSIGN(Graph b, base_entry_graph(g));
    g.set_attr("arena_bytes", std::max(*g.int_attr("arena_bytes"), *b.int_attr("arena_bytes")));
    base = std::move(b);
  }
  // The profile's device budget for one model: what a session holds at once.
  if (profile.memory_budget_mb > 0) {
    const double mib = 1048576.0, weights = (double)frozen->blob().size() / mib,
                 kv = (double)g.int_attr("kv_bytes").value_or(0) / mib,
                 arena = (double)g.int_attr("arena_bytes").value_or(0) / mib;
    if (weights + kv + arena > (double)profile.memory_budget_mb)
      return make_error("{}: needs {:.1f} MiB (weights {:.1f}, KV cache {:.1f}, arena {:.1f}), over the "
                        "memory_budget_mb of profile {} ({}); {}, or --quantize for float weights",
                        from_ir ? ir_name : req.model_path, weights + kv + arena, weights, kv, arena, profile.name,
                        profile.memory_budget_mb,
                        from_ir ? "smaller KV caches (the text's state buffers)" : "a shorter --ctx, fewer --streams");
  }

  // The identity shared by model.o and model.kiln: the planned graph and every weight byte.
  std::string ir = print_graph(g);
  for (const Graph& v : ds2d.verify) ir += print_graph(v);
  if (ds2d.draft) ir += print_graph(*ds2d.draft);
  if (base) ir += print_graph(*base);
  uint64_t hash = xxh64(ir.data(), ir.size(), xxh64(frozen->blob().data(), frozen->blob().size()));

  progress.stage(fmt::format("LLVM O3 + codegen for {} ({})", profile.triple, profile.cpu));
  CodegenOptions copts;
  copts.symbol = req.symbol;
  copts.model_hash = hash;
  copts.format_version = kModelFileVersion;
  copts.want_assembly = req.emit_assembly;
  copts.want_llvm_ir = req.emit_llvm;
  for (const Graph& v : ds2d.verify) copts.tree_verify.push_back(&v);
  copts.draft = ds2d.draft ? &*ds2d.draft : nullptr;
  copts.draft_layers = ds2d.draft_layers;
  copts.step_base = base ? &*base : nullptr;
  KILN_ASSIGN(CompiledCode code, compile_graph(g, profile, copts));

  progress.stage("writing " + req.out_dir);
  ModelFileContents mf;
  mf.model_hash = hash;
  mf.name = g.name();
  mf.arch = cfg.arch;
  mf.profile = profile.name;
  mf.target = profile.triple;
  mf.hparams = {cfg.n_vocab, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.n_ff,
                cfg.n_ctx_train, (float)cfg.rope_theta, (float)cfg.rms_eps};
  mf.limits = {max_rows, cache.streams, cache.context};
  mf.vocab = std::move(vocab);
  mf.chat_template = chat_template;
  for (auto& [name, e] : frozen->ordered()) {
    TensorRecord r;
    r.name = name;
    r.dtype = dtype_info(e.dtype).ggml_id;
    for (auto it = e.shape.rbegin(); it != e.shape.rend(); ++it) r.shape.push_back(*it);
    r.offset = e.offset;
    r.nbytes = e.nbytes;
    mf.tensors.push_back(std::move(r));
  }
  mf.weights = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(frozen->blob().data()), frozen->blob().size());
  KILN_ASSIGN(std::string kiln_bytes, model_file_bytes(mf));
  KILN_ASSIGN(std::string archive, archive_of(code.object));
  std::vector<std::pair<std::string, std::string>> files = {
      {"model.o", code.object}, {"libmodel.a", archive},
      {"model.h", header_of(req, g, cache, profile, hash, cfg.n_vocab, ds2d, code.cpu_features)}, {"model.kiln", std::move(kiln_bytes)}};
  if (req.emit_assembly) files.emplace_back("model.s", code.assembly);
  if (req.emit_llvm) files.emplace_back("model.ll", code.llvm_ir);
  KILN_TRY(publish(req.out_dir, files));
  progress.done();

  sum.model_hash = hash;
  sum.weights_bytes = frozen->blob().size();
  sum.arena_bytes = (uint64_t)g.int_attr("arena_bytes").value_or(0);
  sum.kv_bytes = (uint64_t)g.int_attr("kv_bytes").value_or(0);
  sum.object_bytes = code.object.size();
  sum.kernels = code.kernels;
  for (const Graph& v : ds2d.verify) sum.tree_templates.push_back(*v.int_attr("ds2d_nodes"));
  sum.draft_layers = ds2d.draft_layers;
  sum.triple = profile.triple;
  sum.cpu = profile.cpu;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

}  // namespace kiln

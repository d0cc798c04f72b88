// tools/kiln/engine.cpp — see engine.h.
#include "tools/kiln/engine.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>
#include <sys/stat.h>

#include <fmt/format.h>

#include "codegen/compile.h"
#include "codegen/loaded_artifact.h"
#include "frontend/hf_checkpoint.h"
#include "frontend/llama.h"
#include "ir/interpreter.h"
#include "ir/verifier.h"
#include "runtime/hash64.h"
#include "runtime/include/kiln/kiln.h"
#include "support/file.h"

namespace kiln::cli {
namespace fs = std::filesystem;

namespace {

class InterpreterEngine final : public Engine {
 public:
  const char* name() const override { return "interpreter"; }
  Result<std::vector<float>> step(const std::vector<int32_t>& tokens) override {
    KILN_ASSIGN(auto outs, interp_->run(single_stream_inputs(tokens, pos_)));
    pos_ += (int32_t)tokens.size();
    return std::move(outs["logits"].f32);
  }
  Result<std::vector<float>> step_all_logits(const std::vector<int32_t>& tokens) override {
    auto in = single_stream_inputs(tokens, pos_);
    std::vector<int32_t> rows(tokens.size());
    for (size_t i = 0; i < rows.size(); ++i) rows[i] = (int32_t)i;
    in["logit_rows"] = Tensor::i32_of({(int64_t)rows.size()}, rows);
    KILN_ASSIGN(auto outs, interp_->run(in));
    pos_ += (int32_t)tokens.size();
    return std::move(outs["logits"].f32);
  }
  Status reset() override {
    // A fresh interpreter has empty (zeroed) state buffers.
    interp_ = std::make_unique<Interpreter>(*graph_);
    pos_ = 0;
    return {};
  }
  std::shared_ptr<const GgufFile> file_;
  std::unique_ptr<Graph> graph_;
  std::unique_ptr<Interpreter> interp_;
  int32_t pos_ = 0;
};

class CompiledEngine final : public Engine {
 public:
  const char* name() const override { return "compiled"; }
  Result<std::vector<float>> step(const std::vector<int32_t>& tokens) override {
    std::vector<float> logits((size_t)kiln_model_n_vocab(c_->model));
    kiln_status s = tokens.size() == 1
        ? kiln_decode(c_->session, tokens.data(), &stream_, 1, logits.data())
        : kiln_prefill(c_->session, tokens.data(), (int32_t)tokens.size(), stream_, logits.data());
    if (s != KILN_OK) return make_error("{}: {}", kiln_status_str(s), kiln_last_error());
    return logits;
  }
  Result<std::vector<float>> step_all_logits(const std::vector<int32_t>& tokens) override {
    std::vector<float> logits((size_t)kiln_model_n_vocab(c_->model) * tokens.size());
    kiln_status s = kiln_prefill_all_logits(c_->session, tokens.data(), (int32_t)tokens.size(), stream_,
                                            logits.data());
    if (s != KILN_OK) return make_error("{}: {}", kiln_status_str(s), kiln_last_error());
    return logits;
  }
  Status reset() override {
    kiln_status s = kiln_session_reset(c_->session, stream_);
    if (s != KILN_OK) return make_error("{}: {}", kiln_status_str(s), kiln_last_error());
    return {};
  }
  Result<std::string> set_adapter(const std::string& path, float scale) override {
    if (kiln_adapter_load(c_->session, path.c_str(), 1) != KILN_OK ||
        kiln_stream_set_adapter(c_->session, stream_, 1, scale) != KILN_OK)
      return make_error("{}", kiln_last_error());
    kiln_adapter_info info;
    if (kiln_adapter_query(c_->session, 1, &info) != KILN_OK) return make_error("{}", kiln_last_error());
    return std::string(info.name);
  }
  std::unique_ptr<LoadedArtifact> c_;
  int32_t stream_ = 0;
};

// Identifies a compile: the model (path, size, mtime; for a checkpoint folder, those of
// every file in it: rewriting model.safetensors does not touch the folder's own mtime),
// the options, and this kiln.
Result<std::string> cache_key(const EngineOptions& o) {
  struct stat st {};
  if (::stat(o.model_path.c_str(), &st) != 0) return make_error("{}: cannot open", o.model_path);
  std::string model = fmt::format("{}|{}|{}", fs::absolute(o.model_path).string(), st.st_size, st.st_mtime);
  if (S_ISDIR(st.st_mode)) {
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(o.model_path, ec))
      if (::stat(e.path().c_str(), &st) == 0 && S_ISREG(st.st_mode))
        files.push_back(fmt::format("|{}|{}|{}.{}", e.path().filename().string(), st.st_size, st.st_mtim.tv_sec,
                                    st.st_mtim.tv_nsec));
    std::sort(files.begin(), files.end());
    for (const auto& f : files) model += f;
  }
  KILN_ASSIGN(std::string self, read_file("/proc/self/exe"));
  std::string id = fmt::format("{}|{}|{}|{}|{}|{}|{:016x}", model, o.max_context, o.max_streams, o.max_rows,
                               o.threads, o.int8_activations, xxh64(self.data(), self.size()));
  if (o.lora_slots > 0) id += fmt::format("|lora {} {}", o.lora_slots, o.lora_rank);
  if (o.kv_type != "f16") id += "|kv " + o.kv_type;
  if (o.quantize != "none") id += "|quantize " + (o.quantize == "int4" ? std::string("q4_1") : o.quantize);  // one model
  return fmt::format("{:016x}", xxh64(id.data(), id.size()));
}

std::string cache_root() {
  if (const char* c = std::getenv("KILN_CACHE")) return std::string(c) + "/compiled";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.cache/kiln/compiled";
}

}  // namespace

Result<std::unique_ptr<Engine>> make_interpreter_engine(const EngineOptions& o) {
  auto e = std::make_unique<InterpreterEngine>();
  KILN_ASSIGN(auto f, open_model_file(o.model_path));
  e->file_ = std::shared_ptr<const GgufFile>(std::move(f));
  KILN_ASSIGN(LlamaConfig cfg, read_llama_config(*e->file_));
  LlamaBuildOptions bo;
  bo.max_context = o.max_context;
  KILN_ASSIGN(bo.kv_type, kv_cache_type(o.kv_type));
  KILN_ASSIGN(Graph g, build_llama_graph(e->file_, cfg, bo));
  KILN_TRY(verify(g));
  e->graph_ = std::make_unique<Graph>(std::move(g));
  e->interp_ = std::make_unique<Interpreter>(*e->graph_);
  return std::unique_ptr<Engine>(std::move(e));
}

Result<int64_t> artifact_max_context(const std::string& dir) {
  const std::string header = (fs::path(dir) / "model.h").string();
  auto text = read_file(header);
  if (!text.ok()) return make_error("{}: not a `kiln compile` output folder ({})", dir, text.error().message);
  const std::string key = "#define KILN_MODEL_MAX_CONTEXT ";
  const size_t at = text->find(key);
  long long n = 0;
  if (at == std::string::npos || std::sscanf(text->c_str() + at + key.size(), "%lld", &n) != 1 || n < 1)
    return make_error("{}: no KILN_MODEL_MAX_CONTEXT (not a `kiln compile` output of this kiln?)", header);
  return (int64_t)n;
}

Result<std::unique_ptr<LoadedArtifact>> open_compiled_session(const EngineOptions& o) {
  std::string dir = o.artifact_dir;
  if (dir.empty()) {
    KILN_ASSIGN(std::string key, cache_key(o));
    dir = cache_root() + "/" + key;
    if (!fs::exists(dir + "/model.o") || !fs::exists(dir + "/model.kiln")) {
      std::error_code ec;
      fs::create_directories(cache_root(), ec);
      CompileRequest req;
      req.model_path = o.model_path;
      req.out_dir = dir;
      req.max_context = o.max_context;
      req.kv_type = o.kv_type;
      req.max_streams = o.max_streams;
      req.max_rows = o.max_rows;
      req.threads = o.threads;
      req.int8_activations = o.int8_activations;
      req.quantize = o.quantize;
      req.lora_slots = o.lora_slots;
      req.lora_rank = o.lora_rank;
      req.progress = o.progress;
      KILN_ASSIGN(CompileSummary sum, compile_model(req));
      (void)sum;
    }
  }
  KILN_ASSIGN(auto a, load_artifact(dir, (int)o.threads));
  if (kiln_model_max_context(a->model) < o.max_context)
    return make_error("{}: compiled for a context of {} tokens, {} needed (compile with --ctx {})", dir,
                      kiln_model_max_context(a->model), o.max_context, o.max_context);
  if (kiln_model_max_streams(a->model) < o.max_streams)
    return make_error("{}: compiled for {} streams, {} asked for (compile with --streams {})", dir,
                      kiln_model_max_streams(a->model), o.max_streams, o.max_streams);
  const int64_t slots = o.lora_slots_needed >= 0 ? o.lora_slots_needed : o.lora_slots;
  if (kiln_model_lora_slots(a->model) < slots)
    return make_error("{}: compiled with {} LoRA slots, {} needed (compile with --lora-slots {})", dir,
                      kiln_model_lora_slots(a->model), slots, slots);
  return a;
}

Result<std::unique_ptr<Engine>> make_compiled_engine(const EngineOptions& o) {
  auto e = std::make_unique<CompiledEngine>();
  KILN_ASSIGN(e->c_, open_compiled_session(o));
  return std::unique_ptr<Engine>(std::move(e));
}

}  // namespace kiln::cli

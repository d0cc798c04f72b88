// tools/kiln/run_options.cpp — see run_options.h.
#include "tools/kiln/run_options.h"

#include <cfloat>

#include "frontend/llama.h"
#include "support/file.h"
#include "support/log.h"

namespace kiln::cli {

std::vector<OptionSpec> sampling_option_specs() {
  return {
      {"temp", "T", "sampling temperature; 0 = greedy (default 0)"},
      {"top-k", "K", "sample from the K most likely tokens; 0 = all (default 40)"},
      {"top-p", "P", "nucleus sampling threshold (default 0.95)"},
      {"seed", "S", "random seed for sampling (default 0)"},
  };
}

Result<SamplerParams> parse_sampling_options(const Args& args) {
  KILN_ASSIGN(double temp, args.get_float("temp", 0.0, 0.0, 100.0));
  KILN_ASSIGN(long long top_k, args.get_int("top-k", 40, 0, 1 << 30));
  KILN_ASSIGN(double top_p, args.get_float("top-p", 0.95, 0.0, 1.0));
  KILN_ASSIGN(long long seed, args.get_int("seed", 0, 0, (1ll << 62)));
  // --top-p 0 keeps the likeliest token alone; the C sampler (kiln_sampler_init, which the
  // multi-stream, DS2D and chat paths use) takes (0, 1], and its smallest value does the same.
  return SamplerParams{(float)temp, (int32_t)top_k, top_p > 0.0 ? (float)top_p : FLT_MIN, (uint64_t)seed};
}

std::vector<OptionSpec> engine_option_specs() {
  return {
      {"ctx", "N", "context size: KV cache rows (default 2048)"},
      {"kv-type", "T", "KV cache elements: f16 (half the memory, the default) or f32"},
      {"artifact", "DIR", "use this `kiln compile` output instead of compiling (cached) now"},
      {"threads", "N", "threads for the compiled engine (default 2)"},
      {"float-activations", "", "compile with float activations in quantized matmuls (exact, slower)"},
      {"quantize", "TYPE", "compile float weights (F32/F16/BF16 models) quantized: int4 (= q4_1), q4_0, q4_1 or "
                           "none (default none)"},
  };
}

Result<EngineOptions> parse_engine_options(const Args& args, const std::string& model_path) {
  EngineOptions eo;
  eo.model_path = model_path;
  KILN_ASSIGN(eo.max_context, args.get_int("ctx", 2048, 16, 1 << 20));
  KILN_ASSIGN(eo.threads, args.get_int("threads", 2, 1, 256));
  eo.artifact_dir = args.get("artifact").value_or("");
  eo.kv_type = args.get("kv-type").value_or("f16");
  if (auto t = kv_cache_type(eo.kv_type); !t.ok()) return make_error("--kv-type: {}", t.error().message);
  eo.int8_activations = !args.flag("float-activations");
  eo.quantize = args.get("quantize").value_or("none");
  if (!eo.artifact_dir.empty()) {
    KILN_TRY(refuse_compile_options_with_artifact(args));
    KILN_ASSIGN(const int64_t compiled_ctx, artifact_max_context(eo.artifact_dir));
    if (args.get("ctx") && eo.max_context != compiled_ctx)
      return make_error("--ctx {}: {} was compiled with --ctx {} (leave --ctx out, or compile again with it)",
                        eo.max_context, eo.artifact_dir, compiled_ctx);
    eo.max_context = compiled_ctx;
  }
  return eo;
}

std::string context_hint(const EngineOptions& eo) {
  return eo.artifact_dir.empty() ? "raise --ctx" : eo.artifact_dir + " was compiled so: compile it with a larger --ctx";
}

Status refuse_compile_options_with_artifact(const Args& args) {
  for (const char* o : {"kv-type", "quantize"})
    if (args.get(o))
      return make_error("--{}: decided when the artifact was compiled; leave it out with --artifact "
                        "(or give it to `kiln compile`)", o);
  if (args.flag("float-activations"))
    return make_error("--float-activations: decided when the artifact was compiled; leave it out with "
                      "--artifact (or give it to `kiln compile`)");
  return Status::success();
}

// The DS2D controller's parameters from --ds2d-template, --ds2d-no-early-exit, --ds2d-recycle.
static Result<kiln_ds2d_params> ds2d_params(const Args& args) {
  kiln_ds2d_params dp = kiln_ds2d_default_params();
  auto tmpl = args.get_int("ds2d-template", -1, 0, 1 << 20);
  if (!tmpl.ok()) return tmpl.error();
  dp.template_index = (int32_t)*tmpl;
  dp.early_exit = args.flag("ds2d-no-early-exit") ? 0 : 1;
  dp.recycle = args.flag("ds2d-recycle") ? 1 : 0;
  return dp;
}

Result<Ds2dPtr> make_ds2d(const Args& args, kiln_session* sess, const Tokenizer& tok) {
  KILN_ASSIGN(kiln_ds2d_params dp, ds2d_params(args));
  kiln_ds2d* d = nullptr;
  if (kiln_ds2d_init(sess, &dp, &d) != KILN_OK) return make_error("{}", kiln_last_error());
  Ds2dPtr ds(d, kiln_ds2d_free);
  auto path = args.get("ds2d-corpus");
  if (!path) return ds;
  auto all = read_file(*path);
  if (!all.ok()) return make_error("--ds2d-corpus: {}", all.error().message);
  const auto texts = split_texts(*all);
  if (texts.empty()) return make_error("--ds2d-corpus {}: no text in it", *path);
  for (const std::string& t : texts) {
    const std::vector<int32_t> ids = tok.encode(t, /*add_special=*/false, /*parse_special=*/false);
    if (kiln_ds2d_add_corpus(d, ids.data(), (int32_t)ids.size()) != KILN_OK)
      return make_error("--ds2d-corpus {}: {}", *path, kiln_last_error());
  }
  kiln_ds2d_stats stats{};
  if (kiln_ds2d_get_stats(d, &stats) == KILN_OK)
    spdlog::info("DS2D corpus: {} texts, {} tokens from {}", texts.size(), stats.corpus_tokens, *path);
  return ds;
}

}  // namespace kiln::cli

// tools/kiln/run_options.h — the options `kiln run` and `kiln chat` share: sampling, how
// the model is compiled and run (context, KV type, threads, artifact, quantization), and
// the DS2D controller's.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "frontend/tokenizer.h"
#include "runtime/include/kiln/kiln.h"
#include "runtime/sampler.h"
#include "support/result.h"
#include "tools/kiln/args.h"
#include "tools/kiln/engine.h"

namespace kiln::cli {

// --temp, --top-k, --top-p, --seed.
std::vector<OptionSpec> sampling_option_specs();
Result<SamplerParams> parse_sampling_options(const Args& args);

// --ctx, --kv-type, --artifact, --threads, --float-activations, --quantize. With --artifact
// the context is the artifact's (--ctx, if given, must be the same) and the options fixed at
// compile time are refused rather than ignored.
std::vector<OptionSpec> engine_option_specs();
Result<EngineOptions> parse_engine_options(const Args& args, const std::string& model_path);

// What to do about a context too small: "raise --ctx", or with --artifact, compile it so.
std::string context_hint(const EngineOptions& eo);

// With --artifact: an error naming --kv-type, --float-activations or --quantize if given
// (how the artifact was compiled decides them).
Status refuse_compile_options_with_artifact(const Args& args);

using Ds2dPtr = std::unique_ptr<kiln_ds2d, void (*)(kiln_ds2d*)>;

// The DS2D controller over `sess` for --ds2d: its parameters from --ds2d-template,
// --ds2d-no-early-exit and --ds2d-recycle (where the command has them), and the texts of
// --ds2d-corpus FILE (separated by lines "===", tokenized with `tok`) in its corpus.
Result<Ds2dPtr> make_ds2d(const Args& args, kiln_session* sess, const Tokenizer& tok);

}  // namespace kiln::cli

// tools/kiln/perplexity.cpp — `kiln perplexity MODEL --file TEXT`: perplexity of a model on
// a text, measured the way llama.cpp's llama-perplexity measures it, so the two numbers
// can be compared on the same GGUF:
//
//   tokens = tokenize(whole file, add_special = true)          (BOS if the vocab adds one)
//   chunk i = tokens[i*ctx, (i+1)*ctx)                          (whole chunks only)
//   if the vocab adds BOS: the chunk's first token is replaced by BOS
//   the chunk runs from an empty KV cache, logits for every row;
//   rows first = ctx/2 .. ctx-2 score the next token:  nll += -log softmax(logits[j])[tok[j+1]]
//   PPL = exp(sum nll / count), count = (ctx - ctx/2 - 1) per chunk
//
// The first half of each chunk is context only (so every scored token sees at least
// ctx/2 tokens before it). Runs the compiled code as `kiln run` does (the same cache), or
// the reference interpreter with --interpreter.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "frontend/llama.h"
#include "frontend/tokenizer.h"
#include "support/file.h"
#include "support/log.h"
#include "tools/kiln/args.h"
#include "tools/kiln/commands.h"
#include "tools/kiln/engine.h"
#include "tools/kiln/model_loader.h"
#include "tools/kiln/run_options.h"

namespace kiln::cli {

static const std::vector<OptionSpec> kPerplexityOptions = {
    {"file", "TEXT", "the text to score (required), e.g. the King James Bible (scripts/setup.sh)"},
    {"ctx", "N", "tokens per chunk, as llama-perplexity's -c (default 512)"},
    {"kv-type", "T", "KV cache elements: f16 (half the memory, the default) or f32"},
    {"chunks", "N", "score the first N chunks only (default: every whole chunk of the file)"},
    {"batch", "N", "tokens per compiled step (default 128; at most --ctx)"},
    {"threads", "N", "threads for the compiled engine (default 2)"},
    {"float-activations", "", "compile with float activations in quantized matmuls (exact, slower)"},
    {"quantize", "TYPE", "compile float weights (F32/F16/BF16 models) quantized: int4 (= q4_1), q4_0, q4_1 or none (default none)"},
    {"interpreter", "", "run through the reference interpreter instead of compiled code (slow)"},
    {"artifact", "DIR", "use this `kiln compile` output (compiled with a --ctx at least this --ctx)"},
    {"json", "", "print the result as one JSON object on stdout"},
    {"quiet", "", "no per-chunk progress on stderr"},
};

namespace {

// -log p(target) under softmax(logits), in double as llama-perplexity does (max subtracted).
double nll_of(const float* logits, size_t n_vocab, int32_t target) {
  float mx = logits[0];
  for (size_t i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (size_t i = 0; i < n_vocab; ++i) sum += std::exp((double)logits[i] - mx);
  return -((double)logits[target] - mx - std::log(sum));
}

}  // namespace

int cmd_perplexity(int argc, char** argv) {
  const CommandSpec spec = {
    .name = "perplexity",
    .help = "usage: kiln perplexity MODEL --file TEXT [options]\n\nPerplexity of the model on a "
            "text, computed as llama.cpp's llama-perplexity does: chunks of --ctx tokens, each from\n"
            "an empty context (first token BOS when the vocabulary adds one), the second half of each\n"
            "chunk scored. Progress goes to stderr; the result to stdout.",
    .options = kPerplexityOptions,
    .operand = "MODEL",
    .required = {{"file", "--file TEXT"}},
  };
  int status = 0;
  const auto args = parse_command(argc, argv, spec, status);
  if (!args) return status;
  auto fail = [](const std::string& m) { fmt::print(stderr, "kiln perplexity: {}\n", m); return 1; };
  auto usage = [](const std::string& m) { return usage_error("perplexity", m); };
  auto ctx = args->get_int("ctx", 512, 8, 1 << 20);
  auto chunks = args->get_int("chunks", -1, 1, 1 << 30);
  auto threads = args->get_int("threads", 2, 1, 256);
  if (!ctx.ok()) return usage(ctx.error().message);
  if (!chunks.ok()) return usage(chunks.error().message);
  if (!threads.ok()) return usage(threads.error().message);
  auto batch = args->get_int("batch", std::min<long long>(128, *ctx), 1, *ctx);
  if (!batch.ok()) return usage(batch.error().message);
  if (args->get("artifact"))
    if (auto st = refuse_compile_options_with_artifact(*args); !st.ok()) return usage(st.error().message);
  const bool quiet = args->flag("quiet");

  const std::string model_path = args->positional()[0];
  const std::string text_path = *args->get("file");
  auto t_start = std::chrono::steady_clock::now();
  auto text_parts = load_model_text(model_path);
  if (!text_parts.ok()) return fail(text_parts.error().message);
  const Tokenizer* tok = &text_parts->tokenizer;
  auto text = read_file(text_path);
  if (!text.ok()) return fail(text.error().message);

  std::vector<int32_t> tokens = tok->encode(*text, true, false);
  const int64_t n_ctx = *ctx;
  const int64_t n_max = (int64_t)tokens.size() / n_ctx;
  if (n_max < 1)
    return fail(fmt::format("{}: {} tokens, fewer than one chunk of --ctx {} (use a longer text)", text_path,
                            tokens.size(), n_ctx));
  const int64_t n_chunk = *chunks < 0 ? n_max : std::min<int64_t>(*chunks, n_max);
  const int64_t first = n_ctx / 2;
  const bool add_bos = tok->add_bos();
  if (!quiet)
    fmt::print(stderr, "[perplexity] {}: {} tokens, {} chunks of {} available, scoring {} (tokens {}..{} of each)\n",
               text_path, tokens.size(), n_max, n_ctx, n_chunk, first + 1, n_ctx - 1);

  EngineOptions eo;
  eo.model_path = model_path;
  eo.artifact_dir = args->get("artifact").value_or("");
  eo.max_context = n_ctx;
  eo.kv_type = args->get("kv-type").value_or("f16");
  if (auto t = kv_cache_type(eo.kv_type); !t.ok()) return fail("--kv-type: " + t.error().message);
  eo.max_rows = *batch;
  eo.threads = *threads;
  eo.int8_activations = !args->flag("float-activations");
  eo.quantize = args->get("quantize").value_or("none");
  eo.progress = !quiet;
  auto engine = args->flag("interpreter") ? make_interpreter_engine(eo) : make_compiled_engine(eo);
  if (!engine.ok()) return fail(engine.error().message);
  const size_t n_vocab = (size_t)tok->vocab_size();

  auto t0 = std::chrono::steady_clock::now();
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  double nll = 0, nll2 = 0;
  int64_t count = 0;
  for (int64_t c = 0; c < n_chunk; ++c) {
    std::vector<int32_t> chunk(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    if (add_bos) chunk[0] = tok->bos();
    if (auto st = (*engine)->reset(); !st.ok()) return fail(st.error().message);
    auto logits = (*engine)->step_all_logits(chunk);
    if (!logits.ok()) return fail(logits.error().message);
    const size_t row_width = logits->size() / (size_t)n_ctx;  // n_vocab, or the model's padded width
    if (row_width < n_vocab || logits->size() % (size_t)n_ctx)
      return fail(fmt::format("the engine returned {} logits for {} rows of {} tokens", logits->size(), n_ctx,
                              n_vocab));
    for (int64_t j = first; j + 1 < n_ctx; ++j) {
      // The target is the original next token (only position 0 was replaced by BOS).
      // Softmax over the tokenizer's vocabulary, as llama-perplexity does (its n_vocab).
      double v = nll_of(logits->data() + (size_t)j * row_width, n_vocab, tokens[(size_t)(c * n_ctx + j + 1)]);
      if (!std::isfinite(v)) return fail(fmt::format("chunk {} row {}: non-finite logits", c + 1, j));
      nll += v;
      nll2 += v * v;
      ++count;
    }
    if (!quiet) {
      double el = secs(t0, std::chrono::steady_clock::now());
      fmt::print(stderr, "[perplexity] chunk {}/{}: PPL so far {:.4f} | {:.2f} s/chunk, {:.0f} s left\n", c + 1,
                 n_chunk, std::exp(nll / (double)count), el / (double)(c + 1),
                 el / (double)(c + 1) * (double)(n_chunk - c - 1));
    }
  }
  const double seconds = secs(t0, std::chrono::steady_clock::now());
  const double mean = nll / (double)count;
  const double ppl = std::exp(mean);
  // Standard error of the mean NLL, carried to the PPL (as llama-perplexity reports it).
  const double var = std::max(0.0, nll2 / (double)count - mean * mean);
  const double err = count > 1 ? ppl * std::sqrt(var / (double)(count - 1)) : 0.0;
  if (args->flag("json")) {
    fmt::print("{{\"engine\": \"kiln\", \"backend\": \"{}\", \"model\": \"{}\", \"file\": \"{}\", \"ctx\": {}, "
               "\"chunks\": {}, \"tokens_scored\": {}, \"add_bos\": {}, \"int8_activations\": {}, \"kv_type\": \"{}\", "
               "\"ppl\": {:.6f}, \"ppl_stderr\": {:.6f}, \"seconds\": {:.2f}, \"load_seconds\": {:.2f}}}\n",
               (*engine)->name(), model_path, text_path, n_ctx, n_chunk, count, add_bos, eo.int8_activations, eo.kv_type,
               ppl, err, seconds, secs(t_start, t0));
  } else {
    fmt::print("PPL = {:.4f} +/- {:.4f}  ({} chunks of {} tokens, {} tokens scored, {} engine, {:.1f} s)\n", ppl, err,
               n_chunk, n_ctx, count, (*engine)->name(), seconds);
  }
  return 0;
}

}  // namespace kiln::cli

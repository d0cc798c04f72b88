// bench/kiln_bench.cpp — prefill and decode throughput of a model compiled by kiln.
//
// Compiles MODEL (max_rows = the prefill length, so a prompt is one step, as llama-bench
// does with one batch), loads it through the JIT and libkiln_rt like `kiln run`, then
// times, like llama-bench's pp/tg tests: prefill of P tokens from an empty context, and
// decode of G tokens one at a time from an empty context. Prints one JSON object.
//
// It also prints what a decode token has to read from memory, for the roofline
// (bench/summarize_backend.py divides by bench/bandwidth's read bandwidth):
//   weight bytes touched = every weight of the model once, except the token embedding
//     table when the LM head has its own matrix (then one row of it is read); kiln's from
//     its weight blob, llama.cpp's from the GGUF tensors;
//   KV bytes = the K and V rows of the positions before the token, averaged over the G
//     decode steps (kiln: its KV layout per position; llama.cpp: f16 K and V, its default).
//
// usage: kiln_bench MODEL [--threads N] [--prompt P] [--gen G] [--reps R] [--ctx C] [--passes LIST]
//                         [--pack-weights auto|on|off] [--profile P]
// --profile P compiles for target profile P (a name in profiles/ or a .json path; default
// host), for example a copy of host.json with another weight_prefetch.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "codegen/compile.h"
#include "codegen/loaded_artifact.h"
#include "frontend/gguf.h"
#include "frontend/hf_checkpoint.h"
#include "frontend/llama.h"
#include "runtime/include/kiln/kiln.h"
#include "support/file.h"
#include "bench/bench_util.h"

using namespace kiln;
using namespace kiln::bench;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: kiln_bench MODEL [--threads N] [--prompt P] [--gen G] [--reps R] [--ctx C] [--passes LIST] "
                 "[--pack-weights auto|on|off] [--profile P]\n");
    return 2;
  }
  std::string model = argv[1];
  int threads = 2, prompt = 128, gen = 64, reps = 3, ctx = 512;
  std::string profile = "host";
  std::string passes;  // extra graph passes before the backend's (e.g. fuse-matmul-swiglu)
  std::string pack = "auto";  // pack-weights (kiln compile --pack-weights)
  for (int i = 2; i + 1 < argc; i += 2) {
    int v = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) threads = v;
    else if (!std::strcmp(argv[i], "--prompt")) prompt = v;
    else if (!std::strcmp(argv[i], "--gen")) gen = v;
    else if (!std::strcmp(argv[i], "--reps")) reps = v;
    else if (!std::strcmp(argv[i], "--ctx")) ctx = v;
    else if (!std::strcmp(argv[i], "--passes")) passes = argv[i + 1];
    else if (!std::strcmp(argv[i], "--pack-weights")) pack = argv[i + 1];
    else if (!std::strcmp(argv[i], "--profile")) profile = argv[i + 1];
    else { std::fprintf(stderr, "kiln_bench: unknown option %s\n", argv[i]); return 2; }
  }
  CompileRequest req;
  req.model_path = model;
  req.out_dir = (std::filesystem::temp_directory_path() / fmt::format("kiln-bench-{}", ::getpid())).string();
  req.max_rows = prompt;
  req.max_context = ctx;
  req.threads = threads;
  req.progress = false;
  req.extra_passes = passes;
  req.pack_weights = pack;
  req.profile = profile;
  auto sum = compile_model(req);
  if (!sum.ok()) { std::fprintf(stderr, "kiln_bench: %s\n", sum.error().message.c_str()); return 1; }
  auto art = load_artifact(req.out_dir, threads);
  if (!art.ok()) { std::fprintf(stderr, "%s\n", art.error().message.c_str()); return 1; }
  kiln_model* m = (*art)->model;
  kiln_session* s = (*art)->session;
  std::vector<float> logits((size_t)kiln_model_n_vocab(m));
  std::vector<int32_t> toks((size_t)prompt);
  for (int i = 0; i < prompt; ++i) toks[(size_t)i] = 1000 + (i * 37) % 20000;
  int32_t stream = 0;

  std::vector<double> pp, tg;
  for (int r = 0; r < reps + 1; ++r) {  // the first round warms up and is dropped
    kiln_session_reset(s, KILN_ALL_STREAMS);
    auto t0 = clk::now();
    kiln_prefill(s, toks.data(), prompt, 0, logits.data());
    auto t1 = clk::now();
    kiln_session_reset(s, KILN_ALL_STREAMS);
    auto t2 = clk::now();
    for (int i = 0; i < gen; ++i) {
      int32_t t = toks[(size_t)(i % prompt)];
      if (kiln_decode(s, &t, &stream, 1, logits.data()) != KILN_OK) {
        std::fprintf(stderr, "kiln_bench: %s\n", kiln_last_error());
        return 1;
      }
    }
    auto t3 = clk::now();
    if (r == 0) continue;
    pp.push_back(prompt / secs(t0, t1));
    tg.push_back(gen / secs(t2, t3));
  }
  // Bytes one decode token reads (see the header).
  auto gguf = open_model_file(model);
  if (!gguf.ok()) { std::fprintf(stderr, "kiln_bench: %s\n", gguf.error().message.c_str()); return 1; }
  auto cfg = read_llama_config(**gguf);
  if (!cfg.ok()) { std::fprintf(stderr, "kiln_bench: %s\n", cfg.error().message.c_str()); return 1; }
  uint64_t gguf_weights = 0, embd_bytes = 0;
  for (const GgufTensor& t : (*gguf)->tensors()) {
    gguf_weights += t.nbytes;
    if (t.name == "token_embd.weight") embd_bytes = t.nbytes;
  }
  const bool tied = (*gguf)->tensor("output.weight") == nullptr;
  // kiln's blob holds the table in its own layout; scale the GGUF share (same bits per weight).
  const uint64_t embd_kiln = gguf_weights ? (uint64_t)((double)embd_bytes / gguf_weights * sum->weights_bytes) : 0;
  const uint64_t kiln_touched = sum->weights_bytes - (tied ? 0 : embd_kiln);
  const uint64_t llama_touched = gguf_weights - (tied ? 0 : embd_bytes);
  const double avg_pos = (gen - 1) / 2.0;
  const double kiln_kv_pos = (double)sum->kv_bytes / (double)ctx;  // one stream
  const double llama_kv_pos = (double)(cfg->n_layer * 2 * cfg->n_head_kv * cfg->head_dim * 2);
  std::printf("{\"engine\": \"kiln\", \"model\": \"%s\", \"threads\": %d, \"prompt_tokens\": %d, \"gen_tokens\": %d, "
              "\"reps\": %d, \"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"compile_s\": %.2f, "
              "\"model_o_bytes\": %llu, \"weights_bytes\": %llu, \"kv_bytes\": %llu, \"tied_lm_head\": %s, "
              "\"kiln_bytes_per_decode_token\": %.0f, \"llama_bytes_per_decode_token\": %.0f, \"cpu\": \"%s\", \"passes\": \"%s\", \"pack_weights\": \"%s\"}\n",
              std::filesystem::path(model).filename().c_str(), threads, prompt, gen, reps, median(pp), median(tg),
              sum->seconds, (unsigned long long)sum->object_bytes, (unsigned long long)sum->weights_bytes,
              (unsigned long long)sum->kv_bytes, tied ? "true" : "false", (double)kiln_touched + avg_pos * kiln_kv_pos,
              (double)llama_touched + avg_pos * llama_kv_pos, sum->cpu.c_str(), passes.c_str(), pack.c_str());
  std::filesystem::remove_all(req.out_dir);
  return 0;
}

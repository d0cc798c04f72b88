// bench/streams_bench.cpp — multi-stream decoding: what S streams in one pass cost.
//
// Compiles MODEL for 4 streams, then measures in one run:
//  * decode tokens/s in total and per stream for S = 1..4 streams decoded together;
//  * the wall time of 3 styled replies of 64 tokens to one prompt: each reply's prompt is
//    the shared 40 tokens plus a 14-token style request of its own (as `kiln run --streams
//    --style` builds them: the request and the chat template's turn end); 3 sequential
//    single-stream runs (prefill of its whole prompt + 64 decode steps each) against one
//    multi-stream run (the shared tokens prefilled once and copied, the three streams'
//    style tokens prefilled in one kiln_prefill_streams call, then 64 steps that advance
//    all 3 streams), as `kiln run --streams 3` does.
// Ratios are medians of each repetition's own ratio (both sides measured back to back); the
// three replies' smallest and largest ratio over the repetitions show how much the
// machine's speed moved during the run, and "by_repetition" gives every repetition's
// sequential tokens/s beside its ratio: the ratio falls as the machine's memory gets
// faster (the extra rows' arithmetic hides under a slower weight stream; see README).
// --long-prompt N adds the same three replies to an N-token prompt (the context is compiled
// to fit it), with the prompt's KV rows shared between the streams (the default: copied
// streams map the same memory pages, runtime/kv_cache.h) and copied (a second session with
// kiln_session_params.kv_copies), alternated in every repetition: what sharing saves when
// every stream's attention reads a long prompt each step.
// Prints one JSON object. usage: streams_bench MODEL [--threads N] [--reps R] [--pack-weights auto|on|off]
//                                               [--profile-streams S] [--passes P] [--long-prompt N]
// --passes P runs the passes P before the backend pipeline (as kiln_bench's --passes: to
// try an opt-in pass such as fuse-qkv on the multi-stream step).
// --profile-streams S only runs S-stream replies (the prompt's prefill, copied to the
// streams, then 64 decode steps) over and over for about 20 s and prints the number of
// decode steps to stderr: a steady load for a profiler (perf record; with KILN_PERF_MAP=1
// the kernels are named), whose samples per step compare across S.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "codegen/compile.h"
#include "codegen/loaded_artifact.h"
#include "runtime/include/kiln/kiln.h"
#include "support/file.h"
#include "bench/bench_util.h"

using namespace kiln;
using namespace kiln::bench;

int main(int argc, char** argv) {
  if (argc < 2) { std::fprintf(stderr, "usage: streams_bench MODEL [--threads N] [--reps R] [--pack-weights auto|on|off] [--profile-streams S] [--passes P] [--long-prompt N]\n"); return 2; }
  int threads = 2, reps = 3;
  std::string pack = "auto";
  int profile_streams = 0, long_prompt = 0;
  std::string passes;  // run before the backend pipeline, as kiln_bench's --passes
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--pack-weights")) pack = argv[i + 1];
    else if (!std::strcmp(argv[i], "--profile-streams")) profile_streams = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--passes")) passes = argv[i + 1];
    else if (!std::strcmp(argv[i], "--long-prompt")) long_prompt = std::atoi(argv[i + 1]);
  }
  if (reps < 1) { std::fprintf(stderr, "streams_bench: --reps must be at least 1\n"); return 2; }
  const int kMaxStreams = 4, kGen = 64;
  CompileRequest req;
  req.model_path = argv[1];
  req.out_dir = (std::filesystem::temp_directory_path() / fmt::format("kiln-sbench-{}", ::getpid())).string();
  req.max_streams = kMaxStreams;
  req.max_context = std::max(256, long_prompt + 128);
  req.threads = threads;
  req.progress = false;
  req.pack_weights = pack;
  req.extra_passes = passes;
  auto sum = compile_model(req);
  if (!sum.ok()) { std::fprintf(stderr, "%s\n", sum.error().message.c_str()); return 1; }
  auto art = load_artifact(req.out_dir, threads);
  if (!art.ok()) { std::fprintf(stderr, "%s\n", art.error().message.c_str()); return 1; }
  kiln_model* m = (*art)->model;
  kiln_session* s = (*art)->session;
  const int32_t V = kiln_model_n_vocab(m);
  std::vector<float> logits((size_t)V * kMaxStreams);
  const std::vector<int32_t> prompt = bench_prompt();
  std::vector<int32_t> streams = {0, 1, 2, 3}, toks(kMaxStreams, 504);

  auto fail = [&] { std::fprintf(stderr, "streams_bench: %s\n", kiln_last_error()); return 1; };
  // S streams at the end of the prompt (prefilled once, copied), then kGen decode steps.
  auto start_replies = [&](int S) {
    if (kiln_session_reset(s, KILN_ALL_STREAMS) != KILN_OK ||
        kiln_prefill(s, prompt.data(), (int32_t)prompt.size(), 0, nullptr) != KILN_OK)
      return false;
    for (int i = 1; i < S; ++i)
      if (kiln_session_copy_stream(s, 0, i, (int32_t)prompt.size()) != KILN_OK) return false;
    return true;
  };
  auto decode_replies = [&](int S) {
    for (int t = 0; t < kGen; ++t)
      if (kiln_decode(s, toks.data(), streams.data(), S, logits.data()) != KILN_OK) return false;
    return true;
  };
  if (profile_streams > 0) {
    const int S = std::min(profile_streams, kMaxStreams);
    const auto t_end = clk::now() + std::chrono::seconds(20);
    long long steps = 0;
    while (clk::now() < t_end) {
      if (!start_replies(S) || !decode_replies(S)) return fail();
      steps += kGen;
    }
    std::filesystem::remove_all(req.out_dir);
    std::fprintf(stderr, "streams_bench: %d streams, %lld decode steps\n", S, steps);
    return 0;
  }
  // S = 1..4 back to back in every repetition; a step cost is the median of the
  // repetitions' own ratios (the shared machine's speed drifts over seconds).
  std::vector<std::vector<double>> rates(kMaxStreams + 1);
  for (int r = 0; r <= reps; ++r)
    for (int S = 1; S <= kMaxStreams; ++S) {
      if (!start_replies(S)) return fail();
      auto t0 = clk::now();
      if (!decode_replies(S)) return fail();
      if (r > 0) rates[S].push_back(S * kGen / secs(t0, clk::now()));
    }
  const std::string per_s = decode_by_streams_json(rates, kMaxStreams);

  // Three styled 64-token replies: sequential vs one multi-stream pass.
  std::vector<std::vector<int32_t>> style(3);
  for (int k = 0; k < 3; ++k) style[k] = style_request(k);
  std::vector<const int32_t*> style_ptrs = {style[0].data(), style[1].data(), style[2].data()};
  std::vector<int32_t> style_lens(3, kStyleTokens);
  // Seconds of the three replies to `shared` + each style request (< 0: a call failed):
  // one after another in one stream, each prefilling its whole prompt...
  auto sequential_replies = [&](const std::vector<int32_t>& shared) -> double {
    std::vector<std::vector<int32_t>> full(3, shared);
    for (int k = 0; k < 3; ++k) full[k].insert(full[k].end(), style[k].begin(), style[k].end());
    auto t0 = clk::now();
    for (int k = 0; k < 3; ++k) {
      kiln_session_reset(s, KILN_ALL_STREAMS);
      if (kiln_prefill(s, full[k].data(), (int32_t)full[k].size(), 0, logits.data()) != KILN_OK) return -1;
      for (int t = 0; t < kGen; ++t)
        if (kiln_decode(s, toks.data(), streams.data(), 1, logits.data()) != KILN_OK) return -1;
    }
    return secs(t0, clk::now());
  };
  // ...or together in session `ss`: `shared` prefilled once and given to streams 1 and 2,
  // the style requests in one call, then one step per token for all three.
  auto multi_replies = [&](kiln_session* ss, const std::vector<int32_t>& shared) -> double {
    auto t0 = clk::now();
    kiln_session_reset(ss, KILN_ALL_STREAMS);
    if (kiln_prefill(ss, shared.data(), (int32_t)shared.size(), 0, nullptr) != KILN_OK) return -1;
    for (int i = 1; i < 3; ++i)
      if (kiln_session_copy_stream(ss, 0, i, (int32_t)shared.size()) != KILN_OK) return -1;
    if (kiln_prefill_streams(ss, style_ptrs.data(), style_lens.data(), streams.data(), 3, logits.data()) != KILN_OK)
      return -1;
    for (int t = 0; t < kGen; ++t)
      if (kiln_decode(ss, toks.data(), streams.data(), 3, logits.data()) != KILN_OK) return -1;
    return secs(t0, clk::now());
  };
  std::vector<double> seq, multi, speedup;
  std::string by_rep;  // [sequential tokens/s, ratio] of each repetition
  for (int r = 0; r <= reps; ++r) {
    const double sq = sequential_replies(prompt), mu = multi_replies(s, prompt);
    if (sq < 0 || mu < 0) return fail();
    if (r == 0) continue;
    seq.push_back(sq);
    multi.push_back(mu);
    speedup.push_back(sq / mu);
    by_rep += fmt::format("{}[{:.1f}, {:.3f}]", r > 1 ? ", " : "", 3 * kGen / sq, sq / mu);
  }
  // Three replies to a long prompt, the prompt's KV shared between the streams or copied.
  std::string long_json;
  if (long_prompt > 0) {
    kiln_session_params cp = kiln_session_default_params();
    cp.n_threads = threads;
    cp.kv_copies = 1;
    kiln_session* copying = nullptr;
    if (kiln_session_init(m, &cp, &copying) != KILN_OK) return fail();
    std::vector<int32_t> lp;
    while ((int)lp.size() < long_prompt) lp.insert(lp.end(), prompt.begin(), prompt.end());
    lp.resize((size_t)long_prompt);
    std::vector<double> seq_l, shared_l, copied_l, sp_shared, sp_copied, gain;
    for (int r = 0; r <= reps; ++r) {
      const double sq = sequential_replies(lp);
      double a, b;  // shared, copied; which goes first alternates
      if (r % 2) b = multi_replies(copying, lp), a = multi_replies(s, lp);
      else a = multi_replies(s, lp), b = multi_replies(copying, lp);
      if (sq < 0 || a < 0 || b < 0) return fail();
      if (r == 0) continue;
      seq_l.push_back(sq), shared_l.push_back(a), copied_l.push_back(b);
      sp_shared.push_back(sq / a), sp_copied.push_back(sq / b), gain.push_back(b / a);
    }
    kiln_session_free(copying);
    long_json = fmt::format(", \"long_prompt_replies\": {{\"prompt_tokens\": {}, \"sequential_s\": {:.3f}, "
                            "\"multi_stream_shared_kv_s\": {:.3f}, \"multi_stream_copied_kv_s\": {:.3f}, "
                            "\"speedup_shared_kv\": {:.2f}, \"speedup_copied_kv\": {:.2f}, \"shared_vs_copied\": {:.3f}}}",
                            long_prompt, median(seq_l), median(shared_l), median(copied_l), median(sp_shared),
                            median(sp_copied), median(gain));
  }
  std::printf("{\"model\": \"%s\", \"threads\": %d, \"gen_tokens\": %d, \"cpu\": \"%s\", \"pack_weights\": \"%s\", \"decode_by_streams\": %s, "
              "\"three_replies\": {\"shared_prompt_tokens\": %d, \"style_tokens\": %d, \"sequential_s\": %.3f, \"multi_stream_s\": %.3f, \"speedup\": %.2f, "
              "\"speedup_min\": %.2f, \"speedup_max\": %.2f, \"by_repetition\": {\"what\": \"[sequential decoded tokens/s, speedup]\", \"values\": [%s]}}%s}\n",
              std::filesystem::path(argv[1]).filename().c_str(), threads, kGen, sum->cpu.c_str(), pack.c_str(), per_s.c_str(),
              (int)prompt.size(), kStyleTokens, median(seq), median(multi), median(speedup),
              *std::min_element(speedup.begin(), speedup.end()), *std::max_element(speedup.begin(), speedup.end()),
              by_rep.c_str(), long_json.c_str());
  std::filesystem::remove_all(req.out_dir);
  return 0;
}

// bench/lora_bench.cpp — LoRA adapters as runtime inputs: what they cost, in one run.
//
// Compiles MODEL twice (4 streams): with 5 LoRA slots (rank 16, every target) and
// without LoRA, loads adapters (the paths given, or seeded random rank-8 q,v PEFT
// adapters written to a temp folder), then measures:
//  * adapter switch latency: kiln_stream_set_adapter between two loaded slots (and,
//    separately, the time to load an adapter from disk into a slot);
//  * memory per loaded adapter: its own f32 factors, and the slot it occupies;
//  * decode tokens/s per stream for S = 1..4 streams, each on its own adapter;
// Ratios (step costs, speedups) are medians of each repetition's own ratio, its two sides
// measured back to back, so the shared machine's drift hits both alike.
//  * 3 styled replies of 64 tokens: 3 sequential runs (switching adapters between them)
//    against one 3-stream pass (each stream its own adapter; the three prompts prefilled
//    in one kiln_prefill_streams call), and the same with
//    prompt-styled replies on the zero adapter (each reply's prompt the shared 40 tokens
//    plus a 14-token style request of its own; the shared part prefilled once and copied,
//    each stream's style tokens prefilled into it);
//  * single-stream decode with the zero adapter against the build without LoRA
//    (interleaved repetitions, so load on a shared machine hits both alike);
//  * the adapter-styled replies again on a third build with side paths on the adapters'
//    own projections only (--lora-targets): what a build for every projection costs over
//    one for just these adapters; its runs alternate with the first build's.
// Prints one JSON object. usage: lora_bench MODEL [--threads N] [--reps R] [ADAPTER...]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "codegen/compile.h"
#include "codegen/loaded_artifact.h"
#include "frontend/adapter.h"
#include "frontend/gguf.h"
#include "frontend/gguf_names.h"
#include "frontend/llama.h"
#include "frontend/lora_names.h"
#include "runtime/include/kiln/kiln.h"
#include "support/file.h"
#include "bench/bench_util.h"

using namespace kiln;
using namespace kiln::bench;
namespace fs = std::filesystem;

// A seeded random PEFT adapter, rank r on q_proj and v_proj of every layer.
static bool write_random_peft(const GgufFile& base, const fs::path& dir, int64_t r, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::string header = "{", data;
  for (int64_t l = 0;; ++l) {
    bool any = false;
    for (int m : {0, 2}) {
      const GgufTensor* t = base.tensor(gguf_names::layer_tensor(lora_names::kModules[m].gguf, l));
      if (!t) continue;
      any = true;
      int64_t in = (int64_t)t->ne[0], out = (int64_t)t->ne[1];
      std::string p = fmt::format("{}{}.{}", lora_names::kPeftPrefix, l, lora_names::kModules[m].hf);
      for (bool a : {true, false}) {
        std::vector<float> v((size_t)(r * (a ? in : out)));
        for (auto& x : v) x = a ? nd(rng) / std::sqrt((float)in) : 0.02f * nd(rng);
        if (header.size() > 1) header += ",";
        header += fmt::format(R"("{}{}":{{"dtype":"F32","shape":[{},{}],"data_offsets":[{},{}]}})", p,
                              a ? lora_names::kPeftA : lora_names::kPeftB, a ? r : out, a ? in : r, data.size(),
                              data.size() + v.size() * 4);
        data.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
      }
    }
    if (!any) break;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::string st(8, '\0');
  for (int i = 0; i < 8; ++i) st[i] = (char)((header.size() >> (8 * i)) & 0xff);
  fs::create_directories(dir);
  return write_file_atomic((dir / "adapter_model.safetensors").string(), st + header + data).ok() &&
         write_file_atomic((dir / "adapter_config.json").string(),
                           fmt::format(R"({{"peft_type":"LORA","r":{},"lora_alpha":{},"target_modules":["q_proj","v_proj"]}})",
                                       r, 2 * r)).ok();
}

int main(int argc, char** argv) {
  if (argc < 2) { std::fprintf(stderr, "usage: lora_bench MODEL [--threads N] [--reps R] [ADAPTER...]\n"); return 2; }
  int threads = 2, reps = 3;
  std::vector<std::string> adapters;
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    else adapters.push_back(argv[i]);
  }
  const int kMaxStreams = 4, kGen = 64;
  fs::path tmp = fs::temp_directory_path() / fmt::format("kiln-lbench-{}", ::getpid());
  fs::create_directories(tmp);
  struct Cleanup { fs::path p; ~Cleanup() { std::error_code ec; fs::remove_all(p, ec); } } cleanup{tmp};
  bool random_adapters = adapters.empty();
  if (random_adapters) {
    auto base = GgufFile::open(argv[1]);
    if (!base.ok()) { std::fprintf(stderr, "%s\n", base.error().message.c_str()); return 1; }
    for (int k = 0; k < kMaxStreams; ++k) {
      fs::path d = tmp / fmt::format("random{}", k);
      if (!write_random_peft(**base, d, 8, 100 + k)) { std::fprintf(stderr, "cannot write %s\n", d.c_str()); return 1; }
      adapters.push_back(d.string());
    }
  }
  while ((int)adapters.size() < kMaxStreams) adapters.push_back(adapters[adapters.size() % adapters.size()]);

  // The projections the adapters adapt, for the third build.
  std::string own_targets;
  {
    auto base = GgufFile::open(argv[1]);
    if (!base.ok()) { std::fprintf(stderr, "%s\n", base.error().message.c_str()); return 1; }
    auto cfg = read_llama_config(**base);
    if (!cfg.ok()) { std::fprintf(stderr, "%s\n", cfg.error().message.c_str()); return 1; }
    std::vector<LoraAdapter> read;
    for (const std::string& path : adapters) {
      auto a = load_lora_adapter(path, *cfg, **base);
      if (!a.ok()) { std::fprintf(stderr, "%s\n", a.error().message.c_str()); return 1; }
      read.push_back(std::move(*a));
    }
    own_targets = lora_targets_of(read);
  }
  auto compile = [&](const char* tag, int64_t slots, const std::string& targets = "") -> std::string {
    CompileRequest req;
    req.model_path = argv[1];
    req.out_dir = (tmp / tag).string();
    req.max_streams = kMaxStreams;
    req.max_context = 256;
    req.threads = threads;
    req.lora_slots = slots;
    req.lora_rank = 16;
    if (!targets.empty()) req.lora_targets = targets;
    req.progress = false;
    auto sum = compile_model(req);
    if (!sum.ok()) { std::fprintf(stderr, "%s\n", sum.error().message.c_str()); return ""; }
    return req.out_dir;
  };
  std::string lora_dir = compile("lora", kMaxStreams + 1), plain_dir = compile("plain", 0),
              own_dir = compile("own", kMaxStreams + 1, own_targets);
  if (lora_dir.empty() || plain_dir.empty() || own_dir.empty()) return 1;
  auto lart = load_artifact(lora_dir, threads);
  auto part = load_artifact(plain_dir, threads);
  auto oart = load_artifact(own_dir, threads);
  if (!lart.ok() || !part.ok() || !oart.ok()) {
    std::fprintf(stderr, "%s\n", (!lart.ok() ? lart.error() : !part.ok() ? part.error() : oart.error()).message.c_str());
    return 1;
  }
  kiln_session* s = (*lart)->session;
  kiln_session* plain = (*part)->session;
  kiln_session* own = (*oart)->session;
  const int32_t V = kiln_model_n_vocab((*lart)->model);
  auto fail = [&] { std::fprintf(stderr, "lora_bench: %s\n", kiln_last_error()); return 1; };

  // Load: one adapter per slot 1..4.
  std::vector<double> load_ms;
  std::string memory = "[";
  for (int k = 0; k < kMaxStreams; ++k) {
    auto t0 = clk::now();
    if (kiln_adapter_load(s, adapters[(size_t)k].c_str(), k + 1) != KILN_OK) return fail();
    load_ms.push_back(1e3 * secs(t0, clk::now()));
    kiln_adapter_info info;
    if (kiln_adapter_query(s, k + 1, &info) != KILN_OK) return fail();
    memory += fmt::format("{}{{\"adapter\": \"{}\", \"rank\": {}, \"targets\": {}, \"weight_bytes\": {}, \"slot_bytes\": {}}}",
                          k ? ", " : "", info.name, info.rank, info.n_targets, info.weight_bytes, info.slot_bytes);
    if (kiln_adapter_load(own, adapters[(size_t)k].c_str(), k + 1) != KILN_OK) return fail();
  }
  memory += "]";

  // Switch latency: stream 0 between slots 1 and 2, many times.
  const int kSwitches = 10000;
  auto t0 = clk::now();
  for (int i = 0; i < kSwitches; ++i)
    if (kiln_stream_set_adapter(s, 0, 1 + (i & 1), 1.0f) != KILN_OK) return fail();
  double switch_us = 1e6 * secs(t0, clk::now()) / kSwitches;
  std::vector<float> logits((size_t)V * kMaxStreams);
  const std::vector<int32_t> prompt = bench_prompt();
  std::vector<int32_t> streams = {0, 1, 2, 3}, toks(kMaxStreams, 504);

  // Decode tokens/s with S streams, stream i on slot i + 1.
  auto set_streams = [&](int S, bool zero) {
    for (int i = 0; i < kMaxStreams; ++i)
      if (kiln_stream_set_adapter(s, i, zero || i >= S ? 0 : i + 1, 1.0f) != KILN_OK) return false;
    return true;
  };
  auto decode_rate = [&](kiln_session* ss, int S) -> double {
    kiln_session_reset(ss, KILN_ALL_STREAMS);
    for (int i = 0; i < S; ++i)
      if (kiln_prefill(ss, prompt.data(), (int32_t)prompt.size(), i, nullptr) != KILN_OK) return -1;
    auto a = clk::now();
    for (int t = 0; t < kGen; ++t)
      if (kiln_decode(ss, toks.data(), streams.data(), S, logits.data()) != KILN_OK) return -1;
    return S * kGen / secs(a, clk::now());
  };
  // S = 1..4 run back to back in every repetition, and a step cost is the median of the
  // repetitions' own ratios: the shared machine's speed drifts over seconds, and pairing
  // keeps that drift out of the ratios.
  std::vector<std::vector<double>> rates(kMaxStreams + 1);
  for (int r = 0; r <= reps; ++r)
    for (int S = 1; S <= kMaxStreams; ++S) {
      if (!set_streams(S, false)) return fail();
      double v = decode_rate(s, S);
      if (v < 0) return fail();
      if (r > 0) rates[S].push_back(v);
    }
  const std::string per_s = decode_by_streams_json(rates, kMaxStreams);

  // Zero adapter vs no LoRA: single stream, interleaved.
  if (!set_streams(1, true)) return fail();
  std::vector<double> zero_r, plain_r;
  for (int r = 0; r <= 2 * reps; ++r) {
    double z = decode_rate(s, 1), p = decode_rate(plain, 1);
    if (z < 0 || p < 0) return fail();
    if (r > 0) zero_r.push_back(z), plain_r.push_back(p);
  }
  std::vector<double> ratios;
  for (size_t i = 0; i < zero_r.size(); ++i) ratios.push_back(zero_r[i] / plain_r[i]);

  // Three styled replies of 64 tokens. (a) Styles by adapter: sequential runs switch the
  // adapter and prefill + decode each reply; one pass prefills each stream (its prompt's
  // KV depends on its adapter), then decodes all three together. (b) Styles by prompt,
  // as streams_bench: a style request of its own after the shared prompt.
  std::vector<std::vector<int32_t>> style(3), styled(3);
  for (int k = 0; k < 3; ++k) {
    style[k] = style_request(k);
    styled[k] = prompt;
    styled[k].insert(styled[k].end(), style[k].begin(), style[k].end());
  }
  auto run_seq = [&](kiln_session* s, bool by_adapter) -> double {
    auto a = clk::now();
    for (int k = 0; k < 3; ++k) {
      kiln_session_reset(s, KILN_ALL_STREAMS);
      if (kiln_stream_set_adapter(s, 0, by_adapter ? k + 1 : 0, 1.0f) != KILN_OK) return -1;
      const std::vector<int32_t>& p = by_adapter ? prompt : styled[(size_t)k];
      if (kiln_prefill(s, p.data(), (int32_t)p.size(), 0, logits.data()) != KILN_OK) return -1;
      for (int t = 0; t < kGen; ++t)
        if (kiln_decode(s, toks.data(), streams.data(), 1, logits.data()) != KILN_OK) return -1;
    }
    return secs(a, clk::now());
  };
  auto run_multi = [&](kiln_session* s, bool by_adapter) -> double {
    auto a = clk::now();
    kiln_session_reset(s, KILN_ALL_STREAMS);
    for (int i = 0; i < 3; ++i)
      if (kiln_stream_set_adapter(s, i, by_adapter ? i + 1 : 0, 1.0f) != KILN_OK) return -1;
    // Each group of rows in one call (kiln_prefill_streams), as `kiln run --streams` does.
    std::vector<const int32_t*> ptrs;
    std::vector<int32_t> lens;
    if (by_adapter) {
      for (int i = 0; i < 3; ++i) ptrs.push_back(prompt.data()), lens.push_back((int32_t)prompt.size());
    } else {
      if (kiln_prefill(s, prompt.data(), (int32_t)prompt.size(), 0, nullptr) != KILN_OK) return -1;
      for (int i = 1; i < 3; ++i) kiln_session_copy_stream(s, 0, i, (int32_t)prompt.size());
      for (int i = 0; i < 3; ++i) ptrs.push_back(style[(size_t)i].data()), lens.push_back(kStyleTokens);
    }
    if (kiln_prefill_streams(s, ptrs.data(), lens.data(), streams.data(), 3, logits.data()) != KILN_OK) return -1;
    for (int t = 0; t < kGen; ++t)
      if (kiln_decode(s, toks.data(), streams.data(), 3, logits.data()) != KILN_OK) return -1;
    return secs(a, clk::now());
  };
  // [0] by adapter, [1] by prompt on the zero adapter (first build); [2] by adapter on the
  // third build. Every repetition runs all three, so the two builds alternate.
  static const char* const kReplies[3] = {"styled_by_adapter", "styled_by_prompt_zero_adapter",
                                          "styled_by_adapter_own_targets"};
  std::vector<double> seq[3], multi[3], speedup[3];
  for (int r = 0; r <= reps; ++r)
    for (int c = 0; c < 3; ++c) {
      kiln_session* ss = c == 2 ? own : s;
      const bool by_adapter = c != 1;
      double a = run_seq(ss, by_adapter), b = run_multi(ss, by_adapter);
      if (a < 0 || b < 0) return fail();
      if (r > 0) seq[c].push_back(a), multi[c].push_back(b), speedup[c].push_back(a / b);
    }
  std::string replies;
  for (int c = 0; c < 3; ++c)
    replies += fmt::format("{}\"{}\": {{\"sequential_s\": {:.3f}, \"multi_stream_s\": {:.3f}, \"speedup\": {:.2f}{}}}",
                           c ? ", " : "", kReplies[c], median(seq[c]), median(multi[c]), median(speedup[c]),
                           c == 2 ? fmt::format(", \"lora_targets\": \"{}\"", own_targets) : "");

  std::printf("{\"model\": \"%s\", \"threads\": %d, \"gen_tokens\": %d, \"lora_slots\": %d, \"lora_rank\": 16, "
              "\"random_adapters\": %s, \"switch_latency_us\": %.3f, \"adapter_load_ms\": %.2f, \"memory\": %s, "
              "\"decode_by_streams\": %s, \"zero_adapter_vs_no_lora\": {\"zero_adapter_tok_s\": %.2f, "
              "\"no_lora_tok_s\": %.2f, \"ratio\": %.3f}, \"three_replies\": {%s}}\n",
              fs::path(argv[1]).filename().c_str(), threads, kGen, kMaxStreams + 1, random_adapters ? "true" : "false",
              switch_us, median(load_ms), memory.c_str(), per_s.c_str(), median(zero_r), median(plain_r), median(ratios),
              replies.c_str());
  return 0;
}

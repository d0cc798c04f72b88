// bench/ds2d_bench.cpp — DS2D against plain decoding, same binary, one run.
//
// Compiles MODEL with DS2D tree templates, then for each prompt of bench/prompts
// (grounded: summarize, rewrite or extract from a passage; open chat), in the model's chat
// template, decodes greedily up to --tokens tokens (ending at end of generation) twice:
// plain kiln_decode and kiln_ds2d_step, alternating which goes first. Reports per kind
// the decode tokens/s of both (tokens after the first, which comes from the prefill) and
// their ratio, DS2D's mean accepted drafts per verify pass and tokens per step, template
// use, and whether every output was identical; and the cost of each verify entry against
// a decode step. Prints one JSON object; --write-prompts DIR also writes each formatted
// prompt to DIR/{kind}_{i}.txt for the llama.cpp runs of bench/run_ds2d_bench.sh, and
// --write-outputs DIR each prompt's and greedy reply's token ids to DIR/{kind}_{i}.tokens
// (two lines) for bench/ds2d_oracle.py.
//
// usage: ds2d_bench MODEL [--threads N] [--tokens N] [--templates LIST] [--prompts DIR]
//                         [--write-prompts DIR] [--write-outputs DIR] [--no-early-exit] [--recycle]
//                         [--pack-weights auto|on|off]
//                         [--topology chain|tree|P1,P2,...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "codegen/compile.h"
#include "bench/prompts/prompt_file.h"
#include "codegen/loaded_artifact.h"
#include "runtime/include/kiln/kiln.h"
#include "runtime/sampler.h"
#include "bench/bench_util.h"

using namespace kiln;
using namespace kiln::bench;

static std::vector<std::string> read_prompts(const std::string& path) { return read_prompt_file(path); }

// The greedy pick both sides use: the runtime's own (what kiln_sampler_sample does for a
// greedy sampler, and kiln_ds2d_step inside). A plain one-pass loop here cost the plain side
// ~3% of a step more than DS2D paid for the same work.
static int32_t argmax(const float* l, int32_t v) { return Sampler::argmax(std::span<const float>(l, (size_t)v)); }

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: ds2d_bench MODEL [--threads N] [--tokens N] [--templates LIST] [--prompts DIR] "
                         "[--write-prompts DIR] [--write-outputs DIR] [--no-early-exit] [--recycle] [--pack-weights auto|on|off] [--topology T]\n");
    return 2;
  }
  int threads = 2, max_tokens = 128;
  std::string templates = CompileRequest{}.ds2d_templates, prompt_dir = std::string(KILN_SOURCE_DIR) + "/bench/prompts",
              write_dir, outputs_dir;
  bool early_exit = true, recycle = false;
  std::string pack = "auto", topology = CompileRequest{}.ds2d_topology;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--threads") threads = std::atoi(val().c_str());
    else if (a == "--tokens") max_tokens = std::atoi(val().c_str());
    else if (a == "--templates") templates = val();
    else if (a == "--prompts") prompt_dir = val();
    else if (a == "--write-prompts") write_dir = val();
    else if (a == "--write-outputs") outputs_dir = val();
    else if (a == "--no-early-exit") early_exit = false;
    else if (a == "--recycle") recycle = true;
    else if (a == "--pack-weights") pack = val();
    else if (a == "--topology") topology = val();
    else { std::fprintf(stderr, "ds2d_bench: unknown option %s\n", a.c_str()); return 2; }
  }
  CompileRequest req;
  req.model_path = argv[1];
  req.out_dir = (std::filesystem::temp_directory_path() / fmt::format("kiln-ds2dbench-{}", ::getpid())).string();
  req.max_context = 1024;
  req.max_rows = 64;
  req.threads = threads;
  req.ds2d_templates = templates;
  req.ds2d_topology = topology;
  req.pack_weights = pack;
  req.progress = false;
  auto sum = compile_model(req);
  if (!sum.ok()) { std::fprintf(stderr, "ds2d_bench: %s\n", sum.error().message.c_str()); return 1; }
  auto art = load_artifact(req.out_dir, threads);
  std::filesystem::remove_all(req.out_dir);
  if (!art.ok()) { std::fprintf(stderr, "ds2d_bench: %s\n", art.error().message.c_str()); return 1; }
  kiln_model* m = (*art)->model;
  kiln_session* s = (*art)->session;
  const int32_t V = kiln_model_n_vocab(m);
  auto fail = [&] { std::fprintf(stderr, "ds2d_bench: %s\n", kiln_last_error()); return 1; };
  std::vector<float> lg((size_t)V);
  int32_t zero = 0;

  std::string kinds_json;
  std::string cost_json;
  for (const char* kind : {"grounded", "chat"}) {
    auto prompts = read_prompts(prompt_dir + "/" + kind + ".txt");
    if (prompts.empty()) { std::fprintf(stderr, "ds2d_bench: no prompts in %s/%s.txt\n", prompt_dir.c_str(), kind); return 1; }
    kiln_ds2d_params dp = kiln_ds2d_default_params();
    dp.early_exit = early_exit ? 1 : 0;
    dp.recycle = recycle ? 1 : 0;
    kiln_ds2d* d = nullptr;
    if (kiln_ds2d_init(s, &dp, &d) != KILN_OK) return fail();
    const int32_t stride = kiln_ds2d_max_step_tokens(d);
    std::vector<int32_t> buf((size_t)stride);
    double t_plain = 0, t_ds2d = 0;
    long n_plain = 0, n_ds2d = 0, identical = 0;
    for (size_t pi = 0; pi < prompts.size(); ++pi) {
      kiln_chat_message msg{"user", prompts[pi].c_str()};
      std::string text(16384, '\0');
      size_t len = 0;
      if (kiln_chat_apply(m, nullptr, &msg, 1, 1, text.data(), text.size(), &len) != KILN_OK) return fail();
      text.resize(len);
      if (!write_dir.empty()) {
        std::filesystem::create_directories(write_dir);
        std::ofstream(fmt::format("{}/{}_{:02}.txt", write_dir, kind, pi)) << text;
      }
      std::vector<int32_t> prompt(2048);
      int32_t np = 0;
      if (kiln_tokenize(m, text.data(), text.size(), 1, 1, prompt.data(), (int32_t)prompt.size(), &np) != KILN_OK)
        return fail();
      prompt.resize((size_t)np);
      std::vector<int32_t> out_plain, out_ds2d;
      for (int order = 0; order < 2; ++order) {
        const bool ds2d = (order == 0) == (pi % 2 == 1);  // alternate which runs first
        kiln_session_reset(s, 0);
        if (kiln_prefill(s, prompt.data(), np, 0, lg.data()) != KILN_OK) return fail();
        std::vector<int32_t>& out = ds2d ? out_ds2d : out_plain;
        int32_t root = argmax(lg.data(), V);
        if (kiln_token_is_eog(m, root)) continue;
        out.push_back(root);
        const auto t0 = clk::now();
        if (!ds2d) {
          while ((int)out.size() < max_tokens) {
            if (kiln_decode(s, &root, &zero, 1, lg.data()) != KILN_OK) return fail();
            root = argmax(lg.data(), V);
            if (kiln_token_is_eog(m, root)) break;
            out.push_back(root);
          }
        } else {
          if (kiln_ds2d_begin(d, 0, prompt.data(), np) != KILN_OK) return fail();
          bool going = true;
          while (going && (int)out.size() < max_tokens) {
            int32_t n = 0;
            if (kiln_ds2d_step(d, &root, &zero, 1, nullptr, buf.data(), stride, &n) != KILN_OK) return fail();
            for (int32_t j = 0; j < n && going; ++j) {
              if (kiln_token_is_eog(m, buf[(size_t)j]) || (int)out.size() >= max_tokens) going = false;
              else out.push_back(buf[(size_t)j]);
            }
            root = buf[(size_t)n - 1];
          }
        }
        const double t = secs(t0, clk::now());
        (ds2d ? t_ds2d : t_plain) += t;
        (ds2d ? n_ds2d : n_plain) += (long)out.size() - 1;
      }
      identical += out_plain == out_ds2d;
      if (!outputs_dir.empty()) {  // for bench/ds2d_oracle.py: the prompt's ids, then the reply's
        std::filesystem::create_directories(outputs_dir);
        std::ofstream f(fmt::format("{}/{}_{:02}.tokens", outputs_dir, kind, pi));
        f << fmt::format("{}\n{}\n", fmt::join(prompt, " "), fmt::join(out_plain, " "));
      }
      std::fprintf(stderr, "[ds2d_bench] %s %zu: %zu tokens, %s\n", kind, pi, out_plain.size(),
                   out_plain == out_ds2d ? "identical" : "DIFFERENT");
    }
    kiln_ds2d_stats st{};
    if (kiln_ds2d_get_stats(d, &st) != KILN_OK) return fail();
    kiln_ds2d_free(d);
    std::string uses;
    for (int32_t t = 0; t < st.n_templates; ++t)
      uses += fmt::format("{}\"{}\": {}", t ? ", " : "", st.template_nodes[t], st.template_uses[t]);
    if (cost_json.empty()) {
      for (int32_t t = 0; t < st.n_templates; ++t)
        cost_json += fmt::format("{}{{\"nodes\": {}, \"verify_ms\": {:.3f}, \"vs_decode_step\": {:.2f}}}", t ? ", " : "",
                                 st.template_nodes[t], st.template_seconds[t] * 1e3,
                                 st.template_seconds[t] / st.plain_step_seconds);
      cost_json = fmt::format("\"decode_step_ms\": {:.3f}, \"templates\": [{}]", st.plain_step_seconds * 1e3, cost_json);
    }
    const double plain_tps = n_plain / t_plain, ds2d_tps = n_ds2d / t_ds2d;
    kinds_json += fmt::format(
        "{}\"{}\": {{\"prompts\": {}, \"identical_outputs\": {}, \"decode_tokens\": {}, \"plain_tok_s\": {:.2f}, "
        "\"ds2d_tok_s\": {:.2f}, \"speedup\": {:.3f}, \"accepted_per_verify_pass\": {:.3f}, \"tokens_per_step\": {:.3f}, "
        "\"drafted_per_verify_pass\": {:.3f}, \"steps\": {}, \"verify_passes\": {}, \"plain_steps\": {}, "
        "\"early_exit_drafts\": {}, \"seconds_drafting\": {:.3f}, \"seconds_verifying\": {:.3f}, "
        "\"seconds_plain_steps\": {:.3f}, \"template_uses\": {{{}}}}}",
        kinds_json.empty() ? "" : ", ", kind, prompts.size(), identical, n_plain, plain_tps, ds2d_tps, ds2d_tps / plain_tps,
        st.stream_passes ? (double)st.accepted / (double)st.stream_passes : 0.0,
        st.steps ? (double)st.tokens / (double)st.steps : 0.0,
        st.stream_passes ? (double)st.drafted / (double)st.stream_passes : 0.0, st.steps, st.verify_passes,
        st.plain_steps, st.early_exit_drafts, st.draft_seconds, st.verify_seconds, st.plain_seconds, uses);
  }
  std::printf("{\"model\": \"%s\", \"threads\": %d, \"max_tokens\": %d, \"templates_option\": \"%s\", "
              "\"topology\": \"%s\", \"early_exit\": %s, \"recycle\": %s, \"draft_layers\": %lld, %s, \"kinds\": {%s}}\n",
              std::filesystem::path(argv[1]).filename().c_str(), threads, max_tokens, templates.c_str(),
              topology.c_str(), early_exit ? "true" : "false", recycle ? "true" : "false", (long long)sum->draft_layers, cost_json.c_str(), kinds_json.c_str());
  return 0;
}

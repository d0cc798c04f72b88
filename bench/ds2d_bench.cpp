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
// DS2D runs twice per prompt: as kiln_ds2d_init makes it (no corpus), and with a corpus
// (kiln_ds2d_add_corpus) of the model's own greedy replies to the prompts of --corpus
// (default bench/prompts/corpus.txt: other prompts than the measured ones, none on their
// topics; "none" skips that side). Both controllers have corpus_replies off, so the
// measured prompts' replies never draft for each other and the order does not matter.
//
// usage: ds2d_bench MODEL [--threads N] [--tokens N] [--templates LIST] [--prompts DIR]
//                         [--corpus FILE|none] [--write-corpus FILE (the corpus replies as text)]
//                         [--write-prompts DIR] [--write-outputs DIR] [--no-early-exit] [--recycle]
//                         [--pack-weights auto|on|off]
//                         [--topology chain|tree|P1,P2,...]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "codegen/compile.h"
#include "bench/prompts/prompt_file.h"
#include "codegen/loaded_artifact.h"
#include "runtime/include/kiln/kiln.h"
#include "runtime/sampler.h"
#include "support/file.h"
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
                         "[--corpus FILE|none] [--write-corpus FILE] [--write-prompts DIR] [--write-outputs DIR] [--no-early-exit] [--recycle] "
                         "[--pack-weights auto|on|off] [--topology T]\n");
    return 2;
  }
  int threads = 2, max_tokens = 128;
  std::string templates = CompileRequest{}.ds2d_templates, prompt_dir = std::string(KILN_SOURCE_DIR) + "/bench/prompts",
              write_dir, outputs_dir, corpus_out, corpus_path = std::string(KILN_SOURCE_DIR) + "/bench/prompts/corpus.txt";
  bool early_exit = true, recycle = false;
  std::string pack = "auto", topology = CompileRequest{}.ds2d_topology;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--threads") threads = std::atoi(val().c_str());
    else if (a == "--tokens") max_tokens = std::atoi(val().c_str());
    else if (a == "--templates") templates = val();
    else if (a == "--prompts") prompt_dir = val();
    else if (a == "--corpus") corpus_path = val();
    else if (a == "--write-corpus") corpus_out = val();
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

  // A prompt in the model's chat template, as token ids.
  auto chat_prompt = [&](const std::string& user, std::string* text_out) -> std::vector<int32_t> {
    kiln_chat_message msg{"user", user.c_str()};
    std::string text(16384, '\0');
    size_t len = 0;
    if (kiln_chat_apply(m, nullptr, &msg, 1, 1, text.data(), text.size(), &len) != KILN_OK) return {};
    text.resize(len);
    if (text_out) *text_out = text;
    std::vector<int32_t> prompt(2048);
    int32_t np = 0;
    if (kiln_tokenize(m, text.data(), text.size(), 1, 1, prompt.data(), (int32_t)prompt.size(), &np) != KILN_OK)
      return {};
    prompt.resize((size_t)np);
    return prompt;
  };
  // Greedy decoding of up to max_tokens tokens after `prompt` (the first from the
  // prefill): plain kiln_decode, or kiln_ds2d_step with controller d. Returns the tokens,
  // and in *secs_out the time after the prefill.
  auto decode = [&](kiln_ds2d* d, const std::vector<int32_t>& prompt, double* secs_out)
      -> std::optional<std::vector<int32_t>> {
    kiln_session_reset(s, 0);
    if (kiln_prefill(s, prompt.data(), (int32_t)prompt.size(), 0, lg.data()) != KILN_OK) return std::nullopt;
    std::vector<int32_t> out;
    int32_t root = argmax(lg.data(), V);
    *secs_out = 0;
    if (kiln_token_is_eog(m, root)) return out;
    out.push_back(root);
    const auto t0 = clk::now();
    if (!d) {
      while ((int)out.size() < max_tokens) {
        if (kiln_decode(s, &root, &zero, 1, lg.data()) != KILN_OK) return std::nullopt;
        root = argmax(lg.data(), V);
        if (kiln_token_is_eog(m, root)) break;
        out.push_back(root);
      }
    } else {
      std::vector<int32_t> buf((size_t)kiln_ds2d_max_step_tokens(d));
      if (kiln_ds2d_begin(d, 0, prompt.data(), (int32_t)prompt.size()) != KILN_OK) return std::nullopt;
      bool going = true;
      while (going && (int)out.size() < max_tokens) {
        int32_t n = 0;
        if (kiln_ds2d_step(d, &root, &zero, 1, nullptr, buf.data(), (int32_t)buf.size(), &n) != KILN_OK)
          return std::nullopt;
        for (int32_t j = 0; j < n && going; ++j) {
          if (kiln_token_is_eog(m, buf[(size_t)j]) || (int)out.size() >= max_tokens) going = false;
          else out.push_back(buf[(size_t)j]);
        }
        root = buf[(size_t)n - 1];
      }
    }
    *secs_out = secs(t0, clk::now());
    return out;
  };

  // The corpus: the model's greedy replies to the corpus prompts, made here.
  std::vector<std::vector<int32_t>> corpus;
  int64_t corpus_tokens = 0;
  double corpus_secs = 0;
  const bool use_corpus = corpus_path != "none";
  if (use_corpus) {
    auto cps = read_prompts(corpus_path);
    if (cps.empty()) { std::fprintf(stderr, "ds2d_bench: no prompts in %s\n", corpus_path.c_str()); return 1; }
    const auto t0 = clk::now();
    for (const auto& cp : cps) {
      auto prompt = chat_prompt(cp, nullptr);
      if (prompt.empty()) return fail();
      double t = 0;
      auto reply = decode(nullptr, prompt, &t);
      if (!reply) return fail();
      corpus_tokens += (int64_t)reply->size();
      corpus.push_back(std::move(*reply));
    }
    corpus_secs = secs(t0, clk::now());
    if (!corpus_out.empty()) {  // as text, for llama-lookup-create (bench/run_ds2d_bench.sh)
      std::string all;
      for (const auto& c : corpus) {
        std::string text(65536, '\0');
        size_t len = 0;
        if (kiln_detokenize(m, c.data(), (int32_t)c.size(), 0, 1, text.data(), text.size(), &len) != KILN_OK) return fail();
        all += text.substr(0, len) + "\n\n";
      }
      if (!write_file_atomic(corpus_out, all).ok()) { std::fprintf(stderr, "ds2d_bench: cannot write %s\n", corpus_out.c_str()); return 1; }
    }
    std::fprintf(stderr, "[ds2d_bench] corpus: %zu replies, %lld tokens in %.1f s\n", corpus.size(),
                 (long long)corpus_tokens, corpus_secs);
  }

  std::string kinds_json;
  std::string cost_json;
  for (const char* kind : {"grounded", "chat"}) {
    auto prompts = read_prompts(prompt_dir + "/" + kind + ".txt");
    if (prompts.empty()) { std::fprintf(stderr, "ds2d_bench: no prompts in %s/%s.txt\n", prompt_dir.c_str(), kind); return 1; }
    kiln_ds2d_params dp = kiln_ds2d_default_params();
    dp.early_exit = early_exit ? 1 : 0;
    dp.recycle = recycle ? 1 : 0;
    dp.corpus_replies = 0;  // each prompt on its own: no reply drafts for another
    kiln_ds2d* d = nullptr;
    kiln_ds2d* dc = nullptr;
    if (kiln_ds2d_init(s, &dp, &d) != KILN_OK) return fail();
    if (use_corpus) {
      if (kiln_ds2d_init(s, &dp, &dc) != KILN_OK) return fail();
      for (const auto& c : corpus)
        if (kiln_ds2d_add_corpus(dc, c.data(), (int32_t)c.size()) != KILN_OK) return fail();
    }
    double t_plain = 0, t_ds2d = 0, t_corpus = 0;
    long n_plain = 0, n_ds2d = 0, n_corpus = 0, identical = 0, identical_corpus = 0;
    for (size_t pi = 0; pi < prompts.size(); ++pi) {
      std::string text;
      auto prompt = chat_prompt(prompts[pi], &text);
      if (prompt.empty()) return fail();
      if (!write_dir.empty()) {
        std::filesystem::create_directories(write_dir);
        std::ofstream(fmt::format("{}/{}_{:02}.txt", write_dir, kind, pi)) << text;
      }
      std::vector<int32_t> out_plain, out_ds2d, out_corpus;
      const int sides = use_corpus ? 3 : 2;
      for (int order = 0; order < sides; ++order) {
        const int side = (order + (int)pi) % sides;  // rotate which runs first
        double t = 0;
        std::optional<std::vector<int32_t>> out = decode(side == 0 ? nullptr : side == 1 ? d : dc, prompt, &t);
        if (!out) return fail();
        const long produced = out->empty() ? 0 : (long)out->size() - 1;  // after the prefill's token
        if (side == 0) t_plain += t, n_plain += produced, out_plain = std::move(*out);
        else if (side == 1) t_ds2d += t, n_ds2d += produced, out_ds2d = std::move(*out);
        else t_corpus += t, n_corpus += produced, out_corpus = std::move(*out);
      }
      identical += out_plain == out_ds2d;
      identical_corpus += !use_corpus || out_plain == out_corpus;
      if (!outputs_dir.empty()) {  // for bench/ds2d_oracle.py: the prompt's ids, then the reply's
        std::filesystem::create_directories(outputs_dir);
        std::ofstream f(fmt::format("{}/{}_{:02}.tokens", outputs_dir, kind, pi));
        f << fmt::format("{}\n{}\n", fmt::join(prompt, " "), fmt::join(out_plain, " "));
      }
      std::fprintf(stderr, "[ds2d_bench] %s %zu: %zu tokens, %s%s\n", kind, pi, out_plain.size(),
                   out_plain == out_ds2d ? "identical" : "DIFFERENT",
                   !use_corpus ? "" : out_plain == out_corpus ? ", with the corpus identical" : ", with the corpus DIFFERENT");
    }
    kiln_ds2d_stats st{}, sc{};
    if (kiln_ds2d_get_stats(d, &st) != KILN_OK) return fail();
    if (dc && kiln_ds2d_get_stats(dc, &sc) != KILN_OK) return fail();
    kiln_ds2d_free(d);
    kiln_ds2d_free(dc);
    auto uses_of = [](const kiln_ds2d_stats& x) {
      std::string uses;
      for (int32_t t = 0; t < x.n_templates; ++t)
        uses += fmt::format("{}\"{}\": {}", t ? ", " : "", x.template_nodes[t], x.template_uses[t]);
      return uses;
    };
    if (cost_json.empty()) {
      for (int32_t t = 0; t < st.n_templates; ++t)
        cost_json += fmt::format("{}{{\"nodes\": {}, \"verify_ms\": {:.3f}, \"vs_decode_step\": {:.2f}}}", t ? ", " : "",
                                 st.template_nodes[t], st.template_seconds[t] * 1e3,
                                 st.template_seconds[t] / st.plain_step_seconds);
      cost_json = fmt::format("\"decode_step_ms\": {:.3f}, \"templates\": [{}]", st.plain_step_seconds * 1e3, cost_json);
    }
    // One controller's figures; `prefix` names the side ("" without the corpus).
    auto side_json = [&](const std::string& prefix, const kiln_ds2d_stats& x, double tps, long same) {
      return fmt::format(
          "\"{0}identical_outputs\": {1}, \"{0}ds2d_tok_s\": {2:.2f}, \"{0}speedup\": {3:.3f}, "
          "\"{0}accepted_per_verify_pass\": {4:.3f}, \"{0}tokens_per_step\": {5:.3f}, "
          "\"{0}drafted_per_verify_pass\": {6:.3f}, \"{0}steps\": {7}, \"{0}verify_passes\": {8}, \"{0}plain_steps\": {9}, "
          "\"{0}early_exit_drafts\": {10}, \"{0}seconds_drafting\": {11:.3f}, \"{0}seconds_verifying\": {12:.3f}, "
          "\"{0}seconds_plain_steps\": {13:.3f}, \"{0}template_uses\": {{{14}}}",
          prefix, same, tps, tps / (n_plain / t_plain), x.stream_passes ? (double)x.accepted / (double)x.stream_passes : 0.0,
          x.steps ? (double)x.tokens / (double)x.steps : 0.0,
          x.stream_passes ? (double)x.drafted / (double)x.stream_passes : 0.0, x.steps, x.verify_passes, x.plain_steps,
          x.early_exit_drafts, x.draft_seconds, x.verify_seconds, x.plain_seconds, uses_of(x));
    };
    kinds_json += fmt::format("{}\"{}\": {{\"prompts\": {}, \"decode_tokens\": {}, \"plain_tok_s\": {:.2f}, {}", kinds_json.empty() ? "" : ", ",
                              kind, prompts.size(), n_plain, n_plain / t_plain, side_json("", st, n_ds2d / t_ds2d, identical));
    if (use_corpus) kinds_json += ", " + side_json("corpus_", sc, n_corpus / t_corpus, identical_corpus);
    kinds_json += "}";
  }
  const std::string corpus_json =
      use_corpus ? fmt::format("{{\"prompts_file\": \"{}\", \"replies\": {}, \"tokens\": {}, \"seconds_to_make\": {:.2f}}}",
                               std::filesystem::path(corpus_path).filename().string(), corpus.size(), corpus_tokens, corpus_secs)
                 : std::string("null");
  std::printf("{\"model\": \"%s\", \"threads\": %d, \"max_tokens\": %d, \"templates_option\": \"%s\", "
              "\"topology\": \"%s\", \"early_exit\": %s, \"recycle\": %s, \"draft_layers\": %lld, \"corpus\": %s, %s, "
              "\"kinds\": {%s}}\n",
              std::filesystem::path(argv[1]).filename().c_str(), threads, max_tokens, templates.c_str(),
              topology.c_str(), early_exit ? "true" : "false", recycle ? "true" : "false", (long long)sum->draft_layers,
              corpus_json.c_str(), cost_json.c_str(), kinds_json.c_str());
  return 0;
}

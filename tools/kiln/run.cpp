// tools/kiln/run.cpp — `kiln run MODEL --prompt TEXT`: tokenize, generate, stream text.
//
// Generation runs the model one step at a time: one step over the whole prompt
// (prefill), then one step per generated token (decode). Each step is a run of the
// lowered graph with tokens and positions as inputs; the KV cache persists in the
// graph's state buffers between steps.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "frontend/chat_template.h"
#include "frontend/tokenizer.h"
#include "frontend/llama.h"
#include "runtime/sampler.h"
#include "support/file.h"
#include "support/log.h"
#include "tools/kiln/args.h"
#include "tools/kiln/commands.h"
#include "runtime/include/kiln/kiln.h"
#include "tools/kiln/engine.h"
#include "tools/kiln/model_loader.h"
#include "tools/kiln/run_options.h"

namespace kiln::cli {

// kiln run's options: its own, then the sampling and engine options it shares with kiln chat.
static std::vector<OptionSpec> run_options() {
  std::vector<OptionSpec> o = {
      {"prompt", "TEXT", "the prompt (required)"},
      {"chat", "", "wrap the prompt in the model's chat template as a user turn"},
      {"system", "TEXT", "with --chat: the system message (default: the template's own)"},
      {"max-tokens", "N", "tokens to generate at most (default 64)"},
  };
  for (auto& spec : sampling_option_specs()) o.push_back(spec);
  for (auto& spec : engine_option_specs()) o.push_back(spec);
  const std::vector<OptionSpec> rest = {
      {"ignore-eos", "", "keep generating past the end-of-generation token"},
      {"print-tokens", "", "print the generated token ids to stderr"},
      {"interpreter", "", "run through the reference interpreter instead of compiled code"},
      {"streams", "S", "generate S replies in one forward pass per token (default 1)"},
      {"style", "TEXT", "with --streams: one reply style per stream, e.g. formal (repeatable)", true},
      {"adapter", "PATH", "LoRA adapter (PEFT folder or GGUF LoRA) applied at run time"},
      {"stream-adapter", "PATH", "with --streams: stream i's adapter, or none (repeatable)", true},
      {"adapter-scale", "F", "multiplies the adapters' own scale (default 1)"},
      {"ds2d", "", "decode with DS2D self-speculative tree decoding (with --streams: every stream in one "
                   "verify pass); prints its statistics"},
      {"ds2d-template", "N", "with --ds2d: always verify with tree template N (default: chosen each step)"},
      {"ds2d-no-early-exit", "", "with --ds2d: no early-exit drafts"},
      {"ds2d-recycle", "", "with --ds2d: also draft from the model's recent predictions (token recycling)"},
      {"ds2d-corpus", "FILE", "with --ds2d: also draft from these texts (separated by lines \"===\"), e.g. the "
                              "model's earlier replies"},
      {"ds2d-compare", "", "with --ds2d: also decode plainly (with --streams: all streams), report the speedup "
                           "and check the output"},
  };
  o.insert(o.end(), rest.begin(), rest.end());
  return o;
}

// Reply styles for --streams when --style is not given.
static const char* kDefaultStyles[] = {"formal", "polite", "jovial", "concise", "enthusiastic", "poetic"};

// DS2D's statistics on stderr: steps, acceptance, template use and cost, where the time went.
static int print_ds2d_stats(const kiln_ds2d* ds) {
  kiln_ds2d_stats st{};
  if (kiln_ds2d_get_stats(ds, &st) != KILN_OK) {
    fmt::print(stderr, "kiln run: {}\n", kiln_last_error());
    return 1;
  }
  fmt::print(stderr, "[ds2d] steps {} (verify {}, plain {}) | accepted drafts per verify pass {:.2f} "
             "({} of {} drafted) | tokens per step {:.2f}{}\n",
             st.steps, st.verify_passes, st.plain_steps,
             st.stream_passes ? (double)st.accepted / (double)st.stream_passes : 0.0, st.accepted, st.drafted,
             st.steps ? (double)st.tokens / (double)st.steps : 0.0,
             st.corpus_tokens ? fmt::format(" | corpus {} tokens", st.corpus_tokens) : std::string());
  std::string uses;
  for (int32_t t = 0; t < st.n_templates; ++t)
    uses += fmt::format(" {}-node: {} passes ({:.2f} ms)", st.template_nodes[t], st.template_uses[t],
                        st.template_seconds[t] * 1e3);
  fmt::print(stderr, "[ds2d] templates:{} | plain step {:.2f} ms | early-exit drafts {} | time: draft {:.3f} s, "
             "verify {:.3f} s, plain {:.3f} s\n", uses.empty() ? " none (the model has no tree templates)" : uses,
             st.plain_step_seconds * 1e3, st.early_exit_drafts, st.draft_seconds, st.verify_seconds, st.plain_seconds);
  return 0;
}

// Several styled replies to one prompt, decoded together: each stream's prompt is the
// user's prompt plus its style request. The tokens all streams share are prefilled once
// and copied (kiln_session_copy_stream), the style requests of all streams together
// (kiln_prefill_streams); then one kiln_decode call per step advances every stream still
// generating (with --ds2d one kiln_ds2d_step, which may give each several tokens). Replies
// print labelled, once all are done.
static int run_streams(const Args& args, const Tokenizer& tok, const std::optional<std::string>& chat_template,
                       EngineOptions eo, const SamplerParams& sp, int64_t max_tokens) {
  auto fail = [](const std::string& m) { fmt::print(stderr, "kiln run: {}\n", m); return 1; };
  std::vector<std::string> styles = args.all("style");
  // With --stream-adapter, the adapters give the style: no style request unless --style.
  std::vector<std::string> adapters = args.all("stream-adapter");
  adapters.resize((size_t)eo.max_streams, "none");
  const bool by_adapter = !args.all("stream-adapter").empty();
  for (size_t i = styles.size(); i < (size_t)eo.max_streams; ++i)
    styles.push_back(by_adapter ? "" : kDefaultStyles[i % (sizeof kDefaultStyles / sizeof *kDefaultStyles)]);
  styles.resize((size_t)eo.max_streams);
  if (!chat_template) return fail(fmt::format("{}: --streams needs a chat template", eo.model_path));

  std::vector<std::vector<int32_t>> prompts;
  for (auto& style : styles) {
    std::vector<ChatMessage> msgs;
    if (auto sys = args.get("system")) msgs.push_back({"system", *sys});
    msgs.push_back({"user", *args.get("prompt") + (style.empty() ? "" : fmt::format("\n\nReply in a {} style.", style))});
    auto text = apply_chat_template(*chat_template, msgs, true);
    if (!text.ok()) return fail(text.error().message);
    prompts.push_back(tok.encode(*text, true, true));
  }
  for (size_t i = 0; i < prompts.size(); ++i)
    if ((int64_t)prompts[i].size() + max_tokens > eo.max_context)
      return fail(fmt::format("stream {} ({}): prompt ({} tokens) plus --max-tokens {} exceeds the context of {} "
                              "({})", i, styles[i].empty() ? "no style" : styles[i], prompts[i].size(),
                              max_tokens, eo.max_context, context_hint(eo)));
  size_t shared = prompts[0].size();
  for (auto& p : prompts) {
    size_t k = 0;
    while (k < shared && k < p.size() && p[k] == prompts[0][k]) ++k;
    shared = k;
  }
  shared = std::min(shared, prompts[0].size() - 1);  // every stream prefills at least one token

  auto t0 = std::chrono::steady_clock::now();
  if (by_adapter) {
    // A compile for the cache gets a slot per stream (any mix of adapters then reuses it);
    // an artifact needs only slot 0 and one per distinct adapter.
    std::vector<std::string> distinct;
    for (const auto& a : adapters)
      if (a != "none" && std::find(distinct.begin(), distinct.end(), a) == distinct.end()) distinct.push_back(a);
    eo.lora_slots = eo.max_streams + 1;
    eo.lora_slots_needed = 1 + (int64_t)distinct.size();
  }
  auto cs = open_compiled_session(eo);
  if (!cs.ok()) return fail(cs.error().message);
  kiln_session* sess = (*cs)->session;
  const int32_t V = kiln_model_n_vocab((*cs)->model);
  const int32_t S = (int32_t)eo.max_streams;
  std::vector<float> logits((size_t)V * S);
  auto check = [&](kiln_status st) { return st == KILN_OK ? 0 : fail(kiln_last_error()); };
  std::vector<std::string> labels = styles;
  // Stream i reads slot i + 1 (each adapter loaded once per path) or slot 0 for "none".
  std::vector<int32_t> slot_of((size_t)S, 0);
  if (by_adapter) {
    auto scale = args.get_float("adapter-scale", 1.0, -100.0, 100.0);
    if (!scale.ok()) return fail(scale.error().message);
    int32_t next_slot = 1;
    for (int32_t i = 0; i < S; ++i) {
      const std::string& path = adapters[(size_t)i];
      if (path == "none") { labels[(size_t)i] = styles[(size_t)i].empty() ? "base" : styles[(size_t)i]; continue; }
      for (int32_t j = 0; j < i; ++j)
        if (adapters[(size_t)j] == path) slot_of[(size_t)i] = slot_of[(size_t)j];
      if (slot_of[(size_t)i] == 0) {
        if (check(kiln_adapter_load(sess, path.c_str(), next_slot))) return 1;
        slot_of[(size_t)i] = next_slot++;
      }
      if (check(kiln_stream_set_adapter(sess, i, slot_of[(size_t)i], (float)*scale))) return 1;
      kiln_adapter_info info;
      if (check(kiln_adapter_query(sess, slot_of[(size_t)i], &info))) return 1;
      labels[(size_t)i] = styles[(size_t)i].empty() ? std::string(info.name)
                                                    : fmt::format("{} + {}", info.name, styles[(size_t)i]);
    }
  }
  // With --ds2d the controller is made now: after the adapters are set (its timing passes
  // run on the streams' slots) and before the prefill (it times rows past the emptiest
  // stream, which the prefill then overwrites).
  Ds2dPtr ds(nullptr, kiln_ds2d_free);
  if (args.flag("ds2d")) {
    auto d = make_ds2d(args, sess, tok);
    if (!d.ok()) return fail(d.error().message);
    ds = std::move(*d);
  }
  auto t1 = std::chrono::steady_clock::now();
  // The shared prompt tokens are prefilled once per adapter slot (their KV depends on it),
  // on the first stream of that slot, and copied to the others; then every stream's own
  // tokens (its style request) — each group in one call, so in shared steps.
  std::vector<int32_t> first_of_slot((size_t)S);  // the first stream reading stream i's slot
  for (int32_t i = 0; i < S; ++i)
    while (slot_of[(size_t)first_of_slot[(size_t)i]] != slot_of[(size_t)i]) ++first_of_slot[(size_t)i];
  auto prefill = [&]() -> int {
    std::vector<const int32_t*> ptrs;
    std::vector<int32_t> lens, ids;
    if (shared > 0) {
      for (int32_t i = 0; i < S; ++i)
        if (first_of_slot[(size_t)i] == i)
          ptrs.push_back(prompts[(size_t)i].data()), lens.push_back((int32_t)shared), ids.push_back(i);
      if (check(kiln_prefill_streams(sess, ptrs.data(), lens.data(), ids.data(), (int32_t)ids.size(), nullptr))) return 1;
      for (int32_t i = 0; i < S; ++i)
        if (first_of_slot[(size_t)i] != i &&
            check(kiln_session_copy_stream(sess, first_of_slot[(size_t)i], i, (int32_t)shared)))
          return 1;
    }
    ptrs.clear(), lens.clear(), ids.clear();
    for (int32_t i = 0; i < S; ++i)
      ptrs.push_back(prompts[(size_t)i].data() + shared), lens.push_back((int32_t)(prompts[(size_t)i].size() - shared)),
          ids.push_back(i);
    return check(kiln_prefill_streams(sess, ptrs.data(), lens.data(), ids.data(), S, logits.data()));
  };
  if (prefill()) return 1;
  auto t2 = std::chrono::steady_clock::now();

  // Each stream's sampler (seed + stream index), first token from the prefill's logits.
  const bool ignore_eos = args.flag("ignore-eos");
  std::vector<std::unique_ptr<kiln_sampler, void (*)(kiln_sampler*)>> samplers;
  // A token of stream i from its logits; a failure (logits an adapter overflowed) names the
  // stream as kiln_ds2d_step does (from 0), with its reply's label.
  auto sample_for = [&](int32_t i, const float* lg, int32_t* id) {
    if (kiln_sampler_sample(samplers[(size_t)i].get(), lg, V, id) == KILN_OK) return 0;
    return fail(fmt::format("stream {} ({}): {}", i, labels[(size_t)i].empty() ? "plain" : labels[(size_t)i],
                            kiln_last_error()));
  };
  auto make_samplers = [&]() -> int {
    samplers.clear();
    for (int32_t i = 0; i < S; ++i) {
      kiln_sampler_params kp{sp.temperature, sp.top_k, sp.top_p, sp.seed + (uint64_t)i};
      kiln_sampler* p = nullptr;
      if (check(kiln_sampler_init(&kp, &p))) return 1;
      samplers.emplace_back(p, kiln_sampler_free);
    }
    return 0;
  };
  // Plain decoding: one kiln_decode call per step advances every stream still generating.
  auto decode_plain = [&](std::vector<std::vector<int32_t>>& out) -> int {
    if (make_samplers()) return 1;
    out.assign((size_t)S, {});
    std::vector<int32_t> active(S);
    for (int32_t i = 0; i < S; ++i) active[(size_t)i] = i;
    std::vector<float> step_logits = logits;  // row i of the last step belongs to active[i]
    for (int64_t t = 0; t < max_tokens && !active.empty(); ++t) {
      std::vector<int32_t> still, toks;
      for (size_t r = 0; r < active.size(); ++r) {
        int32_t id = 0;
        if (sample_for(active[r], step_logits.data() + r * V, &id)) return 1;
        if (tok.is_eog(id) && !ignore_eos) continue;
        out[(size_t)active[r]].push_back(id);
        still.push_back(active[r]);
        toks.push_back(id);
      }
      active = still;
      if (active.empty() || t + 1 == max_tokens) break;
      if (check(kiln_decode(sess, toks.data(), active.data(), (int32_t)active.size(), step_logits.data()))) return 1;
    }
    return 0;
  };
  // DS2D: one kiln_ds2d_step per step over every stream still generating, each with its
  // own draft tree, acceptance and sampler; a step yields one or more tokens per stream.
  auto decode_ds2d = [&](std::vector<std::vector<int32_t>>& out) -> int {
    if (make_samplers()) return 1;
    out.assign((size_t)S, {});
    const int32_t stride = kiln_ds2d_max_step_tokens(ds.get());
    std::vector<int32_t> active, roots, buf((size_t)S * (size_t)stride), n_out((size_t)S);
    auto take = [&](int32_t i, int32_t id) {  // false: stream i is done
      if ((tok.is_eog(id) && !ignore_eos) || (int64_t)out[(size_t)i].size() >= max_tokens) return false;
      out[(size_t)i].push_back(id);
      return (int64_t)out[(size_t)i].size() < max_tokens;
    };
    for (int32_t i = 0; i < S; ++i) {
      if (check(kiln_ds2d_begin(ds.get(), i, prompts[(size_t)i].data(), (int32_t)prompts[(size_t)i].size()))) return 1;
      int32_t id = 0;
      if (sample_for(i, logits.data() + (size_t)i * V, &id)) return 1;
      if (take(i, id)) active.push_back(i), roots.push_back(id);
    }
    while (!active.empty()) {
      std::vector<kiln_sampler*> sps;
      for (int32_t i : active) sps.push_back(samplers[(size_t)i].get());
      if (check(kiln_ds2d_step(ds.get(), roots.data(), active.data(), (int32_t)active.size(), sps.data(), buf.data(),
                               stride, n_out.data())))
        return 1;
      std::vector<int32_t> still, still_roots;
      for (size_t r = 0; r < active.size(); ++r) {
        bool going = true;
        for (int32_t j = 0; j < n_out[r] && going; ++j) going = take(active[r], buf[r * (size_t)stride + (size_t)j]);
        if (going) still.push_back(active[r]), still_roots.push_back(buf[r * (size_t)stride + (size_t)n_out[r] - 1]);
      }
      active = still;
      roots = still_roots;
    }
    return 0;
  };

  std::vector<std::vector<int32_t>> replies;
  if (ds ? decode_ds2d(replies) : decode_plain(replies)) return 1;
  auto t3 = std::chrono::steady_clock::now();
  size_t generated = 0;
  for (int32_t i = 0; i < S; ++i) {
    std::string text;
    for (int32_t id : replies[(size_t)i]) text += tok.piece(id);
    generated += replies[(size_t)i].size();
    fmt::print("[{}] {}\n\n", labels[(size_t)i], text);
  }
  std::fflush(stdout);
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  fmt::print(stderr, "[kiln] engine: compiled{}, {} streams | load {:.2f} s | prompts {} tokens ({} shared, prefilled once{}) "
             "in {:.2f} s | generated {} tokens in {:.2f} s ({:.1f} tok/s over all streams)\n",
             ds ? " + DS2D" : "", S, secs(t0, t1), shared + [&] { size_t n = 0; for (auto& p : prompts) n += p.size() - shared; return n; }(),
             shared, by_adapter ? " per adapter" : "", secs(t1, t2), generated, secs(t2, t3), generated / std::max(1e-9, secs(t2, t3)));
  if (!ds) return 0;
  if (print_ds2d_stats(ds.get())) return 1;
  if (!args.flag("ds2d-compare")) return 0;
  // The same replies decoded plainly, from a fresh prefill.
  if (check(kiln_session_reset(sess, KILN_ALL_STREAMS))) return 1;
  if (prefill()) return 1;
  std::vector<std::vector<int32_t>> plain;
  auto p1 = std::chrono::steady_clock::now();
  if (decode_plain(plain)) return 1;
  auto p2 = std::chrono::steady_clock::now();
  size_t plain_generated = 0;
  for (auto& r : plain) plain_generated += r.size();
  const double ds_tps = generated / std::max(1e-9, secs(t2, t3));
  const double plain_tps = plain_generated / std::max(1e-9, secs(p1, p2));
  fmt::print(stderr, "[ds2d] plain multi-stream decode: {} tokens, {:.1f} tok/s over all streams | speedup {:.2f}x | output {}\n",
             plain_generated, plain_tps, plain_tps > 0 ? ds_tps / plain_tps : 0.0,
             plain == replies ? "identical" : (sp.temperature > 0 ? "differs (sampling)" : "DIFFERS"));
  return sp.temperature <= 0 && plain != replies ? 1 : 0;
}

// --ds2d: prefill, then kiln_ds2d_step until max_tokens or the end of generation; each
// step may produce several tokens. Statistics (accepted drafts per verify pass, template
// use, tokens/s) go to stderr; --ds2d-compare decodes the same prompt plainly afterwards
// and reports the speedup and whether the text is the same. With --adapter (eo.lora_slots
// set by cmd_run) the adapter goes into slot 1 and stream 0 reads it, before the DS2D
// controller is created (its timing passes run on the stream's slot too), and the
// comparison decode keeps it.
static int run_ds2d(const Args& args, const Tokenizer& tok, EngineOptions eo, const SamplerParams& sp,
                    int64_t max_tokens, const std::vector<int32_t>& prompt) {
  auto fail = [](const std::string& m) { fmt::print(stderr, "kiln run: {}\n", m); return 1; };
  auto cs = open_compiled_session(eo);
  if (!cs.ok()) return fail(cs.error().message);
  kiln_session* sess = (*cs)->session;
  auto check = [&](kiln_status st) { return st == KILN_OK ? 0 : fail(kiln_last_error()); };
  std::string label;
  if (auto path = args.get("adapter")) {
    auto scale = args.get_float("adapter-scale", 1.0, -100.0, 100.0);
    if (!scale.ok()) return fail(scale.error().message);
    if (check(kiln_adapter_load(sess, path->c_str(), 1))) return 1;
    if (check(kiln_stream_set_adapter(sess, 0, 1, (float)*scale))) return 1;
    kiln_adapter_info info;
    if (check(kiln_adapter_query(sess, 1, &info))) return 1;
    label = fmt::format("[{}] ", info.name);
  }
  auto made = make_ds2d(args, sess, tok);
  if (!made.ok()) return fail(made.error().message);
  Ds2dPtr guard = std::move(*made);
  kiln_ds2d* ds = guard.get();
  kiln_sampler_params kp{sp.temperature, sp.top_k, sp.top_p, sp.seed};
  kiln_sampler* smp = nullptr;
  if (check(kiln_sampler_init(&kp, &smp))) return 1;
  std::unique_ptr<kiln_sampler, void (*)(kiln_sampler*)> sguard(smp, kiln_sampler_free);
  const int32_t V = kiln_model_n_vocab((*cs)->model);
  std::vector<float> logits((size_t)V);
  const bool ignore_eos = args.flag("ignore-eos");
  int32_t zero = 0;

  auto t0 = std::chrono::steady_clock::now();
  if (check(kiln_prefill(sess, prompt.data(), (int32_t)prompt.size(), 0, logits.data()))) return 1;
  auto t1 = std::chrono::steady_clock::now();
  int32_t root = 0;
  if (check(kiln_sampler_sample(smp, logits.data(), V, &root))) return 1;
  if (check(kiln_ds2d_begin(ds, 0, prompt.data(), (int32_t)prompt.size()))) return 1;
  std::vector<int32_t> generated, buf((size_t)kiln_ds2d_max_step_tokens(ds));
  std::fwrite(label.data(), 1, label.size(), stdout);  // as plain `kiln run --adapter` does
  auto emit = [&](int32_t id) {
    if ((tok.is_eog(id) && !ignore_eos) || (int64_t)generated.size() >= max_tokens) return false;
    generated.push_back(id);
    const std::string& piece = tok.piece(id);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  };
  bool going = emit(root);
  while (going && (int64_t)generated.size() < max_tokens) {
    int32_t n_out = 0;
    kiln_sampler* const samplers[1] = {smp};
    if (check(kiln_ds2d_step(ds, &root, &zero, 1, samplers, buf.data(), (int32_t)buf.size(), &n_out))) return 1;
    for (int32_t i = 0; i < n_out && going; ++i) going = emit(buf[(size_t)i]);
    root = buf[(size_t)n_out - 1];
  }
  auto t2 = std::chrono::steady_clock::now();
  std::fputc('\n', stdout);
  std::fflush(stdout);
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  // Tokens after the first (which comes from the prefill's logits), as plain decode counts.
  const double decode_s = secs(t1, t2);
  const double tps = generated.size() > 1 ? (generated.size() - 1) / decode_s : 0.0;
  if (args.flag("print-tokens")) fmt::print(stderr, "tokens: {}\n", fmt::join(generated, " "));
  fmt::print(stderr, "[kiln] engine: compiled + DS2D | prompt {} tokens in {:.2f} s | generated {} tokens in "
             "{:.2f} s ({:.2f} tok/s)\n", prompt.size(), secs(t0, t1), generated.size(), decode_s, tps);
  if (print_ds2d_stats(ds)) return 1;
  if (args.flag("ds2d-compare")) {
    if (check(kiln_session_reset(sess, 0))) return 1;
    kiln_sampler* ps = nullptr;
    if (check(kiln_sampler_init(&kp, &ps))) return 1;
    std::unique_ptr<kiln_sampler, void (*)(kiln_sampler*)> pguard(ps, kiln_sampler_free);
    if (check(kiln_prefill(sess, prompt.data(), (int32_t)prompt.size(), 0, logits.data()))) return 1;
    auto p1 = std::chrono::steady_clock::now();
    std::vector<int32_t> plain;
    for (int64_t i = 0; i < max_tokens; ++i) {
      int32_t id = 0;
      if (check(kiln_sampler_sample(ps, logits.data(), V, &id))) return 1;
      if (tok.is_eog(id) && !ignore_eos) break;
      plain.push_back(id);
      if (i + 1 == max_tokens) break;
      if (check(kiln_decode(sess, &id, &zero, 1, logits.data()))) return 1;
    }
    auto p2 = std::chrono::steady_clock::now();
    const double plain_tps = plain.size() > 1 ? (plain.size() - 1) / secs(p1, p2) : 0.0;
    fmt::print(stderr, "[ds2d] plain decode: {} tokens in {:.2f} s ({:.2f} tok/s) | speedup {:.2f}x | output {}\n",
               plain.size(), secs(p1, p2), plain_tps, plain_tps > 0 ? tps / plain_tps : 0.0,
               plain == generated ? "identical"
                                  : (sp.temperature > 0 ? "differs (sampling)" : "DIFFERS"));
    if (sp.temperature <= 0 && plain != generated) return 1;
  }
  return 0;
}

int cmd_run(int argc, char** argv) {
  const CommandSpec spec = {
    .name = "run",
    .help = "usage: kiln run MODEL --prompt TEXT [options]\n\nMODEL: a GGUF file or a Hugging Face checkpoint folder.\nGenerates text from a "
            "prompt and streams it to stdout; statistics go to stderr.",
    .options = run_options(),
    .operand = "MODEL",
    .required = {{"prompt", "--prompt TEXT"}},
  };
  int status = 0;
  const auto args = parse_command(argc, argv, spec, status);
  if (!args) return status;
  auto fail = [](const std::string& m) { fmt::print(stderr, "kiln run: {}\n", m); return 1; };
  // A wrong command line (a bad value or combination of options) exits 2, as a parse error.
  auto usage = [](const std::string& m) { return usage_error("run", m); };
  auto max_tokens = args->get_int("max-tokens", 64, 0, 1 << 20);
  if (!max_tokens.ok()) return usage(max_tokens.error().message);
  auto sp = parse_sampling_options(*args);
  if (!sp.ok()) return usage(sp.error().message);
  auto streams = args->get_int("streams", 1, 1, 64);
  if (!streams.ok()) return usage(streams.error().message);
  if (*streams > 1 && args->flag("interpreter")) return usage("--streams runs on compiled code, not --interpreter");

  const std::string model_path = args->positional()[0];
  auto parsed = parse_engine_options(*args, model_path);
  if (!parsed.ok()) return usage(parsed.error().message);
  EngineOptions eo = *parsed;
  eo.max_streams = *streams;
  // Options that only mean something with another are refused alone, not ignored.
  const size_t n_stream_adapters = args->all("stream-adapter").size(), n_styles = args->all("style").size();
  if (n_stream_adapters > 0 && *streams < 2) return usage("--stream-adapter needs --streams S >= 2");
  if (n_styles > 0 && *streams < 2)
    return usage("--style needs --streams S >= 2 (for one reply, ask for the style in --prompt)");
  if (n_stream_adapters > 0 && n_stream_adapters != (size_t)*streams)
    return usage(fmt::format("--stream-adapter given {} times for --streams {}: give one per stream ('none' for "
                             "the base model)", n_stream_adapters, *streams));
  if (n_styles > (size_t)*streams)
    return usage(fmt::format("--style given {} times for --streams {}: at most one per stream", n_styles, *streams));
  if (args->get("adapter") && *streams > 1)
    return usage("--adapter puts one adapter on a single stream; with --streams give --stream-adapter once per "
                 "stream instead");
  if (args->get("adapter-scale") && !args->get("adapter") && n_stream_adapters == 0)
    return usage("--adapter-scale needs --adapter or --stream-adapter");
  if (!args->flag("ds2d"))
    for (const char* o : {"ds2d-template", "ds2d-no-early-exit", "ds2d-recycle", "ds2d-compare", "ds2d-corpus"})
      if (args->get(o) || args->flag(o)) return usage(fmt::format("--{} needs --ds2d", o));
  if (args->get("adapter") && args->flag("interpreter")) return usage("--adapter runs on compiled code, not --interpreter");
  auto t_load = std::chrono::steady_clock::now();
  auto text_parts = load_model_text(model_path);
  if (!text_parts.ok()) return fail(text_parts.error().message);
  const Tokenizer* tok = &text_parts->tokenizer;
  const std::optional<std::string>& chat_template = text_parts->chat_template;

  if (args->get("adapter")) eo.lora_slots = 2;
  if (*streams > 1)
    return run_streams(*args, *tok, chat_template, eo, *sp, *max_tokens);

  std::string prompt = *args->get("prompt");
  if (args->flag("chat")) {
    if (!chat_template)
      return fail(fmt::format("{}: --chat needs the key 'tokenizer.chat_template', which the model lacks",
                              model_path));
    std::vector<ChatMessage> msgs;
    if (auto sys = args->get("system")) msgs.push_back({"system", *sys});
    msgs.push_back({"user", prompt});
    auto text = apply_chat_template(*chat_template, msgs, true);
    if (!text.ok()) return fail(text.error().message);
    prompt = *text;
  }
  std::vector<int32_t> tokens = tok->encode(prompt, true, args->flag("chat"));
  if (tokens.empty()) return fail("the prompt encodes to no tokens");
  if ((int64_t)tokens.size() + *max_tokens > eo.max_context)
    return fail(fmt::format("prompt ({} tokens) plus --max-tokens {} exceeds the context of {} ({})",
                            tokens.size(), *max_tokens, eo.max_context, context_hint(eo)));
  spdlog::info("prompt: {} tokens", tokens.size());
  if (args->flag("ds2d")) {
    if (args->flag("interpreter")) return usage("--ds2d runs on compiled code, not --interpreter");
    return run_ds2d(*args, *tok, eo, *sp, *max_tokens, tokens);
  }
  auto engine = args->flag("interpreter") ? make_interpreter_engine(eo) : make_compiled_engine(eo);
  if (!engine.ok()) return fail(engine.error().message);
  if (auto path = args->get("adapter")) {
    auto scale = args->get_float("adapter-scale", 1.0, -100.0, 100.0);
    if (!scale.ok()) return fail(scale.error().message);
    auto adapter = (*engine)->set_adapter(*path, (float)*scale);
    if (!adapter.ok()) return fail(adapter.error().message);
    fmt::print("[{}] ", *adapter);
  }

  auto step = [&](const std::vector<int32_t>& toks, int32_t) { return (*engine)->step(toks); };

  Sampler sampler(*sp);
  auto t0 = std::chrono::steady_clock::now();
  auto logits = step(tokens, 0);
  if (!logits.ok()) return fail(logits.error().message);
  auto t1 = std::chrono::steady_clock::now();
  std::vector<int32_t> generated;
  int32_t pos = (int32_t)tokens.size();
  for (int64_t i = 0; i < *max_tokens; ++i) {
    if (int64_t bad; !Sampler::usable(*logits, &bad))
      return fail(fmt::format("generating token {}: {}", i + 1, Sampler::unusable_reason(*logits, bad)));
    int32_t next = sampler.sample(*logits);
    if (tok->is_eog(next) && !args->flag("ignore-eos")) break;
    generated.push_back(next);
    const std::string& piece = tok->piece(next);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (i + 1 == *max_tokens) break;
    logits = step({next}, pos++);
    if (!logits.ok()) return fail(logits.error().message);
  }
  auto t2 = std::chrono::steady_clock::now();
  std::fputc('\n', stdout);
  std::fflush(stdout);
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  if (args->flag("print-tokens")) fmt::print(stderr, "tokens: {}\n", fmt::join(generated, " "));
  fmt::print(stderr, "[kiln] engine: {} | load {:.2f} s | prompt {} tokens in {:.2f} s ({:.1f} tok/s) | "
             "generated {} tokens in {:.2f} s ({:.2f} tok/s)\n",
             (*engine)->name(), secs(t_load, t0), tokens.size(), secs(t0, t1), tokens.size() / secs(t0, t1),
             generated.size(), secs(t1, t2), generated.size() > 1 ? (generated.size() - 1) / secs(t1, t2) : 0.0);
  return 0;
}

}  // namespace kiln::cli

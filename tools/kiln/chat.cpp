// tools/kiln/chat.cpp — `kiln chat MODEL`: a conversation at the terminal (or over a pipe).
//
// Each turn renders the whole conversation with the model's chat template and prefills
// only the tokens that differ from those the session already holds (the longest common
// prefix is kept, kiln_session_truncate drops the rest): a reply's own tokens are in the
// KV cache already, so a turn costs its new message, not the history. The compiled model
// has LoRA slots by default, so `/adapter PATH` switches the assistant's adapter mid-
// conversation without recompiling: an adapter already resident in a slot is a slot
// change (the history is then prefilled again under the new adapter, since its KV
// depends on it).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>

#include <fmt/format.h>

#include "frontend/chat_template.h"
#include "frontend/tokenizer.h"
#include "runtime/include/kiln/kiln.h"
#include "support/log.h"
#include "tools/kiln/args.h"
#include "tools/kiln/commands.h"
#include "tools/kiln/engine.h"
#include "tools/kiln/model_loader.h"
#include "tools/kiln/run_options.h"

namespace kiln::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Ctrl-C while a reply streams ends the reply (the conversation keeps what was said);
// at the prompt it leaves, as end of input does.
std::atomic<bool> g_interrupted{false};
std::atomic<bool> g_replying{false};  // a turn is under way (its prefill or its reply)
extern "C" void on_interrupt(int) {
  if (!g_replying.load()) std::_Exit(130);
  g_interrupted.store(true);
}

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

std::vector<OptionSpec> chat_options() {
  std::vector<OptionSpec> o = {
      {"system", "TEXT", "the system message (default: the template's own)"},
      {"max-tokens", "N", "tokens per reply at most (default 512, or half the context if smaller)"},
  };
  for (auto& s : sampling_option_specs()) o.push_back(s);
  for (auto& s : engine_option_specs()) o.push_back(s);
  o.push_back({"adapter", "PATH", "start with this LoRA adapter (PEFT folder or GGUF LoRA); /adapter switches"});
  o.push_back({"adapter-scale", "F", "multiplies the adapters' own scale (default 1)"});
  o.push_back({"adapter-slots", "K", "adapters resident at once, switched without reloading (default 3, or what an "
                                     "--artifact was compiled with; 0: compile without LoRA, a little faster, no "
                                     "/adapter)"});
  o.push_back({"ds2d", "", "decode replies with DS2D self-speculative tree decoding"});
  o.push_back({"ds2d-corpus", "FILE", "with --ds2d: also draft from these texts (separated by lines \"===\"), e.g. "
                                      "earlier conversations"});
  o.push_back({"no-prefix-reuse", "", "prefill the whole conversation every turn (slower; the replies are the same)"});
  return o;
}

constexpr const char* kCommands =
    "commands:\n"
    "  /adapter PATH [SCALE]  switch the assistant to a LoRA adapter (loaded once, then resident)\n"
    "  /adapter none          back to the base model\n"
    "  /system TEXT           replace the system message\n"
    "  /reset                 forget the conversation\n"
    "  /context               how much of the context the conversation uses\n"
    "  /help                  this list\n"
    "  /quit                  leave (so does end of input)\n"
    "A line ending in \\ continues on the next one. Ctrl-C stops a reply (at the prompt: leaves).\n";

class Chat {
 public:
  Chat(const Args& args, const Tokenizer& tok, std::string chat_template, LoadedArtifact& art, SamplerParams sp,
       int64_t max_tokens, int32_t adapter_slots, double adapter_scale)
      : args_(args), tok_(tok), template_(std::move(chat_template)), sess_(art.session),
        sp_(sp), max_tokens_(max_tokens), ctx_(kiln_model_max_context(art.model)),
        V_(kiln_model_n_vocab(art.model)), slot_paths_((size_t)adapter_slots + 1), scale_(adapter_scale),
        reuse_(!args.flag("no-prefix-reuse")) {
    if (auto sys = args.get("system")) system_ = *sys;
  }

  // 0 when the controller (with --ds2d) and sampler are ready.
  int init() {
    kiln_sampler_params kp{sp_.temperature, sp_.top_k, sp_.top_p, sp_.seed};
    kiln_sampler* s = nullptr;
    if (check(kiln_sampler_init(&kp, &s))) return 1;
    sampler_.reset(s);
    if (args_.flag("ds2d")) {
      auto d = make_ds2d(args_, sess_, tok_);
      if (!d.ok()) {
        fmt::print(stderr, "kiln chat: {}\n", d.error().message);
        return 1;
      }
      ds_ = std::move(*d);
    }
    return 0;
  }

  // Handles one line of input: a /command or a user message. false: leave.
  bool handle(const std::string& line) {
    if (line.empty()) return true;
    if (line[0] != '/') {
      user_turn(line);
      return true;
    }
    const size_t sp = line.find(' ');
    const std::string cmd = line.substr(0, sp);
    const std::string rest = sp == std::string::npos ? "" : trim(line.substr(sp + 1));
    if (cmd == "/quit" || cmd == "/exit") return false;
    if (cmd == "/help") fmt::print(stderr, "{}", kCommands);
    else if (cmd == "/reset") {
      messages_.clear();
      fmt::print(stderr, "[kiln] conversation cleared\n");
    } else if (cmd == "/system") {
      system_ = rest;
      fmt::print(stderr, "[kiln] system message {}\n", rest.empty() ? "back to the template's own" : "set");
    } else if (cmd == "/context") {
      // After /reset the cache still holds the old turns (a new turn reuses what matches);
      // the conversation itself holds nothing until its first message.
      fmt::print(stderr, "[kiln] {} of {} context tokens held ({} messages)\n", messages_.empty() ? 0 : held_.size(),
                 ctx_, messages_.size());
    } else if (cmd == "/adapter") {
      (void)switch_adapter(rest);
    } else {
      fmt::print(stderr, "[kiln] unknown command {} (/help lists them)\n", cmd);
    }
    return true;
  }

 private:
  static std::string trim(std::string s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
    size_t b = 0;
    while (b < s.size() && (s[b] == ' ' || s[b] == '\t')) ++b;
    return s.substr(b);
  }
  int check(kiln_status st) {
    if (st == KILN_OK) return 0;
    fmt::print(stderr, "kiln chat: {}\n", kiln_last_error());
    return 1;
  }

  // The conversation's tokens up to the assistant's next turn.
  Result<std::vector<int32_t>> render() const {
    std::vector<ChatMessage> msgs;
    if (!system_.empty()) msgs.push_back({"system", system_});
    msgs.insert(msgs.end(), messages_.begin(), messages_.end());
    KILN_ASSIGN(std::string text, apply_chat_template(template_, msgs, true));
    return tok_.encode(text, true, true);
  }

  void user_turn(const std::string& text) {
    messages_.push_back({"user", text});
    auto toks = render();
    // Room for a whole reply: the oldest exchanges go first (the system message stays).
    size_t dropped = 0;
    while (toks.ok() && (int64_t)toks->size() + max_tokens_ > ctx_ && messages_.size() > 1) {
      messages_.erase(messages_.begin(), messages_.begin() + std::min<size_t>(2, messages_.size() - 1));
      dropped += 2;
      toks = render();
    }
    if (!toks.ok()) {
      fmt::print(stderr, "kiln chat: {}\n", toks.error().message);
      messages_.pop_back();
      return;
    }
    if ((int64_t)toks->size() + max_tokens_ > ctx_) {
      fmt::print(stderr, "kiln chat: the message takes {} tokens with the template; with --max-tokens {} that "
                 "exceeds the context of {} (raise --ctx or shorten it)\n", toks->size(), max_tokens_, ctx_);
      messages_.pop_back();
      return;
    }
    if (dropped) fmt::print(stderr, "[kiln] context full: the oldest {} messages left the conversation\n", dropped);

    // Keep the tokens the session holds that the new rendering starts with (at least one
    // token must be prefilled, for the logits of the reply's first token).
    g_interrupted.store(false);
    g_replying.store(true);
    size_t keep = 0;
    if (reuse_)
      while (keep < held_.size() && keep + 1 < toks->size() && held_[keep] == (*toks)[keep]) ++keep;
    const auto t0 = Clock::now();
    if (check(kiln_session_truncate(sess_, 0, (int32_t)keep))) return abandon();
    std::vector<float> logits((size_t)V_);
    if (check(kiln_prefill(sess_, toks->data() + keep, (int32_t)(toks->size() - keep), 0, logits.data())))
      return abandon();
    held_ = *toks;
    const auto t1 = Clock::now();
    if (g_interrupted.load()) {  // Ctrl-C during the prefill: no reply, the message withdrawn
      g_replying.store(false);
      messages_.pop_back();
      fmt::print(stderr, "[kiln] stopped before the reply\n");
      return;
    }

    std::vector<int32_t> reply;
    std::string reply_text;
    auto emit = [&](int32_t id) {  // false: the reply is complete
      if (tok_.is_eog(id) || (int64_t)reply.size() >= max_tokens_ || g_interrupted.load()) return false;
      reply.push_back(id);
      const std::string& piece = tok_.piece(id);
      reply_text += piece;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return (int64_t)reply.size() < max_tokens_;
    };
    int32_t id = 0;
    if (check(kiln_sampler_sample(sampler_.get(), logits.data(), V_, &id))) return abandon();
    bool going = emit(id);
    int32_t zero = 0;
    if (ds_) {
      if (check(kiln_ds2d_begin(ds_.get(), 0, held_.data(), (int32_t)held_.size()))) return abandon();
      std::vector<int32_t> buf((size_t)kiln_ds2d_max_step_tokens(ds_.get()));
      kiln_sampler* const samplers[1] = {sampler_.get()};
      while (going) {
        int32_t n_out = 0;
        if (check(kiln_ds2d_step(ds_.get(), &id, &zero, 1, samplers, buf.data(), (int32_t)buf.size(), &n_out)))
          return abandon();
        for (int32_t i = 0; i < n_out && going; ++i) going = emit(buf[(size_t)i]);
        id = buf[(size_t)n_out - 1];
      }
    } else {
      while (going) {
        if (check(kiln_decode(sess_, &id, &zero, 1, logits.data()))) return abandon();
        if (check(kiln_sampler_sample(sampler_.get(), logits.data(), V_, &id))) return abandon();
        going = emit(id);
      }
    }
    g_replying.store(false);
    const auto t2 = Clock::now();
    std::fputs("\n", stdout);
    if (g_interrupted.load()) fmt::print(stderr, "[kiln] reply stopped\n");
    std::fflush(stdout);
    // The session holds the prompt and a prefix of the reply (DS2D may have written tokens
    // past an end-of-generation token it accepted: those are dropped).
    held_.insert(held_.end(), reply.begin(), reply.end());
    const int32_t pos = kiln_session_position(sess_, 0);
    if (pos > (int32_t)held_.size() && check(kiln_session_truncate(sess_, 0, (int32_t)held_.size()))) return abandon();
    held_.resize(std::min(held_.size(), (size_t)std::max(0, pos)));
    messages_.push_back({"assistant", reply_text});
    spdlog::info("turn: {} tokens kept, {} prefilled in {:.3f} s, {} generated in {:.3f} s", keep,
                 toks->size() - keep, secs(t0, t1), reply.size(), secs(t1, t2));
    if (spdlog::should_log(spdlog::level::info) || !isatty(STDIN_FILENO))
      fmt::print(stderr, "[kiln] prompt: {} new tokens ({} reused) in {:.2f} s | reply: {} tokens, {:.1f} tok/s\n",
                 toks->size() - keep, keep, secs(t0, t1), reply.size(),
                 reply.size() > 1 ? (double)(reply.size() - 1) / std::max(1e-9, secs(t1, t2)) : 0.0);
  }

  // After a failed step the session's state is unknown: start the next turn from scratch.
  void abandon() {
    g_replying.store(false);
    held_.clear();
    kiln_session_reset(sess_, 0);
    if (!messages_.empty() && messages_.back().role == "user") messages_.pop_back();
  }

 public:
  // /adapter's work (also --adapter's at start): false, after saying why, when the
  // stream's adapter did not change.
  bool switch_adapter(const std::string& rest) {
    if (slot_paths_.size() < 2) {
      fmt::print(stderr, "kiln chat: the model was compiled without LoRA slots (--adapter-slots 0, or an --artifact "
                 "compiled without --lora-slots): no /adapter\n");
      return false;
    }
    std::string path = rest;
    float scale = (float)scale_;
    // "PATH SCALE": a trailing number is the scale (paths with spaces still work without one).
    if (size_t sp = rest.rfind(' '); sp != std::string::npos) {
      char* end = nullptr;
      const std::string tail = rest.substr(sp + 1);
      const double v = std::strtod(tail.c_str(), &end);
      if (end && *end == 0 && !tail.empty()) path = trim(rest.substr(0, sp)), scale = (float)(v * scale_);
    }
    if (path.empty()) {
      fmt::print(stderr, "usage: /adapter PATH [SCALE] | /adapter none\n");
      return false;
    }
    if (!std::isfinite(scale) || std::fabs(scale) > 100.0f) {
      fmt::print(stderr, "kiln chat: adapter scale {:g} is not a number in [-100, 100] (still on {})\n", scale,
                 current_name());
      return false;
    }
    const auto t0 = Clock::now();
    int32_t slot = 0;
    bool loaded = false;
    if (path != "none") {
      for (size_t k = 1; k < slot_paths_.size(); ++k)
        if (slot_paths_[k] == path) slot = (int32_t)k;
      if (slot == 0) {
        // A free slot, else the one used longest ago other than the stream's own (unless
        // it is the only one: then the stream goes to the base model while it loads).
        size_t pick = 0;
        for (size_t k = 1; k < slot_paths_.size(); ++k) {
          if (slot_paths_[k].empty()) { pick = k; break; }
          if ((int32_t)k != current_ && (pick == 0 || last_use_[k] < last_use_[pick])) pick = k;
        }
        if (pick == 0) {
          pick = (size_t)current_;
          if (check(kiln_stream_set_adapter(sess_, 0, 0, 1.0f))) return false;
          current_ = 0;
          forget_history_kv();
        }
        if (kiln_adapter_load(sess_, path.c_str(), (int32_t)pick) != KILN_OK) {
          // The stream's own slot was not touched (or the stream is on the base model now).
          fmt::print(stderr, "kiln chat: {} (still on {})\n", kiln_last_error(), current_name());
          slot_paths_[pick].clear();  // a failed load leaves the slot without its adapter
          return false;
        }
        slot_paths_[pick] = path;
        slot = (int32_t)pick;
        loaded = true;
      }
    }
    const auto t1 = Clock::now();
    if (kiln_stream_set_adapter(sess_, 0, slot, slot ? scale : 1.0f) != KILN_OK) {
      fmt::print(stderr, "kiln chat: {} (still on {})\n", kiln_last_error(), current_name());
      return false;
    }
    const auto t2 = Clock::now();
    if (slot) last_use_[(size_t)slot] = ++uses_;
    current_ = slot;
    forget_history_kv();  // computed under the old adapter: the next turn prefills it again
    fmt::print(stderr, "[kiln] adapter: {}{} | switch {:.3f} ms{}\n", current_name(),
               slot ? fmt::format(" (slot {}, scale {:g})", slot, scale) : "", secs(t1, t2) * 1e3,
               loaded ? fmt::format(", loaded in {:.1f} ms", secs(t0, t1) * 1e3) : "");
    return true;
  }

 private:
  void forget_history_kv() {
    held_.clear();
    kiln_session_truncate(sess_, 0, 0);
  }

  std::string current_name() const {
    if (current_ == 0) return "base model";
    kiln_adapter_info info;
    if (kiln_adapter_query(sess_, current_, &info) != KILN_OK) return slot_paths_[(size_t)current_];
    return info.name;
  }

  const Args& args_;
  const Tokenizer& tok_;
  std::string template_;
  kiln_session* sess_;
  SamplerParams sp_;
  int64_t max_tokens_;
  int64_t ctx_;
  int32_t V_;
  std::string system_;
  std::vector<ChatMessage> messages_;
  std::vector<int32_t> held_;  // the tokens stream 0's KV cache holds
  std::vector<std::string> slot_paths_;  // [0] is the base model
  std::vector<uint64_t> last_use_ = std::vector<uint64_t>(slot_paths_.size(), 0);
  uint64_t uses_ = 0;
  int32_t current_ = 0;
  double scale_;
  bool reuse_;
  std::unique_ptr<kiln_sampler, void (*)(kiln_sampler*)> sampler_{nullptr, kiln_sampler_free};
  Ds2dPtr ds_{nullptr, kiln_ds2d_free};
};

}  // namespace

int cmd_chat(int argc, char** argv) {
  const CommandSpec spec = {
    .name = "chat",
    .help = "usage: kiln chat MODEL [options]\n\nMODEL: a GGUF file or a Hugging Face checkpoint folder with a chat "
            "template.\nA conversation: each line read from stdin is a user message, the reply streams to stdout "
            "(statistics and notes go to stderr). Each turn prefills only what the conversation added.",
    .options = chat_options(),
    .operand = "MODEL",
    .epilogue = "\n" + std::string(kCommands),
  };
  int status = 0;
  const auto args = parse_command(argc, argv, spec, status);
  if (!args) return status;
  auto fail = [](const std::string& m) { fmt::print(stderr, "kiln chat: {}\n", m); return 1; };
  auto usage = [](const std::string& m) { return usage_error("chat", m); };  // bad options
  const std::string model_path = args->positional()[0];
  auto sp = parse_sampling_options(*args);
  if (!sp.ok()) return usage(sp.error().message);
  auto eo = parse_engine_options(*args, model_path);
  if (!eo.ok()) return usage(eo.error().message);
  auto max_tokens = args->get_int("max-tokens", std::min<int64_t>(512, eo->max_context / 2), 1, 1 << 20);
  if (!max_tokens.ok()) return usage(max_tokens.error().message);
  if (args->get("ds2d-corpus") && !args->flag("ds2d")) return usage("--ds2d-corpus needs --ds2d");
  // With --artifact and no --adapter-slots, the artifact's own slots (none for a plain compile).
  const bool slots_from_artifact = !eo->artifact_dir.empty() && !args->get("adapter-slots");
  auto slots = args->get_int("adapter-slots", slots_from_artifact ? 0 : 3, 0, 64);
  if (!slots.ok()) return usage(slots.error().message);
  auto scale = args->get_float("adapter-scale", 1.0, -100.0, 100.0);
  if (!scale.ok()) return usage(scale.error().message);
  if (*slots == 0 && args->get("adapter") && !slots_from_artifact)
    return usage("--adapter needs LoRA slots (--adapter-slots 1 or more)");
  if (*max_tokens >= eo->max_context)
    return usage(fmt::format("--max-tokens {} leaves no room for a message in the context of {} ({})",
                             *max_tokens, eo->max_context, context_hint(*eo)));

  auto text = load_model_text(model_path);
  if (!text.ok()) return fail(text.error().message);
  if (!text->chat_template)
    return fail(fmt::format("{}: kiln chat needs a chat template (key 'tokenizer.chat_template'), which the model "
                            "lacks", model_path));
  eo->lora_slots = *slots > 0 ? *slots + 1 : 0;
  auto cs = open_compiled_session(*eo);
  if (!cs.ok()) return fail(cs.error().message);

  if (slots_from_artifact) *slots = std::max(0, kiln_model_lora_slots((*cs)->model) - 1);
  Chat chat(*args, text->tokenizer, *text->chat_template, **cs, *sp, *max_tokens, (int32_t)*slots, *scale);
  if (chat.init()) return 1;
  if (auto path = args->get("adapter"); path && !chat.switch_adapter(*path)) return 1;
  const bool tty = isatty(STDIN_FILENO);
  std::signal(SIGINT, on_interrupt);
  if (tty) fmt::print(stderr, "kiln chat: {} ({} context tokens). Type a message; /help lists the commands.\n",
                      model_path, eo->max_context);
  std::string line, message;
  for (;;) {
    if (tty) std::fputs(message.empty() ? "> " : ". ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty() && line.back() == '\\') {  // continued on the next line
      line.pop_back();
      message += line + "\n";
      continue;
    }
    message += line;
    const bool go_on = chat.handle(message);
    message.clear();
    if (!go_on) break;
  }
  if (!message.empty()) chat.handle(message);
  return 0;
}

}  // namespace kiln::cli

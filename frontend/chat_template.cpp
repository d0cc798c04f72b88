// frontend/chat_template.cpp — chat formats recognised from the template text.
#include "frontend/chat_template.h"

#include <optional>
#include <vector>

namespace kiln {
namespace {

constexpr struct {
  std::string_view name;
  ChatFormat format;
} kFormatNames[] = {
    {"chatml", ChatFormat::kChatML},
    {"llama2", ChatFormat::kLlama2},
    {"llama2-sys", ChatFormat::kLlama2Sys},
    {"llama2-sys-bos", ChatFormat::kLlama2SysBos},
    {"llama2-sys-strip", ChatFormat::kLlama2SysStrip},
    {"llama3", ChatFormat::kLlama3},
};

bool contains(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(kSpace);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kSpace) - b + 1);
}

// Contents of the string literals ('...' or "...") inside the Jinja tags ({{ }}, {% %}) of
// a template, escapes resolved. Text outside tags is output verbatim and is skipped.
std::vector<std::string> string_literals(std::string_view t) {
  std::vector<std::string> out;
  size_t i = 0;
  while ((i = t.find('{', i)) != std::string_view::npos) {
    if (i + 1 >= t.size() || (t[i + 1] != '{' && t[i + 1] != '%')) {
      ++i;
      continue;
    }
    const char close = t[i + 1] == '{' ? '}' : '%';
    for (i += 2; i < t.size(); ++i) {
      const char c = t[i];
      if (c == close && i + 1 < t.size() && t[i + 1] == '}') break;
      if (c != '\'' && c != '"') continue;
      std::string lit;
      size_t j = i + 1;
      for (; j < t.size() && t[j] != c; ++j) {
        if (t[j] == '\\' && j + 1 < t.size()) {
          const char e = t[++j];
          lit += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
        } else {
          lit += t[j];
        }
      }
      if (j >= t.size()) return out;  // unterminated literal
      out.push_back(std::move(lit));
      i = j;
    }
  }
  return out;
}

// A system message the template writes out whole, e.g.
//   '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\n'.
std::optional<std::string> chatml_default_system(std::string_view t) {
  constexpr std::string_view kOpen = "<|im_start|>system\n";
  constexpr std::string_view kClose = "<|im_end|>";
  for (const std::string& lit : string_literals(t)) {
    size_t b = lit.find(kOpen);
    if (b == std::string::npos) continue;
    size_t e = lit.find(kClose, b + kOpen.size());
    if (e == std::string::npos) continue;
    return lit.substr(b + kOpen.size(), e - b - kOpen.size());
  }
  return std::nullopt;
}

std::string quote_start(std::string_view t) {
  std::string s(t.substr(0, 80));
  for (char& c : s)
    if (c == '\n') c = ' ';
  return t.size() > 80 ? s + "..." : s;
}

}  // namespace

std::string_view chat_format_name(ChatFormat f) {
  for (const auto& n : kFormatNames)
    if (n.format == f) return n.name;
  return "?";
}

Result<ChatTemplate> detect_chat_template(std::string_view t) {
  for (const auto& n : kFormatNames)
    if (t == n.name) return ChatTemplate{n.format, {}};
  if (contains(t, "<|im_start|>")) {
    if (contains(t, "<|im_sep|>") || contains(t, "<end_of_utterance>"))
      return make_error("chat template: '<|im_start|>' template of an unsupported variant "
                        "(Phi-4 / SmolVLM): \"{}\"", quote_start(t));
    ChatTemplate ct{ChatFormat::kChatML, {}};
    if (auto sys = chatml_default_system(t)) ct.default_system = std::move(*sys);
    return ct;
  }
  if (contains(t, "[INST]")) {
    if (t.starts_with("mistral") || contains(t, "[SYSTEM_PROMPT]") ||
        contains(t, "' [INST] ' + system_message") || contains(t, "[AVAILABLE_TOOLS]"))
      return make_error("chat template: Mistral-style [INST] templates are not supported: \"{}\"",
                        quote_start(t));
    if (contains(t, "content.strip()")) return ChatTemplate{ChatFormat::kLlama2SysStrip, {}};
    if (contains(t, "bos_token + '[INST]")) return ChatTemplate{ChatFormat::kLlama2SysBos, {}};
    if (contains(t, "<<SYS>>")) return ChatTemplate{ChatFormat::kLlama2Sys, {}};
    return ChatTemplate{ChatFormat::kLlama2, {}};
  }
  if (contains(t, "<|start_header_id|>") && contains(t, "<|end_header_id|>"))
    return ChatTemplate{ChatFormat::kLlama3, {}};
  if (t.empty()) return make_error("chat template: the model has no chat template");
  return make_error("chat template: unrecognised template (supported: ChatML, LLaMA-2, "
                    "LLaMA-3): \"{}\"", quote_start(t));
}

std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> msgs,
                        bool add_assistant_prompt) {
  std::string out;
  switch (tmpl.format) {
    case ChatFormat::kChatML: {
      auto turn = [&](std::string_view role, std::string_view content) {
        out.append("<|im_start|>").append(role).append("\n").append(content).append("<|im_end|>\n");
      };
      if (!tmpl.default_system.empty() && !msgs.empty() && msgs.front().role != "system")
        turn("system", tmpl.default_system);
      for (const ChatMessage& m : msgs) turn(m.role, m.content);
      if (add_assistant_prompt) out += "<|im_start|>assistant\n";
      break;
    }
    case ChatFormat::kLlama2:
    case ChatFormat::kLlama2Sys:
    case ChatFormat::kLlama2SysBos:
    case ChatFormat::kLlama2SysStrip: {
      const bool sys_block = tmpl.format != ChatFormat::kLlama2;
      const bool bos_inside = tmpl.format == ChatFormat::kLlama2SysBos;
      const bool strip = tmpl.format == ChatFormat::kLlama2SysStrip;
      bool in_turn = true;  // the first [INST] follows the BOS the tokenizer adds
      out += "[INST] ";
      for (const ChatMessage& m : msgs) {
        std::string_view content = strip ? trim(m.content) : std::string_view(m.content);
        if (!in_turn) {
          in_turn = true;
          out += bos_inside ? "<s>[INST] " : "[INST] ";
        }
        if (m.role == "system") {
          if (sys_block) out.append("<<SYS>>\n").append(content).append("\n<</SYS>>\n\n");
          else out.append(content).append("\n");
        } else if (m.role == "user") {
          out.append(content).append(" [/INST]");
        } else {
          out.append(content).append("</s>");
          in_turn = false;
        }
      }
      break;
    }
    case ChatFormat::kLlama3:
      for (const ChatMessage& m : msgs) {
        out.append("<|start_header_id|>").append(m.role).append("<|end_header_id|>\n\n");
        out.append(trim(m.content)).append("<|eot_id|>");
      }
      if (add_assistant_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
  }
  return out;
}

Result<std::string> apply_chat_template(std::string_view template_text,
                                        std::span<const ChatMessage> msgs,
                                        bool add_assistant_prompt) {
  KILN_ASSIGN(ChatTemplate tmpl, detect_chat_template(template_text));
  return render_chat(tmpl, msgs, add_assistant_prompt);
}

}  // namespace kiln

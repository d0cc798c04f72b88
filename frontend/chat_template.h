// frontend/chat_template.h — renders a conversation in the model's chat format.
//
// kiln does not run Jinja. Like llama.cpp, it recognises the family of a model's
// tokenizer.chat_template by marker strings and renders that family with fixed code:
//   ChatML   "<|im_start|>role\ncontent<|im_end|>\n"; a default system message that the
//            template spells out as one string literal ("<|im_start|>system\n...<|im_end|>",
//            e.g. SmolLM2's, Qwen2's) is inserted when the first message is not "system",
//            as the Jinja template would;
//   LLaMA-2  "[INST] <<SYS>>\n...\n<</SYS>>\n\nuser [/INST]assistant</s>" and its variants
//            (no system support, BOS inside the history, stripped content);
//   LLaMA-3  "<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>" (content
//            trimmed; the BOS token is left to the tokenizer, as llama.cpp does).
// A family name ("chatml", "llama2", "llama3", ...) is accepted in place of a template.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "support/result.h"

namespace kiln {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

enum class ChatFormat {
  kChatML,
  kLlama2,           // system messages folded into the first user turn
  kLlama2Sys,        // <<SYS>> block
  kLlama2SysBos,     // <<SYS>> block, "<s>" before every later [INST]
  kLlama2SysStrip,   // <<SYS>> block, contents trimmed
  kLlama3,
};

struct ChatTemplate {
  ChatFormat format = ChatFormat::kChatML;
  std::string default_system;  // ChatML: inserted when the first message is not "system"
};

std::string_view chat_format_name(ChatFormat f);

// Recognises a template text (or a family name). Unknown templates give an Error that
// quotes the beginning of the text.
Result<ChatTemplate> detect_chat_template(std::string_view template_text);

// add_assistant_prompt: end with the header of an assistant turn (ChatML
// "<|im_start|>assistant\n", LLaMA-3 "<|start_header_id|>assistant<|end_header_id|>\n\n";
// LLaMA-2 has none).
std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> msgs,
                        bool add_assistant_prompt);

// detect_chat_template + render_chat.
Result<std::string> apply_chat_template(std::string_view template_text,
                                        std::span<const ChatMessage> msgs,
                                        bool add_assistant_prompt);

}  // namespace kiln

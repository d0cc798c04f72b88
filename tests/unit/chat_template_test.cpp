// tests/unit/chat_template_test.cpp — chat formats recognised from template texts.
// Expected strings for SmolLM2 were rendered with jinja2 from the model's own template;
// the LLaMA ones follow llama.cpp's built-in formats.
#include "frontend/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "frontend/gguf.h"

namespace kiln {
namespace {

// tokenizer.chat_template of SmolLM2-135M-Instruct (the newlines are real newlines).
constexpr std::string_view kSmolLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

constexpr std::string_view kSmolSystem =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n";

std::string apply(std::string_view tmpl, std::vector<ChatMessage> msgs, bool add_ass) {
  auto r = apply_chat_template(tmpl, msgs, add_ass);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : "";
}

TEST(ChatTemplate, SmolLM2DefaultSystem) {
  auto t = detect_chat_template(kSmolLM2);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->format, ChatFormat::kChatML);
  EXPECT_EQ(t->default_system,
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(apply(kSmolLM2, {{"user", "Hi"}}, true),
            std::string(kSmolSystem) + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // A system message of its own replaces the default.
  EXPECT_EQ(apply(kSmolLM2, {{"system", "S"}, {"user", "Hi"}, {"assistant", "Yo"}}, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nYo<|im_end|>\n");
  // Only the first message decides; no messages, no system message.
  EXPECT_EQ(apply(kSmolLM2, {{"user", "a"}, {"system", "b"}}, true),
            std::string(kSmolSystem) +
                "<|im_start|>user\na<|im_end|>\n<|im_start|>system\nb<|im_end|>\n"
                "<|im_start|>assistant\n");
  EXPECT_EQ(apply(kSmolLM2, {}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplate, SmolLM2FromModel) {
  if (!std::filesystem::exists(KILN_DEFAULT_MODEL)) GTEST_SKIP() << "no " KILN_DEFAULT_MODEL;
  auto f = GgufFile::open(KILN_DEFAULT_MODEL);
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto tmpl = (*f)->get_string("tokenizer.chat_template");
  ASSERT_TRUE(tmpl.ok()) << tmpl.error().message;
  EXPECT_EQ(*tmpl, kSmolLM2);
  EXPECT_EQ(apply(*tmpl, {{"user", "What is 2+2?"}}, true),
            std::string(kSmolSystem) +
                "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, PlainChatML) {
  // Escaped newlines inside the literal, no default system message.
  constexpr std::string_view kChatML =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
  EXPECT_EQ(apply(kChatML, {{"user", "Hi"}}, true),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(apply("chatml", {{"user", "Hi"}}, false), "<|im_start|>user\nHi<|im_end|>\n");
  // A Qwen-style default in an {% else %} branch, with escaped newlines.
  constexpr std::string_view kQwen =
      "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
      "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are "
      "Qwen.<|im_end|>\\n' }}{%- endif %}";
  auto t = detect_chat_template(kQwen);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->default_system, "You are Qwen.");
}

TEST(ChatTemplate, Llama3) {
  constexpr std::string_view kLlama3 =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
      "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
      "message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}";
  EXPECT_EQ(apply(kLlama3, {{"system", "Be brief."}, {"user", " Hi \n"}}, true),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, Llama2) {
  const std::vector<ChatMessage> msgs = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}, {"user", "Bye"}};
  // Meta's template strips contents.
  constexpr std::string_view kMeta =
      "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
      "{% endif %}{% for message in loop_messages %}{% set content = '<<SYS>>\\n' + "
      "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% if message['role'] == "
      "'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% endif %}{% endfor %}";
  auto t = detect_chat_template(kMeta);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->format, ChatFormat::kLlama2SysStrip);
  EXPECT_EQ(apply(kMeta, msgs, true),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]Hello</s>[INST] Bye [/INST]");
  EXPECT_EQ(apply("llama2", msgs, true), "[INST] Be brief.\nHi [/INST]Hello</s>[INST] Bye [/INST]");
  EXPECT_EQ(apply("llama2-sys-bos", msgs, false),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]Hello</s><s>[INST] Bye [/INST]");
}

TEST(ChatTemplate, Unknown) {
  auto r = apply_chat_template("{{ 'User: ' + message }}", {}, true);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("User: "), std::string::npos);
  EXPECT_FALSE(apply_chat_template("", {}, true).ok());
  EXPECT_FALSE(apply_chat_template("{{ '[SYSTEM_PROMPT]' }}[INST]", {}, true).ok());
}

}  // namespace
}  // namespace kiln

// tests/hf_export.h — writes a GGUF LLaMA back out as a Hugging Face checkpoint folder, the
// inverse of frontend/hf_checkpoint.cpp, for tests: config.json, model.safetensors (float
// tensors in their own dtype, quantized ones dequantized to F32, which is exact; q and k
// rows put back in Hugging Face's rope order), tokenizer.json and tokenizer_config.json.
// No checkpoint from the Hub is reachable here, so the importer is tested on this round
// trip: GGUF -> folder -> GGUF must give the same tensors and tokenizer (and a real
// model the same text); docs/models.md and docs/architecture.md say how the layout was
// checked against the Hugging Face modelling code's semantics independently.
#pragma once

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "frontend/adapter.h"
#include "frontend/gguf.h"
#include "frontend/gguf_names.h"
#include "frontend/hf_checkpoint.h"
#include "frontend/llama.h"
#include "frontend/lora_names.h"
#include "support/file.h"
#include "tests/unit/merged_model.h"

namespace kiln::testing {

inline std::string json_str(std::string_view s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += (char)c;
    else if (c < 0x20) o += fmt::format("\\u{:04x}", c);
    else o += (char)c;
  }
  return o + "\"";
}

struct HfExportOptions {
  bool shard = false;  // two shards and model.safetensors.index.json
};

// Writes the checkpoint of GGUF model `f` to folder `dir` (created).
inline Status export_hf(const GgufFile& f, const std::string& dir, const HfExportOptions& o = {}) {
  namespace fs = std::filesystem;
  namespace names = gguf_names;
  KILN_ASSIGN(LlamaConfig c, read_llama_config(f));
  fs::create_directories(dir);
  // Tensors: GGUF name -> HF name, rope order restored.
  struct Out { std::string name, dtype; std::vector<int64_t> shape; std::string bytes; };
  std::vector<Out> outs;
  for (const HfTensor& e : hf_tensor_table(c)) {  // the importer's own table, read backwards
    const GgufTensor* t = f.tensor(e.gguf);
    if (!t) {
      if (e.optional) continue;
      return make_error("export_hf: the model has no {}", e.gguf);
    }
    Out out{e.hf, "F32", logical_shape(*t), {}};
    if (t->type == DType::F32 || t->type == DType::F16 || t->type == DType::BF16) {
      out.dtype = t->type == DType::F32 ? "F32" : t->type == DType::F16 ? "F16" : "BF16";
      out.bytes.assign(reinterpret_cast<const char*>(t->data), (size_t)t->nbytes);
    } else {
      const std::vector<float> v = gguf_tensor_f32(*t);
      out.bytes.assign(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
    }
    if (const int64_t heads = e.rope_groups(c)) {  // GGUF row order back to Hugging Face's
      const std::string gguf_rows = out.bytes;
      rope_permute_rows(reinterpret_cast<const uint8_t*>(gguf_rows.data()), reinterpret_cast<uint8_t*>(out.bytes.data()),
                        out.shape[0], (int64_t)(out.bytes.size() / (size_t)out.shape[0]), heads, /*inverse=*/true);
    }
    outs.push_back(std::move(out));
  }
  // Safetensors: a JSON header (padded to 8 bytes), then the data.
  auto write_st = [&](const std::string& path, size_t begin, size_t end) -> Status {
    std::string header = "{", data;
    for (size_t i = begin; i < end; ++i) {
      const Out& t = outs[i];
      header += fmt::format("{}{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}", i > begin ? "," : "",
                            json_str(t.name), t.dtype, fmt::join(t.shape, ","), data.size(), data.size() + t.bytes.size());
      data += t.bytes;
    }
    header += "}";
    while (header.size() % 8) header += ' ';
    uint64_t n = header.size();
    std::string file(reinterpret_cast<const char*>(&n), 8);
    return write_file_atomic(path, file + header + data);
  };
  if (o.shard) {
    const size_t half = outs.size() / 2;
    KILN_TRY(write_st(dir + "/model-00001-of-00002.safetensors", 0, half));
    KILN_TRY(write_st(dir + "/model-00002-of-00002.safetensors", half, outs.size()));
    std::string map;
    for (size_t i = 0; i < outs.size(); ++i)
      map += fmt::format("{}{}:\"model-0000{}-of-00002.safetensors\"", i ? "," : "", json_str(outs[i].name), i < half ? 1 : 2);
    KILN_TRY(write_file_atomic(dir + "/model.safetensors.index.json", "{\"metadata\":{},\"weight_map\":{" + map + "}}"));
  } else {
    KILN_TRY(write_st(dir + "/model.safetensors", 0, outs.size()));
  }
  KILN_TRY(write_file_atomic(dir + "/config.json", fmt::format(
      "{{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"hidden_size\":{},\"intermediate_size\":{},"
      "\"num_hidden_layers\":{},\"num_attention_heads\":{},\"num_key_value_heads\":{},\"max_position_embeddings\":{},"
      "\"rms_norm_eps\":{},\"rope_theta\":{},\"vocab_size\":{},\"rope_scaling\":null,\"hidden_act\":\"silu\",\"attention_bias\":false,"
      "\"tie_word_embeddings\":{},\"torch_dtype\":\"float32\"}}",
      c.n_embd, c.n_ff, c.n_layer, c.n_head, c.n_head_kv, c.n_ctx_train, c.rms_eps, c.rope_theta, c.n_vocab,
      f.tensor(names::kOutput) ? "false" : "true")));
  // Tokenizer: vocab and merges; control and user-defined tokens as added tokens.
  KILN_ASSIGN(const GgufArray* tokens, f.get_array(names::kTokTokens));
  const GgufValue* types = f.find("tokenizer.ggml.token_type");
  const GgufValue* merges = f.find("tokenizer.ggml.merges");
  std::string vocab, added, merge_list;
  for (size_t i = 0; i < tokens->strings.size(); ++i) {
    vocab += fmt::format("{}{}:{}", i ? "," : "", json_str(tokens->strings[i]), i);
    const int64_t type = types && types->as_array() ? types->as_array()->ints[i] : 1;
    if (type == 3 || type == 4)
      added += fmt::format("{}{{\"id\":{},\"content\":{},\"single_word\":false,\"lstrip\":false,\"rstrip\":false,"
                           "\"normalized\":false,\"special\":{}}}", added.empty() ? "" : ",", i,
                           json_str(tokens->strings[i]), type == 3 ? "true" : "false");
  }
  if (merges && merges->as_array())
    for (size_t i = 0; i < merges->as_array()->strings.size(); ++i)
      merge_list += fmt::format("{}{}", i ? "," : "", json_str(merges->as_array()->strings[i]));
  KILN_ASSIGN(std::string_view pre, f.get_string("tokenizer.ggml.pre"));
  if (pre != "smollm") return make_error("export_hf: writes SmolLM's pre-tokenizer only, not {}", pre);
  KILN_TRY(write_file_atomic(dir + "/tokenizer.json", fmt::format(
      "{{\"version\":\"1.0\",\"added_tokens\":[{}],\"normalizer\":null,\"pre_tokenizer\":{{\"type\":\"Sequence\","
      "\"pretokenizers\":[{{\"type\":\"Digits\",\"individual_digits\":true}},{{\"type\":\"ByteLevel\","
      "\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}}]}},\"decoder\":{{\"type\":\"ByteLevel\"}},"
      "\"model\":{{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"byte_fallback\":false,\"ignore_merges\":false,"
      "\"vocab\":{{{}}},\"merges\":[{}]}}}}", added, vocab, merge_list)));
  auto special = [&](const char* key) -> std::string {
    const GgufValue* v = f.find(key);
    auto id = v ? v->as_int() : std::nullopt;
    return id && *id >= 0 && (size_t)*id < tokens->strings.size() ? json_str(tokens->strings[(size_t)*id]) : "null";
  };
  const GgufValue* tmpl = f.find(names::kChatTemplate);
  const GgufValue* add_bos = f.find("tokenizer.ggml.add_bos_token");
  return write_file_atomic(dir + "/tokenizer_config.json", fmt::format(
      "{{\"add_prefix_space\":false,{}\"bos_token\":{},\"eos_token\":{},\"pad_token\":{},\"unk_token\":{},"
      "\"clean_up_tokenization_spaces\":false,\"chat_template\":{},\"model_max_length\":{}}}",
      add_bos && add_bos->as_bool() ? fmt::format("\"add_bos_token\":{},", *add_bos->as_bool()) : "",
      special("tokenizer.ggml.bos_token_id"), special("tokenizer.ggml.eos_token_id"),
      special("tokenizer.ggml.padding_token_id"), special("tokenizer.ggml.unknown_token_id"),
      tmpl && tmpl->as_string() ? json_str(*tmpl->as_string()) : "null",
      c.n_ctx_train));
}

}  // namespace kiln::testing

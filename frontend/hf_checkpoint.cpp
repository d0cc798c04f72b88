// frontend/hf_checkpoint.cpp — see hf_checkpoint.h.
#include "frontend/hf_checkpoint.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>

#include "frontend/adapter.h"
#include "frontend/gguf_names.h"
#include "frontend/gguf_writer.h"
#include "frontend/llama.h"
#include "frontend/lora_names.h"
#include "frontend/safetensors.h"
#include "support/file.h"
#include "support/json.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
namespace names = gguf_names;

// The tokenizer.json pre-tokenizer of LLaMA 3 (a Split on this regex, then byte-level
// without its own regex).
constexpr std::string_view kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// GGUF token types (llama.cpp's llama_token_type).
constexpr int32_t kTokenNormal = 1, kTokenControl = 3, kTokenUserDefined = 4;

struct JsonFile {
  std::string path;
  Json json;
};

Result<JsonFile> parse_json(std::string_view text, const std::string& path) {
  auto j = Json::parse(text, 64);
  if (!j.ok()) return make_error("{}: {}", path, j.error().message);
  if (!j->as_object()) return make_error("{}: expected a JSON object", path);
  return JsonFile{path, std::move(*j)};
}

Result<JsonFile> read_json(const fs::path& p) {
  KILN_ASSIGN(std::string text, read_file(p.string()));
  return parse_json(text, p.string());
}

// Typed config.json access; errors name the file and key.
struct Config {
  const JsonFile& f;
  Result<int64_t> integer(std::string_view key, std::optional<int64_t> fallback = std::nullopt) const {
    const Json* v = f.json.get(key);
    if (!v || v->is_null()) {
      if (fallback) return *fallback;
      return make_error("{}: key '{}' is missing", f.path, key);
    }
    auto i = v->as_int();
    if (!i || *i < 1 || *i > (int64_t(1) << 32))
      return make_error("{}: key '{}' must be a positive integer", f.path, key);
    return *i;
  }
  Result<double> number(std::string_view key, double fallback) const {
    const Json* v = f.json.get(key);
    if (!v || v->is_null()) return fallback;
    auto d = v->as_number();
    if (!d || !(*d > 0)) return make_error("{}: key '{}' must be a positive number", f.path, key);
    return *d;
  }
  std::optional<std::string> string(std::string_view key) const {
    const Json* v = f.json.get(key);
    return v && v->as_string() ? std::optional<std::string>(*v->as_string()) : std::nullopt;
  }
  bool flag(std::string_view key) const {
    const Json* v = f.json.get(key);
    return v && v->as_bool().value_or(false);
  }
};

Result<LlamaConfig> read_config(const JsonFile& f, const std::string& dir) {
  Config c{f};
  const auto type = c.string("model_type");
  if (type != "llama")
    return make_error("{}: model_type is {}, expected \"llama\" (kiln compiles LLaMA-architecture models)", f.path,
                      type ? "\"" + *type + "\"" : "missing");
  if (const Json* rs = f.json.get("rope_scaling"); rs && !rs->is_null())
    return make_error("{}: rope_scaling is set; scaled rope (LLaMA 3.1 style, linear, YaRN) is not supported yet",
                      f.path);
  for (const char* k : {"attention_bias", "mlp_bias"})
    if (c.flag(k)) return make_error("{}: {} is true; kiln's LLaMA graph has no biases", f.path, k);
  if (auto act = c.string("hidden_act"); act && *act != "silu")
    return make_error("{}: hidden_act is \"{}\", expected \"silu\"", f.path, *act);
  LlamaConfig m;
  m.arch = "llama";
  m.name = fs::path(dir).filename().string();
  if (m.name.empty()) m.name = fs::path(dir).parent_path().filename().string();
  KILN_ASSIGN(m.n_embd, c.integer("hidden_size"));
  KILN_ASSIGN(m.n_ff, c.integer("intermediate_size"));
  KILN_ASSIGN(m.n_layer, c.integer("num_hidden_layers"));
  KILN_ASSIGN(m.n_head, c.integer("num_attention_heads"));
  KILN_ASSIGN(m.n_head_kv, c.integer("num_key_value_heads", m.n_head));
  KILN_ASSIGN(m.n_ctx_train, c.integer("max_position_embeddings", 2048));
  KILN_ASSIGN(m.rope_theta, c.number("rope_theta", 10000.0));
  KILN_ASSIGN(m.rms_eps, c.number("rms_norm_eps", 1e-6));
  if (m.n_embd % m.n_head || m.n_head % m.n_head_kv)
    return make_error("{}: hidden_size {} / num_attention_heads {} / num_key_value_heads {} do not divide", f.path,
                      m.n_embd, m.n_head, m.n_head_kv);
  m.head_dim = m.n_rot = m.n_embd / m.n_head;
  KILN_ASSIGN(int64_t hd, c.integer("head_dim", m.head_dim));
  if (hd != m.head_dim)
    return make_error("{}: head_dim {} differs from hidden_size / num_attention_heads = {}; not supported", f.path,
                      hd, m.head_dim);
  return m;
}

// The checkpoint's tensors: one safetensors file, or the shards its index names.
struct Weights {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, std::pair<const SafetensorsFile*, const StTensor*>> by_name;
};

Result<Weights> open_weights(const fs::path& dir) {
  Weights w;
  std::error_code ec;
  std::vector<fs::path> shards;
  if (fs::exists(dir / "model.safetensors", ec)) {
    shards.push_back(dir / "model.safetensors");
  } else if (fs::exists(dir / "model.safetensors.index.json", ec)) {
    KILN_ASSIGN(JsonFile index, read_json(dir / "model.safetensors.index.json"));
    const Json* map = index.json.get("weight_map");
    if (!map || !map->as_object()) return make_error("{}: key 'weight_map' must be an object", index.path);
    std::set<std::string> seen;
    for (const auto& [tensor, file] : *map->as_object()) {
      const std::string* s = file.as_string();
      if (!s || s->find('/') != std::string::npos || s->find("..") != std::string::npos)
        return make_error("{}: weight_map['{}'] must name a file in the folder", index.path, tensor);
      if (seen.insert(*s).second) shards.push_back(dir / *s);
    }
  } else {
    return make_error("{}: no model.safetensors or model.safetensors.index.json (PyTorch .bin checkpoints are not "
                      "read: convert them to safetensors)", dir.string());
  }
  for (const fs::path& p : shards) {
    KILN_ASSIGN(auto f, SafetensorsFile::open(p.string()));
    for (const StTensor& t : f->tensors()) {
      auto [it, fresh] = w.by_name.emplace(t.name, std::make_pair(f.get(), &t));
      if (!fresh) return make_error("{}: tensor '{}' is also in {}", p.string(), t.name, it->second.first->path());
    }
    w.files.push_back(std::move(f));
  }
  return w;
}

// HF tensor name -> GGUF name and the rope permutation its rows need.
struct Mapped {
  std::string gguf;
  lora_names::RopePermute permute = lora_names::RopePermute::None;
};

std::optional<Mapped> map_tensor(std::string_view hf, int64_t n_layer) {
  if (hf == "model.embed_tokens.weight") return Mapped{std::string(names::kTokenEmbd)};
  if (hf == "model.norm.weight") return Mapped{std::string(names::kOutputNorm)};
  if (hf == "lm_head.weight") return Mapped{std::string(names::kOutput)};
  constexpr std::string_view pre = "model.layers.";
  if (hf.substr(0, pre.size()) != pre) return std::nullopt;
  std::string_view rest = hf.substr(pre.size());
  const size_t dot = rest.find('.');
  if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
  int64_t layer = 0;
  for (char ch : rest.substr(0, dot)) {
    if (ch < '0' || ch > '9' || layer > n_layer) return std::nullopt;
    layer = layer * 10 + (ch - '0');
  }
  if (layer >= n_layer) return std::nullopt;
  const std::string_view mod = rest.substr(dot + 1);
  if (mod == "input_layernorm.weight") return Mapped{names::layer_tensor(names::kAttnNorm, layer)};
  if (mod == "post_attention_layernorm.weight") return Mapped{names::layer_tensor(names::kFfnNorm, layer)};
  for (const auto& m : lora_names::kModules)
    if (mod.size() == m.hf.size() + 7 && mod.substr(0, m.hf.size()) == m.hf && mod.substr(m.hf.size()) == ".weight")
      return Mapped{names::layer_tensor(m.gguf, layer), m.permute};
  return std::nullopt;
}

// The tensors a LLaMA checkpoint must have (lm_head.weight is optional: tied to the
// embedding without it).
std::vector<std::string> required_tensors(const LlamaConfig& c) {
  std::vector<std::string> out = {"model.embed_tokens.weight", "model.norm.weight"};
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string layer = fmt::format("model.layers.{}.", l);
    out.push_back(layer + "input_layernorm.weight");
    out.push_back(layer + "post_attention_layernorm.weight");
    for (const auto& m : lora_names::kModules) out.push_back(layer + std::string(m.hf) + ".weight");
  }
  return out;
}

Status add_weights(GgufWriter& w, const Weights& weights, const LlamaConfig& c, const std::string& dir) {
  std::vector<std::pair<const StTensor*, Mapped>> mapped;
  for (const auto& [name, at] : weights.by_name) {
    const auto& [file, t] = at;
    if (name.size() > 9 && name.substr(name.size() - 9) == ".inv_freq") continue;  // rope tables of old checkpoints
    auto m = map_tensor(name, c.n_layer);
    if (!m)
      return make_error("{}: tensor '{}' is not part of a LLaMA model (kiln's graph has no place for it)",
                        file->path(), name);
    mapped.emplace_back(t, std::move(*m));
  }
  for (const std::string& name : required_tensors(c))
    if (!weights.by_name.count(name))
      return make_error("{}: tensor '{}' is missing from the checkpoint's safetensors", dir, name);
  for (const auto& [t, m] : mapped) {
    const std::string& name = t->name;
    const SafetensorsFile* file = weights.by_name.at(name).first;
    DType type;
    switch (t->dtype) {
      case StDType::F32: type = DType::F32; break;
      case StDType::F16: type = DType::F16; break;
      case StDType::BF16: type = DType::BF16; break;
      default:
        return make_error("{}: tensor '{}' is {}, expected F32, F16 or BF16", file->path(), name,
                          st_dtype_name(t->dtype));
    }
    if (t->shape.empty() || t->shape.size() > 2)
      return make_error("{}: tensor '{}' has {} dimensions, expected 1 or 2", file->path(), name, t->shape.size());
    int64_t heads = 0;  // rope groups of the rows to permute (q_proj, k_proj)
    if (m.permute != lora_names::RopePermute::None) {
      heads = m.permute == lora_names::RopePermute::Heads ? c.n_head : c.n_head_kv;
      const int64_t rows = t->shape[0];
      if (rows != heads * c.head_dim)
        return make_error("{}: tensor '{}' has {} rows, expected {} ({} heads of {})", file->path(), name, rows,
                          heads * c.head_dim, heads, c.head_dim);
    }
    // Copied (and permuted) straight into the GGUF when GgufWriter::bytes() lays it out.
    w.add_tensor_fill(m.gguf, type, t->shape, t->nbytes(), [t, heads](uint8_t* dst) {
      if (heads)
        rope_permute_rows(t->data, dst, t->shape[0], (int64_t)(t->nbytes() / (uint64_t)t->shape[0]), heads);
      else
        std::memcpy(dst, t->data, (size_t)t->nbytes());
    });
  }
  return Status::success();
}

// --- tokenizer ---------------------------------------------------------------------------

// The id of a special token named in tokenizer_config.json ("bos_token": "<s>" or
// {"content": "<s>", ...}); nullopt when absent or null.
Result<std::optional<int32_t>> special_id(const JsonFile& cfg, std::string_view key,
                                          const std::map<std::string, int32_t>& ids) {
  const Json* v = cfg.json.get(key);
  if (!v || v->is_null()) return std::optional<int32_t>();
  const std::string* s = v->as_string();
  if (!s && v->as_object())
    if (const Json* c = v->get("content")) s = c->as_string();
  if (!s) return make_error("{}: key '{}' must be a token string or an object with 'content'", cfg.path, key);
  auto it = ids.find(*s);
  if (it == ids.end()) return make_error("{}: {} \"{}\" is not in the vocabulary", cfg.path, key, *s);
  return std::optional<int32_t>(it->second);
}

// GGUF tokenizer.ggml.pre for the pre_tokenizer of tokenizer.json, or an Error.
Result<std::string> pre_tokenizer_name(const JsonFile& tok, bool clean_spaces) {
  const Json* pre = tok.json.get("pre_tokenizer");
  auto type_of = [](const Json* j) -> std::string {
    const Json* t = j && j->as_object() ? j->get("type") : nullptr;
    return t && t->as_string() ? *t->as_string() : "";
  };
  auto byte_level = [&](const Json* j, bool regex) {
    if (type_of(j) != "ByteLevel" || (j->get("add_prefix_space") && j->get("add_prefix_space")->as_bool().value_or(false)))
      return false;
    const Json* r = j->get("use_regex");
    return (r ? r->as_bool().value_or(true) : true) == regex;
  };
  std::vector<const Json*> seq;
  if (type_of(pre) == "Sequence") {
    if (const Json* list = pre->get("pretokenizers"); list && list->as_array())
      for (const Json& p : *list->as_array()) seq.push_back(&p);
  } else if (pre) {
    seq.push_back(pre);
  }
  std::string kind;
  if (seq.size() == 1 && byte_level(seq[0], true)) {
    kind = "gpt2";
  } else if (seq.size() == 2 && type_of(seq[0]) == "Digits" && byte_level(seq[1], true) &&
             seq[0]->get("individual_digits") && seq[0]->get("individual_digits")->as_bool().value_or(false)) {
    kind = "digits";
  } else if (seq.size() == 2 && type_of(seq[0]) == "Split" && byte_level(seq[1], false)) {
    const Json* pat = seq[0]->get("pattern");
    const Json* re = pat && pat->as_object() ? pat->get("Regex") : nullptr;
    if (re && re->as_string() && *re->as_string() == kLlama3Regex) kind = "llama3";
  }
  // Each kind with the detokenizer's space cleaning of tokenizer_config.json; the names
  // are llama.cpp's (frontend/tokenizer.cpp's table gives each its splitter and flags).
  if (kind == "gpt2" && clean_spaces) return std::string("gpt-2");
  if (kind == "digits") return std::string(clean_spaces ? "starcoder" : "smollm");
  if (kind == "llama3" && clean_spaces) return std::string("llama-bpe");
  return make_error("{}: pre_tokenizer is not one kiln implements with clean_up_tokenization_spaces = {} "
                    "(supported: byte-level as GPT-2, with cleaning; individual digits then byte-level, as "
                    "SmolLM and StarCoder; LLaMA 3's split then byte-level, with cleaning)",
                    tok.path, clean_spaces);
}

}  // namespace

Status hf_tokenizer_to_gguf(GgufWriter& w, std::string_view tokenizer_json, std::string_view tokenizer_config_json,
                            const std::string& dir) {
  KILN_ASSIGN(JsonFile tok, parse_json(tokenizer_json, (fs::path(dir) / "tokenizer.json").string()));
  KILN_ASSIGN(JsonFile cfg, parse_json(tokenizer_config_json, (fs::path(dir) / "tokenizer_config.json").string()));
  const Json* model = tok.json.get("model");
  const Json* mtype = model ? model->get("type") : nullptr;
  if (!mtype || !mtype->as_string() || *mtype->as_string() != "BPE")
    return make_error("{}: model.type must be \"BPE\" (byte-level BPE tokenizers only)", tok.path);
  if (const Json* bf = model->get("byte_fallback"); bf && bf->as_bool().value_or(false))
    return make_error("{}: model.byte_fallback is true (a SentencePiece-style BPE); not supported yet", tok.path);
  const Json* vocab = model->get("vocab");
  if (!vocab || !vocab->as_object()) return make_error("{}: model.vocab must be an object", tok.path);

  // id -> (text, type): the vocabulary, then added tokens (which may extend it).
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;
  for (const auto& [text, id] : *vocab->as_object()) {
    auto i = id.as_int();
    if (!i || *i < 0 || *i >= (1 << 24)) return make_error("{}: model.vocab['{}'] must be a token id", tok.path, text);
    if (!by_id.emplace(*i, std::make_pair(text, kTokenNormal)).second)
      return make_error("{}: token id {} appears twice in model.vocab", tok.path, *i);
  }
  if (const Json* added = tok.json.get("added_tokens"); added && added->as_array()) {
    for (const Json& a : *added->as_array()) {
      const Json* id = a.get("id");
      const Json* content = a.get("content");
      if (!id || !id->as_int() || *id->as_int() < 0 || *id->as_int() >= (1 << 24) || !content || !content->as_string())
        return make_error("{}: added_tokens entries need an 'id' and a 'content'", tok.path);
      const bool special = a.get("special") && a.get("special")->as_bool().value_or(false);
      auto& slot = by_id[*id->as_int()];
      if (!slot.first.empty() && slot.first != *content->as_string())
        return make_error("{}: added token {} \"{}\" clashes with the vocabulary's \"{}\"", tok.path, *id->as_int(),
                          *content->as_string(), slot.first);
      slot = {*content->as_string(), special ? kTokenControl : kTokenUserDefined};
    }
  }
  if (by_id.empty() || by_id.rbegin()->first != (int64_t)by_id.size() - 1)
    return make_error("{}: token ids must run 0..n-1 without gaps ({} tokens, largest id {})", tok.path, by_id.size(),
                      by_id.empty() ? -1 : by_id.rbegin()->first);
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::map<std::string, int32_t> ids;
  for (const auto& [id, tt] : by_id) {
    tokens.push_back(tt.first);
    types.push_back(tt.second);
    ids.emplace(tt.first, (int32_t)id);
  }
  std::vector<std::string> merges;
  if (const Json* m = model->get("merges"); m && m->as_array()) {
    for (const Json& e : *m->as_array()) {
      if (const std::string* s = e.as_string()) {
        merges.push_back(*s);
      } else if (auto* pair = e.as_array(); pair && pair->size() == 2 && (*pair)[0].as_string() && (*pair)[1].as_string()) {
        merges.push_back(*(*pair)[0].as_string() + " " + *(*pair)[1].as_string());
      } else {
        return make_error("{}: model.merges entries must be \"a b\" strings or [a, b] pairs", tok.path);
      }
    }
  }
  const Json* clean = cfg.json.get("clean_up_tokenization_spaces");
  KILN_ASSIGN(std::string pre, pre_tokenizer_name(tok, clean ? clean->as_bool().value_or(false) : true));

  w.add_string(std::string(names::kTokModel), "gpt2");
  w.add_string("tokenizer.ggml.pre", pre);
  w.add_strings(std::string(names::kTokTokens), tokens);
  w.add_i32s("tokenizer.ggml.token_type", types);
  w.add_strings("tokenizer.ggml.merges", merges);
  for (const auto& [key, gguf_key] : {std::pair<const char*, const char*>{"bos_token", "tokenizer.ggml.bos_token_id"},
                                      {"eos_token", "tokenizer.ggml.eos_token_id"},
                                      {"unk_token", "tokenizer.ggml.unknown_token_id"},
                                      {"pad_token", "tokenizer.ggml.padding_token_id"}}) {
    KILN_ASSIGN(std::optional<int32_t> id, special_id(cfg, key, ids));
    if (id) w.add_u32(gguf_key, (uint32_t)*id);
  }
  for (const char* key : {"add_bos_token", "add_eos_token"})
    if (const Json* b = cfg.json.get(key); b && b->as_bool())
      w.add_bool(fmt::format("tokenizer.ggml.{}", key), *b->as_bool());
  // chat_template: a string, or a list of {name, template} (the "default" one is used).
  if (const Json* t = cfg.json.get("chat_template")) {
    std::optional<std::string> text;
    if (t->as_string()) text = *t->as_string();
    if (t->as_array())
      for (const Json& e : *t->as_array())
        if (e.get("name") && e.get("name")->as_string() && *e.get("name")->as_string() == "default" &&
            e.get("template") && e.get("template")->as_string())
          text = *e.get("template")->as_string();
    if (text) w.add_string(std::string(names::kChatTemplate), *text);
  }
  return Status::success();
}

Result<LlamaConfig> hf_config_from_json(std::string_view config_json, const std::string& dir) {
  KILN_ASSIGN(JsonFile config, parse_json(config_json, (fs::path(dir) / "config.json").string()));
  return read_config(config, dir);
}

bool is_hf_checkpoint(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / "config.json", ec);
}

Result<std::string> hf_checkpoint_to_gguf(const std::string& dir) {
  KILN_ASSIGN(std::string config, read_file((fs::path(dir) / "config.json").string()));
  KILN_ASSIGN(LlamaConfig c, hf_config_from_json(config, dir));
  GgufWriter w;
  write_llama_config(w, c);
  KILN_ASSIGN(std::string tokenizer, read_file((fs::path(dir) / "tokenizer.json").string()));
  std::error_code ec;
  std::string tokenizer_config = "{}";  // optional
  if (fs::exists(fs::path(dir) / "tokenizer_config.json", ec)) {
    KILN_ASSIGN(tokenizer_config, read_file((fs::path(dir) / "tokenizer_config.json").string()));
  }
  KILN_TRY(hf_tokenizer_to_gguf(w, tokenizer, tokenizer_config, dir));
  KILN_ASSIGN(Weights weights, open_weights(dir));
  KILN_TRY(add_weights(w, weights, c, dir));
  return w.bytes();
}

Result<std::unique_ptr<GgufFile>> open_model_file(const std::string& path) {
  if (!is_hf_checkpoint(path)) {
    std::error_code ec;
    if (fs::is_directory(path, ec))
      return make_error("{}: a folder without config.json (expected a GGUF file or a Hugging Face checkpoint folder)",
                        path);
    return GgufFile::open(path);
  }
  KILN_ASSIGN(std::string bytes, hf_checkpoint_to_gguf(path));
  return GgufFile::parse_owned(std::move(bytes), path);
}

}  // namespace kiln

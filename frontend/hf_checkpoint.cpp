// frontend/hf_checkpoint.cpp — see hf_checkpoint.h.
#include "frontend/hf_checkpoint.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

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
// Token ids and vocabulary sizes stop here (real vocabularies reach ~256k): the unused
// [PAD] tokens a vocabulary with gaps is padded with cost memory per id.
constexpr int64_t kMaxVocab = 1 << 21;

constexpr int32_t kTokenNormal = 1, kTokenControl = 3, kTokenUserDefined = 4, kTokenUnused = 5, kTokenByte = 6;

struct JsonFile {
  std::string path;
  Json json;
};

Result<JsonFile> parse_json(std::string_view text, const std::string& path) {
  auto j = Json::parse(text, 64);
  if (!j.ok()) return make_error("{}: {}", path, j.error().message);
  if (!j->as_object()) return make_error("{}: expected a JSON object", path);
  // A repeated top-level key: Python's json keeps the last value and this reader the
  // first, so the model would differ from what transformers loads. Refused instead.
  std::set<std::string_view> seen;
  for (const auto& [key, value] : *j->as_object())
    if (!seen.insert(key).second)
      return make_error("{}: key '{}' appears twice (which value counts is ambiguous)", path, key);
  return JsonFile{path, std::move(*j)};
}

Result<JsonFile> read_json(const fs::path& p) {
  KILN_ASSIGN(std::string text, read_file(p.string()));
  return parse_json(text, p.string());
}

// Typed config.json access; errors name the file and key.
struct Config {
  const JsonFile& f;
  Result<int64_t> integer(std::string_view key, std::optional<int64_t> fallback, int64_t max) const {
    const Json* v = f.json.get(key);
    if (!v || v->is_null()) {
      if (fallback) return *fallback;
      return make_error("{}: key '{}' is missing", f.path, key);
    }
    auto i = v->as_int();
    if (!i || *i < 1 || *i > max) return make_error("{}: key '{}' must be an integer in 1..{}", f.path, key, max);
    return *i;
  }
  Result<double> number(std::string_view key, double fallback, double lo, double hi) const {
    const Json* v = f.json.get(key);
    if (!v || v->is_null()) return fallback;
    auto d = v->as_number();
    if (!d || !(*d > lo && *d < hi)) return make_error("{}: key '{}' must be a number in ({}, {})", f.path, key, lo, hi);
    return *d;
  }
  std::optional<std::string> string(std::string_view key) const {
    const Json* v = f.json.get(key);
    return v && v->as_string() ? std::optional<std::string>(*v->as_string()) : std::nullopt;
  }
  Result<bool> flag(std::string_view key, bool fallback) const {
    const Json* v = f.json.get(key);
    if (!v || v->is_null()) return fallback;
    if (!v->as_bool()) return make_error("{}: key '{}' must be true or false", f.path, key);
    return *v->as_bool();
  }
  std::optional<int32_t> token_id(std::string_view key) const {
    const Json* v = f.json.get(key);
    auto i = v ? v->as_int() : std::nullopt;  // a list (several EOS ids) has no single fallback
    return i && *i >= 0 && *i < kMaxVocab ? std::optional<int32_t>((int32_t)*i) : std::nullopt;
  }
};

// rope_scaling: none, or LLaMA 3.1/3.2's ("rope_type": "llama3"), which keeps the pairs
// whose wavelength is short against the original context, divides the frequency of those
// whose wavelength is long by `factor`, and blends between the two; the divisors are what
// llama.cpp's converter stores as rope_freqs.weight.
Result<std::vector<float>> llama3_rope_factors(const JsonFile& f, const LlamaConfig& m) {
  const Json* rs = f.json.get("rope_scaling");
  if (!rs || rs->is_null()) return std::vector<float>();
  const Json* type = rs->get("rope_type") ? rs->get("rope_type") : rs->get("type");
  const std::string kind = type && type->as_string() ? *type->as_string() : "";
  if (kind == "default") return std::vector<float>();
  if (kind != "llama3")
    return make_error("{}: rope_scaling of type \"{}\" is not supported yet (LLaMA 3's \"llama3\" is)", f.path, kind);
  auto num = [&](const char* key) -> Result<double> {
    const Json* v = rs->get(key);
    auto d = v ? v->as_number() : std::nullopt;
    // kiln stores the divisors as floats: a factor beyond float range would be infinity
    if (!d || !(*d > 0) || !(*d <= 1e30))
      return make_error("{}: rope_scaling.{} must be a positive number up to 1e30{}", f.path, key,
                        d ? fmt::format(", not {}", *d) : "");
    return *d;
  };
  KILN_ASSIGN(double factor, num("factor"));
  KILN_ASSIGN(double low, num("low_freq_factor"));
  KILN_ASSIGN(double high, num("high_freq_factor"));
  KILN_ASSIGN(double old_ctx, num("original_max_position_embeddings"));
  if (!(high > low)) return make_error("{}: rope_scaling needs high_freq_factor > low_freq_factor", f.path);
  const double pi = 3.14159265358979323846;
  std::vector<float> out((size_t)(m.n_rot / 2));
  for (size_t i = 0; i < out.size(); ++i) {
    const double freq = std::pow(m.rope_theta, -2.0 * (double)i / (double)m.n_rot), wavelen = 2 * pi / freq;
    double d;
    if (wavelen < old_ctx / high) d = 1.0;
    else if (wavelen > old_ctx / low) d = factor;
    else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      d = 1.0 / ((1.0 - smooth) / factor + smooth);
    }
    out[i] = (float)d;
  }
  return out;
}

Result<HfConfig> read_config(const JsonFile& f, const std::string& dir) {
  Config c{f};
  const auto type = c.string("model_type");
  if (type != "llama")
    return make_error("{}: model_type is {}, expected \"llama\" (kiln compiles LLaMA-architecture models)", f.path,
                      type ? "\"" + *type + "\"" : "missing");
  for (const char* k : {"attention_bias", "mlp_bias"}) {
    KILN_ASSIGN(bool bias, c.flag(k, false));
    if (bias) return make_error("{}: {} is true; kiln's LLaMA graph has no biases", f.path, k);
  }
  if (auto act = c.string("hidden_act"); act && *act != "silu")
    return make_error("{}: hidden_act is \"{}\", expected \"silu\"", f.path, *act);
  HfConfig out;
  LlamaConfig& m = out.llama;
  m.arch = "llama";
  // The model's name: the Hub id it was saved from, else the folder's name.
  auto base = [](std::string p) {
    while (!p.empty() && p.back() == '/') p.pop_back();
    return fs::path(p).filename().string();
  };
  m.name = base(c.string("_name_or_path").value_or(""));
  if (m.name.empty()) m.name = base(dir);
  // The bounds read_llama_config puts on the GGUF keys these become.
  KILN_ASSIGN(m.n_embd, c.integer("hidden_size", std::nullopt, 1 << 16));
  KILN_ASSIGN(m.n_ff, c.integer("intermediate_size", std::nullopt, 1 << 20));
  KILN_ASSIGN(m.n_layer, c.integer("num_hidden_layers", std::nullopt, 1024));
  KILN_ASSIGN(m.n_head, c.integer("num_attention_heads", std::nullopt, 1024));
  KILN_ASSIGN(m.n_head_kv, c.integer("num_key_value_heads", m.n_head, 1024));
  KILN_ASSIGN(m.n_ctx_train, c.integer("max_position_embeddings", 2048, 1 << 24));
  KILN_ASSIGN(m.rope_theta, c.number("rope_theta", 10000.0, 1.0, 1e12));
  KILN_ASSIGN(m.rms_eps, c.number("rms_norm_eps", 1e-6, 0.0, 1.0));
  if (f.json.get("vocab_size")) { KILN_ASSIGN(m.n_vocab, c.integer("vocab_size", std::nullopt, kMaxVocab)); }
  KILN_ASSIGN(m.tied_output, c.flag("tie_word_embeddings", false));  // LlamaConfig's default
  if (m.n_embd % m.n_head || m.n_head % m.n_head_kv || (m.n_embd / m.n_head) % 2)
    return make_error("{}: hidden_size {}, num_attention_heads {} and num_key_value_heads {} do not make whole heads "
                      "of an even size", f.path, m.n_embd, m.n_head, m.n_head_kv);
  m.head_dim = m.n_rot = m.n_embd / m.n_head;
  KILN_ASSIGN(int64_t hd, c.integer("head_dim", m.head_dim, 1 << 12));
  if (hd != m.head_dim)
    return make_error("{}: head_dim {} differs from hidden_size / num_attention_heads = {}; not supported", f.path,
                      hd, m.head_dim);
  out.bos = c.token_id("bos_token_id");
  out.eos = c.token_id("eos_token_id");
  KILN_ASSIGN(out.rope_factors, llama3_rope_factors(f, m));
  return out;
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
      if (!s || s->empty() || s->find('/') != std::string::npos || s->find("..") != std::string::npos)
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

// With `external`, tensors copied as they are stay in the safetensors mappings (the GGUF
// names them, external points at them); only the rope-permuted q and k rows are copied.
Status add_weights(GgufWriter& w, const Weights& weights, const LlamaConfig& c, const std::string& dir,
                   GgufExternalData* external) {
  const std::vector<HfTensor> table = hf_tensor_table(c);
  std::map<std::string_view, const HfTensor*> by_hf;
  for (const HfTensor& t : table) by_hf.emplace(t.hf, &t);
  for (const auto& [name, at] : weights.by_name) {
    if (name.size() > 9 && name.substr(name.size() - 9) == ".inv_freq") continue;  // rope tables of old checkpoints
    if (!by_hf.count(name))
      return make_error("{}: tensor '{}' is not part of a LLaMA model of {} layers (kiln's graph has no place for it)",
                        at.first->path(), name, c.n_layer);
  }
  for (const HfTensor& e : table) {
    auto it = weights.by_name.find(e.hf);
    if (it == weights.by_name.end()) {
      if (e.optional) continue;
      if (e.gguf == names::kOutput)
        return make_error("{}: lm_head.weight is missing and config.json's tie_word_embeddings is not true", dir);
      return make_error("{}: tensor '{}' is missing from the checkpoint's safetensors", dir, e.hf);
    }
    const auto& [file, t] = it->second;
    if (e.gguf == names::kOutput && c.tied_output) continue;  // tied: the embedding serves (as in transformers)
    DType type;
    switch (t->dtype) {
      case StDType::F32: type = DType::F32; break;
      case StDType::F16: type = DType::F16; break;
      case StDType::BF16: type = DType::BF16; break;
      default:
        return make_error("{}: tensor '{}' is {}, expected F32, F16 or BF16", file->path(), e.hf,
                          st_dtype_name(t->dtype));
    }
    if (t->shape != e.shape)
      return make_error("{}: tensor '{}' has shape [{}], expected [{}]", file->path(), e.hf, fmt::join(t->shape, ", "),
                        fmt::join(e.shape, ", "));
    const int64_t heads = e.rope_groups(c);
    if (external && !heads) {
      w.add_tensor_external(e.gguf, type, t->shape);
      external->tensors[e.gguf] = t->data;
      continue;
    }
    // Copied (and permuted) straight into the GGUF when GgufWriter::bytes() lays it out.
    w.add_tensor_fill(e.gguf, type, t->shape, t->nbytes(), [t, heads](uint8_t* dst) {
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

// The string member `key` of a JSON object ("" when absent or not a string).
std::string str(const Json* j, std::string_view key) {
  const Json* v = j && j->as_object() ? j->get(key) : nullptr;
  return v && v->as_string() ? *v->as_string() : "";
}
// A tokenizer.json component's "type".
std::string type_of(const Json* j) { return str(j, "type"); }

// GGUF tokenizer.ggml.pre for the pre_tokenizer of tokenizer.json, or an Error.
Result<std::string> pre_tokenizer_name(const JsonFile& tok, bool clean_spaces) {
  if (const Json* n = tok.json.get("normalizer"); n && !n->is_null())
    return make_error("{}: normalizer is set; kiln's byte-level tokenizers take the text as it is (no normalizer)",
                      tok.path);
  const Json* pre = tok.json.get("pre_tokenizer");
  auto is = [](const Json* j, std::string_view key, bool want, bool fallback) {
    const Json* v = j->get(key);
    return (v ? v->as_bool().value_or(!want) : fallback) == want;
  };
  auto byte_level = [&](const Json* j, bool regex) {
    return type_of(j) == "ByteLevel" && is(j, "add_prefix_space", false, false) && is(j, "use_regex", regex, true);
  };
  std::vector<const Json*> seq;
  if (type_of(pre) == "Sequence") {
    if (const Json* list = pre->get("pretokenizers"); list && list->as_array())
      for (const Json& p : *list->as_array()) seq.push_back(&p);
  } else if (pre) {
    seq.push_back(pre);
  }
  // The names are llama.cpp's (frontend/tokenizer.cpp's table gives each its splitter and
  // flags); clean_up_tokenization_spaces picks between two that differ only in it.
  if (seq.size() == 1 && byte_level(seq[0], true) && clean_spaces) return std::string("gpt-2");
  if (seq.size() == 2 && type_of(seq[0]) == "Digits" && is(seq[0], "individual_digits", true, false) &&
      byte_level(seq[1], true))
    return std::string(clean_spaces ? "starcoder" : "smollm");
  if (seq.size() == 2 && type_of(seq[0]) == "Split" && byte_level(seq[1], false) && is(seq[0], "invert", false, false)) {
    const Json* pat = seq[0]->get("pattern");
    const Json* re = pat && pat->as_object() ? pat->get("Regex") : nullptr;
    const Json* behavior = seq[0]->get("behavior");
    if (re && re->as_string() && *re->as_string() == kLlama3Regex && behavior && behavior->as_string() &&
        *behavior->as_string() == "Isolated")
      return std::string("llama-bpe");  // llama.cpp's choice for LLaMA 3 whatever the cleaning flag
  }
  return make_error("{}: pre_tokenizer is not one kiln implements (supported: byte-level as GPT-2's, with "
                    "clean_up_tokenization_spaces; individual digits then byte-level, as SmolLM's and StarCoder's; "
                    "LLaMA 3's regex split then byte-level)",
                    tok.path);
}

// For a SentencePiece-style tokenizer.json (BPE with byte fallback, as transformers
// converts LLaMA 2's tokenizer.model): whether a "▁" is put before the text, which kiln's
// SentencePiece tokenizer does as llama.cpp's does (GGUF tokenizer.ggml.add_space_prefix:
// at the start and after every special token, unconditionally). The forms accepted are
// those that tokenize exactly so: the converter's legacy normalizer Sequence[Prepend "▁"
// (or not), Replace " " -> "▁"] with no pre-tokenizer, or no normalizer and a Metaspace
// pre-tokenizer that neither prepends nor splits. Metaspace's other forms differ: it
// prepends only where the text does not already start with a space ("always"), or only at
// the very start ("first"), and by default splits the text at every "▁".
Result<bool> spm_space_prefix(const JsonFile& tok) {
  const std::string space = "\xE2\x96\x81";  // U+2581
  const Json* norm = tok.json.get("normalizer");
  const Json* pre = tok.json.get("pre_tokenizer");
  auto unsupported = [&] {
    return make_error("{}: a SentencePiece-style tokenizer (byte_fallback) whose normalizer and pre_tokenizer kiln "
                      "does not implement (supported: the legacy normalizer [Prepend \"\u2581\", Replace \" \" -> "
                      "\"\u2581\"], or a Metaspace pre-tokenizer with prepend_scheme \"never\" and split false)",
                      tok.path);
  };
  if (norm && !norm->is_null()) {
    if (pre && !pre->is_null()) return unsupported();
    std::vector<const Json*> seq;
    if (type_of(norm) == "Sequence") {
      if (const Json* list = norm->get("normalizers"); list && list->as_array())
        for (const Json& n : *list->as_array()) seq.push_back(&n);
    } else {
      seq.push_back(norm);
    }
    bool prepend = false;
    if (!seq.empty() && type_of(seq[0]) == "Prepend") {
      if (str(seq[0], "prepend") != space) return unsupported();
      prepend = true;
      seq.erase(seq.begin());
    }
    const Json* pattern = seq.size() == 1 ? seq[0]->get("pattern") : nullptr;
    if (seq.size() != 1 || type_of(seq[0]) != "Replace" || str(pattern, "String") != " " ||
        str(seq[0], "content") != space)
      return unsupported();
    return prepend;
  }
  if (type_of(pre) != "Metaspace" || str(pre, "replacement") != space || str(pre, "prepend_scheme") != "never")
    return unsupported();
  const Json* split = pre->get("split");
  if (!split || split->as_bool().value_or(true)) return unsupported();
  return false;
}

// Added tokens that are not marked special but are spelt like control tokens are control
// tokens (some checkpoints leave the flag off; llama.cpp's converter does the same).
bool looks_special(std::string_view t) {
  auto wrapped = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.substr(0, open.size()) == open &&
           t.substr(t.size() - close.size()) == close;
  };
  return t == "<pad>" || t == "<mask>" || wrapped("<|", "|>") || wrapped("<unused", ">");
}

}  // namespace

Result<int64_t> hf_tokenizer_to_gguf(GgufWriter& w, std::string_view tokenizer_json,
                                     std::string_view tokenizer_config_json, std::optional<std::string> chat_template,
                                     const HfConfig& config, const std::string& dir) {
  KILN_ASSIGN(JsonFile tok, parse_json(tokenizer_json, (fs::path(dir) / "tokenizer.json").string()));
  KILN_ASSIGN(JsonFile cfg, parse_json(tokenizer_config_json, (fs::path(dir) / "tokenizer_config.json").string()));
  const Json* model = tok.json.get("model");
  const Json* mtype = model ? model->get("type") : nullptr;
  if (!mtype || !mtype->as_string() || *mtype->as_string() != "BPE")
    return make_error("{}: model.type must be \"BPE\" (byte-level BPE tokenizers only)", tok.path);
  // Byte fallback: a SentencePiece-style BPE (LLaMA 2, TinyLlama, ...), which becomes GGUF's
  // "llama" vocabulary (scores instead of merges, <0xNN> byte tokens); else byte-level BPE.
  const Json* bf = model->get("byte_fallback");
  const bool spm = bf && bf->as_bool().value_or(false);
  const Json* vocab = model->get("vocab");
  if (!vocab || !vocab->as_object()) return make_error("{}: model.vocab must be an object", tok.path);

  // id -> (text, type): the vocabulary, then added tokens (which may extend it).
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;
  for (const auto& [text, id] : *vocab->as_object()) {
    auto i = id.as_int();
    if (!i || *i < 0 || *i >= kMaxVocab)
      return make_error("{}: model.vocab['{}'] must be a token id below {}", tok.path, text, kMaxVocab);
    if (!by_id.emplace(*i, std::make_pair(text, kTokenNormal)).second)
      return make_error("{}: token id {} appears twice in model.vocab", tok.path, *i);
  }
  if (const Json* added = tok.json.get("added_tokens"); added && added->as_array()) {
    for (const Json& a : *added->as_array()) {
      const Json* id = a.get("id");
      const Json* content = a.get("content");
      if (!id || !id->as_int() || *id->as_int() < 0 || *id->as_int() >= kMaxVocab || !content || !content->as_string())
        return make_error("{}: added_tokens entries need an 'id' and a 'content'", tok.path);
      const bool special = (a.get("special") && a.get("special")->as_bool().value_or(false)) ||
                           looks_special(*content->as_string());
      auto& slot = by_id[*id->as_int()];
      if (!slot.first.empty() && slot.first != *content->as_string())
        return make_error("{}: added token {} \"{}\" clashes with the vocabulary's \"{}\"", tok.path, *id->as_int(),
                          *content->as_string(), slot.first);
      slot = {*content->as_string(), special ? kTokenControl : kTokenUserDefined};
    }
  }
  if (by_id.empty()) return make_error("{}: model.vocab is empty", tok.path);
  // Ids the vocabulary skips, and those up to config.json's vocab_size (the embedding's
  // rows), are unused tokens, named as llama.cpp's converter names them.
  // (transformers sizes the embedding by vocab_size: a smaller one cannot hold the tokens)
  if (config.llama.n_vocab && config.llama.n_vocab < by_id.rbegin()->first + 1)
    return make_error("{}: config.json's vocab_size {} is smaller than the vocabulary (token id {} is \"{}\")",
                      tok.path, config.llama.n_vocab, by_id.rbegin()->first, by_id.rbegin()->second.first);
  const int64_t n_vocab = std::max<int64_t>(by_id.rbegin()->first + 1, config.llama.n_vocab);
  std::vector<std::string> tokens((size_t)n_vocab);
  std::vector<int32_t> types((size_t)n_vocab, kTokenUnused);
  for (int64_t i = 0; i < n_vocab; ++i) tokens[(size_t)i] = fmt::format("[PAD{}]", i);
  std::map<std::string, int32_t> ids;
  for (const auto& [id, tt] : by_id) {
    tokens[(size_t)id] = tt.first;
    types[(size_t)id] = tt.second;
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
      // As the tokenizers library builds its BPE: both parts and their union are tokens.
      const std::string& m = merges.back();
      const size_t sp = m.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() || m.find(' ', sp + 1) != std::string::npos)
        return make_error("{}: model.merges[{}] \"{}\" is not two tokens separated by one space", tok.path,
                          merges.size() - 1, m);
      for (const std::string& t : {m.substr(0, sp), m.substr(sp + 1), m.substr(0, sp) + m.substr(sp + 1)})
        if (!ids.count(t))
          return make_error("{}: model.merges[{}] \"{}\" needs \"{}\", which is not in the vocabulary", tok.path,
                            merges.size() - 1, m, t);
    }
  }
  if (spm) {
    KILN_ASSIGN(bool space_prefix, spm_space_prefix(tok));
    // A SentencePiece BPE merges the adjacent pair whose union has the highest score; the
    // converted tokenizer.json lists each union's merges in that order, so a token's score
    // is minus the rank of the first merge that makes it (tokens no merge makes rank last).
    std::vector<float> scores((size_t)n_vocab, -(float)merges.size());
    for (size_t r = merges.size(); r-- > 0;) {
      const size_t sp = merges[r].find(' ');
      auto it = sp == std::string::npos ? ids.end() : ids.find(merges[r].substr(0, sp) + merges[r].substr(sp + 1));
      if (it != ids.end()) scores[(size_t)it->second] = -(float)r;
    }
    auto byte_token = [](const std::string& t) {  // <0xNN>
      return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit((unsigned char)t[3]) &&
             std::isxdigit((unsigned char)t[4]);
    };
    for (int64_t i = 0; i < n_vocab; ++i)
      if (types[(size_t)i] == kTokenNormal && byte_token(tokens[(size_t)i])) types[(size_t)i] = kTokenByte;
    w.add_string(std::string(names::kTokModel), "llama");
    w.add_string("tokenizer.ggml.pre", "default");
    w.add_strings(std::string(names::kTokTokens), tokens);
    w.add_f32s("tokenizer.ggml.scores", scores);
    w.add_i32s("tokenizer.ggml.token_type", types);
    w.add_bool("tokenizer.ggml.add_space_prefix", space_prefix);
  } else {
    const Json* clean = cfg.json.get("clean_up_tokenization_spaces");
    KILN_ASSIGN(std::string pre, pre_tokenizer_name(tok, clean ? clean->as_bool().value_or(false) : true));
    w.add_string(std::string(names::kTokModel), "gpt2");
    w.add_string("tokenizer.ggml.pre", pre);
    w.add_strings(std::string(names::kTokTokens), tokens);
    w.add_i32s("tokenizer.ggml.token_type", types);
    w.add_strings("tokenizer.ggml.merges", merges);
  }
  // Special tokens: tokenizer_config.json's, else config.json's ids (BOS and EOS).
  struct Special { const char* key; const char* gguf_key; std::optional<int32_t> fallback; };
  for (const Special& sp : {Special{"bos_token", "tokenizer.ggml.bos_token_id", config.bos},
                            Special{"eos_token", "tokenizer.ggml.eos_token_id", config.eos},
                            Special{"unk_token", "tokenizer.ggml.unknown_token_id", std::nullopt},
                            Special{"pad_token", "tokenizer.ggml.padding_token_id", std::nullopt}}) {
    KILN_ASSIGN(std::optional<int32_t> id, special_id(cfg, sp.key, ids));
    if (!id && sp.fallback && *sp.fallback < n_vocab) id = sp.fallback;
    if (id) w.add_u32(sp.gguf_key, (uint32_t)*id);
  }
  for (const char* key : {"add_bos_token", "add_eos_token"})
    if (const Json* b = cfg.json.get(key); b && b->as_bool())
      w.add_bool(fmt::format("tokenizer.ggml.{}", key), *b->as_bool());
  // chat_template: a string, or a list of {name, template} (the "default" one is used).
  if (const Json* t = cfg.json.get("chat_template")) {
    if (t->as_string()) chat_template = *t->as_string();
    if (t->as_array())
      for (const Json& e : *t->as_array())
        if (e.get("name") && e.get("name")->as_string() && *e.get("name")->as_string() == "default" &&
            e.get("template") && e.get("template")->as_string())
          chat_template = *e.get("template")->as_string();
  }
  if (chat_template) w.add_string(std::string(names::kChatTemplate), *chat_template);
  return n_vocab;
}

std::vector<HfTensor> hf_tensor_table(const LlamaConfig& c) {
  const int64_t D = c.n_embd, hd = c.n_embd / std::max<int64_t>(c.n_head, 1);
  using P = lora_names::RopePermute;
  std::vector<HfTensor> t = {
      {"model.embed_tokens.weight", std::string(names::kTokenEmbd), P::None, {c.n_vocab, D}, false},
      {"model.norm.weight", std::string(names::kOutputNorm), P::None, {D}, false},
      {"lm_head.weight", std::string(names::kOutput), P::None, {c.n_vocab, D}, c.tied_output},
  };
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string layer = fmt::format("model.layers.{}.", l);
    t.push_back({layer + "input_layernorm.weight", names::layer_tensor(names::kAttnNorm, l), P::None, {D}, false});
    t.push_back({layer + "post_attention_layernorm.weight", names::layer_tensor(names::kFfnNorm, l), P::None, {D}, false});
    for (const auto& m : lora_names::kModules) {
      const int64_t q = c.n_head * hd, kv = c.n_head_kv * hd;
      const std::vector<int64_t> shape = m.name == "q" ? std::vector<int64_t>{q, D}
                                       : m.name == "k" || m.name == "v" ? std::vector<int64_t>{kv, D}
                                       : m.name == "o" ? std::vector<int64_t>{D, q}
                                       : m.name == "down" ? std::vector<int64_t>{D, c.n_ff}
                                                          : std::vector<int64_t>{c.n_ff, D};
      t.push_back({layer + std::string(m.hf) + ".weight", names::layer_tensor(m.gguf, l), m.permute, shape, false});
    }
  }
  return t;
}

Result<HfConfig> hf_config_from_json(std::string_view config_json, const std::string& dir) {
  KILN_ASSIGN(JsonFile config, parse_json(config_json, (fs::path(dir) / "config.json").string()));
  return read_config(config, dir);
}

bool is_hf_checkpoint(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::exists(fs::path(path) / "config.json", ec);
}

namespace {
Result<std::string> translate_checkpoint(const std::string& dir, bool with_tensors, GgufExternalData* external) {
  const fs::path d(dir);
  std::error_code ec;
  KILN_ASSIGN(std::string config_text, read_file((d / "config.json").string()));
  KILN_ASSIGN(HfConfig config, hf_config_from_json(config_text, dir));
  KILN_ASSIGN(std::string tokenizer, read_file((d / "tokenizer.json").string()));
  std::string tokenizer_config = "{}";  // optional, as is the template file newer transformers write
  if (fs::exists(d / "tokenizer_config.json", ec)) { KILN_ASSIGN(tokenizer_config, read_file((d / "tokenizer_config.json").string())); }
  std::optional<std::string> chat_template;
  if (fs::exists(d / "chat_template.jinja", ec)) { KILN_ASSIGN(chat_template, read_file((d / "chat_template.jinja").string())); }
  // The file's own order: hyperparameters, tokenizer, tensors (as the converter writes it).
  GgufWriter w;
  write_llama_config(w, config.llama);
  KILN_ASSIGN(config.llama.n_vocab, hf_tokenizer_to_gguf(w, tokenizer, tokenizer_config, chat_template, config, dir));
  if (!with_tensors) return w.bytes();
  KILN_ASSIGN(Weights opened, open_weights(d));
  // outlives w.bytes() (the tensors are filled from its maps) and, with `external`, the GgufFile
  auto weights = std::make_shared<const Weights>(std::move(opened));
  KILN_TRY(add_weights(w, *weights, config.llama, dir, external));
  if (external) external->keep_alive = weights;
  if (!config.rope_factors.empty())
    w.add_tensor_f32(std::string(names::kRopeFreqs), DType::F32, {(int64_t)config.rope_factors.size()},
                     config.rope_factors);
  return w.bytes();
}
}  // namespace

Result<std::string> hf_checkpoint_to_gguf(const std::string& dir, bool with_tensors) {
  return translate_checkpoint(dir, with_tensors, nullptr);
}

Result<std::unique_ptr<GgufFile>> open_model_file(const std::string& path, bool with_tensors) {
  if (!is_hf_checkpoint(path)) {
    std::error_code ec;
    if (fs::is_directory(path, ec))
      return make_error("{}: a folder without config.json (expected a GGUF file or a Hugging Face checkpoint folder)",
                        path);
    return GgufFile::open(path);
  }
  GgufExternalData external;  // the weights stay in their mapped safetensors files
  KILN_ASSIGN(std::string bytes, translate_checkpoint(path, with_tensors, &external));
  return GgufFile::parse_owned(std::move(bytes), path, std::move(external));
}

}  // namespace kiln

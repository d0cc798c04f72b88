// frontend/tokenizer_gguf.cpp — VocabData from GGUF metadata: the only part of the
// tokenizer that knows the file format. Kept apart so the runtime, which carries the
// tokenizer but reads its vocabulary from model.kiln, does not need the GGUF reader.
#include <fmt/format.h>

#include "frontend/gguf.h"
#include "frontend/tokenizer.h"

namespace kiln {

namespace {

constexpr std::string_view kKeyModel = "tokenizer.ggml.model";
constexpr std::string_view kKeyPre = "tokenizer.ggml.pre";
constexpr std::string_view kKeyTokens = "tokenizer.ggml.tokens";
constexpr std::string_view kKeyScores = "tokenizer.ggml.scores";
constexpr std::string_view kKeyTokenType = "tokenizer.ggml.token_type";
constexpr std::string_view kKeyMerges = "tokenizer.ggml.merges";
constexpr std::string_view kKeyAddBos = "tokenizer.ggml.add_bos_token";
constexpr std::string_view kKeyAddEos = "tokenizer.ggml.add_eos_token";
constexpr std::string_view kKeyAddSpacePrefix = "tokenizer.ggml.add_space_prefix";

struct SpecialKey {
  std::string_view key;
  int32_t VocabData::*field;
};
constexpr SpecialKey kSpecialKeys[] = {
    {"tokenizer.ggml.bos_token_id", &VocabData::bos},
    {"tokenizer.ggml.eos_token_id", &VocabData::eos},
    {"tokenizer.ggml.eot_token_id", &VocabData::eot},
    {"tokenizer.ggml.eom_token_id", &VocabData::eom},
    {"tokenizer.ggml.unknown_token_id", &VocabData::unk},
    {"tokenizer.ggml.padding_token_id", &VocabData::pad},
};

Result<const GgufArray*> optional_array(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.find(key);
  if (!v) return static_cast<const GgufArray*>(nullptr);
  return f.get_array(key);
}

Result<std::optional<bool>> optional_bool(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.find(key);
  if (!v) return std::optional<bool>();
  auto b = v->as_bool();
  if (!b)
    return make_error("{}: key '{}' is {}, expected a bool", f.path(), key,
                      gguf_type_name(v->type));
  return std::optional<bool>(*b);
}

}  // namespace

Result<VocabData> vocab_from_gguf(const GgufFile& f) {
  VocabData v;
  KILN_ASSIGN(std::string_view model, f.get_string(kKeyModel));
  v.model = model;
  if (f.find(kKeyPre)) {
    KILN_ASSIGN(std::string_view pre, f.get_string(kKeyPre));
    v.pre = pre;
  }
  std::optional<bool> pre_adds_bos;
  if (v.model == "gpt2") {
    pre_adds_bos = pre_tokenizer_adds_bos(v.pre);
    if (!pre_adds_bos)
      return make_error("{}: key '{}': unknown pre-tokenizer '{}'", f.path(), kKeyPre, v.pre);
  } else if (v.model != "llama") {
    return make_error("{}: key '{}': unsupported tokenizer model '{}' (expected 'gpt2' or 'llama')",
                      f.path(), kKeyModel, v.model);
  }

  KILN_ASSIGN(const GgufArray* tokens, f.get_array(kKeyTokens));
  if (tokens->elem != GgufType::STRING)
    return make_error("{}: key '{}' is an array of {}, expected strings", f.path(), kKeyTokens,
                      gguf_type_name(tokens->elem));
  // llama.cpp reads these strings as C strings: text after a NUL byte is lost (a token that
  // becomes empty is then renamed "[EMPTY_<id>]").
  auto c_string = [](std::string_view s) { return std::string(s.substr(0, s.find('\0'))); };
  v.tokens.reserve(tokens->strings.size());
  for (std::string_view s : tokens->strings) v.tokens.push_back(c_string(s));
  const size_t n = v.tokens.size();

  KILN_ASSIGN(const GgufArray* scores, optional_array(f, kKeyScores));
  if (scores) {
    if (scores->size() < n)
      return make_error("{}: key '{}' has {} entries for {} tokens", f.path(), kKeyScores,
                        scores->size(), n);
    if (!scores->floats.empty()) v.scores.assign(scores->floats.begin(), scores->floats.end());
    else if (!scores->ints.empty()) v.scores.assign(scores->ints.begin(), scores->ints.end());
    else return make_error("{}: key '{}' is not a numeric array", f.path(), kKeyScores);
  }
  KILN_ASSIGN(const GgufArray* types, optional_array(f, kKeyTokenType));
  if (types) {
    if (types->size() < n || types->ints.size() != types->size())
      return make_error("{}: key '{}' must hold {} integers, has {} {}", f.path(), kKeyTokenType,
                        n, types->size(), gguf_type_name(types->elem));
    v.token_types.assign(types->ints.begin(), types->ints.end());
  }
  if (v.model == "gpt2") {
    KILN_ASSIGN(const GgufArray* merges, f.get_array(kKeyMerges));
    if (merges->elem != GgufType::STRING)
      return make_error("{}: key '{}' is an array of {}, expected strings", f.path(), kKeyMerges,
                        gguf_type_name(merges->elem));
    v.merges.reserve(merges->strings.size());
    for (std::string_view s : merges->strings) v.merges.push_back(c_string(s));
  }

  // Defaults as in llama.cpp; ids out of range are dropped (defaults) or ignored (keys).
  if (v.model == "llama") {
    v.bos = 1, v.eos = 2, v.unk = 0;
    v.add_bos = true, v.add_space_prefix = true;
  } else {
    v.bos = 11, v.eos = 11;
    v.add_bos = *pre_adds_bos;
  }
  for (const SpecialKey& k : kSpecialKeys) {
    int32_t& id = v.*k.field;
    if (id >= 0 && static_cast<size_t>(id) >= n) id = -1;
    if (!f.find(k.key)) continue;
    KILN_ASSIGN(int64_t value, f.get_int(k.key));
    if (value >= 0 && static_cast<uint64_t>(value) < n) id = static_cast<int32_t>(value);
  }
  KILN_ASSIGN(auto add_space_prefix, optional_bool(f, kKeyAddSpacePrefix));
  KILN_ASSIGN(auto add_bos, optional_bool(f, kKeyAddBos));
  KILN_ASSIGN(auto add_eos, optional_bool(f, kKeyAddEos));
  if (add_space_prefix) v.add_space_prefix = *add_space_prefix;
  if (add_bos) v.add_bos = *add_bos;
  if (add_eos) v.add_eos = *add_eos;
  if (v.add_bos && v.bos < 0)
    return make_error("{}: key '{}' is true but the file has no valid bos token", f.path(),
                      kKeyAddBos);
  if (v.add_eos && v.eos < 0)
    return make_error("{}: key '{}' is true but the file has no valid eos token", f.path(),
                      kKeyAddEos);
  return v;
}

}  // namespace kiln

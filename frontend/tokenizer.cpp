// frontend/tokenizer.cpp — byte-level BPE and SentencePiece-style BPE, matching llama.cpp.
//
// encode(text):
//   1. special-token partition: the vocabulary's control / user-defined / unknown tokens,
//      longest first, cut the text into raw fragments and token fragments;
//   2. each raw fragment is tokenized on its own:
//        gpt2:  code points -> words (pre-tokenizer) -> bytes -> GPT-2 byte alphabet ->
//               merges by rank (priority queue over adjacent pairs) -> ids;
//        llama: ' ' -> U+2581 (plus a space prefix after BOS / a special token) ->
//               merges by score -> ids, <0xNN> byte tokens for whatever is left.
// decode(ids): each token's piece (GPT-2 alphabet mapped back to bytes, U+2581 -> ' ',
// byte tokens -> their byte), then llama.cpp's optional clean-up of spaces.
//
// Pre-tokenizers are hand-written scanners over code points, one per regex family of
// llama.cpp, composed from stages (isolate a class, the GPT-2 word scanner, the LLaMA-3
// word scanner); kPreTokenizers maps GGUF tokenizer.ggml.pre names to them.
#include "frontend/tokenizer.h"

#include <algorithm>
#include <array>
#include <queue>
#include <unordered_map>

#include <fmt/ranges.h>

#include "frontend/unicode.h"

namespace kiln {
namespace {

namespace uc = kiln::unicode;

// ---------------------------------------------------------------------------------------
// Pre-tokenizer stages. Each stage refines a list of pieces (lengths in code points); a
// stage never joins pieces, and every piece is scanned as if it were the whole text.

struct CodePoints {
  std::vector<uint32_t> cp;
  std::vector<uint16_t> fl;  // unicode::flags of each code point
};

// One piece seen by a scanner: code points and flags, with 0 flags past the end.
struct Chunk {
  const uint32_t* cp;
  const uint16_t* fl;
  size_t n;
  static constexpr uint32_t kEnd = 0xFFFFFFFF;
  uint32_t at(size_t i) const { return i < n ? cp[i] : kEnd; }
  uint16_t flags(size_t i) const { return i < n ? fl[i] : 0; }
};

// Appends pieces ending at given offsets of one chunk, skipping empty ones.
struct Emitter {
  std::vector<uint32_t>& out;
  size_t prev = 0;
  void to(size_t end) {
    if (end > prev) out.push_back(static_cast<uint32_t>(end - prev));
    prev = end;
  }
};

template <typename ScanChunk>
void for_each_chunk(const CodePoints& t, const std::vector<uint32_t>& in,
                    std::vector<uint32_t>& out, ScanChunk&& scan) {
  out.clear();
  size_t start = 0;
  for (uint32_t len : in) {
    scan(Chunk{t.cp.data() + start, t.fl.data() + start, len}, out);
    start += len;
  }
}

constexpr uint16_t kWsLetterNumber = uc::kWhitespace | uc::kLetter | uc::kNumber;

bool ascii_lower_is(uint32_t c, char lower) {
  return c == static_cast<uint32_t>(lower) || c == static_cast<uint32_t>(lower - 'a' + 'A');
}

// Length of an English contraction ('s 't 're 've 'm 'll 'd) starting at i, or 0.
size_t contraction(const Chunk& c, size_t i, bool any_case) {
  if (c.at(i) != '\'' || i + 1 >= c.n) return 0;
  auto is = [&](size_t k, char ch) {
    return any_case ? ascii_lower_is(c.at(k), ch) : c.at(k) == static_cast<uint32_t>(ch);
  };
  if (is(i + 1, 's') || is(i + 1, 't') || is(i + 1, 'm') || is(i + 1, 'd')) return 2;
  if (i + 2 < c.n && ((is(i + 1, 'r') && is(i + 2, 'e')) || (is(i + 1, 'v') && is(i + 2, 'e')) ||
                      (is(i + 1, 'l') && is(i + 2, 'l'))))
    return 3;
  return 0;
}

// White space at the end of a word: "\s+(?!\S)|\s+" — a run followed by more text gives
// back its last character to the next word. Returns the new position, or i if no space.
size_t whitespace_run(const Chunk& c, size_t i) {
  size_t n = 0;
  while (c.flags(i + n) & uc::kWhitespace) ++n;
  if (n > 1 && i + n < c.n) return i + n - 1;
  return i + n;
}

// GPT-2:  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void scan_gpt2(const Chunk& c, std::vector<uint32_t>& out) {
  Emitter emit{out};
  size_t i = 0;
  while (i < c.n) {
    if (size_t k = contraction(c, i, /*any_case=*/false)) {
      emit.to(i += k);
      continue;
    }
    const bool space = c.cp[i] == ' ';
    const uint16_t f = space ? c.flags(i + 1) : c.fl[i];
    if (f & (uc::kLetter | uc::kNumber)) {  // ' ?\p{L}+' or ' ?\p{N}+'
      const uint16_t cls = (f & uc::kLetter) ? uc::kLetter : uc::kNumber;
      i += space;
      while (c.flags(i) & cls) ++i;
      emit.to(i);
      continue;
    }
    if (f != 0 && !(f & kWsLetterNumber)) {  // ' ?[^\s\p{L}\p{N}]+'
      i += space;
      while (c.flags(i) != 0 && !(c.flags(i) & kWsLetterNumber)) ++i;
      emit.to(i);
      continue;
    }
    size_t j = whitespace_run(c, i);
    emit.to(i = (j > i ? j : i + 1));
  }
}

// LLaMA-3 family (max_digits 3; Qwen2 uses 1):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
void scan_llama3(const Chunk& c, std::vector<uint32_t>& out, size_t max_digits) {
  Emitter emit{out};
  size_t i = 0;
  while (i < c.n) {
    const uint32_t cp = c.cp[i];
    const uint16_t f = c.fl[i];
    if (size_t k = contraction(c, i, /*any_case=*/true)) {
      emit.to(i += k);
      continue;
    }
    if (cp != '\r' && cp != '\n' && !(f & uc::kNumber) &&
        ((f & uc::kLetter) || (c.flags(i + 1) & uc::kLetter))) {
      ++i;  // the optional leading non-letter, or the first letter
      while (c.flags(i) & uc::kLetter) ++i;
      emit.to(i);
      continue;
    }
    if (f & uc::kNumber) {
      size_t first = i;
      while (c.flags(i) & uc::kNumber) {
        if (++i - first >= max_digits) {
          emit.to(i);
          first = i;
        }
      }
      emit.to(i);
      continue;
    }
    const uint16_t f2 = cp == ' ' ? c.flags(i + 1) : f;
    if (!(f2 & kWsLetterNumber)) {  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
      i += cp == ' ';
      while (c.flags(i) != 0 && !(c.flags(i) & kWsLetterNumber)) ++i;
      while (c.at(i) == '\r' || c.at(i) == '\n') ++i;
      emit.to(i);
      continue;
    }
    size_t last_newline_end = 0;  // '\s*[\r\n]+': up to the last \r or \n of the run
    for (size_t k = i; c.flags(k) & uc::kWhitespace; ++k)
      if (c.cp[k] == '\r' || c.cp[k] == '\n') last_newline_end = k + 1;
    if (last_newline_end) {
      emit.to(i = last_newline_end);
      continue;
    }
    size_t j = whitespace_run(c, i);
    emit.to(i = (j > i ? j : i + 1));
  }
}

// Character classes used by the "isolate" stages.
using CpPredicate = bool (*)(uint32_t cp, uint16_t flags);
bool is_number(uint32_t, uint16_t f) { return f & uc::kNumber; }
bool is_ascii_digit(uint32_t cp, uint16_t) { return cp >= '0' && cp <= '9'; }
// [\p{P}\$\+<=>\^~\|]
bool is_punct_default(uint32_t cp, uint16_t f) {
  return (f & uc::kPunctuation) || (cp < 0x80 && std::string_view("$+<=>^~|").find(char(cp)) !=
                                                     std::string_view::npos);
}
// [\p{P}\$\+<=>\^~\|`]
bool is_punct_falcon(uint32_t cp, uint16_t f) { return is_punct_default(cp, f) || cp == '`'; }

// Splits out the matches of "class{min,max}" (leftmost, greedy, non-overlapping); the
// text between matches stays one piece.
void scan_isolate(const Chunk& c, std::vector<uint32_t>& out, CpPredicate pred, size_t min_len,
                  size_t max_len) {
  Emitter emit{out};
  size_t i = 0;
  while (i < c.n) {
    if (!pred(c.cp[i], c.fl[i])) {
      ++i;
      continue;
    }
    size_t run_end = i;
    while (run_end < c.n && pred(c.cp[run_end], c.fl[run_end])) ++run_end;
    while (run_end - i >= min_len) {
      emit.to(i);
      i += std::min(max_len, run_end - i);
      emit.to(i);
    }
    i = run_end;
  }
  emit.to(c.n);
}

enum class Split { kDefault, kFalcon, kGpt2, kDigitsGpt2, kLlama3, kQwen2 };

void pre_tokenize(Split split, const CodePoints& t, std::vector<uint32_t>& pieces,
                  std::vector<uint32_t>& scratch) {
  constexpr size_t kAny = SIZE_MAX;
  pieces.assign(1, static_cast<uint32_t>(t.cp.size()));
  auto stage = [&](auto&& scan) {
    for_each_chunk(t, pieces, scratch, scan);
    pieces.swap(scratch);
  };
  auto isolate = [&](CpPredicate p, size_t lo, size_t hi) {
    stage([&](const Chunk& c, std::vector<uint32_t>& o) { scan_isolate(c, o, p, lo, hi); });
  };
  auto gpt2 = [&] { stage([](const Chunk& c, std::vector<uint32_t>& o) { scan_gpt2(c, o); }); };
  switch (split) {
    case Split::kDefault:  // [\p{P}\$\+<=>\^~\|]+ ; gpt2 ; \p{N}+ ; [0-9][0-9][0-9]
      isolate(is_punct_default, 1, kAny);
      gpt2();
      isolate(is_number, 1, kAny);
      isolate(is_ascii_digit, 3, 3);
      break;
    case Split::kFalcon:  // [\p{P}\$\+<=>\^~\|`]+ ; gpt2 ; [0-9][0-9][0-9]
      isolate(is_punct_falcon, 1, kAny);
      gpt2();
      isolate(is_ascii_digit, 3, 3);
      break;
    case Split::kGpt2:
      gpt2();
      break;
    case Split::kDigitsGpt2:  // \p{N} ; gpt2
      isolate(is_number, 1, 1);
      gpt2();
      break;
    case Split::kLlama3:
      stage([](const Chunk& c, std::vector<uint32_t>& o) { scan_llama3(c, o, 3); });
      break;
    case Split::kQwen2:
      stage([](const Chunk& c, std::vector<uint32_t>& o) { scan_llama3(c, o, 1); });
      break;
  }
}

// GGUF tokenizer.ggml.pre names -> splitter and the flags llama.cpp ties to them.
struct PreTokenizerInfo {
  std::string_view name;
  Split split;
  bool clean_spaces;   // detokenizer drops spaces before . , ! ? and some contractions
  bool ignore_merges;  // a word that is a whole token is not merged
  bool add_bos;        // default of tokenizer.ggml.add_bos_token
};

constexpr PreTokenizerInfo kPreTokenizers[] = {
    {"default", Split::kDefault, true, false, false},
    {"llama3", Split::kLlama3, true, true, true},
    {"llama-v3", Split::kLlama3, true, true, true},
    {"llama-bpe", Split::kLlama3, true, true, true},
    {"falcon3", Split::kLlama3, true, true, true},
    {"falcon-h1", Split::kLlama3, true, true, true},
    {"pixtral", Split::kLlama3, true, true, true},
    {"midm-2.0", Split::kLlama3, true, true, true},
    {"lfm2", Split::kLlama3, true, true, true},
    {"jina-v5-nano", Split::kLlama3, true, true, true},
    {"dbrx", Split::kLlama3, true, false, false},
    {"smaug-bpe", Split::kLlama3, true, false, false},
    {"falcon", Split::kFalcon, true, false, false},
    {"gpt-2", Split::kGpt2, true, false, false},
    {"phi-2", Split::kGpt2, true, false, false},
    {"mpt", Split::kGpt2, true, false, false},
    {"olmo", Split::kGpt2, true, false, false},
    {"jais", Split::kGpt2, true, false, false},
    {"jina-es", Split::kGpt2, true, false, false},
    {"jina-de", Split::kGpt2, true, false, false},
    {"jina-v1-en", Split::kGpt2, true, false, false},
    {"jina-v2-es", Split::kGpt2, true, false, false},
    {"jina-v2-de", Split::kGpt2, true, false, false},
    {"jina-v2-code", Split::kGpt2, true, false, false},
    {"roberta-bpe", Split::kGpt2, true, false, false},
    {"gigachat", Split::kGpt2, true, false, false},
    {"a.x-4.0", Split::kGpt2, true, false, false},
    {"mellum", Split::kGpt2, true, false, false},
    {"modern-bert", Split::kGpt2, true, false, false},
    {"exaone4", Split::kGpt2, true, false, false},
    {"trillion", Split::kGpt2, false, false, false},
    {"granite-docling", Split::kGpt2, false, false, false},
    {"starcoder", Split::kDigitsGpt2, true, false, false},
    {"refact", Split::kDigitsGpt2, true, false, false},
    {"codeshell", Split::kDigitsGpt2, true, false, false},
    {"exaone", Split::kDigitsGpt2, true, false, false},
    {"minerva-7b", Split::kDigitsGpt2, true, false, false},
    {"mellum2", Split::kDigitsGpt2, true, false, false},
    {"smollm", Split::kDigitsGpt2, false, false, false},
    {"command-r", Split::kDigitsGpt2, false, false, false},
    {"qwen2", Split::kQwen2, false, false, false},
    {"deepseek-r1-qwen", Split::kQwen2, false, false, false},
    {"kormo", Split::kQwen2, false, false, false},
    {"f2llmv2", Split::kQwen2, false, false, false},
    {"hunyuan", Split::kQwen2, false, false, false},
    {"solar-open", Split::kQwen2, false, false, false},
    {"grok-2", Split::kQwen2, false, false, false},
    {"stablelm2", Split::kQwen2, true, false, false},
    {"megrez", Split::kQwen2, true, false, false},
};

const PreTokenizerInfo* find_pre_tokenizer(std::string_view name) {
  if (name.empty()) name = "default";  // llama.cpp warns and uses the default regexes
  for (const auto& p : kPreTokenizers)
    if (p.name == name) return &p;
  return nullptr;
}

// ---------------------------------------------------------------------------------------
// Token attributes (llama.cpp's llama_token_attr bits that matter here).

enum Attr : uint16_t {
  kAttrUnknown = 1 << 0,
  kAttrUnused = 1 << 1,
  kAttrNormal = 1 << 2,
  kAttrControl = 1 << 3,
  kAttrUserDefined = 1 << 4,
  kAttrByte = 1 << 5,
};

uint16_t attr_from_type(int32_t type) {
  switch (static_cast<TokenType>(type)) {
    case TokenType::kNormal: return kAttrNormal;
    case TokenType::kUnknown: return kAttrUnknown;
    case TokenType::kControl: return kAttrControl;
    case TokenType::kUserDefined: return kAttrUserDefined;
    case TokenType::kUnused: return kAttrUnused;
    case TokenType::kByte: return kAttrByte;
    case TokenType::kUndefined: return 0;
  }
  return 0;
}

// Token texts llama.cpp recognises when the file does not name them. All are forced to be
// control tokens; the eot / fim ones are taken in list order.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"};
constexpr std::string_view kEomTexts[] = {"<|eom_id|>"};
constexpr std::string_view kFimPreTexts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
                                             "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                                             "<|code_prefix|>", "<|prefix|>"};
constexpr std::string_view kFimSufTexts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
                                             "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                                             "<|code_suffix|>", "<|suffix|>"};
constexpr std::string_view kFimMidTexts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
                                             "<｜fim▁end｜>", "<MID>", "▁<MID>",
                                             "<|code_middle|>", "<|middle|>"};
constexpr std::string_view kFimPadTexts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
                                             "[PAD]"};
constexpr std::string_view kFimRepTexts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                             "<REPO>", "<reponame>"};
constexpr std::string_view kFimSepTexts[] = {"<|file_sep|>"};
// Texts that end generation whatever their id.
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~["};
// gpt-oss: always rendered, never control.
constexpr std::string_view kForcedUserDefined[] = {"<|channel|>", "<|message|>", "<|start|>",
                                                   "<|constrain|>"};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

struct Fragment {
  int32_t token;  // >= 0: a special token; -1: raw text [offset, offset + length)
  size_t offset, length;
};

}  // namespace

// ---------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  VocabData v;
  bool spm = false;  // "llama" model
  const PreTokenizerInfo* pre = nullptr;
  int32_t n_tokens = 0;
  std::vector<uint16_t> attr;
  std::vector<std::string> pieces;  // rendered text of every token (special tokens too)
  std::vector<int32_t> special;     // partition order: control/user-defined/unknown tokens
  // Trie of the special texts, to find which of them occur in a text in one pass. Node 0 is
  // the root; children are a first-child / next-sibling list labelled by byte.
  struct TrieNode {
    int32_t first_child = -1, next_sibling = -1;
    int32_t special_index = -1;  // index into `special` of the token ending here
    uint8_t byte = 0;
  };
  std::vector<TrieNode> trie;
  std::vector<int32_t> eog;  // sorted
  std::vector<uint8_t> is_eog;

  // Token texts (ids < n_tokens) and, for BPE, strings that only occur in merges.
  StringIdMap ids;
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  std::unordered_map<uint64_t, Merge> merges;    // (left id << 32 | right id)
  std::array<int32_t, 256> byte_symbol{};        // BPE: interned id of each byte's character
  std::array<int32_t, 256> single_byte_token{};  // the token spelled by that one byte
  std::array<int32_t, 256> byte_fallback{};      // SPM: <0xNN>, else the byte's token, else unk

  int32_t lookup(std::string_view s) const {
    auto it = ids.find(s);
    return it == ids.end() ? -1 : it->second;
  }
  int32_t token(std::string_view s) const {
    int32_t id = lookup(s);
    return id < n_tokens ? id : -1;
  }
  int32_t find_first(std::span<const std::string_view> texts) const {
    for (std::string_view s : texts)
      if (int32_t id = token(s); id >= 0) return id;
    return -1;
  }
  int32_t intern(std::string_view s) {
    auto [it, added] = ids.try_emplace(std::string(s), static_cast<int32_t>(ids.size()));
    return it->second;
  }

  Status build();
  void partition(std::string_view text, bool parse_special, std::vector<Fragment>& frags) const;
  void encode_bpe(std::string_view text, std::vector<int32_t>& out) const;
  void encode_bpe_word(std::string_view bytes, std::vector<int32_t>& out) const;
  void encode_spm(std::string_view text, std::vector<int32_t>& out) const;
  std::string render(int32_t id) const;
};

Status Tokenizer::Impl::build() {
  if (v.model == "llama") {
    spm = true;
  } else if (v.model == "gpt2") {
    pre = find_pre_tokenizer(v.pre);
    if (!pre)
      return make_error("tokenizer: unknown pre-tokenizer '{}' (known: {})", v.pre,
                        fmt::join(known_pre_tokenizers(), ", "));
  } else {
    return make_error("tokenizer: unsupported tokenizer model '{}' (expected 'gpt2' or 'llama')",
                      v.model);
  }
  if (v.tokens.empty()) return make_error("tokenizer: the vocabulary has no tokens");
  if (v.tokens.size() > static_cast<size_t>(INT32_MAX / 2))
    return make_error("tokenizer: {} tokens is too many", v.tokens.size());
  n_tokens = static_cast<int32_t>(v.tokens.size());
  if (!v.scores.empty() && v.scores.size() < v.tokens.size())
    return make_error("tokenizer: {} scores for {} tokens", v.scores.size(), v.tokens.size());
  if (!v.token_types.empty() && v.token_types.size() < v.tokens.size())
    return make_error("tokenizer: {} token types for {} tokens", v.token_types.size(),
                      v.tokens.size());
  for (auto [name, id] : {std::pair<const char*, int32_t>{"bos", v.bos}, {"eos", v.eos},
                          {"unk", v.unk}, {"pad", v.pad}, {"eot", v.eot}, {"eom", v.eom}})
    if (id < -1 || id >= n_tokens)
      return make_error("tokenizer: {} token id {} is out of range [0, {})", name, id, n_tokens);
  if (v.add_bos && v.bos < 0)
    return make_error("tokenizer: add_bos is set but there is no bos token");
  if (v.add_eos && v.eos < 0)
    return make_error("tokenizer: add_eos is set but there is no eos token");

  // Texts -> ids (llama.cpp renames empty tokens so that every text is unique).
  ids.reserve(v.tokens.size() + v.merges.size() / 4);
  attr.resize(n_tokens);
  for (int32_t i = 0; i < n_tokens; ++i) {
    if (v.tokens[i].empty()) v.tokens[i] = fmt::format("[EMPTY_{}]", i);
    if (!ids.try_emplace(v.tokens[i], i).second)
      return make_error("tokenizer: token {} duplicates the text of token {} ('{}')", i,
                        ids.at(v.tokens[i]), v.tokens[i]);
    attr[i] = v.token_types.empty() ? uint16_t(kAttrNormal) : attr_from_type(v.token_types[i]);
  }

  // Special tokens found by their text, as llama.cpp does when the file does not say.
  auto force_control = [&](int32_t id) {
    if (id >= 0) attr[id] |= kAttrControl;
  };
  if (v.eot < 0) force_control(v.eot = find_first(kEotTexts));
  if (v.eom < 0) force_control(v.eom = find_first(kEomTexts));
  force_control(find_first(kFimPreTexts));
  force_control(find_first(kFimSufTexts));
  force_control(find_first(kFimMidTexts));
  std::vector<int32_t> eog_set;
  for (int32_t id : {find_first(kFimPadTexts), find_first(kFimRepTexts),
                     find_first(kFimSepTexts)}) {
    if (id >= 0) eog_set.push_back(id), force_control(id);
  }
  for (std::string_view s : kEogTexts)
    if (int32_t id = token(s); id >= 0) eog_set.push_back(id), force_control(id);
  for (std::string_view s : kForcedUserDefined)
    if (int32_t id = token(s); id >= 0) attr[id] = kAttrUserDefined;
  for (int32_t id : {v.eos, v.eot, v.eom})
    if (id >= 0) eog_set.push_back(id);
  auto in_eog = [&](std::string_view s) {
    int32_t id = token(s);
    return id >= 0 && std::find(eog_set.begin(), eog_set.end(), id) != eog_set.end() ? id : -1;
  };
  // gpt-oss / solar-open: "<|end|>" ends a message, not the generation.
  if (int32_t end = in_eog("<|end|>"); end >= 0 &&
      ((in_eog("<|return|>") >= 0 && in_eog("<|call|>") >= 0) ||
       ((in_eog("<|call|>") >= 0 || in_eog("<|calls|>") >= 0) && in_eog("<|flush|>") >= 0))) {
    std::erase(eog_set, end);
    attr[end] = kAttrUserDefined;
  }
  // gemma4 / plamo: "</s>" is an ordinary token.
  if (int32_t s = in_eog("</s>");
      s >= 0 && (in_eog("<|tool_response>") >= 0 || in_eog("<|plamo:eos|>") >= 0)) {
    std::erase(eog_set, s);
    attr[s] = kAttrNormal;
  }
  std::sort(eog_set.begin(), eog_set.end());
  eog_set.erase(std::unique(eog_set.begin(), eog_set.end()), eog_set.end());
  eog = eog_set;
  is_eog.assign(n_tokens, 0);
  for (int32_t id : eog) is_eog[id] = 1;

  // Partition order: longest text first. llama.cpp uses std::sort (not stable) on the ids in
  // increasing order; doing the same here gives the same order for equal lengths.
  for (int32_t id = 0; id < n_tokens; ++id)
    if (attr[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) special.push_back(id);
  std::sort(special.begin(), special.end(), [&](int32_t a, int32_t b) {
    return v.tokens[a].size() > v.tokens[b].size();
  });
  trie.assign(1, TrieNode{});
  for (size_t k = 0; k < special.size(); ++k) {
    int32_t node = 0;
    for (char ch : v.tokens[special[k]]) {
      int32_t c = trie[node].first_child;
      while (c >= 0 && trie[c].byte != uint8_t(ch)) c = trie[c].next_sibling;
      if (c < 0) {
        c = static_cast<int32_t>(trie.size());
        trie.push_back({-1, trie[node].first_child, -1, uint8_t(ch)});
        trie[node].first_child = c;
      }
      node = c;
    }
    trie[node].special_index = static_cast<int32_t>(k);
  }

  for (int b = 0; b < 256; ++b) single_byte_token[b] = token(std::string(1, char(b)));

  if (spm) {
    for (int b = 0; b < 256; ++b) {
      int32_t id = token(fmt::format("<0x{:02X}>", b));
      byte_fallback[b] = id >= 0 ? id : single_byte_token[b] >= 0 ? single_byte_token[b] : v.unk;
    }
  } else {
    // Merges "left right" (split at the first space after the first byte). Parts and results
    // that are not tokens still take part, as in llama.cpp; the first rank of a pair wins.
    merges.reserve(v.merges.size());
    for (size_t rank = 0; rank < v.merges.size(); ++rank) {
      std::string_view m = v.merges[rank];
      size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
      if (sp == std::string_view::npos)
        return make_error("tokenizer: merge {} ('{}') is not of the form 'left right'", rank, m);
      std::string_view left = m.substr(0, sp), right = m.substr(sp + 1);
      int32_t l = intern(left), r = intern(right);
      int32_t result = intern(std::string(left) + std::string(right));
      merges.try_emplace((uint64_t(uint32_t(l)) << 32) | uint32_t(r),
                         Merge{static_cast<int32_t>(rank), result});
    }
    for (int b = 0; b < 256; ++b) {
      std::string s;
      uc::append_utf8(s, uc::byte_to_cp(uint8_t(b)));
      byte_symbol[b] = lookup(s);
    }
  }

  pieces.resize(n_tokens);
  for (int32_t id = 0; id < n_tokens; ++id) pieces[id] = render(id);
  return {};
}

// The text a token stands for (special tokens included).
std::string Tokenizer::Impl::render(int32_t id) const {
  const std::string& text = v.tokens[id];
  const uint16_t a = attr[id];
  if (a & (kAttrUnknown | kAttrControl | kAttrUserDefined)) return text;
  if (a & kAttrNormal) {
    std::string out;
    if (spm) {
      for (size_t i = 0; i < text.size();) {
        if (text.compare(i, kSpmSpace.size(), kSpmSpace) == 0) {
          out += ' ';
          i += kSpmSpace.size();
        } else {
          out += text[i++];
        }
      }
      return out;
    }
    // GPT-2 alphabet back to bytes; llama.cpp spells out characters outside it.
    for (size_t pos = 0; pos < text.size();) {
      uint32_t cp = uc::decode_one(text, pos);
      int b = uc::cp_to_byte(cp);
      if (b >= 0) {
        out += static_cast<char>(b);
        continue;
      }
      std::string utf8;
      uc::append_utf8(utf8, cp);
      out += "[UNK_BYTE_0x";
      for (char ch : utf8) out += fmt::format("{:02x}", static_cast<uint8_t>(ch));
      out += text + "]";
    }
    return out;
  }
  if (a & kAttrByte) {  // "<0xNN>"
    unsigned value = 0;
    for (size_t i = 3; i < 5 && i < text.size(); ++i) {
      char ch = text[i];
      int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
      if (d < 0) break;
      value = value * 16 + unsigned(d);
    }
    return std::string(1, static_cast<char>(value));
  }
  return {};  // unused / undefined tokens render as nothing
}

// Cuts `text` at occurrences of special tokens: for each token, longest first, every raw
// fragment is split at that token's leftmost non-overlapping occurrences.
void Tokenizer::Impl::partition(std::string_view text, bool parse_special,
                                std::vector<Fragment>& frags) const {
  frags.clear();
  if (text.empty()) return;
  frags.push_back({-1, 0, text.size()});
  if (special.empty()) return;
  // Only tokens that occur somewhere in the text can split a fragment of it.
  std::vector<int32_t> present;  // indices into `special`, i.e. in partition order
  for (size_t i = 0; i < text.size(); ++i) {
    int32_t node = 0;
    for (size_t k = i; k < text.size(); ++k) {
      int32_t c = trie[node].first_child;
      while (c >= 0 && trie[c].byte != uint8_t(text[k])) c = trie[c].next_sibling;
      if (c < 0) break;
      node = c;
      if (trie[node].special_index >= 0) present.push_back(trie[node].special_index);
    }
  }
  std::sort(present.begin(), present.end());
  present.erase(std::unique(present.begin(), present.end()), present.end());

  std::vector<Fragment> next;
  for (int32_t index : present) {
    const int32_t id = special[index];
    if (!parse_special && (attr[id] & (kAttrControl | kAttrUnknown))) continue;
    const std::string& tok = v.tokens[id];
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t pos = f.offset, end = f.offset + f.length;
      for (;;) {
        size_t m = text.substr(0, end).find(tok, pos);
        if (m == std::string_view::npos) break;
        if (m > pos) next.push_back({-1, pos, m - pos});
        next.push_back({id, 0, 0});
        pos = m + tok.size();
      }
      if (pos < end) next.push_back({-1, pos, end - pos});
    }
    frags.swap(next);
  }
}

void Tokenizer::Impl::encode_bpe(std::string_view text, std::vector<int32_t>& out) const {
  CodePoints t;
  uc::decode_utf8(text, t.cp);
  t.fl.resize(t.cp.size());
  for (size_t i = 0; i < t.cp.size(); ++i) t.fl[i] = uc::flags(t.cp[i]);
  std::vector<uint32_t> words, scratch;
  pre_tokenize(pre->split, t, words, scratch);
  std::string bytes;
  size_t start = 0;
  for (uint32_t len : words) {
    bytes.clear();
    for (size_t i = start; i < start + len; ++i) uc::append_utf8(bytes, t.cp[i]);
    start += len;
    encode_bpe_word(bytes, out);
  }
}

// Byte-level BPE of one word: one symbol per byte, then repeatedly merge the adjacent pair
// of lowest rank (leftmost first).
void Tokenizer::Impl::encode_bpe_word(std::string_view bytes, std::vector<int32_t>& out) const {
  auto encoded = [&](size_t start, size_t len) {
    std::string s;
    for (size_t i = start; i < start + len; ++i)
      uc::append_utf8(s, uc::byte_to_cp(uint8_t(bytes[i])));
    return s;
  };
  if (pre->ignore_merges) {
    if (int32_t id = token(encoded(0, bytes.size())); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  struct Symbol {
    int32_t id;  // interned text, -1 if the text is in no token and no merge
    uint32_t start, len;
    int32_t prev, next;
  };
  struct Pair {
    int32_t rank, left, right, left_id, right_id;
    bool operator<(const Pair& o) const {  // priority_queue pops the "largest"
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  const int32_t n = static_cast<int32_t>(bytes.size());
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i)
    sym[i] = {byte_symbol[uint8_t(bytes[i])], uint32_t(i), 1, i - 1, i + 1 < n ? i + 1 : -1};
  std::priority_queue<Pair> queue;
  auto add_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0 || sym[l].id < 0 || sym[r].id < 0) return;
    auto it = merges.find((uint64_t(uint32_t(sym[l].id)) << 32) | uint32_t(sym[r].id));
    if (it != merges.end()) queue.push({it->second.rank, l, r, sym[l].id, sym[r].id});
  };
  for (int32_t i = 1; i < n; ++i) add_pair(i - 1, i);
  while (!queue.empty()) {
    Pair p = queue.top();
    queue.pop();
    Symbol& l = sym[p.left];
    Symbol& r = sym[p.right];
    if (l.len == 0 || r.len == 0 || l.id != p.left_id || r.id != p.right_id) continue;  // stale
    l.id = merges.at((uint64_t(uint32_t(l.id)) << 32) | uint32_t(r.id)).result;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = p.left;
    add_pair(l.prev, p.left);
    add_pair(p.left, l.next);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) {
    const Symbol& s = sym[i];
    if (s.id >= 0 && s.id < n_tokens) {
      out.push_back(s.id);
      continue;
    }
    // Not a token: each byte of the encoded text, where a one-byte token exists.
    for (char ch : encoded(s.start, s.len))
      if (int32_t id = single_byte_token[uint8_t(ch)]; id >= 0) out.push_back(id);
  }
}

// SentencePiece-style BPE of one raw fragment (already prefixed and with U+2581 for ' '):
// one symbol per UTF-8 character, merge the adjacent pair whose result has the highest
// score (leftmost first), bytes of leftover symbols become byte tokens.
void Tokenizer::Impl::encode_spm(std::string_view text, std::vector<int32_t>& out) const {
  struct Symbol {
    uint32_t start, len;
    int32_t prev, next;
  };
  struct Pair {
    float score;
    int32_t left, right;
    uint32_t len;
    bool operator<(const Pair& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::vector<Symbol> sym;
  for (size_t pos = 0; pos < text.size();) {
    uint32_t len = uint32_t(std::min(uc::utf8_len(uint8_t(text[pos])), text.size() - pos));
    int32_t idx = int32_t(sym.size());
    sym.push_back({uint32_t(pos), len, idx - 1, pos + len < text.size() ? idx + 1 : -1});
    pos += len;
  }
  std::priority_queue<Pair> queue;
  auto add_pair = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    uint32_t len = sym[l].len + sym[r].len;
    int32_t id = token(text.substr(sym[l].start, len));
    if (id < 0) return;
    queue.push({v.scores.empty() ? 0.0f : v.scores[id], l, r, len});
  };
  for (int32_t i = 1; i < int32_t(sym.size()); ++i) add_pair(i - 1, i);
  while (!queue.empty()) {
    Pair p = queue.top();
    queue.pop();
    Symbol& l = sym[p.left];
    Symbol& r = sym[p.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != p.len) continue;  // stale
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = p.left;
    add_pair(l.prev, p.left);
    add_pair(p.left, l.next);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) {
    std::string_view s = text.substr(sym[i].start, sym[i].len);
    if (int32_t id = token(s); id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char ch : s)
      if (int32_t id = byte_fallback[uint8_t(ch)]; id >= 0) out.push_back(id);
  }
}

// ---------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<Tokenizer> Tokenizer::create(VocabData v) {
  auto impl = std::make_unique<Impl>();
  impl->v = std::move(v);
  KILN_TRY(impl->build());
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  const Impl& t = *impl_;
  std::vector<int32_t> out;
  std::vector<Fragment> frags;
  t.partition(text, parse_special, frags);
  if (add_special && t.v.add_bos) out.push_back(t.v.bos);
  bool after_special = true;  // SPM: a space prefix goes at the start and after specials
  std::string spm_text;
  for (const Fragment& f : frags) {
    if (f.token >= 0) {
      out.push_back(f.token);
      after_special = true;
      continue;
    }
    std::string_view raw = text.substr(f.offset, f.length);
    if (!t.spm) {
      t.encode_bpe(raw, out);
      continue;
    }
    spm_text.clear();
    if (t.v.add_space_prefix && after_special) spm_text += kSpmSpace;
    for (char ch : raw) {
      if (ch == ' ') spm_text += kSpmSpace;
      else spm_text += ch;
    }
    t.encode_spm(spm_text, out);
    after_special = false;
  }
  if (add_special && t.v.add_eos) out.push_back(t.v.eos);
  return out;
}

namespace {

// llama.cpp's clean_up_tokenization_spaces, three in-place passes over the decoded text:
// " ?" " !" " ." " ," lose the space; " ' " loses both spaces; " 's" " 'm" " 're" " 've" lose
// the space. Written as in-place compaction because the second pass reads back what it wrote.
void clean_spaces(std::string& s) {
  auto pass = [&s](auto&& step) {
    if (s.empty()) return;
    size_t w = 1;
    for (size_t i = 1; i < s.size(); ++i) step(i, w);
    s.resize(w);
  };
  const auto punct = [](char c) { return c == '?' || c == '!' || c == '.' || c == ','; };
  pass([&](size_t i, size_t& w) {
    if (s[i - 1] == ' ' && punct(s[i])) --w;
    s[w++] = s[i];
  });
  pass([&](size_t& i, size_t& w) {
    const char x = s[i];
    if (x == '\'' && i + 1 < s.size() && s[i - 1] == ' ' && s[i + 1] == ' ') {
      --w;
      s[++i] = '\0';
    }
    s[w++] = x;
  });
  pass([&](size_t i, size_t& w) {
    const char x = s[i];
    if (s[i - 1] == ' ' && x == '\'' && i + 1 < s.size()) {
      const char a = s[i + 1];
      if (a == 's' || a == 'm') {
        --w;
      } else if (a != 't' && a != 'd' && i + 2 < s.size()) {
        const char b = s[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e')) --w;
      }
    }
    s[w++] = x;
  });
}

}  // namespace

std::string Tokenizer::decode(std::span<const int32_t> ids, bool render_special,
                              bool remove_special) const {
  const Impl& t = *impl_;
  bool strip_space = t.v.add_space_prefix;
  if (remove_special && t.v.add_bos && !ids.empty() && ids.front() == t.v.bos) {
    strip_space = false;
    ids = ids.subspan(1);
  }
  if (remove_special && t.v.add_eos && !ids.empty() && ids.back() == t.v.eos)
    ids = ids.first(ids.size() - 1);
  std::string out;
  for (int32_t id : ids) {
    const bool strip = strip_space;
    strip_space = false;
    if (id < 0 || id >= t.n_tokens) continue;
    if (!render_special && (t.attr[id] & (kAttrControl | kAttrUnknown))) continue;
    std::string_view p = t.pieces[id];
    if (strip && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    out += p;
  }
  if (t.pre && t.pre->clean_spaces) clean_spaces(out);
  return out;
}

const std::string& Tokenizer::piece(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < impl_->n_tokens ? impl_->pieces[id] : kEmpty;
}

int32_t Tokenizer::vocab_size() const { return impl_->n_tokens; }
int32_t Tokenizer::bos() const { return impl_->v.bos; }
int32_t Tokenizer::eos() const { return impl_->v.eos; }
int32_t Tokenizer::eot() const { return impl_->v.eot; }
bool Tokenizer::add_bos() const { return impl_->v.add_bos; }
bool Tokenizer::is_eog(int32_t id) const {
  return id >= 0 && id < impl_->n_tokens && impl_->is_eog[id];
}
bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < impl_->n_tokens && (impl_->attr[id] & kAttrControl);
}
const std::vector<int32_t>& Tokenizer::eog_ids() const { return impl_->eog; }
std::optional<int32_t> Tokenizer::token_id(std::string_view text) const {
  int32_t id = impl_->token(text);
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}
const std::string& Tokenizer::token_text(int32_t id) const { return impl_->v.tokens.at(id); }
const VocabData& Tokenizer::vocab() const { return impl_->v; }

std::optional<bool> pre_tokenizer_adds_bos(std::string_view name) {
  const PreTokenizerInfo* p = find_pre_tokenizer(name);
  return p ? std::optional<bool>(p->add_bos) : std::nullopt;
}

std::vector<std::string_view> known_pre_tokenizers() {
  std::vector<std::string_view> names;
  for (const auto& p : kPreTokenizers) names.push_back(p.name);
  return names;
}

}  // namespace kiln

// tests/fuzz/tokenizer_fuzz.cpp — libFuzzer target for the tokenizer on arbitrary text and
// arbitrary token ids: what `kiln run`, `kiln chat` and kiln_tokenize get from users.
//
// Two vocabularies, both fixed for the run:
//   * byte-level BPE ("gpt2"): the GGUF named by KILN_FUZZ_VOCAB (scripts/fuzz.sh passes the
//     default model when scripts/setup.sh has fetched it: its real 49152-token vocabulary,
//     merges and pre-tokenizer), else the committed tiny vocabulary of the gguf corpus;
//   * SentencePiece BPE ("llama"), built here: control tokens, the 256 <0xNN> byte tokens
//     and a few scored pieces, so that merges, the byte fallback and U+2581 all occur.
// The first input byte chooses the vocabulary and the flags; the rest is text, or (bit 3)
// token ids, 2 bytes each, some of them out of range.
// Checked, beyond "no crash" (sanitizers): every id encode returns is in the vocabulary,
// and text comes back unchanged through encode then decode when it must: valid UTF-8
// encoded without special tokens, of bytes the vocabulary spells (the gpt2 one: bytes whose
// symbol is a token; the llama one: all, by its byte tokens, in text without U+2581, which
// decode turns into a space).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "frontend/gguf.h"
#include "frontend/tokenizer.h"
#include "frontend/unicode.h"

namespace {

using kiln::Tokenizer;
using kiln::TokenType;
using kiln::VocabData;

std::unique_ptr<Tokenizer> g_bpe, g_spm;
bool g_bpe_spells[256] = {};  // whether the byte-level vocabulary has byte b's symbol
int g_bpe_spelled = 0;

// Valid UTF-8 as RFC 3629 has it: no overlong forms, no surrogates, nothing past U+10FFFF.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07;
    else return false;
    if (i + n >= s.size()) return false;  // the sequence runs past the end
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)) return false;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

// A byte whose symbol in the GPT-2 byte alphabet is no token is dropped by encode, as
// llama.cpp drops it (SmolLM2's vocabulary lacks a few control bytes and bytes that valid
// UTF-8 never or rarely holds), so only text of spelled bytes can come back whole.
void find_spelled_bytes(const Tokenizer& t) {
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    kiln::unicode::append_utf8(symbol, kiln::unicode::byte_to_cp(static_cast<uint8_t>(b)));
    g_bpe_spells[b] = t.token_id(symbol).has_value();
    g_bpe_spelled += g_bpe_spells[b];
  }
}

std::unique_ptr<Tokenizer> load_bpe() {
  const char* env = std::getenv("KILN_FUZZ_VOCAB");
  const std::string path = env && *env ? env : KILN_FUZZ_TINY_VOCAB;
  auto f = kiln::GgufFile::open(path);
  if (!f.ok()) { std::fprintf(stderr, "tokenizer_fuzz: %s\n", f.error().message.c_str()); std::abort(); }
  auto v = kiln::vocab_from_gguf(**f);
  if (!v.ok()) { std::fprintf(stderr, "tokenizer_fuzz: %s\n", v.error().message.c_str()); std::abort(); }
  auto t = Tokenizer::create(std::move(*v));
  if (!t.ok()) { std::fprintf(stderr, "tokenizer_fuzz: %s\n", t.error().message.c_str()); std::abort(); }
  return std::make_unique<Tokenizer>(std::move(*t));
}

std::unique_ptr<Tokenizer> build_spm() {
  VocabData v;
  v.model = "llama";
  v.pre = "default";
  auto add = [&](std::string text, float score, TokenType type) {
    v.tokens.push_back(std::move(text));
    v.scores.push_back(score);
    v.token_types.push_back(static_cast<int32_t>(type));
  };
  add("<unk>", 0, TokenType::kUnknown);
  add("<s>", 0, TokenType::kControl);
  add("</s>", 0, TokenType::kControl);
  static const char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) add(std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">", 0, TokenType::kByte);
  const char* pieces[] = {"\xE2\x96\x81", "a", "b", "c", "e", "t", "h", "\xE2\x96\x81t", "th", "he", "the",
                          "\xE2\x96\x81the", "ab", "abc", "\xC3\xA9", "\xE2\x96\x81\xE2\x96\x81", "<user>"};
  float score = -1.0f;
  for (const char* p : pieces) add(p, score, TokenType::kNormal), score -= 0.5f;
  v.token_types.back() = static_cast<int32_t>(TokenType::kUserDefined);  // "<user>"
  v.unk = 0, v.bos = 1, v.eos = 2;
  v.add_bos = true;
  v.add_space_prefix = false;
  auto t = Tokenizer::create(std::move(v));
  if (!t.ok()) { std::fprintf(stderr, "tokenizer_fuzz: SentencePiece vocabulary: %s\n", t.error().message.c_str()); std::abort(); }
  return std::make_unique<Tokenizer>(std::move(*t));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_bpe = load_bpe();
  find_spelled_bytes(*g_bpe);
  std::fprintf(stderr, "tokenizer_fuzz: byte-level BPE of %d tokens, spelling %d of the 256 bytes\n",
               g_bpe->vocab_size(), g_bpe_spelled);
  g_spm = build_spm();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const bool spm = mode & 1, add_special = mode & 2, parse_special = mode & 4, ids_in = mode & 8;
  const Tokenizer& tok = spm ? *g_spm : *g_bpe;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  if (ids_in) {  // arbitrary ids, some out of range: decode and piece must cope
    std::vector<int32_t> ids;
    for (size_t i = 1; i + 1 < size; i += 2) {
      const int32_t raw = data[i] | (data[i + 1] << 8);
      ids.push_back(raw % (tok.vocab_size() + 8) - 4);
    }
    (void)tok.decode(ids, mode & 16, mode & 32);
    for (int32_t id : ids) (void)tok.piece(id);
    return 0;
  }
  const std::vector<int32_t> ids = tok.encode(text, add_special, parse_special);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
  if (add_special || parse_special || !valid_utf8(text)) return 0;
  bool spells = true;
  if (spm) spells = text.find("\xE2\x96\x81") == std::string_view::npos;
  else
    for (char c : text) spells = spells && g_bpe_spells[static_cast<unsigned char>(c)];
  if (!spells) return 0;
  if (tok.decode(ids, true, false) != text) {
    std::fprintf(stderr, "tokenizer_fuzz: %s: decode(encode(text)) differs from the text (%zu bytes, %zu ids)\n",
                 spm ? "llama" : "gpt2", text.size(), ids.size());
    __builtin_trap();
  }
  return 0;
}

// tests/unit/tokenizer_test.cpp — the tokenizer against hand-made vocabularies, the default
// model, and llama.cpp's goldens (tests/goldens/tokenizer.golden).
#include "frontend/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "frontend/gguf.h"
#include "frontend/unicode.h"
#include "tests/unit/token_goldens.h"

namespace kiln {
namespace {

namespace uc = kiln::unicode;

// ---------------------------------------------------------------------------------------
// unicode

TEST(Unicode, Flags) {
  EXPECT_TRUE(uc::flags('a') & uc::kLetter);
  EXPECT_TRUE(uc::flags('7') & uc::kNumber);
  EXPECT_TRUE(uc::flags(' ') & uc::kWhitespace);
  EXPECT_TRUE(uc::flags('\n') & uc::kWhitespace);
  EXPECT_FALSE(uc::flags(0x1C) & uc::kWhitespace);  // Python's isspace() says yes; \s no
  EXPECT_TRUE(uc::flags(0xA0) & uc::kWhitespace);
  EXPECT_TRUE(uc::flags(0x3000) & uc::kWhitespace);
  EXPECT_FALSE(uc::flags(0x200B) & uc::kWhitespace);  // zero width space is Cf
  EXPECT_TRUE(uc::flags(0x200B) & uc::kControl);
  EXPECT_TRUE(uc::flags('!') & uc::kPunctuation);
  EXPECT_TRUE(uc::flags('$') & uc::kSymbol);
  EXPECT_TRUE(uc::flags(0x00E9) & uc::kLetter);    // é
  EXPECT_TRUE(uc::flags(0x0301) & uc::kMark);      // combining acute
  EXPECT_TRUE(uc::flags(0x0663) & uc::kNumber);    // Arabic-Indic three
  EXPECT_TRUE(uc::flags(0x216B) & uc::kNumber);    // Roman numeral twelve (Nl)
  EXPECT_TRUE(uc::flags(0x65E5) & uc::kLetter);    // 日
  EXPECT_TRUE(uc::flags(0x1F600) & uc::kSymbol);   // 😀
  EXPECT_TRUE(uc::flags(0x2FFC) & uc::kSymbol);    // added in Unicode 15.1, as llama.cpp has it
  EXPECT_TRUE(uc::flags(0x0378) & uc::kUndefined);
  EXPECT_EQ(uc::flags(0x110000), uc::kUndefined);
}

TEST(Unicode, LenientUtf8) {
  std::vector<uint32_t> cps;
  uc::decode_utf8("a\xC3\xA9\xF0\x9F\x98\x80", cps);
  EXPECT_EQ(cps, (std::vector<uint32_t>{'a', 0xE9, 0x1F600}));
  cps.clear();
  // stray continuation, truncated sequence, 0xFF: one U+FFFD per bad byte; overlong C0 80 and
  // a surrogate are accepted as llama.cpp does.
  uc::decode_utf8("\x80" "\xE2\x82" "x\xFF" "\xC0\x80" "\xED\xA0\x80", cps);
  EXPECT_EQ(cps, (std::vector<uint32_t>{0xFFFD, 0xFFFD, 0xFFFD, 'x', 0xFFFD, 0, 0xD800}));
  std::string s;
  uc::append_utf8(s, 0x1F600);
  EXPECT_EQ(s, "\xF0\x9F\x98\x80");
}

TEST(Unicode, ByteAlphabet) {
  EXPECT_EQ(uc::byte_to_cp('a'), uint32_t('a'));
  EXPECT_EQ(uc::byte_to_cp(' '), 0x120u);  // 'Ġ'
  EXPECT_EQ(uc::byte_to_cp('\n'), 0x10Au);  // 'Ċ'
  EXPECT_EQ(uc::byte_to_cp(0), 0x100u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(uc::cp_to_byte(uc::byte_to_cp(uint8_t(b))), b);
  EXPECT_EQ(uc::cp_to_byte(0x2581), -1);
}

// ---------------------------------------------------------------------------------------
// Hand-made vocabularies

std::string bytechar(char c) {
  std::string s;
  uc::append_utf8(s, uc::byte_to_cp(uint8_t(c)));
  return s;
}

// Byte-level BPE over the 256 byte characters plus a few merges.
VocabData tiny_bpe(std::string pre) {
  VocabData v;
  v.model = "gpt2";
  v.pre = std::move(pre);
  v.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<user>"};
  v.token_types = {3, 3, 3, 4};
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(bytechar(char(b)));
    v.token_types.push_back(1);
  }
  const std::string G = bytechar(' ');  // Ġ
  const std::vector<std::string> merges = {"l l", "h e", "he ll", "hell o", G + " w", "o r",
                                           G + "w or", "l d", G + "wor ld", G + " 1", "1 2", "y z",
                                           "x y"};
  for (std::string m : merges) {
    v.merges.push_back(m);
    std::string merged = m;
    merged.erase(merged.find(' ', 1), 1);
    v.tokens.push_back(merged);
    v.token_types.push_back(1);
  }
  v.bos = 0, v.eos = 0;
  return v;
}

Tokenizer make(VocabData v) {
  auto t = Tokenizer::create(std::move(v));
  EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().message);
  return std::move(t).value();
}

int32_t id_of(const Tokenizer& t, std::string_view text) {
  auto id = t.token_id(text);
  EXPECT_TRUE(id.has_value()) << text;
  return id.value_or(-1);
}

TEST(TokenizerBpe, MergesByRank) {
  Tokenizer t = make(tiny_bpe("smollm"));
  const std::string G = bytechar(' ');
  EXPECT_EQ(t.encode("hello world", false, false),
            (std::vector<int32_t>{id_of(t, "hello"), id_of(t, G + "world")}));
  // "y z" ranks before "x y": "xyz" is "x" "yz"; "xy" alone merges.
  EXPECT_EQ(t.encode("xyz", false, false), (std::vector<int32_t>{id_of(t, "x"), id_of(t, "yz")}));
  EXPECT_EQ(t.encode("xy", false, false), (std::vector<int32_t>{id_of(t, "xy")}));
  EXPECT_EQ(t.decode(t.encode("hello world", false, false)), "hello world");
}

TEST(TokenizerBpe, PreTokenizerBoundaries) {
  const std::string G = bytechar(' ');
  // smollm isolates every digit: " 12" is " ", "1", "2" (no " 1" or "12" merges).
  Tokenizer smollm = make(tiny_bpe("smollm"));
  EXPECT_EQ(smollm.encode(" 12", false, false),
            (std::vector<int32_t>{id_of(smollm, G), id_of(smollm, "1"), id_of(smollm, "2")}));
  // gpt2 keeps " 12" together: " 1" (rank 8) then "2" (no " 12" merge).
  Tokenizer gpt2 = make(tiny_bpe("gpt-2"));
  EXPECT_EQ(gpt2.encode(" 12", false, false),
            (std::vector<int32_t>{id_of(gpt2, G + "1"), id_of(gpt2, "2")}));
  // llama3 splits the space off digits but groups digits: " ", "12".
  Tokenizer llama3 = make(tiny_bpe("llama3"));
  EXPECT_EQ(llama3.encode(" 12", false, false),
            (std::vector<int32_t>{id_of(llama3, G), id_of(llama3, "12")}));
}

TEST(TokenizerBpe, SpecialTokens) {
  Tokenizer t = make(tiny_bpe("smollm"));
  const std::string text = "<|im_start|>hello<user>";
  EXPECT_EQ(t.encode(text, false, true),
            (std::vector<int32_t>{1, id_of(t, "hello"), 3}));
  // Without parse_special, control tokens are plain text but user-defined ones still match.
  auto plain = t.encode(text, false, false);
  EXPECT_GT(plain.size(), 3u);
  EXPECT_EQ(plain.back(), 3);
  EXPECT_EQ(t.decode(plain), text);
  EXPECT_EQ(t.decode(std::vector<int32_t>{1, 2}, true), "<|im_start|><|im_end|>");
  EXPECT_EQ(t.decode(std::vector<int32_t>{1, 2}, false), "");
  EXPECT_TRUE(t.is_eog(0));
  EXPECT_TRUE(t.is_eog(2));
  EXPECT_FALSE(t.is_eog(1));
}

TEST(TokenizerBpe, Validation) {
  VocabData v = tiny_bpe("no-such-pre");
  auto t = Tokenizer::create(v);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message.find("no-such-pre"), std::string::npos);
  v = tiny_bpe("smollm");
  v.tokens.push_back("he");  // duplicate text
  EXPECT_FALSE(Tokenizer::create(v).ok());
  v = tiny_bpe("smollm");
  v.eos = 100000;
  EXPECT_FALSE(Tokenizer::create(v).ok());
  v = tiny_bpe("smollm");
  v.merges.push_back("nospace");
  EXPECT_FALSE(Tokenizer::create(v).ok());
  v = tiny_bpe("smollm");
  v.model = "wordpiece";
  EXPECT_FALSE(Tokenizer::create(v).ok());
}

// SentencePiece-style: ▁ for spaces, merges by score, <0xNN> byte fallback.
VocabData tiny_spm() {
  VocabData v;
  v.model = "llama";
  v.tokens = {"<unk>", "<s>", "</s>"};
  v.token_types = {2, 3, 3};
  v.scores = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    v.tokens.push_back(buf);
    v.token_types.push_back(6);
    v.scores.push_back(0);
  }
  const std::pair<const char*, float> pieces[] = {
      {"\xE2\x96\x81", -1}, {"h", -2}, {"e", -2}, {"l", -2}, {"o", -2}, {"w", -2}, {"r", -2},
      {"d", -2},  {"ll", -3}, {"he", -4}, {"llo", -5}, {"hello", -6}, {"\xE2\x96\x81hello", -7},
      {"\xE2\x96\x81w", -8}, {"or", -9}, {"\xE2\x96\x81wor", -10}, {"ld", -12},
      {"\xE2\x96\x81world", -11}};
  for (auto [text, score] : pieces) {
    v.tokens.push_back(text);
    v.token_types.push_back(1);
    v.scores.push_back(score);
  }
  v.bos = 1, v.eos = 2, v.unk = 0;
  v.add_bos = true, v.add_space_prefix = true;
  return v;
}

TEST(TokenizerSpm, EncodeDecode) {
  Tokenizer t = make(tiny_spm());
  auto ids = t.encode("hello world", true, false);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, id_of(t, "\xE2\x96\x81hello"),
                                       id_of(t, "\xE2\x96\x81world")}));
  // The BOS keeps the prefix space; without it the first token loses its leading space.
  EXPECT_EQ(t.decode(ids), "<s> hello world");
  EXPECT_EQ(t.decode(std::span(ids).subspan(1)), "hello world");
  EXPECT_EQ(t.decode(ids, true, /*remove_special=*/true), " hello world");
  // No token for é: its two bytes.
  auto e = t.encode("\xC3\xA9", false, false);
  EXPECT_EQ(e, (std::vector<int32_t>{id_of(t, "\xE2\x96\x81"), 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t.decode(e), "\xC3\xA9");
  // After a special token the space prefix is added again.
  EXPECT_EQ(t.encode("</s>hello", false, true),
            (std::vector<int32_t>{2, id_of(t, "\xE2\x96\x81hello")}));
}

// ---------------------------------------------------------------------------------------
// The default model

const Tokenizer* default_model() {
  static std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    if (!std::filesystem::exists(KILN_DEFAULT_MODEL)) return nullptr;
    auto f = GgufFile::open(KILN_DEFAULT_MODEL);
    if (!f.ok()) return nullptr;
    auto v = vocab_from_gguf(**f);
    if (!v.ok()) return nullptr;
    auto t = Tokenizer::create(std::move(*v));
    if (!t.ok()) return nullptr;
    return std::make_unique<Tokenizer>(std::move(*t));
  }();
  return tok.get();
}

#define REQUIRE_DEFAULT_MODEL()                                         \
  const Tokenizer* tok = default_model();                               \
  if (!tok) GTEST_SKIP() << "default model not found: " KILN_DEFAULT_MODEL

TEST(TokenizerSmolLM, Vocab) {
  if (!std::filesystem::exists(KILN_DEFAULT_MODEL)) GTEST_SKIP() << "no " KILN_DEFAULT_MODEL;
  auto f = GgufFile::open(KILN_DEFAULT_MODEL);
  ASSERT_TRUE(f.ok()) << f.error().message;
  auto v = vocab_from_gguf(**f);
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->model, "gpt2");
  EXPECT_EQ(v->pre, "smollm");
  EXPECT_EQ(v->tokens.size(), 49152u);
  EXPECT_EQ(v->merges.size(), 48900u);
  EXPECT_EQ(v->bos, 1);
  EXPECT_EQ(v->eos, 2);
  EXPECT_EQ(v->unk, 0);
  EXPECT_EQ(v->pad, 2);
  EXPECT_FALSE(v->add_bos);
  EXPECT_FALSE(v->add_space_prefix);
}

TEST(TokenizerSmolLM, KnownIds) {
  REQUIRE_DEFAULT_MODEL();
  // Ids from llama.cpp (llama_tokenize, add_special=false, parse_special=true).
  EXPECT_EQ(tok->encode("Hello world", false, true), (std::vector<int32_t>{19556, 905}));
  EXPECT_EQ(tok->encode("<|im_start|>user\nWhat is 2+2?<|im_end|>\n", false, true),
            (std::vector<int32_t>{1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198}));
  EXPECT_EQ(tok->encode("I'm 12345 years old, aren't you?", false, true),
            (std::vector<int32_t>{57, 5248, 216, 33, 34, 35, 36, 37, 929, 1573, 28, 4775, 982,
                                  346, 47}));
  EXPECT_EQ(tok->encode("  spaces   and\ttabs\n", false, true),
            (std::vector<int32_t>{216, 5600, 256, 284, 197, 100, 7366, 198}));
  EXPECT_EQ(tok->encode("h\xC3\xA9llo w\xC3\xB6rld "
                        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80",
                        false, true),
            (std::vector<int32_t>{88, 2756, 31394, 267, 29989, 400, 17097, 241, 115, 40993, 179,
                                  120, 248, 40303, 218}));
  EXPECT_EQ(tok->bos(), 1);
  EXPECT_EQ(tok->eos(), 2);
  EXPECT_EQ(tok->eog_ids(), (std::vector<int32_t>{0, 2, 4}));  // as llama.cpp: + <reponame>
  EXPECT_EQ(tok->piece(2), "<|im_end|>");
  EXPECT_EQ(tok->piece(198), "\n");
}

// ---------------------------------------------------------------------------------------
// Goldens from llama.cpp: "<parse_special>\t<hex input>\t<ids>\t<hex detokenized>".

TEST(TokenizerSmolLM, Goldens) {
  REQUIRE_DEFAULT_MODEL();
  const std::string path = KILN_SOURCE_DIR "/tests/goldens/tokenizer.golden";
  if (!std::ifstream(path)) GTEST_SKIP() << "no " << path;
  const std::vector<testing::TokenGolden> cases = testing::read_token_goldens(path);
  ASSERT_FALSE(cases.empty());

  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<int32_t>> got;
  for (const auto& c : cases) got.push_back(tok->encode(c.text, false, c.parse_special));
  auto t1 = std::chrono::steady_clock::now();

  int passed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const std::string decoded = tok->decode(c.ids, /*render_special=*/true);
    const bool ok = got[i] == c.ids && decoded == c.decoded;
    passed += ok;
    EXPECT_EQ(got[i], c.ids) << path << ":" << c.line << ": encode of " << testing::to_hex(c.text);
    EXPECT_EQ(testing::to_hex(decoded), testing::to_hex(c.decoded)) << path << ":" << c.line << ": decode";
  }
  std::printf("tokenizer goldens: %d/%zu passed; encoding all took %.3f ms\n", passed,
              cases.size(), std::chrono::duration<double, std::milli>(t1 - t0).count());
}

}  // namespace
}  // namespace kiln

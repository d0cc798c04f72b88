// frontend/tokenizer.h — text <-> token ids, exactly as llama.cpp does it.
//
// Two vocabulary kinds are supported:
//   "gpt2"   byte-level BPE: special tokens are cut out first, the rest is split into words
//            by the model's pre-tokenizer (a hand-written scanner per regex family, chosen
//            by name from a table), each word's bytes are mapped to the GPT-2 byte alphabet
//            and merged by rank;
//   "llama"  SentencePiece-style BPE: spaces become U+2581, an optional space prefix, merges
//            by token score, bytes without a token fall back to <0xNN> tokens.
// The core takes a plain VocabData; vocab_from_gguf() fills one from GGUF metadata with the
// same defaults llama.cpp applies, so nothing here depends on the file format.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "support/result.h"

namespace kiln {

class GgufFile;

// GGUF tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5,
  kByte = 6,
};

// Everything the tokenizer needs, independent of the file format.
struct VocabData {
  std::string model;                 // "gpt2" (byte-level BPE) or "llama" (SentencePiece BPE)
  std::string pre;                   // pre-tokenizer name ("smollm", "llama3", "default"...)
  std::vector<std::string> tokens;
  std::vector<float> scores;         // empty, or one per token (used by "llama")
  std::vector<int32_t> token_types;  // empty (all normal), or one TokenType per token
  std::vector<std::string> merges;   // "left right", rank = index (used by "gpt2")
  int32_t bos = -1, eos = -1, unk = -1, pad = -1, eot = -1, eom = -1;  // -1: none
  bool add_bos = false, add_eos = false, add_space_prefix = false;
};

// Reads the tokenizer.* keys of a GGUF file. Missing optional keys take llama.cpp's
// defaults (which depend on the model and pre-tokenizer); errors name the file and key.
Result<VocabData> vocab_from_gguf(const GgufFile& f);

class Tokenizer {
 public:
  // Validates the vocabulary (model and pre-tokenizer known, array sizes, special ids in
  // range, no duplicate token texts, well-formed merges) and builds the lookup tables.
  static Result<Tokenizer> create(VocabData v);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special: prepend BOS / append EOS when the vocabulary asks for it.
  // parse_special: text that spells a control token becomes that token; when off, only
  // user-defined tokens are matched (as llama.cpp does).
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const;

  // render_special: control/unknown tokens produce their text (else nothing).
  // remove_special: drop a leading BOS / trailing EOS the vocabulary would have added.
  std::string decode(std::span<const int32_t> ids, bool render_special = true,
                     bool remove_special = false) const;

  // Text of one token as produced for streaming output (special tokens rendered). Ids out of
  // range give an empty string.
  const std::string& piece(int32_t id) const;

  int32_t vocab_size() const;
  int32_t bos() const;
  int32_t eos() const;
  int32_t eot() const;
  bool add_bos() const;
  // End of generation: eos, eot, eom and tokens such as <|im_end|> or <|endoftext|>.
  bool is_eog(int32_t id) const;
  bool is_control(int32_t id) const;
  const std::vector<int32_t>& eog_ids() const;
  std::optional<int32_t> token_id(std::string_view text) const;
  const std::string& token_text(int32_t id) const;
  const VocabData& vocab() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Whether a byte-level vocabulary with this pre-tokenizer adds BOS by default (llama.cpp's
// defaults); nullopt for a pre-tokenizer this build does not know.
std::optional<bool> pre_tokenizer_adds_bos(std::string_view name);

// Names of the pre-tokenizers this build knows (for messages and tests).
std::vector<std::string_view> known_pre_tokenizers();

}  // namespace kiln

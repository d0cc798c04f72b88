// tests/unit/byte_vocab.h — the smallest byte-level BPE vocabulary a model.kiln can carry:
// three control tokens (<|endoftext|> = BOS/PAD, <|im_start|>, <|im_end|> = EOS/EOT) and
// one token per byte, no merges. Tests that need merges append them.
#pragma once

#include <cstdint>
#include <string>

#include "frontend/tokenizer.h"
#include "frontend/unicode.h"

namespace kiln::testing {

// The token text of byte c in GPT-2's byte-to-unicode mapping.
inline std::string bytechar(char c) {
  std::string s;
  unicode::append_utf8(s, unicode::byte_to_cp(uint8_t(c)));
  return s;
}

inline VocabData byte_vocab() {
  VocabData v;
  v.model = "gpt2";
  v.pre = "smollm";
  v.tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  v.token_types = {3, 3, 3};
  for (int b = 0; b < 256; ++b) {
    v.tokens.push_back(bytechar(char(b)));
    v.token_types.push_back(1);
  }
  v.scores.assign(v.tokens.size(), 0.0f);
  v.bos = 0;
  v.eos = 2;
  v.eot = 2;
  v.pad = 0;
  return v;
}

}  // namespace kiln::testing

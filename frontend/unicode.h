// frontend/unicode.h — code point classes, UTF-8 and the GPT-2 byte alphabet.
//
// Just what the tokenizer needs, with llama.cpp's exact semantics: the general category of
// a code point (one bit, from a generated range table, see scripts/gen_unicode_tables.py)
// plus a White_Space bit; a lenient UTF-8 decoder (an invalid byte becomes U+FFFD and
// decoding resumes at the next byte; overlong forms and surrogates are accepted, as
// llama.cpp does); and the byte <-> code point alphabet of byte-level BPE.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::unicode {

enum Flag : uint16_t {
  kUndefined = 0x0001,    // unassigned (Cn)
  kNumber = 0x0002,       // \p{N}
  kLetter = 0x0004,       // \p{L}
  kSeparator = 0x0008,    // \p{Z}
  kMark = 0x0010,         // \p{M}
  kPunctuation = 0x0020,  // \p{P}
  kSymbol = 0x0040,       // \p{S}
  kControl = 0x0080,      // \p{C} other than Cn
  kWhitespace = 0x0100,   // White_Space property (\s)
};

inline constexpr uint32_t kReplacementChar = 0xFFFD;
inline constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// Flags of a code point; code points past U+10FFFF are kUndefined.
uint16_t flags(uint32_t cp);

// Number of bytes of the UTF-8 sequence that starts with `lead`, from its high nibble only
// (continuation bytes count as 1).
inline size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Decodes one code point at `pos` and advances it (lenient, see the file comment).
uint32_t decode_one(std::string_view s, size_t& pos);
// Decodes all of `s`, appending to `out`.
void decode_utf8(std::string_view s, std::vector<uint32_t>& out);
// Appends the UTF-8 form of `cp` (values past U+10FFFF become U+FFFD).
void append_utf8(std::string& out, uint32_t cp);

// Byte-level BPE alphabet (GPT-2): every byte is represented by one printable code point.
uint32_t byte_to_cp(uint8_t b);
// The byte a code point of that alphabet stands for, or -1.
int cp_to_byte(uint32_t cp);

}  // namespace kiln::unicode

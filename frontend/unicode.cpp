// frontend/unicode.cpp — code point flags, lenient UTF-8, byte-level BPE alphabet.
#include "frontend/unicode.h"

#include <algorithm>
#include <array>

namespace kiln::unicode {
namespace {

struct FlagRange {
  uint32_t first;
  uint16_t flags;
};

#include "frontend/unicode_tables.inc"

static_assert(kFlagRanges[0].first == 0, "the range table must start at U+0000");

// Flags of the first 256 code points, looked up without a search.
constexpr std::array<uint16_t, 256> make_latin1_flags() {
  std::array<uint16_t, 256> t{};
  size_t r = 0;
  for (uint32_t cp = 0; cp < 256; ++cp) {
    while (r + 1 < std::size(kFlagRanges) && kFlagRanges[r + 1].first <= cp) ++r;
    t[cp] = kFlagRanges[r].flags;
  }
  return t;
}
constexpr std::array<uint16_t, 256> kLatin1Flags = make_latin1_flags();

// GPT-2's byte alphabet: printable bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand
// for themselves; the other 68 bytes, in increasing order, take U+0100, U+0101, ...
struct ByteAlphabet {
  std::array<uint16_t, 256> to_cp{};
  std::array<int16_t, 324> from_cp{};  // indexed by code point < 0x144
  constexpr ByteAlphabet() {
    for (auto& v : from_cp) v = -1;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = static_cast<uint16_t>(printable ? b : next++);
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
constexpr ByteAlphabet kBytes;

}  // namespace

uint16_t flags(uint32_t cp) {
  if (cp < 256) return kLatin1Flags[cp];
  if (cp > kMaxCodePoint) return kUndefined;
  auto it = std::upper_bound(std::begin(kFlagRanges), std::end(kFlagRanges), cp,
                             [](uint32_t v, const FlagRange& r) { return v < r.first; });
  return (it - 1)->flags;
}

uint32_t decode_one(std::string_view s, size_t& pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const auto cont = [&](size_t i) { return i < s.size() && (byte(i) & 0xC0) == 0x80; };
  const uint8_t b0 = byte(pos);
  if (b0 < 0x80) {
    pos += 1;
    return b0;
  }
  if ((b0 & 0xE0) == 0xC0 && cont(pos + 1)) {
    uint32_t cp = ((b0 & 0x1Fu) << 6) | (byte(pos + 1) & 0x3Fu);
    pos += 2;
    return cp;
  }
  if ((b0 & 0xF0) == 0xE0 && cont(pos + 1) && cont(pos + 2)) {
    uint32_t cp = ((b0 & 0x0Fu) << 12) | ((byte(pos + 1) & 0x3Fu) << 6) | (byte(pos + 2) & 0x3Fu);
    pos += 3;
    return cp;
  }
  if ((b0 & 0xF8) == 0xF0 && cont(pos + 1) && cont(pos + 2) && cont(pos + 3)) {
    uint32_t cp = ((b0 & 0x07u) << 18) | ((byte(pos + 1) & 0x3Fu) << 12) |
                  ((byte(pos + 2) & 0x3Fu) << 6) | (byte(pos + 3) & 0x3Fu);
    pos += 4;
    return cp;
  }
  pos += 1;  // a stray continuation byte, a truncated sequence or 0xF8..0xFF
  return kReplacementChar;
}

void decode_utf8(std::string_view s, std::vector<uint32_t>& out) {
  out.reserve(out.size() + s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    // ASCII runs are the common case.
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      out.push_back(static_cast<uint8_t>(s[pos++]));
      continue;
    }
    out.push_back(decode_one(s, pos));
  }
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp > kMaxCodePoint) cp = kReplacementChar;
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t byte_to_cp(uint8_t b) { return kBytes.to_cp[b]; }

int cp_to_byte(uint32_t cp) { return cp < kBytes.from_cp.size() ? kBytes.from_cp[cp] : -1; }

}  // namespace kiln::unicode

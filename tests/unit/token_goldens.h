// tests/unit/token_goldens.h — tokenizer golden files: one case per line,
// "<parse_special 0|1>\t<text hex>\t<ids>\t<decoded text hex>", '#' lines skipped
// (tests/goldens/tokenizer.golden from llama.cpp, tests/goldens/spm_tokenizer/ from
// Hugging Face's tokenizers).
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kiln::testing {

struct TokenGolden {
  int line = 0;
  bool parse_special = false;
  std::string text, decoded;
  std::vector<int32_t> ids;
};

inline std::string from_hex(std::string_view h, bool* ok) {
  std::string out;
  *ok = h.size() % 2 == 0;
  for (size_t i = 0; *ok && i < h.size(); i += 2) {
    auto nib = [&](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
             : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    };
    int hi = nib(h[i]), lo = nib(h[i + 1]);
    if (hi < 0 || lo < 0) *ok = false;
    else out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

inline std::string to_hex(std::string_view s) {
  std::string out;
  for (unsigned char c : s) out += fmt::format("{:02x}", c);
  return out;
}

// The cases of `path`; a malformed line fails the calling test (and is left out).
inline std::vector<TokenGolden> read_token_goldens(const std::string& path) {
  std::vector<TokenGolden> cases;
  std::ifstream in(path);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string part; std::getline(ss, part, '\t');) f.push_back(part);
    if (line.back() == '\t') f.push_back("");
    if (f.size() != 4) {
      ADD_FAILURE() << path << ":" << n << ": expected 4 tab-separated fields";
      continue;
    }
    TokenGolden c;
    c.line = n;
    c.parse_special = f[0] == "1";
    bool ok1, ok2;
    c.text = from_hex(f[1], &ok1);
    c.decoded = from_hex(f[3], &ok2);
    if (!ok1 || !ok2) {
      ADD_FAILURE() << path << ":" << n << ": bad hex";
      continue;
    }
    std::stringstream ids(f[2]);
    for (int32_t id; ids >> id;) c.ids.push_back(id);
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace kiln::testing

// tests/e2e/goldens.h — reads the llama.cpp goldens in tests/goldens (format: README there).
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace kiln::testing {

struct LogitsGolden {
  std::string prompt;
  bool parse_special = false;
  std::vector<int32_t> tokens;
  // Per prompt position: (id, logit) pairs sorted by logit, highest first.
  std::vector<std::vector<std::pair<int32_t, float>>> top;
  std::vector<int32_t> greedy;
  std::vector<std::vector<std::pair<int32_t, float>>> gtop;
};

inline std::string unhex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += (char)std::stoi(h.substr(i, 2), nullptr, 16);
  return out;
}

inline std::vector<std::pair<int32_t, float>> parse_pairs(std::istringstream& in) {
  std::vector<std::pair<int32_t, float>> v;
  std::string item;
  while (in >> item) {
    auto c = item.find(':');
    v.emplace_back(std::stoi(item.substr(0, c)), std::stof(item.substr(c + 1)));
  }
  return v;
}

inline std::vector<LogitsGolden> read_logits_golden(const std::string& path) {
  std::ifstream f(path);
  std::vector<LogitsGolden> out;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string tag;
    in >> tag;
    if (tag == "prompt") {
      out.emplace_back();
      std::string idx, hex;
      int ps = 0;
      in >> idx >> hex >> ps;
      out.back().prompt = unhex(hex);
      out.back().parse_special = ps != 0;
    } else if (tag == "tokens" || tag == "greedy") {
      auto& v = tag == "tokens" ? out.back().tokens : out.back().greedy;
      int32_t id;
      while (in >> id) v.push_back(id);
    } else if (tag == "top" || tag == "gtop") {
      int pos;
      in >> pos;
      (tag == "top" ? out.back().top : out.back().gtop).push_back(parse_pairs(in));
    }
  }
  return out;
}

}  // namespace kiln::testing

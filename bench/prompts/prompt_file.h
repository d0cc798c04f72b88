// bench/prompts/prompt_file.h — reads a prompt set of this folder (grounded.txt, chat.txt):
// prompts separated by a line "===", trailing newlines dropped. Shared by bench/ds2d_bench
// and the DS2D end-to-end tests, which run the same prompts.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace kiln {

inline std::vector<std::string> read_prompt_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string all = ss.str(), sep = "\n===\n";
  std::vector<std::string> out;
  for (size_t b = 0;;) {
    const size_t e = all.find(sep, b);
    std::string p = all.substr(b, e == std::string::npos ? std::string::npos : e - b);
    while (!p.empty() && p.back() == '\n') p.pop_back();
    if (!p.empty()) out.push_back(p);
    if (e == std::string::npos) break;
    b = e + sep.size();
  }
  return out;
}

}  // namespace kiln

// bench/prompts/prompt_file.h — reads a prompt set of this folder (grounded.txt, chat.txt):
// prompts separated by a line "===", trailing newlines dropped. Shared by bench/ds2d_bench
// and the DS2D end-to-end tests, which run the same prompts.
#pragma once

#include <string>
#include <vector>

#include "support/file.h"

namespace kiln {

// The prompts of `path` (none if it cannot be read).
inline std::vector<std::string> read_prompt_file(const std::string& path) {
  auto all = read_file(path);
  return all.ok() ? split_texts(*all) : std::vector<std::string>{};
}

}  // namespace kiln

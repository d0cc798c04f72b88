// tests/e2e/artifacts.h — the default model compiled for the end-to-end tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "codegen/compile.h"

namespace kiln::testing {

// A request for the default model into a fresh temporary folder named after `tag`, with
// limits small enough to keep the tests quick; tests adjust fields before compiling.
// The folder is removed when the test program exits.
inline CompileRequest default_model_request(const std::string& tag) {
  static std::vector<std::string>* dirs = [] {
    static std::vector<std::string> v;
    std::atexit([] {
      std::error_code ec;
      for (auto& d : v) std::filesystem::remove_all(d, ec);
    });
    return &v;
  }();
  CompileRequest req;
  req.model_path = KILN_DEFAULT_MODEL;
  req.out_dir = (std::filesystem::temp_directory_path() / ("kiln-e2e-" + tag + "-" + std::to_string(::getpid()))).string();
  req.max_context = 512;
  req.max_rows = 32;
  req.progress = false;
  dirs->push_back(req.out_dir);
  return req;
}

}  // namespace kiln::testing

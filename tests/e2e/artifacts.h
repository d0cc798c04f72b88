// tests/e2e/artifacts.h — the default model compiled for the end-to-end tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include "codegen/compile.h"
#include "codegen/loaded_artifact.h"
#include "tests/temp_folder.h"

namespace kiln::testing {

// A request for the default model into a fresh temporary folder named after `tag`, with
// limits small enough to keep the tests quick; tests adjust fields before compiling.
// The folder is removed when the test program exits (tests/temp_folder.h).
inline CompileRequest default_model_request(const std::string& tag) {
  CompileRequest req;
  req.model_path = KILN_DEFAULT_MODEL;
  req.out_dir = process_temp_path("e2e-" + tag);
  req.max_context = 512;
  req.max_rows = 32;
  req.progress = false;
  return req;
}

// Compiles `req` once per test program (a later call with the same out_dir reuses the
// artifact) and loads it on `threads` threads; null, after a test failure, if either fails.
inline std::unique_ptr<LoadedArtifact> compile_and_load(const CompileRequest& req, int threads = 2) {
  static std::set<std::string> compiled;
  if (!compiled.count(req.out_dir)) {
    auto sum = compile_model(req);
    EXPECT_TRUE(sum.ok()) << sum.error().message;
    if (!sum.ok()) return nullptr;
    compiled.insert(req.out_dir);
  }
  auto a = load_artifact(req.out_dir, threads);
  EXPECT_TRUE(a.ok()) << a.error().message;
  return a.ok() ? std::move(a).value() : nullptr;
}

}  // namespace kiln::testing

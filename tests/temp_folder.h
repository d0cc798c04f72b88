// tests/temp_folder.h — a temporary folder per test process, removed when it exits.
//
// ctest runs every test in a process of its own; files a test program writes for its
// whole run (a toy model, compiled artifacts) go here, so none is left behind in /tmp.
// Files of one test alone use a scoped folder of their own instead.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>
#include <unistd.h>

namespace kiln::testing {

// <temp>/kiln-test-<pid>/<name>; the folder exists on return.
inline std::string process_temp_path(const std::string& name) {
  static const struct Folder {
    std::filesystem::path path = std::filesystem::temp_directory_path() / ("kiln-test-" + std::to_string(::getpid()));
    ~Folder() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  } folder;
  std::filesystem::create_directories(folder.path);
  return (folder.path / name).string();
}

}  // namespace kiln::testing

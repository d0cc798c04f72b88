// support/file.h — read-only memory maps and atomic file writes.
//
// Models are mapped, not read: a 100 MB GGUF costs no copy. Every output file kiln writes
// goes to a temporary name in the same folder and is renamed into place, so a failed or
// interrupted run never leaves a half-written file behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "support/result.h"

namespace kiln {

class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  static Result<MappedFile> open(const std::string& path);
  // Wraps bytes already in memory (fuzzers, tests); the caller keeps them alive.
  static MappedFile borrow(const void* data, size_t size, std::string name);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool owned_ = false;
  std::string path_;
};

// Writes `bytes` to `path` through a temporary file and rename(2).
Status write_file_atomic(const std::string& path, std::string_view bytes);

// Reads a whole (small) file.
Result<std::string> read_file(const std::string& path);

// The texts of a file holding several, separated by a line "===" (prompt sets, DS2D
// corpora): trailing newlines dropped, empty texts skipped.
std::vector<std::string> split_texts(std::string_view all);

}  // namespace kiln

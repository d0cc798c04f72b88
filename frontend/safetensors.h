// frontend/safetensors.h — a validating reader for safetensors files.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then
// the data section, to which the offsets are relative. The file is memory-mapped and
// nothing is copied until a tensor is converted. Every length, offset and shape is checked
// (no overflow, inside the file, shape product times element size equals the byte range,
// no two tensors overlap); errors name the file and the tensor. This file is fuzzed.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "support/file.h"
#include "support/result.h"

namespace kiln {

// Every dtype the format defines, so that any well-formed file parses; only F32, F16 and
// BF16 convert to float (to_f32 names the tensor and dtype for the others).
enum class StDType : uint8_t { BOOL, U8, I8, F8_E4M3, F8_E5M2, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };
std::string_view st_dtype_name(StDType t);

struct StTensor {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;  // row-major, the last dimension contiguous
  uint64_t begin = 0;          // byte range relative to the data section
  uint64_t end = 0;
  const uint8_t* data = nullptr;
  uint64_t elements = 0;
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Opens and validates a file. `path` is used in every error message.
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  // Parses bytes already in memory (the fuzzer and tests); the caller keeps them alive.
  static Result<std::unique_ptr<SafetensorsFile>> parse(MappedFile file);

  const std::string& path() const { return file_.path(); }
  const std::vector<StTensor>& tensors() const { return tensors_; }  // sorted by name
  const StTensor* tensor(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The tensor's values as float (F32, F16, BF16); any other dtype is an Error naming
  // the file, the tensor and the dtype.
  Result<std::vector<float>> to_f32(const StTensor& t) const;

 private:
  MappedFile file_;
  std::vector<StTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Fails if `text` nests JSON arrays/objects deeper than `max_depth`. `what` names the
// file in the message.
Status check_json_nesting(std::string_view text, const std::string& what, int max_depth = 64);

}  // namespace kiln

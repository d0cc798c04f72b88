// frontend/gguf_writer.h — builds GGUF v3 files in memory.
//
// Used to make small synthetic models (tests, fuzz seeds) and, later, adapters. Writes
// metadata in insertion order and tensor data aligned to general.alignment (32).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "frontend/gguf.h"

namespace kiln {

class GgufWriter {
 public:
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_strings(const std::string& key, const std::vector<std::string>& v);
  void add_f32s(const std::string& key, const std::vector<float>& v);
  void add_i32s(const std::string& key, const std::vector<int32_t>& v);
  // `shape` is logical [rows, cols] (the GGUF dims are written reversed); `data` holds
  // the bytes in `type`'s layout.
  void add_tensor(const std::string& name, DType type, std::vector<int64_t> shape,
                  std::string data);
  // `nbytes` bytes that `fill` writes when bytes() lays the file out, straight into it:
  // a large model's tensors are not held twice (fill must stay valid until then).
  void add_tensor_fill(const std::string& name, DType type, std::vector<int64_t> shape, uint64_t nbytes,
                       std::function<void(uint8_t*)> fill);
  // A tensor whose bytes the writer does not hold: bytes() writes its info (at the
  // current offset) and no data. Only for GgufFile::parse_owned with GgufExternalData
  // naming it; the bytes are not a GGUF file on their own.
  void add_tensor_external(const std::string& name, DType type, std::vector<int64_t> shape);
  // f32 data quantized/converted to `type` (f32, f16, q8_0, q4_0, q4_1).
  void add_tensor_f32(const std::string& name, DType type, std::vector<int64_t> shape,
                      const std::vector<float>& values);
  std::string bytes() const;

 private:
  struct KV { std::string key; uint32_t type; std::string payload; };
  struct TensorRec {
    std::string name;
    DType type;
    std::vector<int64_t> shape;
    std::string data;                    // or, when fill is set, nbytes from fill
    uint64_t nbytes = 0;
    std::function<void(uint8_t*)> fill;
    bool external = false;               // no bytes here (add_tensor_external)
    uint64_t size() const { return external ? 0 : fill ? nbytes : data.size(); }
  };
  std::vector<KV> kv_;
  std::vector<TensorRec> tensors_;
};

// Converts f32 values to the byte layout of `type` (round to nearest; for Q4_0/Q4_1/Q8_0
// the usual GGML block recipes).
std::string encode_tensor_data(DType type, const std::vector<float>& values);

}  // namespace kiln

// ir/dtype.h — element types (plain and block-quantized) and their block structs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln {

enum class DType : uint8_t {
#define KILN_DTYPE(E, name, ggml, be, bb) E,
#include "ir/dtypes.def"
};

struct DTypeInfo {
  DType type;
  std::string_view name;
  uint32_t ggml_id;
  uint32_t block_elems;
  uint32_t block_bytes;
};

const DTypeInfo& dtype_info(DType t);
inline std::string_view dtype_name(DType t) { return dtype_info(t).name; }
std::optional<DType> dtype_from_name(std::string_view name);
std::optional<DType> dtype_from_ggml(uint32_t ggml_id);
// Name of any GGML type id, including ones kiln does not support ("q6_K"), for errors.
std::string_view ggml_type_name(uint32_t ggml_id);

inline bool is_quantized(DType t) { return dtype_info(t).block_elems > 1; }
inline bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Bytes for `n` elements; n must be a multiple of the block size for quantized types.
inline uint64_t dtype_bytes(DType t, uint64_t n) {
  const DTypeInfo& i = dtype_info(t);
  return n / i.block_elems * i.block_bytes;
}

// GGUF/GGML quantized block layouts. Element j of a Q4 block is the low nibble of qs[j]
// for j < 16 and the high nibble of qs[j-16] otherwise.
struct BlockQ4_0 {
  uint16_t d;       // f16 scale
  uint8_t qs[16];   // value = (q - 8) * d
};
static_assert(sizeof(BlockQ4_0) == 18);

struct BlockQ4_1 {
  uint16_t d;       // f16 scale
  uint16_t m;       // f16 minimum
  uint8_t qs[16];   // value = q * d + m
};
static_assert(sizeof(BlockQ4_1) == 20);

struct BlockQ8_0 {
  uint16_t d;       // f16 scale
  int8_t qs[32];    // value = q * d
};
static_assert(sizeof(BlockQ8_0) == 34);

// Converts n elements of type t at src (any alignment) to float.
void dequantize_row(DType t, const void* src, float* dst, uint64_t n);

}  // namespace kiln

// ir/dtype.cpp — the dtype table and row dequantization used by the interpreter.
#include "ir/dtype.h"

#include <cstring>

#include "support/half.h"

namespace kiln {

static constexpr DTypeInfo kInfos[] = {
#define KILN_DTYPE(E, name, ggml, be, bb) {DType::E, name, ggml, be, bb},
#include "ir/dtypes.def"
};

const DTypeInfo& dtype_info(DType t) { return kInfos[static_cast<size_t>(t)]; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& i : kInfos)
    if (i.name == name) return i.type;
  return std::nullopt;
}

std::optional<DType> dtype_from_ggml(uint32_t id) {
  for (const auto& i : kInfos)
    if (i.ggml_id == id) return i.type;
  return std::nullopt;
}

std::string_view ggml_type_name(uint32_t id) {
  static constexpr std::string_view kNames[] = {
      "f32",  "f16",  "q4_0", "q4_1", "q4_2", "q4_3", "q5_0", "q5_1",  "q8_0",   "q8_1",
      "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K", "iq2_xxs", "iq2_xs", "iq3_xxs",
      "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64", "f64",
      "iq1_m", "bf16", "q4_0_4_4", "q4_0_4_8", "q4_0_8_8", "tq1_0", "tq2_0"};
  if (id < sizeof(kNames) / sizeof(kNames[0])) return kNames[id];
  return "unknown";
}

void dequantize_row(DType t, const void* src, float* dst, uint64_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32:
      std::memcpy(dst, p, n * 4);
      return;
    case DType::F16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h; std::memcpy(&h, p + 2 * i, 2); dst[i] = fp16_to_f32(h);
      }
      return;
    case DType::BF16:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h; std::memcpy(&h, p + 2 * i, 2); dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::I32:
      for (uint64_t i = 0; i < n; ++i) {
        int32_t v; std::memcpy(&v, p + 4 * i, 4); dst[i] = (float)v;
      }
      return;
    case DType::Q4_0:
      for (uint64_t b = 0; b < n / 32; ++b) {
        BlockQ4_0 blk; std::memcpy(&blk, p + b * sizeof blk, sizeof blk);
        float d = fp16_to_f32(blk.d);
        for (int j = 0; j < 16; ++j) {
          dst[b * 32 + j] = (float)((blk.qs[j] & 0xf) - 8) * d;
          dst[b * 32 + j + 16] = (float)((blk.qs[j] >> 4) - 8) * d;
        }
      }
      return;
    case DType::Q4_1:
      for (uint64_t b = 0; b < n / 32; ++b) {
        BlockQ4_1 blk; std::memcpy(&blk, p + b * sizeof blk, sizeof blk);
        float d = fp16_to_f32(blk.d), m = fp16_to_f32(blk.m);
        for (int j = 0; j < 16; ++j) {
          dst[b * 32 + j] = (float)(blk.qs[j] & 0xf) * d + m;
          dst[b * 32 + j + 16] = (float)(blk.qs[j] >> 4) * d + m;
        }
      }
      return;
    case DType::Q8_0:
      for (uint64_t b = 0; b < n / 32; ++b) {
        BlockQ8_0 blk; std::memcpy(&blk, p + b * sizeof blk, sizeof blk);
        float d = fp16_to_f32(blk.d);
        for (int j = 0; j < 32; ++j) dst[b * 32 + j] = (float)blk.qs[j] * d;
      }
      return;
  }
}

}  // namespace kiln

// ir/packing.h — the packed ("x16") weight layouts pack-weights makes at compile time.
//
// A packed weight [N, K] (N a multiple of 16, K of 32) stores rows in groups of 16: group g
// is K/32 packed blocks, packed block (g, b) holding block b of rows 16g .. 16g+15. Inside
// it the scales of the 16 rows come first (contiguous, so a kernel loads them as one vector
// and scales 16 outputs with one multiply), then the quants with one int32 lane per row:
//
//   q4_0x16  f16 d[16]           qs[4][64]   288 bytes = 16 x 18 (Q4_0)
//   q4_1x16  f16 d[16], m[16]    qs[4][64]   320 bytes = 16 x 20 (Q4_1)
//   q8_0x16  f16 d[16]           qs[8][64]   544 bytes = 16 x 34 (Q8_0)
//
// q4: byte 4l+e of qs[j] is byte 4j+e of row l's GGUF block, i.e. its low nibble is element
// 4j+e and its high nibble element 16+4j+e. q8_0: byte 4l+e of qs[j] is element 4j+e of
// row l plus 128 (v ^ 0x80, unsigned: x86's vpdpbusd multiplies unsigned by signed bytes).
// So one 64-byte line of qs holds 4 consecutive elements of all 16 rows, and a dot product
// instruction with x's 4 bytes broadcast adds them into 16 per-row sums at once (vpdpbusd
// on a zmm; sdot by element on NEON, four rows per q register).
//
// The packed bytes are a permutation of the GGUF bytes (size unchanged); unpack_row gives
// any row back in GGUF blocks, which is how the interpreter reads a packed weight.
#pragma once

#include <cstdint>
#include <vector>

#include "ir/dtype.h"

namespace kiln {

inline constexpr int64_t kPackRows = 16;

struct PackedQ4_0x16 {
  uint16_t d[16];
  uint8_t qs[4][64];
};
static_assert(sizeof(PackedQ4_0x16) == 16 * sizeof(BlockQ4_0));

struct PackedQ4_1x16 {
  uint16_t d[16];
  uint16_t m[16];
  uint8_t qs[4][64];
};
static_assert(sizeof(PackedQ4_1x16) == 16 * sizeof(BlockQ4_1));

struct PackedQ8_0x16 {
  uint16_t d[16];
  uint8_t qs[8][64];
};
static_assert(sizeof(PackedQ8_0x16) == 16 * sizeof(BlockQ8_0));

// Whether a weight of type t and shape [N, K] has a packed layout.
bool packable(DType t, const std::vector<int64_t>& shape);

// GGUF rows src (N rows of K elements) to the packed layout (dst: the same byte count).
void pack_rows(DType t, const uint8_t* src, int64_t N, int64_t K, uint8_t* dst);

// Row r of a packed weight with K columns, back in GGUF blocks (dtype_bytes(t, K) bytes).
void unpack_row(DType t, const uint8_t* packed, int64_t K, int64_t r, uint8_t* dst);

}  // namespace kiln

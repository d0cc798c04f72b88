// ir/packing.cpp — see packing.h for the layouts.
#include "ir/packing.h"

#include <cstring>

namespace kiln {
namespace {

// The one permutation both directions share: for block b of row r of a weight with nb
// blocks per row, where each GGUF block piece lives in the packed bytes. `visit(src_off,
// packed_off, len, flip)` is called for every run of bytes (scales: 2 bytes, quants: 4).
template <typename Visit>
void for_each_piece(DType t, int64_t nb, int64_t r, int64_t b, Visit visit) {
  const uint64_t bb = dtype_info(t).block_bytes;
  const int64_t g = r / kPackRows, l = r % kPackRows;
  const uint64_t src = ((uint64_t)r * nb + b) * bb;           // GGUF block (r, b)
  const uint64_t pk = ((uint64_t)g * nb + b) * bb * kPackRows;  // packed block (g, b)
  visit(src, pk + 2 * l, 2, false);                            // d
  uint64_t qs = pk + 32, qsrc = src + 2;
  if (t == DType::Q4_1) {
    visit(src + 2, pk + 32 + 2 * l, 2, false);  // m
    qs = pk + 64;
    qsrc = src + 4;
  }
  const int lines = t == DType::Q8_0 ? 8 : 4;
  for (int j = 0; j < lines; ++j) visit(qsrc + 4 * j, qs + 64 * j + 4 * l, 4, t == DType::Q8_0);
}

}  // namespace

bool packable(DType t, const std::vector<int64_t>& shape) {
  return (t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q8_0) && shape.size() == 2 &&
         shape[0] > 0 && shape[0] % kPackRows == 0 && shape[1] > 0 && shape[1] % 32 == 0;
}

void pack_rows(DType t, const uint8_t* src, int64_t N, int64_t K, uint8_t* dst) {
  const int64_t nb = K / 32;
  for (int64_t r = 0; r < N; ++r)
    for (int64_t b = 0; b < nb; ++b)
      for_each_piece(t, nb, r, b, [&](uint64_t s, uint64_t p, int len, bool flip) {
        for (int i = 0; i < len; ++i) dst[p + i] = (uint8_t)(src[s + i] ^ (flip ? 0x80 : 0));
      });
}

void unpack_row(DType t, const uint8_t* packed, int64_t K, int64_t r, uint8_t* dst) {
  const int64_t nb = K / 32;
  const uint64_t row0 = (uint64_t)r * nb * dtype_info(t).block_bytes;
  for (int64_t b = 0; b < nb; ++b)
    for_each_piece(t, nb, r, b, [&](uint64_t s, uint64_t p, int len, bool flip) {
      for (int i = 0; i < len; ++i) dst[s - row0 + i] = (uint8_t)(packed[p + i] ^ (flip ? 0x80 : 0));
    });
}

}  // namespace kiln

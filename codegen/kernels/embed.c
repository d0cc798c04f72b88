/* codegen/kernels/embed.c — out[t, :] = dequant(table[tokens[t], :]) for every storage type.
 *
 * Rows of the output are split over threads; each row is widened block by block with the
 * same decoder as matmul (common.h), so embed agrees bit for bit with the interpreter's
 * dequantize_row. Plain float types allow any D (the D % 32 tail goes one at a time).
 */
#include "common.h"

KILN_INLINE void embed(enum kiln_wt wt, const void* restrict table,
                       const int32_t* restrict tokens, float* restrict out, int64_t T,
                       int64_t D, int32_t tid, int32_t nth) {
  int64_t t0, t1;
  kiln_split(T, 1, tid, nth, &t0, &t1);
  const int64_t nb = D / KILN_QK, rb = kiln_row_bytes(wt, D);
  for (int64_t t = t0; t < t1; ++t) {
    const void* row = (const char*)table + tokens[t] * rb;
    float* o = out + t * D;
    for (int64_t ib = 0; ib < nb; ++ib) {
      kiln_f8 w[4];
      kiln_load_block(wt, row, ib, w);
      for (int c = 0; c < 4; ++c) kiln_store8(o + ib * KILN_QK + 8 * c, w[c]);
    }
    for (int64_t k = nb * KILN_QK; k < D; ++k) o[k] = kiln_load_elem(wt, row, k);
  }
}

#define KILN_DEFINE_EMBED(wt)                                                             \
  void kiln_embed_##wt(const void* table, const int32_t* tokens, float* out, int64_t T,  \
                       int64_t D, int32_t tid, int32_t nth) {                            \
    embed(KILN_WT_##wt, table, tokens, out, T, D, tid, nth);                             \
  }
KILN_WEIGHT_TYPES(KILN_DEFINE_EMBED)

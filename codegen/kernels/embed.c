/* codegen/kernels/embed.c — out[t, :] = dequant(table[tokens[t], :]) for every storage type.
 *
 * Rows of the output are split over threads; each row is widened block by block with the
 * same decoder as matmul (common.h), so embed agrees bit for bit with the interpreter's
 * dequantize_row. Plain float types allow any D (the D % 32 tail goes one at a time).
 *
 * kiln_embed_<wt>x16 reads a packed table (pack-weights: the tied embedding and LM head is
 * packed for the matmul): each block of the row is gathered back into its GGUF block
 * (16 or 32 four-byte pieces) and widened by the same decoder, so the bits are the same.
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

/* Block ib of row n of a packed table, back in its GGUF layout (ir/packing.h's unpack_row). */
KILN_INLINE void unpack_block(enum kiln_wt wt, const void* table, int64_t nb, int64_t n, int64_t ib,
                              void* out) {
  const int64_t g = n / KILN_PACK_ROWS, l = n % KILN_PACK_ROWS;
  typedef uint32_t u32u __attribute__((aligned(1)));
  switch (wt) {
    case KILN_WT_q4_0: {
      const kiln_pack_q4_0* p = (const kiln_pack_q4_0*)table + g * nb + ib;
      kiln_block_q4_0* b = (kiln_block_q4_0*)out;
      b->d = p->d[l];
      for (int j = 0; j < 4; ++j) *(u32u*)(b->qs + 4 * j) = *(const u32u*)(p->qs[j] + 4 * l);
      return;
    }
    case KILN_WT_q4_1: {
      const kiln_pack_q4_1* p = (const kiln_pack_q4_1*)table + g * nb + ib;
      kiln_block_q4_1* b = (kiln_block_q4_1*)out;
      b->d = p->d[l];
      b->m = p->m[l];
      for (int j = 0; j < 4; ++j) *(u32u*)(b->qs + 4 * j) = *(const u32u*)(p->qs[j] + 4 * l);
      return;
    }
    default: {
      const kiln_pack_q8_0* p = (const kiln_pack_q8_0*)table + g * nb + ib;
      kiln_block_q8_0* b = (kiln_block_q8_0*)out;
      b->d = p->d[l];
      for (int j = 0; j < 8; ++j) *(u32u*)(b->qs + 4 * j) = *(const u32u*)(p->qs[j] + 4 * l) ^ 0x80808080u;
      return;
    }
  }
}

KILN_INLINE void embed_packed(enum kiln_wt wt, const void* restrict table,
                              const int32_t* restrict tokens, float* restrict out, int64_t T,
                              int64_t D, int32_t tid, int32_t nth) {
  int64_t t0, t1;
  kiln_split(T, 1, tid, nth, &t0, &t1);
  const int64_t nb = D / KILN_QK;
  for (int64_t t = t0; t < t1; ++t) {
    float* o = out + t * D;
    for (int64_t ib = 0; ib < nb; ++ib) {
      _Alignas(8) uint8_t blk[sizeof(kiln_block_q8_0)];
      unpack_block(wt, table, nb, tokens[t], ib, blk);
      kiln_f8 w[4];
      kiln_load_block(wt, blk, 0, w);
      for (int c = 0; c < 4; ++c) kiln_store8(o + ib * KILN_QK + 8 * c, w[c]);
    }
  }
}

#define KILN_DEFINE_EMBED_PACKED(wt, isa, attr)                                           \
  void kiln_embed_##wt##x16(const void* table, const int32_t* tokens, float* out, int64_t T, \
                            int64_t D, int32_t tid, int32_t nth) {                        \
    embed_packed(KILN_WT_##wt, table, tokens, out, T, D, tid, nth);                       \
  }
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_EMBED_PACKED, , )

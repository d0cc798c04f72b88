/* codegen/kernels/matmul.c — y[T,N] = x[T,K] @ w[N,K]^T for every weight storage type.
 *
 * Weights are read in their storage type and widened to float one 32-element block at a
 * time, in registers: dequantized weights are never written to memory. Each block serves
 * R rows of x at once, so a step of T tokens streams the weights from memory once:
 *
 *   for each tile of weight rows (<= 16 KB, stays in L1)    thread: rows [n0, n1) of N
 *     for each group of R rows of x (R = 8, 4, 2, 1)         T = 6 -> groups 4, 2
 *       for each weight row n in the tile
 *         for each block ib:  w0..w3 = dequant(w[n, ib])      4 x 8 floats, registers
 *           for r < R:        acc[r] += w0*x[r,ib,0:8] + ... + w3*x[r,ib,24:32]
 *         y[r, n] = hsum(acc[r]) (+ the K % 32 tail of float types)
 *
 * Every row of x sees the same arithmetic in the same order whatever group it falls in
 * and whatever the thread count: the block's partial sum is one FMA chain, then one add
 * into the row's accumulator. So y does not depend on T or nth, bit for bit — S streams
 * in one step give exactly S single-stream results, and a DS2D verify step exactly the
 * logits of plain decoding. The partial sums of different blocks are independent, so the
 * only loop-carried dependency is that one add per block. Sums are float (see
 * kernels_test for the error against the interpreter's double-folded sums).
 */
#include "common.h"

/* y[r*N + n] for r < R and n in [n0, n1), from R rows of x starting at x. */
KILN_INLINE void mm_group(enum kiln_wt wt, const float* restrict x, const void* restrict w,
                          float* restrict y, int64_t K, int64_t N, int64_t n0, int64_t n1,
                          int R) {
  const int64_t nb = K / KILN_QK, rb = kiln_row_bytes(wt, K);
  for (int64_t n = n0; n < n1; ++n) {
    const void* wr = (const char*)w + n * rb;
    kiln_f8 acc[8];
    float tail[8];
    for (int r = 0; r < R; ++r) {
      acc[r] = kiln_splat8(0.0f);
      tail[r] = 0.0f;
    }
    for (int64_t ib = 0; ib < nb; ++ib) {
      kiln_f8 wb[4];
      kiln_load_block(wt, wr, ib, wb);
      for (int r = 0; r < R; ++r) {
        const float* xb = x + r * K + ib * KILN_QK;
        kiln_f8 p = wb[0] * kiln_load8(xb);
        p += wb[1] * kiln_load8(xb + 8);
        p += wb[2] * kiln_load8(xb + 16);
        p += wb[3] * kiln_load8(xb + 24);
        acc[r] += p;
      }
    }
    /* Plain float types allow any K: the last K % 32 columns, one at a time. */
    for (int64_t k = nb * KILN_QK; k < K; ++k) {
      const float wv = kiln_load_elem(wt, wr, k);
      for (int r = 0; r < R; ++r) tail[r] += wv * x[r * K + k];
    }
    for (int r = 0; r < R; ++r)
      y[r * N + n] = nb * KILN_QK < K ? kiln_hsum8(acc[r]) + tail[r] : kiln_hsum8(acc[r]);
  }
}

KILN_INLINE void matmul(enum kiln_wt wt, const float* restrict x, const void* restrict w,
                        float* restrict y, int64_t T, int64_t K, int64_t N, int32_t tid,
                        int32_t nth) {
  int64_t n0, n1;
  kiln_split(N, 16, tid, nth, &n0, &n1);
  /* Weight rows per tile: as many as fit in 16 KB (at least 1, at most 16). */
  const int64_t tile = kiln_max(1, kiln_min(16, 16384 / kiln_max(1, kiln_row_bytes(wt, K))));
  for (int64_t nt = n0; nt < n1; nt += tile) {
    const int64_t ne = kiln_min(n1, nt + tile);
    int64_t t = 0;
    for (; t + 8 <= T; t += 8) mm_group(wt, x + t * K, w, y + t * N, K, N, nt, ne, 8);
    if (T - t >= 4) {
      mm_group(wt, x + t * K, w, y + t * N, K, N, nt, ne, 4);
      t += 4;
    }
    if (T - t >= 2) {
      mm_group(wt, x + t * K, w, y + t * N, K, N, nt, ne, 2);
      t += 2;
    }
    if (T - t >= 1) mm_group(wt, x + t * K, w, y + t * N, K, N, nt, ne, 1);
  }
}

#define KILN_DEFINE_MATMUL(wt)                                                             \
  void kiln_matmul_##wt(const float* x, const void* w, float* y, int64_t T, int64_t K,    \
                        int64_t N, int32_t tid, int32_t nth) {                            \
    matmul(KILN_WT_##wt, x, w, y, T, K, N, tid, nth);                                     \
  }
KILN_WEIGHT_TYPES(KILN_DEFINE_MATMUL)

/* codegen/kernels/lora.c — the LoRA side path of a projection (op lora, ir/ops.def):
 *
 *   y[t, :] = scale[s] * sum_{r < rank[s]} b[s, r, :] * (a[s, r, :] . x[t, :]),  s = slots[t]
 *
 * x [T, in], a [K, R, in], b [K, R, out] (B transposed: rank-major), scale [K], slots [T]
 * (each < K, checked by the runtime), rank [K] (the slot's rank on this projection, 0 if
 * its adapter leaves it alone). A rank-r adapter's factors are the first r rows of a[s]
 * and b[s], so a row reads r * (in + out) floats: its own weights, not the padding to R,
 * and nothing at all for projections it does not target. Why it matters: with one shared
 * [out, R] layout every adapter cost R = 16 floats per output on all seven projections
 * (19.5 MB per token for the default model), which made three adapter-styled streams
 * cost more than the base weights themselves.
 *
 * Threads split the output columns (chunks of 16: whole cache lines); every thread
 * computes the shrink h = a[s] @ x[t] (r <= 64 floats, on the stack) of each row itself,
 * in the same order, so results do not depend on nth and no barrier is needed. Rows on
 * slot 0 (the zero adapter), with scale 0 or rank 0 only copy (or store zeros). The
 * shrink sums in eight partial sums of a fixed lane order; the expand adds the ranks in
 * order, eight columns at a time.
 */
#include "common.h"

#include "lora_rows.h"

/* One column range [o0, o1) of the LoRA term of every row into y, added to base (NULL: none). */
KILN_INLINE void lora_rows(const float* x, const float* a, const float* b, const float* scale,
                           const int32_t* slots, const int32_t* rank, const float* base, float* y,
                           int64_t T, int64_t in, int64_t out, int64_t R, int64_t o0, int64_t o1) {
  float h[KILN_LORA_MAX_RANK];
  for (int64_t t = 0; t < T; ++t) {
    const int64_t s = slots[t];
    float* yt = y + t * out;
    const float* bt = base ? base + t * out : 0;
    const int64_t rk = kiln_min(kiln_max(rank[s], 0), R);
    /* Slot 0 is the zero adapter, and a zero scale or rank contributes nothing either: the
     * rows of streams without an adapter (here) cost a copy, not two matrix products. */
    if (s == 0 || scale[s] == 0.0f || rk == 0) {
      for (int64_t o = o0; o < o1; ++o) yt[o] = bt ? bt[o] : 0.0f;
      continue;
    }
    const float* xt = x + t * in;
    const float* as = a + s * R * in;
    lora_shrink(as, xt, h, rk, in);
    lora_expand(h, rk, b + s * R * out + o0, out, scale[s], bt ? bt + o0 : 0, yt + o0, o1 - o0);
  }
}

void kiln_lora(const float* x, const float* a, const float* b, const float* scale,
               const int32_t* slots, const int32_t* rank, float* y, int64_t T, int64_t in,
               int64_t out, int64_t R, int32_t tid, int32_t nth) {
  int64_t o0, o1;
  kiln_split(out, 16, tid, nth, &o0, &o1);
  if (o0 < o1) lora_rows(x, a, b, scale, slots, rank, 0, y, T, in, out, R, o0, o1);
}

/* y = m + lora(x): the add after a projection, fused. Threads take the output columns
 * exactly as the matmul kernels split them (kiln_split(out, 16)), so each thread reads
 * only the columns of m it wrote itself: no barrier between the projection and this. */
void kiln_lora_add(const float* x, const float* a, const float* b, const float* scale,
                   const int32_t* slots, const int32_t* rank, const float* m, float* y,
                   int64_t T, int64_t in, int64_t out, int64_t R, int32_t tid, int32_t nth) {
  int64_t o0, o1;
  kiln_split(out, 16, tid, nth, &o0, &o1);
  if (o0 < o1) lora_rows(x, a, b, scale, slots, rank, m, y, T, in, out, R, o0, o1);
}

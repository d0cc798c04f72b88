/* codegen/kernels/lora.c — the LoRA side path of a projection (op lora, ir/ops.def):
 *
 *   y[t, :] = scale[s] * b[s] @ (a[s] @ x[t, :]),  s = slots[t]
 *
 * x [T, in], a [K, R, in], b [K, out, R], scale [K], slots [T] (each < K, checked by the
 * runtime). Threads split the output columns (chunks of 16: whole cache lines); every
 * thread computes the shrink h = a[s] @ x[t] (R <= 64 floats, on the stack) of each row
 * itself, in the same order, so results do not depend on nth and no barrier is needed.
 * Rows on slot 0 (the zero adapter) or with scale 0 only store zeros.
 * Sums are float, in eight partial sums of a fixed lane order.
 */
#include "common.h"

#define KILN_LORA_MAX_RANK 64

/* sum_i u[i] * v[i] in eight lanes, combined in a fixed tree, then the tail. */
KILN_INLINE float dot(const float* u, const float* v, int64_t n) {
  kiln_f8 acc = kiln_splat8(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += kiln_load8(u + i) * kiln_load8(v + i);
  float s = kiln_hsum8(acc);
  for (; i < n; ++i) s += u[i] * v[i];
  return s;
}

/* One row range [o0, o1) of the LoRA term of row t into yt, added to base (NULL: none). */
KILN_INLINE void lora_rows(const float* x, const float* a, const float* b, const float* scale,
                           const int32_t* slots, const float* base, float* y, int64_t T, int64_t in,
                           int64_t out, int64_t R, int64_t o0, int64_t o1) {
  float h[KILN_LORA_MAX_RANK];
  for (int64_t t = 0; t < T; ++t) {
    const int64_t s = slots[t];
    float* yt = y + t * out;
    const float* bt = base ? base + t * out : 0;
    /* Slot 0 is the zero adapter, and a zero scale contributes nothing either: the rows
     * of streams without an adapter cost a copy (or zero stores), not two matrix products. */
    if (s == 0 || scale[s] == 0.0f) {
      for (int64_t o = o0; o < o1; ++o) yt[o] = bt ? bt[o] : 0.0f;
      continue;
    }
    const float* xt = x + t * in;
    const float* as = a + s * R * in;
    for (int64_t r = 0; r < R; ++r) h[r] = dot(as + r * in, xt, in);
    const float sc = scale[s];
    const float* bs = b + s * out * R;
    if (bt)
      for (int64_t o = o0; o < o1; ++o) yt[o] = bt[o] + sc * dot(bs + o * R, h, R);
    else
      for (int64_t o = o0; o < o1; ++o) yt[o] = sc * dot(bs + o * R, h, R);
  }
}

void kiln_lora(const float* x, const float* a, const float* b, const float* scale,
               const int32_t* slots, float* y, int64_t T, int64_t in, int64_t out, int64_t R,
               int32_t tid, int32_t nth) {
  int64_t o0, o1;
  kiln_split(out, 16, tid, nth, &o0, &o1);
  if (o0 < o1) lora_rows(x, a, b, scale, slots, 0, y, T, in, out, R, o0, o1);
}

/* y = m + lora(x): the add after a projection, fused. Threads take the output columns
 * exactly as the matmul kernels split them (kiln_split(out, 16)), so each thread reads
 * only the columns of m it wrote itself: no barrier between the projection and this. */
void kiln_lora_add(const float* x, const float* a, const float* b, const float* scale,
                   const int32_t* slots, const float* m, float* y, int64_t T, int64_t in,
                   int64_t out, int64_t R, int32_t tid, int32_t nth) {
  int64_t o0, o1;
  kiln_split(out, 16, tid, nth, &o0, &o1);
  if (o0 < o1) lora_rows(x, a, b, scale, slots, m, y, T, in, out, R, o0, o1);
}

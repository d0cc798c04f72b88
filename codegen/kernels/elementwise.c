/* codegen/kernels/elementwise.c — add, mul, silu and the row copies (gather_rows, last_row).
 *
 * Elementwise ops split their n elements over threads in contiguous chunks of multiples
 * of 16 (whole cache lines per thread), and their y may be their first operand (in
 * place); row copies split rows, or, for last_row, the columns of the one row.
 */
#include "common.h"

/* y[i] = a[i] op b[i % bn] for i in [i0, i1): walks segments that do not wrap b, so the
 * inner loops are plain vector loops whether b is a full tensor or one broadcast row. */
KILN_INLINE void binary(int mul, const float* a, const float* b, float* y, int64_t n,
                        int64_t bn, int32_t tid, int32_t nth) {
  int64_t i0, i1;
  kiln_split(n, 16, tid, nth, &i0, &i1);
  for (int64_t i = i0; i < i1;) {
    const int64_t j = i % bn, len = kiln_min(i1 - i, bn - j);
    const float *ai = a + i, *bj = b + j;
    float* yi = y + i;
    int64_t k = 0;
    for (; k + 8 <= len; k += 8) {
      const kiln_f8 u = kiln_load8(ai + k), v = kiln_load8(bj + k);
      kiln_store8(yi + k, mul ? u * v : u + v);
    }
    for (; k < len; ++k) yi[k] = mul ? ai[k] * bj[k] : ai[k] + bj[k];
    i += len;
  }
}

void kiln_add(const float* a, const float* b, float* y, int64_t n, int64_t bn, int32_t tid,
              int32_t nth) {
  binary(0, a, b, y, n, bn, tid, nth);
}

void kiln_mul(const float* a, const float* b, float* y, int64_t n, int64_t bn, int32_t tid,
              int32_t nth) {
  binary(1, a, b, y, n, bn, tid, nth);
}

/* x * sigmoid(x) = x / (1 + e^-x); kiln_expf is branch-free, so the loop vectorises. */
void kiln_silu(const float* x, float* y, int64_t n, int32_t tid, int32_t nth) {
  int64_t i0, i1;
  kiln_split(n, 16, tid, nth, &i0, &i1);
  for (int64_t i = i0; i < i1; ++i) y[i] = x[i] / (1.0f + kiln_expf(-x[i]));
}

KILN_INLINE void copy_floats(float* restrict dst, const float* restrict src, int64_t n) {
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) kiln_store8(dst + k, kiln_load8(src + k));
  for (; k < n; ++k) dst[k] = src[k];
}

void kiln_gather_rows(const float* x, const int32_t* rows, float* y, int64_t R, int64_t F,
                      int32_t tid, int32_t nth) {
  int64_t r0, r1;
  kiln_split(R, 1, tid, nth, &r0, &r1);
  for (int64_t r = r0; r < r1; ++r) copy_floats(y + r * F, x + rows[r] * F, F);
}

void kiln_last_row(const float* x, float* y, int64_t T, int64_t F, int32_t tid, int32_t nth) {
  int64_t c0, c1;
  kiln_split(F, 16, tid, nth, &c0, &c1);
  copy_floats(y + c0, x + (T - 1) * F + c0, c1 - c0);
}

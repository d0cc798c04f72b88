/* codegen/kernels/norm.c — RMS normalisation: y[t, :] = x[t, :] / sqrt(mean(x^2) + eps) * w.
 *
 * Rows are split over threads. The sum of squares is float in two 8-lane accumulators
 * (fixed order); the scale is taken in double like the interpreter, then
 * y = (x * scale) * w in float, the interpreter's order. y may be x (in place).
 */
#include "common.h"

void kiln_rms_norm(const float* x, const float* restrict w, float* y, int64_t T, int64_t D,
                   float eps, int32_t tid, int32_t nth) {
  int64_t t0, t1;
  kiln_split(T, 1, tid, nth, &t0, &t1);
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * D;
    float* yr = y + t * D;
    kiln_f8 a0 = kiln_splat8(0.0f), a1 = kiln_splat8(0.0f);
    int64_t k = 0;
    for (; k + 16 <= D; k += 16) {
      const kiln_f8 v0 = kiln_load8(xr + k), v1 = kiln_load8(xr + k + 8);
      a0 += v0 * v0;
      a1 += v1 * v1;
    }
    float ss = kiln_hsum8(a0 + a1);
    for (; k < D; ++k) ss += xr[k] * xr[k];
    const float scale = (float)(1.0 / __builtin_sqrt((double)ss / (double)D + (double)eps));
    const kiln_f8 vs = kiln_splat8(scale);
    for (k = 0; k + 8 <= D; k += 8) kiln_store8(yr + k, kiln_load8(xr + k) * vs * kiln_load8(w + k));
    for (; k < D; ++k) yr[k] = xr[k] * scale * w[k];
  }
}

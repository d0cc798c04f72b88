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
  for (int64_t t = t0; t < t1; ++t) kiln_rms_row(x + t * D, w, y + t * D, D, eps);
}

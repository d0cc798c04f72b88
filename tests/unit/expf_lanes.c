/* tests/unit/expf_lanes.c — exposes kernels' inline exp for kernels_test: the scalar
 * kiln_expf and its 16-lane form kiln_expf16 (attention's softmax), built with the
 * kernels' own header and flags. n must be a multiple of 16. */
#include "codegen/kernels/common.h"

void kiln_test_expf(const float* x, float* scalar, float* lanes, int64_t n) {
  for (int64_t i = 0; i < n; ++i) scalar[i] = kiln_expf(x[i]);
  for (int64_t i = 0; i + 16 <= n; i += 16) kiln_store16(lanes + i, kiln_expf16(kiln_load16(x + i)));
}

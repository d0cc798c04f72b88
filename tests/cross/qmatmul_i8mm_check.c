/* tests/cross/qmatmul_i8mm_check.c — the +i8mm (smmla) int8-activation matmuls, checked
 * under qemu-aarch64 -cpu max (qmatmul_i8mm_test.sh builds this with clang-16 for
 * aarch64 next to the kernel sources; the host cannot run smmla).
 *
 * qmatmul.c is included, so its static quantize_rows is the one the kernels use. Per
 * weight type and shape (T, K, N), for nth = 1, 2, 3:
 *   1. kiln_matmul_<wt>_q8_i8mm gives exactly the bits of a scalar reference written in
 *      the order qmatmul.c documents (exact block dots, fmaf per block alternating
 *      between two accumulators, offsets in their own chains) — for every T, so a row's
 *      result does not depend on T, the row pairing or the split over threads;
 *   2. it is within NMSE 1e-10 of the sdot variant (_q8_dotprod: same int8 activations,
 *      same exact block dots, only the float order differs; measured ~1e-14);
 *   3. it is within NMSE 1e-4 of a double-precision matmul on the float activations (the
 *      int8 rounding of x; the same bound as tests/unit/kernels_test.cpp);
 *   4. rms_matmul_i8mm = matmul_i8mm(kiln_rms_row(x)) and matmul_swiglu_i8mm =
 *      silu(matmul_i8mm(x, wg)) * matmul_i8mm(x, wu), bit for bit.
 * Prints the worst NMSEs; exits 1 on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmatmul.c"
#include "qmatmul_check_util.h"

typedef void (*mm_fn)(const float*, const void*, float*, int64_t, int64_t, int64_t, int32_t,
                      int32_t);
typedef void (*rms_fn)(const float*, const float*, const void*, float*, int64_t, int64_t,
                       int64_t, float, int32_t, int32_t);
typedef void (*sw_fn)(const float*, const void*, const void*, float*, int64_t, int64_t,
                      int64_t, int32_t, int32_t);

/* The documented order, in scalar C: per output, block b's exact dot converted to float
 * and fmaf'd with dw*d into acc[b & 1]; off[b & 1] = fmaf(off_w, s, ...); the sum
 * (acc0 + acc1) + (off0 + off1). */
static void reference_order(enum kiln_wt wt, const float* x, const void* w, float* y, int64_t T,
                            int64_t K, int64_t N) {
  const int64_t nb = K / 32, rb = kiln_row_bytes(wt, K);
  int8_t* q = malloc((size_t)(T * K));
  float* d = malloc(sizeof(float) * (size_t)(T * nb));
  float* s = malloc(sizeof(float) * (size_t)(T * nb));
  quantize_rows(x, q, d, s, 0, T, K);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      float acc[2] = {0, 0}, off[2] = {0, 0};
      for (int64_t b = 0; b < nb; ++b) {
        kiln_qw o;
        const uint8_t* qs;
        qw_scales(wt, (const char*)w + n * rb, b, &o, &qs);
        int32_t dot = 0;
        for (int j = 0; j < 32; ++j) {
          const int wj = wt == KILN_WT_q8_0 ? (int)(int8_t)qs[j]
                                            : (j < 16 ? qs[j] & 15 : qs[j - 16] >> 4);
          dot += wj * q[t * K + b * 32 + j];
        }
        acc[b & 1] = fmaf((float)dot, o.dw * d[t * nb + b], acc[b & 1]);
        if (wt != KILN_WT_q8_0) off[b & 1] = fmaf(o.off, s[t * nb + b], off[b & 1]);
      }
      y[t * N + n] = (acc[0] + acc[1]) + (off[0] + off[1]);
    }
  free(q), free(d), free(s);
}

static double nmse(const float* a, const double* ref, int64_t n) {
  double e = 0, r = 0;
  for (int64_t i = 0; i < n; ++i) e += (a[i] - ref[i]) * (a[i] - ref[i]), r += ref[i] * ref[i];
  return r > 0 ? e / r : e;
}
static void run(mm_fn f, const float* x, const void* w, float* y, int64_t T, int64_t K, int64_t N,
                int nth) {
  for (int tid = 0; tid < nth; ++tid) f(x, w, y, T, K, N, tid, nth);
}

int main(void) {
  struct { int64_t T, K, N; } shapes[] = {{1, 32, 1},  {1, 576, 100}, {2, 64, 17}, {3, 96, 33},
                                          {5, 128, 40}, {8, 96, 48},  {9, 32, 31}, {13, 160, 20},
                                          {17, 64, 64}, {40, 1536, 24}, {1, 1536, 576}};
  const enum kiln_wt wts[] = {KILN_WT_q4_0, KILN_WT_q4_1, KILN_WT_q8_0};
  const char* names[] = {"q4_0", "q4_1", "q8_0"};
  const mm_fn i8mm[] = {kiln_matmul_q4_0_q8_i8mm, kiln_matmul_q4_1_q8_i8mm, kiln_matmul_q8_0_q8_i8mm};
  const mm_fn sdot[] = {kiln_matmul_q4_0_q8_dotprod, kiln_matmul_q4_1_q8_dotprod,
                        kiln_matmul_q8_0_q8_dotprod};
  const rms_fn rms[] = {kiln_rms_matmul_q4_0_q8_i8mm, kiln_rms_matmul_q4_1_q8_i8mm,
                        kiln_rms_matmul_q8_0_q8_i8mm};
  const sw_fn sw[] = {kiln_matmul_swiglu_q4_0_q8_i8mm, kiln_matmul_swiglu_q4_1_q8_i8mm,
                      kiln_matmul_swiglu_q8_0_q8_i8mm};
  double worst_sdot = 0, worst_exact = 0;
  int cases = 0;
  for (int iw = 0; iw < 3; ++iw)
    for (size_t is = 0; is < sizeof shapes / sizeof *shapes; ++is) {
      const int64_t T = shapes[is].T, K = shapes[is].K, N = shapes[is].N;
      float* wf = malloc(sizeof(float) * (size_t)(N * K));
      float* wf2 = malloc(sizeof(float) * (size_t)(N * K));
      void* w = make_weights(wts[iw], N, K, wf);
      void* w2 = make_weights(wts[iw], N, K, wf2);
      float* x = malloc(sizeof(float) * (size_t)(T * K));
      float* nw = malloc(sizeof(float) * (size_t)K);
      float* xn = malloc(sizeof(float) * (size_t)(T * K));
      for (int64_t i = 0; i < T * K; ++i) x[i] = frnd() * 2.0f;
      for (int64_t i = 0; i < K; ++i) nw[i] = 0.5f + frnd() * 0.5f;
      const size_t ny = (size_t)(T * N);
      float *y = malloc(4 * ny), *yr = malloc(4 * ny), *ys = malloc(4 * ny), *y2 = malloc(4 * ny);
      double* exact = malloc(8 * ny);
      reference_order(wts[iw], x, w, yr, T, K, N);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n) {
          double a = 0;
          for (int64_t k = 0; k < K; ++k) a += (double)x[t * K + k] * wf[n * K + k];
          exact[t * N + n] = a;
        }
      for (int nth = 1; nth <= 3; ++nth) {
        memset(y, 0xff, 4 * ny);
        run(i8mm[iw], x, w, y, T, K, N, nth);
        CHECK(!memcmp(y, yr, 4 * ny), "%s T=%lld K=%lld N=%lld nth=%d: not the documented order's bits",
              names[iw], (long long)T, (long long)K, (long long)N, nth);
      }
      run(sdot[iw], x, w, ys, T, K, N, 1);
      double sd[1];
      {
        double* sdd = malloc(8 * ny);
        for (size_t i = 0; i < ny; ++i) sdd[i] = ys[i];
        sd[0] = nmse(y, sdd, (int64_t)ny);
        free(sdd);
      }
      const double ex = nmse(y, exact, (int64_t)ny);
      const double bound = ny >= 16 ? 1e-4 : 1e-3;
      CHECK(sd[0] < 1e-10, "%s T=%lld K=%lld N=%lld: NMSE against sdot %g", names[iw], (long long)T,
            (long long)K, (long long)N, sd[0]);
      CHECK(ex < bound, "%s T=%lld K=%lld N=%lld: NMSE against float activations %g", names[iw],
            (long long)T, (long long)K, (long long)N, ex);
      worst_sdot = sd[0] > worst_sdot ? sd[0] : worst_sdot;
      worst_exact = ex > worst_exact ? ex : worst_exact;
      /* rms_matmul: the norm row code, then the same matmul. */
      for (int64_t t = 0; t < T; ++t) kiln_rms_row(x + t * K, nw, xn + t * K, K, 1e-5f);
      run(i8mm[iw], xn, w, y, T, K, N, 1);
      for (int nth = 1; nth <= 2; ++nth) {
        for (int tid = 0; tid < nth; ++tid) rms[iw](x, nw, w, y2, T, K, N, 1e-5f, tid, nth);
        CHECK(!memcmp(y, y2, 4 * ny), "%s T=%lld K=%lld N=%lld nth=%d: rms_matmul differs", names[iw],
              (long long)T, (long long)K, (long long)N, nth);
      }
      /* matmul_swiglu: silu(x wg) * (x wu) from the two matmuls. */
      run(i8mm[iw], x, w, y, T, K, N, 1);
      run(i8mm[iw], x, w2, ys, T, K, N, 1);
      for (size_t i = 0; i < ny; ++i) y[i] = y[i] / (1.0f + kiln_expf(-y[i])) * ys[i];
      for (int nth = 1; nth <= 2; ++nth) {
        for (int tid = 0; tid < nth; ++tid) sw[iw](x, w, w2, y2, T, K, N, tid, nth);
        CHECK(!memcmp(y, y2, 4 * ny), "%s T=%lld K=%lld N=%lld nth=%d: matmul_swiglu differs",
              names[iw], (long long)T, (long long)K, (long long)N, nth);
      }
      ++cases;
      free(wf), free(wf2), free(w), free(w2), free(x), free(nw), free(xn), free(y), free(yr);
      free(ys), free(y2), free(exact);
    }
  printf("i8mm qmatmul: %d cases, worst NMSE vs sdot %.3g, vs float activations %.3g, %d failures\n",
         cases, worst_sdot, worst_exact, failures);
  return failures ? 1 : 0;
}

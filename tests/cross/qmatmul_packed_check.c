/* tests/cross/qmatmul_packed_check.c — the AArch64 +dotprod kernels for pack-weights'
 * layout (kiln_*_<wt>x16_q8_dotprod: sdot by element), run under qemu-aarch64 -cpu max
 * (qmatmul_packed_test.sh builds this with clang-16 for aarch64).
 *
 * qmatmul.c is included. Per weight type and shape (T, K, N; N a multiple of 16), random
 * GGUF rows are packed here as ir/packing.h lays them out (written again in C, from the
 * layout's description, so a drift between the two shows up), and:
 *   1. matmul, rms_matmul, rms_matmul3 and matmul_swiglu of the dotprod variant give
 *      exactly the bits of the portable variant (_ref: the definition, which
 *      tests/unit/kernels_test.cpp checks against the interpreter on the host), for
 *      nth = 1, 2, 3 — so the sm8650 build computes what the host's packed build does;
 *   2. matmul is within NMSE 1e-4 of a double-precision matmul on the float activations.
 * Prints the worst NMSE; exits 1 on any failure. */
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
typedef void (*rms3_fn)(const float*, const float*, const void*, const void*, const void*,
                        float*, float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                        float, int32_t, int32_t);
typedef void (*sw_fn)(const float*, const void*, const void*, float*, int64_t, int64_t,
                      int64_t, int32_t, int32_t);

/* GGUF rows (N a multiple of 16) into groups of 16: per block, the 16 scales (and q4_1's
 * 16 minimums), then lines of 4 bytes of every row (q8_0: the value + 128). */
static void* pack(enum kiln_wt wt, const void* w, int64_t N, int64_t K) {
  const int64_t nb = K / 32, rb = kiln_row_bytes(wt, K), pb = pack_bytes(wt);
  uint8_t* p = calloc((size_t)(N / 16 * nb), (size_t)pb);
  for (int64_t g = 0; g < N / 16; ++g)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* out = p + (g * nb + b) * pb;
      for (int l = 0; l < 16; ++l) {
        const uint8_t* blk = (const uint8_t*)w + (g * 16 + l) * rb + b * (rb / nb);
        memcpy(out + 2 * l, blk, 2); /* d */
        if (wt == KILN_WT_q4_1) memcpy(out + 32 + 2 * l, blk + 2, 2); /* m */
        const uint8_t* qs = blk + (wt == KILN_WT_q4_1 ? 4 : 2);
        uint8_t* lines = out + pack_qs(wt);
        const int nlines = wt == KILN_WT_q8_0 ? 8 : 4;
        for (int j = 0; j < nlines; ++j)
          for (int e = 0; e < 4; ++e)
            lines[64 * j + 4 * l + e] =
                wt == KILN_WT_q8_0 ? (uint8_t)(qs[4 * j + e] + 128) : qs[4 * j + e];
      }
    }
  return p;
}

static double nmse(const float* a, const double* ref, int64_t n) {
  double e = 0, r = 0;
  for (int64_t i = 0; i < n; ++i) e += (a[i] - ref[i]) * (a[i] - ref[i]), r += ref[i] * ref[i];
  return r > 0 ? e / r : e;
}

#define SHAPE_ARGS(wt) names[wt], (long long)T, (long long)K, (long long)N, nth

int main(void) {
  struct { int64_t T, K, N; } shapes[] = {{1, 32, 16}, {1, 576, 96}, {2, 64, 32},  {3, 96, 48},
                                          {4, 128, 16}, {5, 64, 64},  {9, 160, 32}, {17, 64, 16},
                                          {40, 1536, 32}, {1, 1536, 576}};
  const enum kiln_wt wts[] = {KILN_WT_q4_0, KILN_WT_q4_1, KILN_WT_q8_0};
  const char* names[] = {"q4_0", "q4_1", "q8_0"};
#define FNS(op) {kiln_##op##_q4_0x16_q8_dotprod, kiln_##op##_q4_1x16_q8_dotprod, kiln_##op##_q8_0x16_q8_dotprod}, \
                {kiln_##op##_q4_0x16_q8_ref, kiln_##op##_q4_1x16_q8_ref, kiln_##op##_q8_0x16_q8_ref}
  const mm_fn mm[2][3] = {FNS(matmul)};
  const rms_fn rms[2][3] = {FNS(rms_matmul)};
  const rms3_fn rms3[2][3] = {FNS(rms_matmul3)};
  const sw_fn sw[2][3] = {FNS(matmul_swiglu)};
#undef FNS
  double worst = 0;
  int cases = 0;
  for (int iw = 0; iw < 3; ++iw)
    for (size_t is = 0; is < sizeof shapes / sizeof *shapes; ++is) {
      const int64_t T = shapes[is].T, K = shapes[is].K, N = shapes[is].N;
      const size_t ny = (size_t)(T * N);
      float* wf = malloc(sizeof(float) * (size_t)(N * K));
      float* wf2 = malloc(sizeof(float) * (size_t)(N * K));
      void* rows = make_weights(wts[iw], N, K, wf);
      void* rows2 = make_weights(wts[iw], N, K, wf2);
      void* w = pack(wts[iw], rows, N, K);
      void* w2 = pack(wts[iw], rows2, N, K);
      float* x = malloc(sizeof(float) * (size_t)(T * K));
      float* nw = malloc(sizeof(float) * (size_t)K);
      for (int64_t i = 0; i < T * K; ++i) x[i] = frnd() * 2.0f;
      for (int64_t i = 0; i < K; ++i) nw[i] = 0.5f + frnd() * 0.5f;
      float* y[2][3];
      for (int v = 0; v < 2; ++v)
        for (int m = 0; m < 3; ++m) y[v][m] = malloc(4 * ny);
      for (int nth = 1; nth <= 3; ++nth) {
        /* v = 0 the dotprod variant, v = 1 the reference; every output starts as NaN bits. */
        for (int v = 0; v < 2; ++v) {
          memset(y[v][0], 0xff, 4 * ny);
          for (int tid = 0; tid < nth; ++tid) mm[v][iw](x, w, y[v][0], T, K, N, tid, nth);
        }
        CHECK(!memcmp(y[0][0], y[1][0], 4 * ny), "%s T=%lld K=%lld N=%lld nth=%d: matmul differs",
              SHAPE_ARGS(iw));
        for (int v = 0; v < 2; ++v) {
          memset(y[v][0], 0xff, 4 * ny);
          for (int tid = 0; tid < nth; ++tid) rms[v][iw](x, nw, w, y[v][0], T, K, N, 1e-5f, tid, nth);
        }
        CHECK(!memcmp(y[0][0], y[1][0], 4 * ny), "%s T=%lld K=%lld N=%lld nth=%d: rms_matmul differs",
              SHAPE_ARGS(iw));
        for (int v = 0; v < 2; ++v) {
          for (int m = 0; m < 3; ++m) memset(y[v][m], 0xff, 4 * ny);
          for (int tid = 0; tid < nth; ++tid)
            rms3[v][iw](x, nw, w, w2, w, y[v][0], y[v][1], y[v][2], T, K, N, N, N, 1e-5f, tid, nth);
        }
        for (int m = 0; m < 3; ++m)
          CHECK(!memcmp(y[0][m], y[1][m], 4 * ny), "%s T=%lld K=%lld N=%lld nth=%d: rms_matmul3 differs",
                SHAPE_ARGS(iw));
        for (int v = 0; v < 2; ++v) {
          memset(y[v][0], 0xff, 4 * ny);
          for (int tid = 0; tid < nth; ++tid) sw[v][iw](x, w, w2, y[v][0], T, K, N, tid, nth);
        }
        CHECK(!memcmp(y[0][0], y[1][0], 4 * ny), "%s T=%lld K=%lld N=%lld nth=%d: matmul_swiglu differs",
              SHAPE_ARGS(iw));
      }
      /* Against float activations: the int8 rounding of x only. */
      mm[0][iw](x, w, y[0][0], T, K, N, 0, 1);
      double* exact = malloc(8 * ny);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t n = 0; n < N; ++n) {
          double a = 0;
          for (int64_t k = 0; k < K; ++k) a += (double)x[t * K + k] * wf[n * K + k];
          exact[t * N + n] = a;
        }
      const double ex = nmse(y[0][0], exact, (int64_t)ny);
      CHECK(ex < (ny >= 16 ? 1e-4 : 1e-3), "%s T=%lld K=%lld N=%lld: NMSE against float activations %g",
            names[iw], (long long)T, (long long)K, (long long)N, ex);
      worst = ex > worst ? ex : worst;
      ++cases;
      for (int v = 0; v < 2; ++v)
        for (int m = 0; m < 3; ++m) free(y[v][m]);
      free(wf), free(wf2), free(rows), free(rows2), free(w), free(w2), free(x), free(nw), free(exact);
    }
  printf("packed dotprod qmatmul: %d cases (4 entry points against the reference, bit for bit, nth 1-3), worst NMSE vs float activations %.3g, %d failures\n",
         cases, worst, failures);
  return failures ? 1 : 0;
}

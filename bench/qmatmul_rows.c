/* bench/qmatmul_rows.c — what one more row costs in the packed int8 kernels (x86 VNNI).
 *
 * Multi-stream decoding runs S rows per step and a DS2D verify pass N rows; both pay off
 * only while an extra row costs much less than a step. This times, on one thread, the
 * FFN of SmolLM2-135M (gate+up as one matmul_swiglu 576 -> 1536, then down 1536 -> 576,
 * packed Q4_1, random weights: the timing does not depend on the values) for R = 1..8
 * rows, twice:
 *   * "stream": 30 layers of distinct weights (50 MB), read from L3/DRAM each pass, as in
 *     a decode step;
 *   * "l2": one layer's weights (1.7 MB) 30 times: the pure compute cost, no memory wait.
 * The "l2" column is the floor for an extra row; the "stream" column shows how much of it
 * hides under the memory time of a single-row pass. Also R = 16 and 32 (prefill-sized
 * calls). Best of --reps passes (default 30).
 * --weight-prefetch KIND: the kernels' weight prefetch (kiln_weight_prefetch, which
 * codegen sets from the target profile): non-temporal, outer-cache, or both (the default:
 * each repetition times both, back to back, to choose a profile's value on this CPU).
 * Also the core's issue rate of zmm `vpdpbusd` (12 independent accumulators, no memory
 * operands), the ceiling the l2 column's GMAC/s is measured against (64 multiply-adds each).
 * Prints one JSON object. Needs AVX512-VNNI (checked).
 *
 * usage: qmatmul_rows [--reps N] [--weight-prefetch non-temporal|outer-cache|both] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>

#include "codegen/kernels/kernels.h"

enum { kLayers = 30, kD = 576, kF = 1536, kMaxR = 32, kBlockBytes = 320 /* q4_1 x16 block */ };
/* Rows per call: decode, multi-stream and DS2D verify passes (1-8), and two prefill-sized
 * calls (16, 32: more rows than one pass over a weight group takes). */
static const int kRows[] = {1, 2, 3, 4, 5, 6, 7, 8, 16, 32};
enum { kNRows = sizeof kRows / sizeof kRows[0] };

static int cmp_double(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* zmm vpdpbusd per ns on this core: 12 accumulators (more than latency x ports), operands
 * in registers; the asm barrier keeps the loop from being folded. Best of 5 runs. */
__attribute__((target("avx512f,avx512vnni"), noinline)) static double vpdpbusd_per_ns(void) {
  enum { kChains = 12 };
  const long iters = 4000000;
  double best = 0.0;
  for (int run = 0; run < 5; ++run) {
    __m512i acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_epi32(i);
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
    const double t = now();
    for (long k = 0; k < iters; ++k) {
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
      __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[6]), "+v"(acc[11]));
    }
    const double rate = (double)kChains * (double)iters / ((now() - t) * 1e9);
    volatile int sink = _mm512_reduce_add_epi32(acc[3]);
    (void)sink;
    if (rate > best) best = rate;
  }
  return best;
}

/* A packed q4_1 weight of N rows x K: N/16 groups of K/32 blocks; fp16 scales and mins
 * small and finite, quants random. */
static void* packed_q4_1(int64_t K, int64_t N, unsigned* seed) {
  const int64_t blocks = N / 16 * (K / 32), bytes = blocks * kBlockBytes;
  uint8_t* p = aligned_alloc(64, (size_t)bytes);
  if (!p) return NULL;
  for (int64_t i = 0; i < bytes; ++i) p[i] = (uint8_t)rand_r(seed);
  for (int64_t b = 0; b < blocks; ++b) {
    uint16_t* h = (uint16_t*)(p + b * kBlockBytes);
    for (int j = 0; j < 32; ++j) h[j] = (uint16_t)(0x2000 + (rand_r(seed) & 0xff));
  }
  return p;
}

int main(int argc, char** argv) {
  int reps = 30;
  static const char* const kKindNames[] = {"non-temporal", "outer-cache"};
  int kinds[2] = {KILN_WEIGHT_PREFETCH_NT, KILN_WEIGHT_PREFETCH_L2}, nkinds = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--reps")) {
      reps = atoi(argv[i + 1]);
    } else if (!strcmp(argv[i], "--weight-prefetch")) {
      if (!strcmp(argv[i + 1], "both")) nkinds = 2;
      else if (!strcmp(argv[i + 1], kKindNames[0])) kinds[0] = KILN_WEIGHT_PREFETCH_NT, nkinds = 1;
      else if (!strcmp(argv[i + 1], kKindNames[1])) kinds[0] = KILN_WEIGHT_PREFETCH_L2, nkinds = 1;
      else { fprintf(stderr, "qmatmul_rows: --weight-prefetch: expected non-temporal, outer-cache or both\n"); return 2; }
    } else {
      fprintf(stderr, "qmatmul_rows: unknown option %s (usage: qmatmul_rows [--reps N] [--weight-prefetch KIND])\n", argv[i]);
      return 2;
    }
  }
  if (reps < 1) { fprintf(stderr, "qmatmul_rows: --reps must be at least 1\n"); return 2; }
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512vnni")) {
    fprintf(stderr, "qmatmul_rows: this CPU has no AVX512-VNNI (the packed x86 kernels need it)\n");
    return 1;
  }
  unsigned seed = 7;
  void *gate[kLayers], *up[kLayers], *down[kLayers];
  for (int l = 0; l < kLayers; ++l) {
    gate[l] = packed_q4_1(kD, kF, &seed);
    up[l] = packed_q4_1(kD, kF, &seed);
    down[l] = packed_q4_1(kF, kD, &seed);
    if (!gate[l] || !up[l] || !down[l]) { fprintf(stderr, "qmatmul_rows: out of memory\n"); return 1; }
  }
  float* x = aligned_alloc(64, sizeof(float) * kMaxR * kF);
  float* h = aligned_alloc(64, sizeof(float) * kMaxR * kF);
  float* y = aligned_alloc(64, sizeof(float) * kMaxR * kF);
  if (!x || !h || !y) { fprintf(stderr, "qmatmul_rows: out of memory\n"); return 1; }
  for (int i = 0; i < kMaxR * kF; ++i) x[i] = (float)(rand_r(&seed) % 2001) / 1000.0f - 1.0f;

  /* Every repetition times all R, both placements and each prefetch kind back to back (the
   * machine's speed drifts over seconds); each figure is the best of its repetitions, with
   * the median beside it (the best shows what the kernel can do, the median how far the
   * drift moves it). Index: [kind][l2][row count]. */
  enum { kCells = 2 * 2 * kNRows };
  double ms[kCells];
  double* all = malloc(sizeof(double) * kCells * (size_t)reps);
  if (!all) { fprintf(stderr, "qmatmul_rows: out of memory\n"); return 1; }
  for (int c = 0; c < kCells; ++c) ms[c] = 1e30;
  for (int r = 0; r < reps; ++r)
    for (int k = 0; k < nkinds; ++k)
      for (int i = 0; i < kNRows; ++i)
        for (int l2 = 0; l2 < 2; ++l2) {
          kiln_weight_prefetch = kinds[k];
          const int R = kRows[i], c = (k * 2 + l2) * kNRows + i;
          const double t = now();
          for (int l = 0; l < kLayers; ++l) {
            const int w = l2 ? 0 : l;
            kiln_matmul_swiglu_q4_1x16_q8_vnni(x, gate[w], up[w], h, R, kD, kF, 0, 1);
            kiln_matmul_q4_1x16_q8_vnni(h, down[w], y, R, kF, kD, 0, 1);
          }
          const double e = 1e3 * (now() - t);
          if (e < ms[c]) ms[c] = e;
          all[(size_t)c * reps + r] = e;
        }
  double med[kCells];
  for (int c = 0; c < nkinds * 2 * kNRows; ++c) {
    double* v = all + (size_t)c * reps;
    qsort(v, (size_t)reps, sizeof(double), cmp_double);
    med[c] = v[reps / 2];
  }
  const double macs = (double)kLayers * 3 * kD * kF;
  const double issue = vpdpbusd_per_ns();
  printf("{\"what\": \"SmolLM2-135M FFN (packed Q4_1, 30 layers), one thread, R rows per pass\", "
         "\"reps\": %d, \"vpdpbusd_zmm_per_ns\": %.2f, \"vpdpbusd_peak_gmac_s\": %.0f, \"by_weight_prefetch\": [",
         reps, issue, 64.0 * issue);
  for (int k = 0; k < nkinds; ++k) {
    const double *st = ms + (k * 2) * kNRows, *l2 = ms + (k * 2 + 1) * kNRows;
    const double *st_med = med + (k * 2) * kNRows, *l2_med = med + (k * 2 + 1) * kNRows;
    printf("%s{\"weight_prefetch\": \"%s\", \"rows\": [", k ? ", " : "", kKindNames[kinds[k]]);
    for (int i = 0; i < kNRows; ++i)
      printf("%s{\"rows\": %d, \"stream_ms\": %.3f, \"stream_vs_1_row\": %.3f, \"l2_ms\": %.3f, "
             "\"l2_vs_1_row\": %.3f, \"l2_gmac_s\": %.1f, \"stream_median_ms\": %.3f, \"l2_median_ms\": %.3f}",
             i ? ", " : "", kRows[i], st[i], st[i] / st[0], l2[i], l2[i] / l2[0], kRows[i] * macs / (l2[i] * 1e6),
             st_med[i], l2_med[i]);
    printf("]}");
  }
  printf("]}\n");
  free(all);
  return 0;
}

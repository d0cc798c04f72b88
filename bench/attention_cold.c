/* bench/attention_cold.c — decode attention with the KV cache cold, as a decode step finds it.
 *
 * A decode step streams every weight (~90 MB for SmolLM2-135M) through the last-level
 * cache, so attention finds its stream's cache rows in DRAM, not in L3. This times the
 * causal f16 attention kernel for SmolLM2-135M's shape (9 heads, 3 kv heads, head size 64,
 * 30 layers, each with its own cache) for T = 1 and 3 rows (streams), each at `--rows`
 * cached positions, on one thread, twice:
 *   * "cold": a 128 MiB buffer is read before each timed pass (the caches are evicted);
 *   * "hot":  the same pass again at once, twice, the better one (the rows in L2/L3).
 * and for two builds of the kernel: as kiln compiles it (software prefetch of cache rows,
 * attention.c's KILN_ATT_PREFETCH) and with the prefetch compiled out. Best of --reps.
 * Prints one JSON object.
 *
 * usage: attention_cold [--rows N] [--reps N] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/kernels/kernels.h"

/* The same kernel with the prefetch compiled out (CMakeLists.txt renames it). */
void kiln_attention_f16_noprefetch(const float* restrict q, const void* restrict kc,
                                   const void* restrict vc, const int32_t* restrict pos,
                                   const int32_t* restrict streams, float* restrict out,
                                   float* restrict scratch, int64_t T, int64_t C, int64_t H,
                                   int64_t KVH, int64_t hd, int64_t stream_stride, int32_t tid,
                                   int32_t nth);

enum { kLayers = 30, kH = 9, kKVH = 3, kHd = 64, kF = kKVH * kHd, kC = 256, kS = 3 };
typedef void (*attention_fn)(const float*, const void*, const void*, const int32_t*,
                             const int32_t*, float*, float*, int64_t, int64_t, int64_t,
                             int64_t, int64_t, int64_t, int32_t, int32_t);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static volatile float g_sink;

int main(int argc, char** argv) {
  int rows = 72, reps = 40;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--rows")) rows = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
  }
  if (rows < 1 || rows > kC || reps < 1) {
    fprintf(stderr, "attention_cold: --rows must be 1..%d and --reps at least 1\n", kC);
    return 2;
  }
  const size_t cache = (size_t)kLayers * kS * kC * kF, flush_n = (size_t)32 << 20; /* floats */
  _Float16* kc = aligned_alloc(64, cache * sizeof(_Float16));
  _Float16* vc = aligned_alloc(64, cache * sizeof(_Float16));
  float* flush = aligned_alloc(64, flush_n * sizeof(float));
  float* scratch = aligned_alloc(64, sizeof(float) * KILN_ATT_G * kC);
  float q[kS * kH * kHd], out[kS * kH * kHd];
  if (!kc || !vc || !flush || !scratch) { fprintf(stderr, "attention_cold: out of memory\n"); return 1; }
  unsigned seed = 7;
  for (size_t i = 0; i < cache; ++i) {
    kc[i] = (_Float16)((float)(rand_r(&seed) % 2001) / 1000.0f - 1.0f);
    vc[i] = (_Float16)((float)(rand_r(&seed) % 2001) / 1000.0f - 1.0f);
  }
  for (size_t i = 0; i < flush_n; ++i) flush[i] = 1.0f;
  for (int i = 0; i < kS * kH * kHd; ++i) q[i] = (float)(rand_r(&seed) % 2001) / 1000.0f - 1.0f;
  const int32_t pos[kS] = {rows - 1, rows - 1, rows - 1}, streams[kS] = {0, 1, 2};
  const attention_fn fn[2] = {kiln_attention_f16, kiln_attention_f16_noprefetch};

  /* us[variant][T == 3][hot]; every repetition runs all of them back to back. */
  double us[2][2][2];
  for (int v = 0; v < 2; ++v)
    for (int t = 0; t < 2; ++t) us[v][t][0] = us[v][t][1] = 1e30;
  for (int r = 0; r < reps; ++r)
    for (int v = 0; v < 2; ++v)
      for (int t = 0; t < 2; ++t) {
        float acc = 0.0f;
        for (size_t i = 0; i < flush_n; i += 16) acc += flush[i];
        g_sink += acc;
        for (int pass = 0; pass < 3; ++pass) { /* 0: cold; 1, 2: hot (the best) */
          const int hot = pass > 0;
          const double t0 = now();
          for (int l = 0; l < kLayers; ++l)
            fn[v](q, kc + (size_t)l * kS * kC * kF, vc + (size_t)l * kS * kC * kF, pos, streams, out,
                  scratch, t ? 3 : 1, kC, kH, kKVH, kHd, (int64_t)kC * kF, 0, 1);
          const double e = 1e6 * (now() - t0);
          if (e < us[v][t][hot]) us[v][t][hot] = e;
        }
      }
  printf("{\"what\": \"causal f16 attention, SmolLM2-135M shape (9 heads, 3 kv heads, hd 64), 30 "
         "layers, one thread, us per step; cold = caches evicted first\", \"cached_rows\": %d, "
         "\"reps\": %d, \"rows\": [",
         rows, reps);
  for (int t = 0; t < 2; ++t)
    printf("%s{\"streams\": %d, \"cold_us\": %.1f, \"cold_us_without_prefetch\": %.1f, "
           "\"cold_speedup\": %.2f, \"hot_us\": %.1f, \"hot_us_without_prefetch\": %.1f}",
           t ? ", " : "", t ? 3 : 1, us[0][t][0], us[1][t][0], us[1][t][0] / us[0][t][0],
           us[0][t][1], us[1][t][1]);
  printf("]}\n");
  return 0;
}

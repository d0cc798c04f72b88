/* bench/bandwidth.c — read bandwidth of this machine's memory: the roofline for decode.
 *
 * Decode of a small model reads every weight once per token, so its best possible rate is
 * (read bandwidth) / (bytes per token). This measures that bandwidth the way decode reads:
 * sequential loads over a buffer much larger than the last-level cache, summed with wide
 * vector adds (GCC vector extensions: AVX2/AVX-512 on x86, NEON on AArch64 with -O3),
 * split into contiguous slices over T threads (1 and 2 by default), best of N passes
 * (the noise on a shared machine only ever slows a pass down). Prints one JSON object.
 *
 * usage: bandwidth [--mib M] [--reps N] [--threads T ...]
 *   --mib      buffer size in MiB (default 1024: 32x a 32 MiB L3)
 *   --reps     timed passes per thread count (default 10), after one warm-up pass
 *   --threads  thread counts to measure (default 1 2)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef uint64_t v4u64 __attribute__((vector_size(32)));

static double clock_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }

/* Sum of a slice, 8 independent 32-byte accumulators (256 bytes per iteration) so the
 * loop is bound by loads, not by the add latency. */
static uint64_t sum_slice(const unsigned char* p, size_t bytes) {
  v4u64 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
  for (size_t i = 0; i + 256 <= bytes; i += 256) {
    const v4u64* v = (const v4u64*)(p + i);
    a0 += v[0]; a1 += v[1]; a2 += v[2]; a3 += v[3];
    a4 += v[4]; a5 += v[5]; a6 += v[6]; a7 += v[7];
  }
  v4u64 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
  return s[0] + s[1] + s[2] + s[3];
}

typedef struct {
  const unsigned char* p;
  size_t bytes;
  pthread_barrier_t* start;
  double t0, t1, cpu;  /* wall start/end; CPU time the thread actually ran */
  uint64_t sum;
} job;

static void* worker(void* arg) {
  job* j = (job*)arg;
  pthread_barrier_wait(j->start);
  j->t0 = now();
  double c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
  j->sum = sum_slice(j->p, j->bytes);
  j->cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - c0;
  j->t1 = now();
  return NULL;
}

/* One pass over the whole buffer with t threads; returns bytes/s (first start to last end).
 * *share: the threads' CPU time over t x wall time — below ~0.9 the machine was busy and
 * the pass was slowed by waiting for a core, not by memory. *cpu_rate: bytes/s over the
 * slowest thread's CPU time (what the memory gave while the threads ran; an upper
 * estimate when the threads did not all run at once). */
static double pass(const unsigned char* buf, size_t bytes, int t, uint64_t* sink, double* share,
                   double* cpu_rate) {
  pthread_t th[64];
  job jobs[64];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)t);
  size_t slice = bytes / (size_t)t / 256 * 256;
  for (int i = 0; i < t; ++i) {
    jobs[i] = (job){buf + (size_t)i * slice, slice, &start, 0, 0, 0, 0};
    if (i > 0) pthread_create(&th[i], NULL, worker, &jobs[i]);
  }
  worker(&jobs[0]);
  for (int i = 1; i < t; ++i) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&start);
  double t0 = jobs[0].t0, t1 = jobs[0].t1, cpu = 0, cpu_max = 0;
  for (int i = 0; i < t; ++i) {
    if (jobs[i].cpu > cpu_max) cpu_max = jobs[i].cpu;
    if (jobs[i].t0 < t0) t0 = jobs[i].t0;
    if (jobs[i].t1 > t1) t1 = jobs[i].t1;
    cpu += jobs[i].cpu;
    *sink += jobs[i].sum;
  }
  *share = cpu / ((t1 - t0) * t);
  *cpu_rate = (double)(slice * (size_t)t) / cpu_max;
  return (double)(slice * (size_t)t) / (t1 - t0);
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  size_t mib = 1024;
  int reps = 10, counts[16], n_counts = 0;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = (size_t)atol(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads")) {
      while (i + 1 < argc && argv[i + 1][0] != '-' && n_counts < 16) counts[n_counts++] = atoi(argv[++i]);
    } else {
      fprintf(stderr, "usage: bandwidth [--mib M] [--reps N] [--threads T ...]\n");
      return 2;
    }
  }
  if (n_counts == 0) { counts[0] = 1; counts[1] = 2; n_counts = 2; }
  if (mib < 1 || reps < 1) { fprintf(stderr, "bandwidth: --mib and --reps must be >= 1\n"); return 2; }
  for (int i = 0; i < n_counts; ++i)
    if (counts[i] < 1 || counts[i] > 64) { fprintf(stderr, "bandwidth: threads must be 1..64\n"); return 2; }
  size_t bytes = mib << 20;
  unsigned char* buf = NULL;
  if (posix_memalign((void**)&buf, 2u << 20, bytes) != 0) {
    fprintf(stderr, "bandwidth: cannot allocate %zu MiB\n", mib);
    return 1;
  }
  /* Touch every page with non-zero data (no zero-page sharing, no lazy faults timed). */
  for (size_t i = 0; i < bytes; i += 64) memset(buf + i, (int)(i >> 6) & 0xff, 64);

  uint64_t sink = 0;
  long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
  printf("{\"what\": \"sequential read bandwidth, vectorised sum over a buffer >> LLC, best and median of the "
         "passes; GB/s = 1e9 bytes/s\", \"buffer_bytes\": %zu, \"llc_bytes\": %ld, \"reps\": %d, \"results\": [",
         bytes, llc, reps);
  for (int c = 0; c < n_counts; ++c) {
    double r[1024], share, best_share = 0, best = 0, cpu_rate, best_cpu = 0;
    int n = reps < 1024 ? reps : 1024;
    pass(buf, bytes, counts[c], &sink, &share, &cpu_rate); /* warm-up */
    for (int i = 0; i < n; ++i) {
      r[i] = pass(buf, bytes, counts[c], &sink, &share, &cpu_rate);
      if (cpu_rate > best_cpu) best_cpu = cpu_rate;
      if (r[i] > best) { best = r[i]; best_share = share; }
    }
    qsort(r, (size_t)n, sizeof r[0], cmp_double);
    fprintf(stderr, "[bandwidth] %d thread(s): best %.2f GB/s (CPU share %.2f%s), median %.2f GB/s\n", counts[c],
            best / 1e9, best_share, best_share < 0.9 ? ": BUSY MACHINE, figure too low" : "", r[n / 2] / 1e9);
    printf("%s{\"threads\": %d, \"best_gb_s\": %.3f, \"median_gb_s\": %.3f, \"best_pass_cpu_share\": %.3f, "
           "\"best_cpu_time_gb_s\": %.3f}",
           c ? ", " : "", counts[c], best / 1e9, r[n / 2] / 1e9, best_share, best_cpu / 1e9);
  }
  printf("], \"checksum\": %llu}\n", (unsigned long long)(sink & 0xffff));
  free(buf);
  return 0;
}

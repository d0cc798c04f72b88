/* tests/cross/qmatmul_check_util.h — what the qemu kernel checks share: a seeded
 * xorshift, CHECK (counts failures, keeps going), and random GGUF-row weights with their
 * float values. Included after qmatmul.c (needs its block types). */
#ifndef KILN_TESTS_CROSS_QMATMUL_CHECK_UTIL_H
#define KILN_TESTS_CROSS_QMATMUL_CHECK_UTIL_H

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}
static float frnd(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

static int failures = 0;
#define CHECK(c, ...)                                     \
  do {                                                    \
    if (!(c)) {                                           \
      ++failures;                                         \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                       \
      fprintf(stderr, "\n");                              \
    }                                                     \
  } while (0)

/* Random blocks of type wt for N rows of K, and their values as floats. */
static void* make_weights(enum kiln_wt wt, int64_t N, int64_t K, float* wf) {
  const int64_t nb = K / 32, rb = kiln_row_bytes(wt, K);
  uint8_t* w = malloc((size_t)(N * rb));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* blk = w + n * rb + b * (rb / nb);
      float* v = wf + n * K + b * 32;
      const _Float16 d = (_Float16)((0.5f + frnd() * 0.4f) / 64.0f);
      if (wt == KILN_WT_q8_0) {
        kiln_block_q8_0* q = (kiln_block_q8_0*)blk;
        q->d = d;
        for (int j = 0; j < 32; ++j) q->qs[j] = (int8_t)((int)(rnd() % 255) - 127);
        for (int j = 0; j < 32; ++j) v[j] = (float)q->d * q->qs[j];
      } else {
        uint8_t* qs = wt == KILN_WT_q4_0 ? ((kiln_block_q4_0*)blk)->qs : ((kiln_block_q4_1*)blk)->qs;
        for (int j = 0; j < 16; ++j) qs[j] = (uint8_t)rnd();
        float dw = (float)d, m = -8.0f * dw;
        if (wt == KILN_WT_q4_0) {
          ((kiln_block_q4_0*)blk)->d = d;
        } else {
          kiln_block_q4_1* q = (kiln_block_q4_1*)blk;
          q->d = d;
          q->m = (_Float16)(-8.0f * (float)d + frnd() * 0.01f);
          m = (float)q->m;
        }
        for (int j = 0; j < 32; ++j) {
          const int u = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
          v[j] = u * dw + m;
        }
      }
    }
  return w;
}

#endif

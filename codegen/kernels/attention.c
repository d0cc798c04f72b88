/* codegen/kernels/attention.c — the KV cache write and causal grouped-query attention.
 *
 * A cache holds S streams of C rows of F = KVH * hd elements (f32, or f16: each kernel
 * has an _f16 twin); row p of stream s starts at element s * stream_stride + p * F
 * (stream_stride = C * F for the interpreter's [S,C,F] layout). streams may be NULL for a
 * single-stream cache (every row is stream 0).
 *
 * Attention splits the T * H (row, head) pairs over threads in contiguous ranges. For a
 * pair, with p = pos[t]:
 *
 *   s[j] = (q . k[j]) / sqrt(hd)    j = 0..p     scores in the thread's scratch
 *   e[j] = exp(s[j] - max s)                     kiln_expf16, eight partial sums
 *   out  = (sum_j e[j] v[j]) / sum_j e[j]        four rows of v at a time
 *
 * The consecutive heads of a range that share a kv head (grouped-query attention: 3 query
 * heads per kv head in SmolLM2, up to 8 in larger LLaMAs) run as one pass, up to
 * KILN_ATT_G at a time, so each key and value row is loaded once for all of them.
 *
 * All sums are float in fixed orders, so a pair's result does not depend on the thread
 * count, on the heads it shares a pass with, or on the other rows of the step.
 */
#include "common.h"

/* Cache element types. An f16 cache holds half the bytes (attention reads every cached
 * row of its stream each step): x is rounded to nearest-even half when written, and
 * widened back to float when read, so every sum below is the same float code on the
 * widened values. */
enum kiln_kv { KILN_KV_f32, KILN_KV_f16 };
typedef _Float16 kiln_h16u __attribute__((vector_size(32), aligned(2)));
typedef _Float16 kiln_h8 __attribute__((vector_size(16)));
typedef _Float16 kiln_h16 __attribute__((vector_size(32)));

/* Elements i.. of a cache c of type t, as floats. */
KILN_INLINE kiln_f16x kv16(enum kiln_kv t, const void* c, int64_t i) {
  if (t == KILN_KV_f16) return __builtin_convertvector(*(const kiln_h16u*)((const _Float16*)c + i), kiln_f16x);
  return kiln_load16((const float*)c + i);
}
KILN_INLINE kiln_f8 kv8(enum kiln_kv t, const void* c, int64_t i) {
  if (t == KILN_KV_f16) return __builtin_convertvector(*(const kiln_h8u*)((const _Float16*)c + i), kiln_f8);
  return kiln_load8((const float*)c + i);
}
KILN_INLINE float kv1(enum kiln_kv t, const void* c, int64_t i) {
  return t == KILN_KV_f16 ? (float)((const _Float16*)c)[i] : ((const float*)c)[i];
}
/* c + i elements of type t. */
KILN_INLINE const void* kv_at(enum kiln_kv t, const void* c, int64_t i) {
  return t == KILN_KV_f16 ? (const void*)((const _Float16*)c + i) : (const void*)((const float*)c + i);
}
/* Software prefetch of cache rows, KILN_ATT_PREFETCH rows ahead of the ones being read.
 * Why: a decode step streams ~90 MB of weights through a 32 MB L3, so every step finds
 * the KV cache cold in DRAM, and a pass reads one kv head's slice of each row (128 bytes
 * of every 384 for SmolLM2: two lines, then a gap) too briefly for the hardware
 * prefetchers to ramp up. Measured on this machine, 30 layers of 3 streams at 72 rows, one
 * thread, caches flushed first: 780 us per step without, 530 with every row of a pass
 * prefetched at its start, 317 with rows prefetched 16 ahead in the key loop (values with
 * the keys) and the next pass's first keys during this one; bench/attention_cold's
 * recorded run: 410 -> 200 us (one stream 80 -> 61). With the rows in L3 instead of DRAM
 * it gained 0-50% across runs (they sit at L3 latency, too). In the engine (perf, 3
 * streams decoding): attention's samples per 1000 steps 2292 -> 1482, steps in 20 s
 * +6.5%; one stream 831 -> 558, +2%. Prefetches never fault and change no result. */
#ifndef KILN_ATT_PREFETCH /* 0: none (bench/attention_cold builds that variant too) */
#define KILN_ATT_PREFETCH 16
#endif
/* Every cache line of the hd elements at c + i (from the line holding the first byte to
 * the one holding the last: a slice need not start on a line). */
KILN_INLINE void kv_prefetch_row(enum kiln_kv kt, const void* c, int64_t i, int64_t hd) {
  if (KILN_ATT_PREFETCH == 0) return;
  const char* r = (const char*)kv_at(kt, c, i);
  const uintptr_t first = (uintptr_t)r & ~(uintptr_t)63;
  const uintptr_t last = (uintptr_t)(r + hd * (kt == KILN_KV_f16 ? 2 : 4) - 1);
  __builtin_prefetch(r); /* the first line; the others from their starts, all inside the slice */
  for (uintptr_t l = first + 64; l <= last; l += 64) __builtin_prefetch(r + (l - (uintptr_t)r));
}

/* dst[0..F) <- src[0..F), rounded to the cache type. */
KILN_INLINE void kv_store_row(enum kiln_kv t, void* dst, const float* restrict src, int64_t F) {
  int64_t k = 0;
  if (t == KILN_KV_f16) {
    _Float16* d = (_Float16*)dst;
    for (; k + 16 <= F; k += 16) *(kiln_h16u*)(d + k) = __builtin_convertvector(kiln_load16(src + k), kiln_h16);
    for (; k + 8 <= F; k += 8) *(kiln_h8u*)(d + k) = __builtin_convertvector(kiln_load8(src + k), kiln_h8);
    for (; k < F; ++k) d[k] = (_Float16)src[k];
    return;
  }
  float* d = (float*)dst;
  for (; k + 8 <= F; k += 8) kiln_store8(d + k, kiln_load8(src + k));
  for (; k < F; ++k) d[k] = src[k];
}

/* Row t of x into its stream's cache row: pos[t] for a causal step; for a tree of N nodes
 * (depth != NULL, ir/tree.h) node j = t % N goes to pos[t] - depth[j] + j. */
KILN_INLINE void kv_write(enum kiln_kv kt, void* restrict cache, const float* restrict x,
                          const int32_t* restrict pos, const int32_t* restrict streams, int64_t T,
                          int64_t F, int64_t stream_stride, int64_t N, const int32_t* restrict depth,
                          int32_t tid, int32_t nth) {
  int64_t t0, t1;
  kiln_split(T, 1, tid, nth, &t0, &t1);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t row = depth ? pos[t] - depth[t % N] + t % N : pos[t];
    kv_store_row(kt, (void*)kv_at(kt, cache, (streams ? streams[t] : 0) * stream_stride + row * F), x + t * F, F);
  }
}
void kiln_kv_write(float* restrict cache, const float* restrict x, const int32_t* restrict pos,
                   const int32_t* restrict streams, int64_t T, int64_t F, int64_t stream_stride,
                   int32_t tid, int32_t nth) {
  kv_write(KILN_KV_f32, cache, x, pos, streams, T, F, stream_stride, 1, 0, tid, nth);
}
void kiln_kv_write_f16(_Float16* restrict cache, const float* restrict x, const int32_t* restrict pos,
                       const int32_t* restrict streams, int64_t T, int64_t F, int64_t stream_stride,
                       int32_t tid, int32_t nth) {
  kv_write(KILN_KV_f16, cache, x, pos, streams, T, F, stream_stride, 1, 0, tid, nth);
}

/* Accumulators are 16 lanes (kiln_f16x): lanes 0-7 and 8-15 of a score accumulator are
 * the two 8-lane accumulators of dot() below, so the wider form computes dot()'s bits with
 * half the instructions where the target has them. */

/* q . k over hd floats: two 8-lane accumulators, then a fixed-order fold. */
KILN_INLINE float dot(enum kiln_kv kt, const float* restrict q, const void* restrict k, int64_t hd) {
  kiln_f8 a0 = kiln_splat8(0.0f), a1 = kiln_splat8(0.0f);
  int64_t d = 0;
  for (; d + 16 <= hd; d += 16) {
    a0 += kiln_load8(q + d) * kv8(kt, k, d);
    a1 += kiln_load8(q + d + 8) * kv8(kt, k, d + 8);
  }
  if (d + 8 <= hd) {
    a0 += kiln_load8(q + d) * kv8(kt, k, d);
    d += 8;
  }
  float s = kiln_hsum8(a0 + a1);
  for (; d < hd; ++d) s += q[d] * kv1(kt, k, d);
  return s;
}

/* The G heads of one kv group that a pass handles together (their query rows share every
 * key and value row, so each is loaded once for all of them): at most KILN_ATT_G. */
typedef struct {
  const float* q[KILN_ATT_G]; /* query of each head */
  float* s[KILN_ATT_G];       /* its scores, then weights: C floats of scratch */
  float* o[KILN_ATT_G];       /* its output */
  float mx[KILN_ATT_G], sum[KILN_ATT_G];
} heads;

/* s[g][j] = dot(q[g], k + j * F, hd) * scale for j in [0, n), and the running max. Four
 * keys at a time when hd is a multiple of 16: each key's accumulator is dot()'s two, and
 * the four horizontal sums come out of one transposed reduction that adds the lanes in
 * kiln_hsum8's order ((l + l+4), then (0 + 2) + (1 + 3)), so every score is dot()'s bits
 * (the tree kernel mixes both forms and must match the causal one). Why: per key, dot()
 * spends as many instructions on its horizontal sum as on the products (hd = 64). */
KILN_INLINE void scores(enum kiln_kv kt, heads* hs, int G, const void* restrict k, const void* restrict vrows,
                        int64_t F, int64_t hd, int64_t n, float scale) {
  int64_t j = 0;
  kiln_f4 mx4[KILN_ATT_G]; /* running maxima per lane (max is exact: any order, same value) */
  for (int g = 0; g < G; ++g) mx4[g] = (kiln_f4){hs->mx[g], hs->mx[g], hs->mx[g], hs->mx[g]};
  if (hd % 16 == 0)
    for (; j + 4 <= n; j += 4) {
      kiln_f16x a[KILN_ATT_G][4];
      for (int r = 0; r < 4; ++r) { /* the keys ahead, and these keys' values for values() */
        kv_prefetch_row(kt, k, kiln_min(j + KILN_ATT_PREFETCH + r, n - 1) * F, hd);
        kv_prefetch_row(kt, vrows, (j + r) * F, hd);
      }
      for (int g = 0; g < G; ++g)
        for (int r = 0; r < 4; ++r) a[g][r] = kiln_splat16(0.0f);
      for (int64_t d = 0; d < hd; d += 16) {
        kiln_f16x kr[4];
        for (int r = 0; r < 4; ++r) kr[r] = kv16(kt, k, (j + r) * F + d);
        for (int g = 0; g < G; ++g) {
          const kiln_f16x qd = kiln_load16(hs->q[g] + d);
          for (int r = 0; r < 4; ++r) a[g][r] += qd * kr[r];
        }
      }
      for (int g = 0; g < G; ++g) {
        kiln_f8 v[4];
        for (int r = 0; r < 4; ++r)
          v[r] = __builtin_shufflevector(a[g][r], a[g][r], 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(a[g][r], a[g][r], 8, 9, 10, 11, 12, 13, 14, 15);
        /* t01 = [v0 (l + l+4) for l < 4, v1 likewise], t23 for v2, v3. */
        const kiln_f8 t01 = __builtin_shufflevector(v[0], v[1], 0, 1, 2, 3, 8, 9, 10, 11) +
                            __builtin_shufflevector(v[0], v[1], 4, 5, 6, 7, 12, 13, 14, 15);
        const kiln_f8 t23 = __builtin_shufflevector(v[2], v[3], 0, 1, 2, 3, 8, 9, 10, 11) +
                            __builtin_shufflevector(v[2], v[3], 4, 5, 6, 7, 12, 13, 14, 15);
        /* w = [v0 (0+2), v0 (1+3), v2 .., v2 .., v1 .., v1 .., v3 .., v3 ..] */
        const kiln_f8 w = __builtin_shufflevector(t01, t23, 0, 1, 8, 9, 4, 5, 12, 13) +
                          __builtin_shufflevector(t01, t23, 2, 3, 10, 11, 6, 7, 14, 15);
        const kiln_f4 sum = __builtin_shufflevector(w, w, 0, 4, 2, 6) + __builtin_shufflevector(w, w, 1, 5, 3, 7);
        const kiln_f4 sc = sum * scale;
        *(kiln_f4u*)(hs->s[g] + j) = sc;
        mx4[g] = kiln_select4(sc > mx4[g], sc, mx4[g]);
      }
    }
  for (int g = 0; g < G; ++g)
    for (int r = 0; r < 4; ++r) hs->mx[g] = mx4[g][r] > hs->mx[g] ? mx4[g][r] : hs->mx[g];
  for (; j < n; ++j)
    for (int g = 0; g < G; ++g) {
      hs->s[g][j] = dot(kt, hs->q[g], kv_at(kt, k, j * F), hd) * scale;
      hs->mx[g] = hs->s[g][j] > hs->mx[g] ? hs->s[g][j] : hs->mx[g];
    }
}

/* Weights e^(s - max) in place, summed in eight lanes: lane l adds e[j + l] for j = 0, 8,
 * 16, ... in order, sixteen exps at a time (kiln_expf16, kiln_expf's bits), the rest one
 * at a time into lane 0; then a fixed fold. */
KILN_INLINE void weights(heads* hs, int G, int64_t n) {
  for (int g = 0; g < G; ++g) {
    float* s = hs->s[g];
    const float mx = hs->mx[g];
    kiln_f8 acc = kiln_splat8(0.0f);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
      const kiln_f16x e = kiln_expf16(kiln_load16(s + j) - mx);
      kiln_store16(s + j, e);
      acc = (acc + kiln_lo8(e)) + kiln_hi8(e);
    }
    float part[8];
    kiln_store8(part, acc);
    for (; j + 8 <= n; j += 8)
      for (int l = 0; l < 8; ++l) part[l] += (s[j + l] = kiln_expf(s[j + l] - mx));
    for (; j < n; ++j) part[0] += (s[j] = kiln_expf(s[j] - mx));
    hs->sum[g] = ((part[0] + part[4]) + (part[2] + part[6])) + ((part[1] + part[5]) + (part[3] + part[7]));
  }
}

/* o[g] = (sum_m e[g][m] v(m)) / sum[g] over the attended rows m = 0..n-1, row m being
 * vb + ROW(m) * F: the first base_row rows of the cache, then the tree rows tree[]. Per
 * output element, in every variant: the first four rows' (e0 v0 + e1 v1) + (e2 v2 + e3 v3)
 * is stored, each next four's is added, the rest one at a time, then divided; so a
 * result does not depend on how rows are grouped in memory. With hd a multiple of 16 the
 * rows are swept once per 64 output elements (all of hd = 64): every head's outputs stay
 * in registers over all rows, and each value row is loaded once, whole, for the G heads
 * (sweeping once per 16 elements read each row's cache lines four times: 1.04-1.10x
 * slower with three streams, whose caches are in L3). */
#define KILN_ATT_CW 4 /* 16-column chunks of the output per sweep (hd 64 in one) */
#define KILN_ROW(m) ((m) < base_row ? (m) : tree[(m) - base_row])
KILN_INLINE void values(enum kiln_kv kt, heads* hs, int G, const void* restrict vb, int64_t F, int64_t hd,
                        int64_t n, int64_t base_row, const int64_t* restrict tree) {
  if (hd % 16 == 0) {
    /* Up to KILN_ATT_CW chunks of 16 elements per sweep: G * cw <= 16 accumulators. */
    for (int64_t c0 = 0; c0 < hd; c0 += 16 * KILN_ATT_CW) {
      const int cw = (int)((hd - c0) / 16 < KILN_ATT_CW ? (hd - c0) / 16 : KILN_ATT_CW);
      kiln_f16x acc[KILN_ATT_G][KILN_ATT_CW];
      int64_t m;
#define KILN_V4(r0, r1, r2, r3, FIRST)                                                              \
  for (int c = 0; c < cw; ++c) {                                                                 \
    const int64_t cc = c0 + 16 * c;                                                               \
    const kiln_f16x v0 = kv16(kt, vb, (r0) * F + cc), v1 = kv16(kt, vb, (r1) * F + cc);           \
    const kiln_f16x v2 = kv16(kt, vb, (r2) * F + cc), v3 = kv16(kt, vb, (r3) * F + cc);           \
    for (int g = 0; g < G; ++g) {                                                                 \
      const float* e = hs->s[g] + m;                                                              \
      const kiln_f16x t = (kiln_splat16(e[0]) * v0 + kiln_splat16(e[1]) * v1) + (kiln_splat16(e[2]) * v2 + kiln_splat16(e[3]) * v3); \
      acc[g][c] = FIRST ? t : acc[g][c] + t;                                                      \
    }                                                                                             \
  }
      m = 0;
      if (n >= 4) {
        KILN_V4(KILN_ROW(0), KILN_ROW(1), KILN_ROW(2), KILN_ROW(3), 1)
        m = 4;
      } else {
        for (int c = 0; c < cw; ++c) {
          const kiln_f16x v0 = kv16(kt, vb, KILN_ROW(0) * F + c0 + 16 * c);
          for (int g = 0; g < G; ++g) acc[g][c] = kiln_splat16(hs->s[g][0]) * v0;
        }
        m = 1;
      }
      for (; m + 4 <= base_row; m += 4) KILN_V4(m, m + 1, m + 2, m + 3, 0)
      for (; m + 4 <= n; m += 4) KILN_V4(KILN_ROW(m), KILN_ROW(m + 1), KILN_ROW(m + 2), KILN_ROW(m + 3), 0)
#undef KILN_V4
      for (; m < n; ++m)
        for (int c = 0; c < cw; ++c) {
          const kiln_f16x v = kv16(kt, vb, KILN_ROW(m) * F + c0 + 16 * c);
          for (int g = 0; g < G; ++g) acc[g][c] += kiln_splat16(hs->s[g][m]) * v;
        }
      for (int c = 0; c < cw; ++c)
        for (int g = 0; g < G; ++g) kiln_store16(hs->o[g] + c0 + 16 * c, acc[g][c] / kiln_splat16(hs->sum[g]));
    }
    return;
  }
  for (int g = 0; g < G; ++g) {
    const float* e = hs->s[g];
    float* o = hs->o[g];
    int64_t m;
    if (n >= 4) {
      const int64_t v0 = KILN_ROW(0) * F, v1 = KILN_ROW(1) * F, v2 = KILN_ROW(2) * F, v3 = KILN_ROW(3) * F;
      for (int64_t d = 0; d < hd; ++d)
        o[d] = (e[0] * kv1(kt, vb, v0 + d) + e[1] * kv1(kt, vb, v1 + d)) + (e[2] * kv1(kt, vb, v2 + d) + e[3] * kv1(kt, vb, v3 + d));
      m = 4;
    } else {
      const int64_t v0 = KILN_ROW(0) * F;
      for (int64_t d = 0; d < hd; ++d) o[d] = e[0] * kv1(kt, vb, v0 + d);
      m = 1;
    }
    for (; m + 4 <= n; m += 4) {
      const int64_t v0 = KILN_ROW(m) * F, v1 = KILN_ROW(m + 1) * F, v2 = KILN_ROW(m + 2) * F, v3 = KILN_ROW(m + 3) * F;
      for (int64_t d = 0; d < hd; ++d) {
        const float t = (e[m] * kv1(kt, vb, v0 + d) + e[m + 1] * kv1(kt, vb, v1 + d)) +
                        (e[m + 2] * kv1(kt, vb, v2 + d) + e[m + 3] * kv1(kt, vb, v3 + d));
        o[d] = o[d] + t;
      }
    }
    for (; m < n; ++m) {
      const int64_t v = KILN_ROW(m) * F;
      for (int64_t d = 0; d < hd; ++d) o[d] += e[m] * kv1(kt, vb, v + d);
    }
    for (int64_t d = 0; d < hd; ++d) o[d] /= hs->sum[g];
  }
}
#undef KILN_ROW

/* One pass: G heads h0.. of row t, all of kv head kvh, attending the first base_row rows
 * of the cache and then the nt tree rows tree[] (nt = 0 for causal attention). */
KILN_INLINE void attend(enum kiln_kv kt, int G, const float* restrict q, const void* restrict kc, const void* restrict vc,
                        const int32_t* restrict streams, float* restrict out, float* restrict s,
                        int64_t t, int64_t h0, int64_t C, int64_t H, int64_t KVH, int64_t hd,
                        int64_t stream_stride, int64_t base_row, const int64_t* restrict tree, int64_t nt) {
  const int64_t F = KVH * hd, group = H / KVH, n = base_row + nt;
  const float scale = (float)(1.0 / __builtin_sqrt((double)hd));
  const int64_t base = (streams ? streams[t] : 0) * stream_stride + (h0 / group) * hd;
  const void* kb = kv_at(kt, kc, base);
  const void* vb = kv_at(kt, vc, base);
  heads hs;
  for (int g = 0; g < G; ++g) {
    hs.q[g] = q + t * H * hd + (h0 + g) * hd;
    hs.o[g] = out + t * H * hd + (h0 + g) * hd;
    hs.s[g] = s + g * C;
    hs.mx[g] = -__builtin_inff();
  }
  scores(kt, &hs, G, kb, vb, F, hd, base_row, scale);
  for (int64_t m = base_row; m < n; ++m)
    for (int g = 0; g < G; ++g) {
      hs.s[g][m] = dot(kt, hs.q[g], kv_at(kt, kb, tree[m - base_row] * F), hd) * scale;
      hs.mx[g] = hs.s[g][m] > hs.mx[g] ? hs.s[g][m] : hs.mx[g];
    }
  weights(&hs, G, n);
  values(kt, &hs, G, vb, F, hd, n, base_row, tree);
}

/* Threads split the T * H (row, head) pairs in contiguous ranges, as before grouping; a
 * range is walked in passes of the consecutive heads that share a row and a kv head (at
 * most KILN_ATT_G), so a head's result does not depend on the thread count. tree_of
 * gives a row's cache rows before its tree and its tree rows (none for causal rows). */
#define KILN_ATTENTION_PASSES(kt, tree_of)                                                    \
  int64_t i0, i1;                                                                           \
  kiln_split(T * H, 1, tid, nth, &i0, &i1);                                                 \
  const int64_t group = H / KVH;                                                            \
  float* s = scratch + tid * kiln_attention_heads_per_pass(H, KVH) * C;                     \
  for (int64_t i = i0; i < i1;) {                                                           \
    const int64_t t = i / H, h = i % H;                                                     \
    int64_t G = (h / group + 1) * group - h; /* heads left in h's kv group */               \
    G = G < i1 - i ? G : i1 - i;                                                            \
    G = G < KILN_ATT_G ? G : KILN_ATT_G;                                                    \
    int64_t base_row, tree[64], nt = 0; tree[0] = 0;                                        \
    tree_of;                                                                                \
    if (i + G < i1) { /* the next pass's first keys (its kv slice; rows 0.. are in every pass) */ \
      const int64_t tn = (i + G) / H, hn = (i + G) % H;                                     \
      const void* kn = kv_at(kt, kc, (streams ? streams[tn] : 0) * stream_stride + (hn / group) * hd); \
      for (int64_t r = 0; r < KILN_ATT_PREFETCH && r < C; ++r) kv_prefetch_row(kt, kn, r * KVH * hd, hd); \
    }                                                                                       \
    switch (G) {                                                                            \
      case 4: attend(kt, 4, q, kc, vc, streams, out, s, t, h, C, H, KVH, hd, stream_stride, base_row, tree, nt); break; \
      case 3: attend(kt, 3, q, kc, vc, streams, out, s, t, h, C, H, KVH, hd, stream_stride, base_row, tree, nt); break; \
      case 2: attend(kt, 2, q, kc, vc, streams, out, s, t, h, C, H, KVH, hd, stream_stride, base_row, tree, nt); break; \
      default: attend(kt, 1, q, kc, vc, streams, out, s, t, h, C, H, KVH, hd, stream_stride, base_row, tree, nt); break; \
    }                                                                                       \
    i += G;                                                                                 \
  }

#define KILN_ATTENTION_ARGS                                                                \
  const float* restrict q, const void* restrict kc, const void* restrict vc,              \
  const int32_t* restrict pos, const int32_t* restrict streams, float* restrict out,      \
  float* restrict scratch, int64_t T, int64_t C, int64_t H, int64_t KVH, int64_t hd,      \
  int64_t stream_stride
void kiln_attention(KILN_ATTENTION_ARGS, int32_t tid, int32_t nth) {
  KILN_ATTENTION_PASSES(KILN_KV_f32, base_row = (int64_t)pos[t] + 1)
}
void kiln_attention_f16(KILN_ATTENTION_ARGS, int32_t tid, int32_t nth) {
  KILN_ATTENTION_PASSES(KILN_KV_f16, base_row = (int64_t)pos[t] + 1)
}

/* ---- DS2D tree verification (ir/tree.h) ---------------------------------------------
 *
 * Rows come in blocks of N tree nodes per stream; row t is node j = t % N, at position
 * pos[t] = base + depth[j]. Its K/V row is base + j = pos[t] - depth[j] + j, and it
 * attends to cache rows 0..base-1, then to base + i for each ancestor-or-self i of j
 * (bit i of anc[j]), in ascending order. depth and anc are constant arrays the wrapper
 * binds (codegen/lower.cpp), so N, the depths and the masks are compile-time constants.
 *
 * The attended rows, numbered m = 0..n-1 (n = base + depth[j] + 1), are exactly the rows
 * a plain causal step over the root-to-j path attends to, and every sum below runs over
 * m in the same order and grouping as kiln_attention: a node's result is bit for bit
 * what the causal kernel gives for its path. */

void kiln_kv_write_tree(float* restrict cache, const float* restrict x, const int32_t* restrict pos,
                        const int32_t* restrict streams, int64_t T, int64_t F, int64_t stream_stride,
                        int64_t N, const int32_t* restrict depth, int32_t tid, int32_t nth) {
  kv_write(KILN_KV_f32, cache, x, pos, streams, T, F, stream_stride, N, depth, tid, nth);
}
void kiln_kv_write_tree_f16(_Float16* restrict cache, const float* restrict x, const int32_t* restrict pos,
                            const int32_t* restrict streams, int64_t T, int64_t F, int64_t stream_stride,
                            int64_t N, const int32_t* restrict depth, int32_t tid, int32_t nth) {
  kv_write(KILN_KV_f16, cache, x, pos, streams, T, F, stream_stride, N, depth, tid, nth);
}

/* Node j = t % N: the rows before its block, then its ancestors-or-self, ascending. */
#define KILN_TREE_ROWS                                                                      \
  {                                                                                         \
    const int64_t j = t % N;                                                                \
    base_row = (int64_t)pos[t] - depth[j];                                                  \
    for (uint64_t m = anc[j]; m; m &= m - 1) tree[nt++] = base_row + __builtin_ctzll(m);    \
  }
void kiln_tree_attention(KILN_ATTENTION_ARGS, int64_t N, const int32_t* restrict depth,
                         const uint64_t* restrict anc, int32_t tid, int32_t nth) {
  KILN_ATTENTION_PASSES(KILN_KV_f32, KILN_TREE_ROWS)
}
void kiln_tree_attention_f16(KILN_ATTENTION_ARGS, int64_t N, const int32_t* restrict depth,
                             const uint64_t* restrict anc, int32_t tid, int32_t nth) {
  KILN_ATTENTION_PASSES(KILN_KV_f16, KILN_TREE_ROWS)
}

/* codegen/kernels/attention.c — the KV cache write and causal grouped-query attention.
 *
 * A cache holds S streams of C rows of F = KVH * hd floats; row p of stream s starts at
 * cache + s * stream_stride + p * F (stream_stride = C * F for the interpreter's [S,C,F]
 * layout). streams may be NULL for a single-stream cache (every row is stream 0).
 *
 * Attention splits the T * H (row, head) pairs over threads in contiguous ranges. For a
 * pair, with p = pos[t]:
 *
 *   s[j] = (q . k[j]) / sqrt(hd)    j = 0..p     scores in the thread's scratch row
 *   e[j] = exp(s[j] - max s)                     kiln_expf, eight partial sums
 *   out  = (sum_j e[j] v[j]) / sum_j e[j]        four rows of v per pass over out
 *
 * All sums are float in fixed orders, so a pair's result does not depend on the thread
 * count or on the other rows of the step.
 */
#include "common.h"

void kiln_kv_write(float* restrict cache, const float* restrict x, const int32_t* restrict pos,
                   const int32_t* restrict streams, int64_t T, int64_t F, int64_t stream_stride,
                   int32_t tid, int32_t nth) {
  int64_t t0, t1;
  kiln_split(T, 1, tid, nth, &t0, &t1);
  for (int64_t t = t0; t < t1; ++t) {
    float* dst = cache + (streams ? streams[t] : 0) * stream_stride + pos[t] * F;
    const float* src = x + t * F;
    int64_t k = 0;
    for (; k + 8 <= F; k += 8) kiln_store8(dst + k, kiln_load8(src + k));
    for (; k < F; ++k) dst[k] = src[k];
  }
}

/* q . k over hd floats: two 8-lane accumulators, then a fixed-order fold. */
KILN_INLINE float dot(const float* restrict q, const float* restrict k, int64_t hd) {
  kiln_f8 a0 = kiln_splat8(0.0f), a1 = kiln_splat8(0.0f);
  int64_t d = 0;
  for (; d + 16 <= hd; d += 16) {
    a0 += kiln_load8(q + d) * kiln_load8(k + d);
    a1 += kiln_load8(q + d + 8) * kiln_load8(k + d + 8);
  }
  if (d + 8 <= hd) {
    a0 += kiln_load8(q + d) * kiln_load8(k + d);
    d += 8;
  }
  float s = kiln_hsum8(a0 + a1);
  for (; d < hd; ++d) s += q[d] * k[d];
  return s;
}

/* s[j] = dot(q, k + j * F, hd) * scale for j in [0, n), and the running max of them.
 * Four keys at a time when hd is a multiple of 16: each key's two accumulators are
 * dot()'s, and the four horizontal sums come out of one transposed reduction that adds
 * the lanes in kiln_hsum8's order ((l + l+4), then (0 + 2) + (1 + 3)), so every score is
 * dot()'s bits (the tree kernel mixes both forms and must match the causal one). Why:
 * per key, dot() spends as many instructions on its horizontal sum as on the products
 * (hd = 64), and attention was ~16% of a decode step at position 250. */
KILN_INLINE float scores(const float* restrict q, const float* restrict k, int64_t F, int64_t hd,
                         int64_t n, float scale, float* restrict s, float mx) {
  int64_t j = 0;
  if (hd % 16 == 0)
    for (; j + 4 <= n; j += 4) {
      const float* k0 = k + j * F;
      kiln_f8 a[4][2];
      for (int r = 0; r < 4; ++r) a[r][0] = a[r][1] = kiln_splat8(0.0f);
      for (int64_t d = 0; d < hd; d += 16) {
        const kiln_f8 q0 = kiln_load8(q + d), q1 = kiln_load8(q + d + 8);
        for (int r = 0; r < 4; ++r) {
          a[r][0] += q0 * kiln_load8(k0 + r * F + d);
          a[r][1] += q1 * kiln_load8(k0 + r * F + d + 8);
        }
      }
      const kiln_f8 v0 = a[0][0] + a[0][1], v1 = a[1][0] + a[1][1];
      const kiln_f8 v2 = a[2][0] + a[2][1], v3 = a[3][0] + a[3][1];
      /* t01 = [v0 (l + l+4) for l < 4, v1 likewise], t23 for v2, v3. */
      const kiln_f8 t01 = __builtin_shufflevector(v0, v1, 0, 1, 2, 3, 8, 9, 10, 11) +
                          __builtin_shufflevector(v0, v1, 4, 5, 6, 7, 12, 13, 14, 15);
      const kiln_f8 t23 = __builtin_shufflevector(v2, v3, 0, 1, 2, 3, 8, 9, 10, 11) +
                          __builtin_shufflevector(v2, v3, 4, 5, 6, 7, 12, 13, 14, 15);
      /* w = [v0 (0+2), v0 (1+3), v2 .., v2 .., v1 .., v1 .., v3 .., v3 ..] */
      const kiln_f8 w = __builtin_shufflevector(t01, t23, 0, 1, 8, 9, 4, 5, 12, 13) +
                        __builtin_shufflevector(t01, t23, 2, 3, 10, 11, 6, 7, 14, 15);
      const kiln_f4 sum = __builtin_shufflevector(w, w, 0, 4, 2, 6) + __builtin_shufflevector(w, w, 1, 5, 3, 7);
      for (int r = 0; r < 4; ++r) {
        s[j + r] = sum[r] * scale;
        mx = s[j + r] > mx ? s[j + r] : mx;
      }
    }
  for (; j < n; ++j) {
    s[j] = dot(q, k + j * F, hd) * scale;
    mx = s[j] > mx ? s[j] : mx;
  }
  return mx;
}

/* o (+)= (e0 v0 + e1 v1) + (e2 v2 + e3 v3) for four value rows F apart. */
KILN_INLINE void rows4(float* restrict o, const float* restrict v, int64_t F,
                       const float* restrict e, int64_t hd, int accumulate) {
  const float *v0 = v, *v1 = v0 + F, *v2 = v1 + F, *v3 = v2 + F;
  for (int64_t d = 0; d < hd; ++d) {
    const float t = (e[0] * v0[d] + e[1] * v1[d]) + (e[2] * v2[d] + e[3] * v3[d]);
    o[d] = accumulate ? o[d] + t : t;
  }
}

void kiln_attention(const float* restrict q, const float* restrict kc, const float* restrict vc,
                    const int32_t* restrict pos, const int32_t* restrict streams,
                    float* restrict out, float* restrict scratch, int64_t T, int64_t C, int64_t H,
                    int64_t KVH, int64_t hd, int64_t stream_stride, int32_t tid, int32_t nth) {
  int64_t i0, i1;
  kiln_split(T * H, 1, tid, nth, &i0, &i1);
  const int64_t F = KVH * hd, group = H / KVH;
  const float scale = (float)(1.0 / __builtin_sqrt((double)hd));
  float* s = scratch + tid * C;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t t = i / H, h = i % H, n = (int64_t)pos[t] + 1;
    const int64_t base = (streams ? streams[t] : 0) * stream_stride + (h / group) * hd;
    const float* kb = kc + base;
    const float* vb = vc + base;
    const float* qv = q + t * H * hd + h * hd;
    float* o = out + t * H * hd + h * hd;

    const float mx = scores(qv, kb, F, hd, n, scale, s, -__builtin_inff());
    /* Weights e^(s - max) in place, summed in eight lanes (a vector loop). */
    float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
      for (int l = 0; l < 8; ++l) part[l] += (s[j + l] = kiln_expf(s[j + l] - mx));
    for (; j < n; ++j) part[0] += (s[j] = kiln_expf(s[j] - mx));
    const float sum = ((part[0] + part[4]) + (part[2] + part[6])) +
                      ((part[1] + part[5]) + (part[3] + part[7]));

    /* out = sum_j e[j] v[j], four rows of v per pass over out (the first pass stores,
     * so out is never zeroed: a zeroing loop could become a memset call), then / sum. */
    if (n >= 4) {
      rows4(o, vb, F, s, hd, 0);
      j = 4;
    } else {
      for (int64_t d = 0; d < hd; ++d) o[d] = s[0] * vb[d];
      j = 1;
    }
    for (; j + 4 <= n; j += 4) rows4(o, vb + j * F, F, s + j, hd, 1);
    for (; j < n; ++j) {
      const float e = s[j];
      const float* v = vb + j * F;
      for (int64_t d = 0; d < hd; ++d) o[d] += e * v[d];
    }
    for (int64_t d = 0; d < hd; ++d) o[d] /= sum;
  }
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
  int64_t t0, t1;
  kiln_split(T, 1, tid, nth, &t0, &t1);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t j = t % N;
    float* dst = cache + (streams ? streams[t] : 0) * stream_stride + (pos[t] - depth[j] + j) * F;
    const float* src = x + t * F;
    int64_t k = 0;
    for (; k + 8 <= F; k += 8) kiln_store8(dst + k, kiln_load8(src + k));
    for (; k < F; ++k) dst[k] = src[k];
  }
}

/* As rows4, with four rows anywhere. */
KILN_INLINE void rows4p(float* restrict o, const float* v0, const float* v1, const float* v2,
                        const float* v3, const float* restrict e, int64_t hd, int accumulate) {
  for (int64_t d = 0; d < hd; ++d) {
    const float t = (e[0] * v0[d] + e[1] * v1[d]) + (e[2] * v2[d] + e[3] * v3[d]);
    o[d] = accumulate ? o[d] + t : t;
  }
}

void kiln_tree_attention(const float* restrict q, const float* restrict kc, const float* restrict vc,
                         const int32_t* restrict pos, const int32_t* restrict streams,
                         float* restrict out, float* restrict scratch, int64_t T, int64_t C, int64_t H,
                         int64_t KVH, int64_t hd, int64_t stream_stride, int64_t N,
                         const int32_t* restrict depth, const uint64_t* restrict anc, int32_t tid,
                         int32_t nth) {
  int64_t i0, i1;
  kiln_split(T * H, 1, tid, nth, &i0, &i1);
  const int64_t F = KVH * hd, group = H / KVH;
  const float scale = (float)(1.0 / __builtin_sqrt((double)hd));
  float* s = scratch + tid * C;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t t = i / H, h = i % H, j = t % N;
    const int64_t base_row = (int64_t)pos[t] - depth[j];  /* rows before the tree */
    /* Tree rows of j's ancestors-or-self, ascending: at most N <= 64 of them. */
    int64_t tree[64];
    int64_t nt = 0;
    for (uint64_t m = anc[j]; m; m &= m - 1) tree[nt++] = base_row + __builtin_ctzll(m);
    const int64_t n = base_row + nt;
    const int64_t base = (streams ? streams[t] : 0) * stream_stride + (h / group) * hd;
    const float* kb = kc + base;
    const float* vb = vc + base;
#define KILN_ROW(m) ((m) < base_row ? (m) : tree[(m) - base_row])
    const float* qv = q + t * H * hd + h * hd;
    float* o = out + t * H * hd + h * hd;

    float mx = scores(qv, kb, F, hd, base_row, scale, s, -__builtin_inff());
    int64_t m = base_row;
    for (; m < n; ++m) {
      s[m] = dot(qv, kb + tree[m - base_row] * F, hd) * scale;
      mx = s[m] > mx ? s[m] : mx;
    }
    float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    m = 0;
    for (; m + 8 <= n; m += 8)
      for (int l = 0; l < 8; ++l) part[l] += (s[m + l] = kiln_expf(s[m + l] - mx));
    for (; m < n; ++m) part[0] += (s[m] = kiln_expf(s[m] - mx));
    const float sum = ((part[0] + part[4]) + (part[2] + part[6])) +
                      ((part[1] + part[5]) + (part[3] + part[7]));

    /* The cache part in groups of four contiguous rows, as kiln_attention does; groups
     * that reach into the tree rows gather their four rows. */
    if (n >= 4) {
      if (base_row >= 4) rows4(o, vb, F, s, hd, 0);
      else rows4p(o, vb + KILN_ROW(0) * F, vb + KILN_ROW(1) * F, vb + KILN_ROW(2) * F, vb + KILN_ROW(3) * F, s, hd, 0);
      m = 4;
    } else {
      const float* v0 = vb + KILN_ROW(0) * F;
      for (int64_t d = 0; d < hd; ++d) o[d] = s[0] * v0[d];
      m = 1;
    }
    for (; m + 4 <= base_row; m += 4) rows4(o, vb + m * F, F, s + m, hd, 1);
    for (; m + 4 <= n; m += 4)
      rows4p(o, vb + KILN_ROW(m) * F, vb + KILN_ROW(m + 1) * F, vb + KILN_ROW(m + 2) * F,
             vb + KILN_ROW(m + 3) * F, s + m, hd, 1);
    for (; m < n; ++m) {
      const float e = s[m];
      const float* v = vb + KILN_ROW(m) * F;
      for (int64_t d = 0; d < hd; ++d) o[d] += e * v[d];
    }
#undef KILN_ROW
    for (int64_t d = 0; d < hd; ++d) o[d] /= sum;
  }
}

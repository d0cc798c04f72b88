/* codegen/kernels/rope.c — rotary position embedding, GGUF "normal" (adjacent pair) mode.
 *
 * For each row t and pair i < n_rot/2, the angle pos[t] * theta^(-2i/n_rot) is formed in
 * double and its cosine and sine taken in double, like the interpreter: in float, a
 * position of a few thousand already puts ~1e-3 rad of error into the angle. That is one
 * sincos per (row, pair), shared by every head of the row, eight pairs at a time (the
 * _d8 forms below); the rotation itself is float. No libm: log, exp, sin and cos below are
 * short polynomial versions accurate to a few ulp of double over the ranges rope uses
 * (theta > 0, |angle| < 2^20 * pi/2 after Cody-Waite reduction by pi/2).
 *
 * Rows are split over threads. y may be x (in place). Dimensions nrot..hd-1 of every head
 * pass through unchanged. factors (NULL: none) divide each pair's frequency (LLaMA 3.1/3.2
 * keep the high frequencies and slow the low ones down: the rope_freqs tensor).
 */
#include "common.h"

KILN_INLINE double bits_f64(uint64_t u) {
  union { uint64_t u; double f; } v = {u};
  return v.f;
}
KILN_INLINE uint64_t f64_bits(double f) {
  union { double f; uint64_t u; } v = {f};
  return v.u;
}

/* ln(x) for finite x > 0: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
 * ln(m) = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172, by its odd series to s^23. */
KILN_INLINE double log_f64(double x) {
  uint64_t u = f64_bits(x);
  int64_t e = (int64_t)((u >> 52) & 0x7ff) - 1023;
  double m = bits_f64((u & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e += 1;
  }
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double p = 1.0 / 23;
  for (int k = 21; k >= 1; k -= 2) p = p * s2 + 1.0 / k;
  return 2.0 * s * p + (double)e * 0.69314718055994530942;
}

/* Eight lanes at a time. Why: scalar forms of these did not vectorise, and the 32 angles
 * of each row cost ~0.22 us per call (60 calls per decode step: ~15 us per row, ~1% of a
 * step; several rows per step for multi-stream decoding and DS2D verify passes).
 * Measured, SmolLM2's shapes, one thread, 60 calls: 17.4 -> 6.9 us for one row, 61.8 ->
 * 20.3 us for four; the same bits as the scalar forms on 20000 cases (positions up to
 * 10^6, theta 10 to 10^6, rotary sizes 24 to 128): every lane runs the scalar expressions.
 * Pair counts that are not a multiple of eight fill the last vector with spare lanes. */
typedef double kiln_d8 __attribute__((vector_size(64)));
typedef int64_t kiln_l8 __attribute__((vector_size(64)));
KILN_INLINE kiln_d8 splat_d8(double v) { return (kiln_d8){v, v, v, v, v, v, v, v}; }
/* Rounds to the nearest integer (|x| < 2^51) by adding and removing 1.5 * 2^52. */
KILN_INLINE kiln_d8 round_d8(kiln_d8 x) {
  const kiln_d8 magic = splat_d8(6755399441055744.0);
  return (x + magic) - magic;
}
KILN_INLINE kiln_d8 select_d8(kiln_l8 m, kiln_d8 a, kiln_d8 b) {
  return (kiln_d8)(((kiln_l8)a & m) | ((kiln_l8)b & ~m));
}
/* e^x for |x| < 700: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
 * n*ln2_hi), e^r by its Taylor series to r^13 (truncation < 1e-17 relative). */
KILN_INLINE kiln_d8 exp_d8(kiln_d8 x) {
  const kiln_d8 xl = x * 1.4426950408889634;
  const kiln_d8 n = round_d8(xl);
  const kiln_d8 r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  kiln_d8 p = splat_d8(1.0 / 6227020800.0);
  double f = 6227020800.0;
  for (int k = 13; k >= 1; --k) {
    f /= k; /* f = (k-1)! */
    p = p * r + 1.0 / f;
  }
  const kiln_l8 e = (__builtin_convertvector(n, kiln_l8) + 1023) << 52;
  return p * (kiln_d8)e;
}
/* sin and cos of a: a = k pi/2 + r, pi/2 in three parts (fdlibm's pio2_1, _2, _3: the
 * first two have 33 significant bits, so k * part is exact for |k| < 2^20), |r| <= pi/4,
 * Taylor series to r^17 and r^18, then the quadrant k mod 4 picks and signs them. */
KILN_INLINE void sincos_d8(kiln_d8 a, kiln_d8* s, kiln_d8* c) {
  const kiln_d8 al = a * 6.36619772367581382433e-01;
  const kiln_d8 k = round_d8(al);
  const kiln_d8 r = ((a - k * 1.57079632673412561417e+00) - k * 6.07710050630396597660e-11) -
                    k * 2.02226624879595063154e-21;
  const kiln_d8 r2 = r * r;
  kiln_d8 ps = splat_d8(0.0), pc = splat_d8(0.0);
  double fs = 355687428096000.0, fc = 6402373705728000.0; /* 17!, 18! */
  for (int j = 17; j >= 3; j -= 2) {
    ps = (ps + ((j / 2) % 2 ? -1.0 : 1.0) / fs) * r2;
    fs /= (double)(j * (j - 1));
  }
  for (int j = 18; j >= 2; j -= 2) {
    pc = (pc + ((j / 2) % 2 ? -1.0 : 1.0) / fc) * r2;
    fc /= (double)(j * (j - 1));
  }
  const kiln_d8 sr = r + r * ps, cr = 1.0 + pc;
  const kiln_l8 q = __builtin_convertvector(k, kiln_l8) & 3;
  const kiln_l8 q0 = q == 0, q1 = q == 1, q2 = q == 2;
  *s = select_d8(q0, sr, select_d8(q1, cr, select_d8(q2, -sr, -cr)));
  *c = select_d8(q0, cr, select_d8(q1, -sr, select_d8(q2, -cr, sr)));
}

void kiln_rope(const float* x, float* y, const int32_t* restrict pos, int64_t T, int64_t F,
               int64_t hd, int64_t nrot, float theta, const float* restrict factors, int32_t tid, int32_t nth) {
  int64_t t0, t1;
  kiln_split(T, 1, tid, nth, &t0, &t1);
  const int64_t half = nrot / 2, H = F / hd;
  /* theta^(-2i/nrot) for each pair, then each row's cos and sin, in small stack arrays
   * (half <= hd/2; with constant shapes they have constant size). */
  if (t0 >= t1) return; /* no rows here: skip the angle setup */
  const int64_t padded = (half + 7) / 8 * 8 > 0 ? (half + 7) / 8 * 8 : 8; /* whole vectors */
  _Alignas(64) double inv[padded];
  const double lt = log_f64((double)theta);
  for (int64_t i = 0; i < padded; i += 8) {
    const kiln_d8 iv = {(double)i, (double)(i + 1), (double)(i + 2), (double)(i + 3),
                        (double)(i + 4), (double)(i + 5), (double)(i + 6), (double)(i + 7)};
    *(kiln_d8*)(inv + i) = exp_d8(-2.0 * iv / (double)nrot * lt);
  }
  if (factors) /* LLaMA 3.1/3.2's scaled rope: each pair's frequency divided by its factor */
    for (int64_t i = 0; i < half; ++i) inv[i] /= (double)factors[i];
  _Alignas(64) float cs[padded], sn[padded];
  for (int64_t t = t0; t < t1; ++t) {
    const double p = (double)pos[t];
    for (int64_t i = 0; i < padded; i += 8) {
      kiln_d8 s, c;
      sincos_d8(p * *(const kiln_d8*)(inv + i), &s, &c);
      *(kiln_f8*)(cs + i) = __builtin_convertvector(c, kiln_f8);
      *(kiln_f8*)(sn + i) = __builtin_convertvector(s, kiln_f8);
    }
    for (int64_t h = 0; h < H; ++h) {
      const float* xv = x + t * F + h * hd;
      float* yv = y + t * F + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float x0 = xv[2 * i], x1 = xv[2 * i + 1];
        yv[2 * i] = x0 * cs[i] - x1 * sn[i];
        yv[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
      }
      if (yv != xv)
        for (int64_t d = nrot; d < hd; ++d) yv[d] = xv[d];
    }
  }
}

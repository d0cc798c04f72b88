/* codegen/kernels/common.h — helpers shared by the kernel templates.
 *
 * Everything here is static inline and always inlined: the templates are compiled to
 * bitcode without optimisation (clang -O2 -Xclang -disable-llvm-passes), and only kiln's
 * own O3, run after it has bound shapes to constants, decides what the code becomes.
 * The same sources also build natively (kiln_kernels_native) so tests can run them
 * against the reference interpreter.
 *
 * No libc: kernels are freestanding C (clang -ffreestanding), so there is no memcpy, no
 * expf, no sqrt call. Square roots use __builtin_sqrt, which with -fno-math-errno is the
 * llvm.sqrt intrinsic (one instruction on every target); exp is kiln_expf below. The one
 * target requirement: x86 needs F16C, or widening _Float16 becomes __extendhfsf2 calls
 * (x86-64-v3 and every x86 host since 2012 have it; aarch64 always converts inline).
 */
#ifndef KILN_KERNELS_COMMON_H
#define KILN_KERNELS_COMMON_H

#include <stdint.h>

#include "kernels.h"

#define KILN_INLINE static inline __attribute__((always_inline))

/* GGUF block layouts, mirroring ir/dtype.h. Element j of a Q4 block is the low nibble
 * of qs[j] for j < 16 and the high nibble of qs[j-16] otherwise. Scales are IEEE half
 * (_Float16: one instruction to widen on aarch64 and on x86 with F16C). */
#define KILN_QK 32
typedef struct {
  _Float16 d;     /* value = (q - 8) * d */
  uint8_t qs[16];
} kiln_block_q4_0;
typedef struct {
  _Float16 d;     /* value = q * d + m */
  _Float16 m;
  uint8_t qs[16];
} kiln_block_q4_1;
typedef struct {
  _Float16 d;     /* value = q * d */
  int8_t qs[32];
} kiln_block_q8_0;
_Static_assert(sizeof(kiln_block_q4_0) == 18, "q4_0 block must match ir/dtype.h");
_Static_assert(sizeof(kiln_block_q4_1) == 20, "q4_1 block must match ir/dtype.h");
_Static_assert(sizeof(kiln_block_q8_0) == 34, "q8_0 block must match ir/dtype.h");
_Static_assert(sizeof(_Float16) == 2, "half must be 16 bits");

/* Packed weights (pack-weights; ir/packing.h has the layout and why): block b of 16 rows,
 * scales first, then 64-byte lines holding 4 consecutive elements of all 16 rows (q4: the
 * byte 4l+e of line j is byte 4j+e of row l's block; q8_0: element 4j+e of row l + 128). */
#define KILN_PACK_ROWS 16
typedef struct {
  _Float16 d[16];
  uint8_t qs[4][64];
} kiln_pack_q4_0;
typedef struct {
  _Float16 d[16];
  _Float16 m[16];
  uint8_t qs[4][64];
} kiln_pack_q4_1;
typedef struct {
  _Float16 d[16];
  uint8_t qs[8][64];
} kiln_pack_q8_0;
_Static_assert(sizeof(kiln_pack_q4_0) == 16 * sizeof(kiln_block_q4_0), "packed q4_0 must match ir/packing.h");
_Static_assert(sizeof(kiln_pack_q4_1) == 16 * sizeof(kiln_block_q4_1), "packed q4_1 must match ir/packing.h");
_Static_assert(sizeof(kiln_pack_q8_0) == 16 * sizeof(kiln_block_q8_0), "packed q8_0 must match ir/packing.h");

/* Weight storage types, in KILN_WEIGHT_TYPES order. Kernels take the type as a constant
 * argument of an always-inline body, so each exported kernel gets its own loop nest. */
enum kiln_wt { KILN_WT_f32, KILN_WT_f16, KILN_WT_bf16, KILN_WT_q4_0, KILN_WT_q4_1, KILN_WT_q8_0 };

KILN_INLINE float kiln_bits_f32(uint32_t u) {
  union { uint32_t u; float f; } v = {u};
  return v.f;
}
KILN_INLINE float kiln_bf16_f32(uint16_t b) { return kiln_bits_f32((uint32_t)b << 16); }

KILN_INLINE int64_t kiln_min(int64_t a, int64_t b) { return a < b ? a : b; }
KILN_INLINE int64_t kiln_max(int64_t a, int64_t b) { return a > b ? a : b; }

/* Thread tid's share [*b, *e) of n items: contiguous chunks of ceil(n/nth) rounded up to
 * a multiple of `align` (so threads do not share cache lines of their outputs). */
KILN_INLINE void kiln_split(int64_t n, int64_t align, int32_t tid, int32_t nth, int64_t* b,
                            int64_t* e) {
  int64_t chunk = (n + nth - 1) / nth;
  chunk = (chunk + align - 1) / align * align;
  *b = kiln_min(n, chunk * tid);
  *e = kiln_min(n, *b + chunk);
}

/* Bytes of one row of k elements of type t (k a multiple of 32 for block types). */
KILN_INLINE int64_t kiln_row_bytes(enum kiln_wt t, int64_t k) {
  switch (t) {
    case KILN_WT_f32: return k * 4;
    case KILN_WT_f16: return k * 2;
    case KILN_WT_bf16: return k * 2;
    case KILN_WT_q4_0: return k / KILN_QK * (int64_t)sizeof(kiln_block_q4_0);
    case KILN_WT_q4_1: return k / KILN_QK * (int64_t)sizeof(kiln_block_q4_1);
    case KILN_WT_q8_0: return k / KILN_QK * (int64_t)sizeof(kiln_block_q8_0);
  }
  return 0;
}

/* Eight floats: the vector unit of the kernels (GNU vector extensions, which clang and
 * gcc share). Writing the lanes out, rather than leaving 32 scalar accumulators for the
 * SLP vectoriser to find, is what gets full-width vectors: given scalars, LLVM 16 packed
 * the q4_1 dot product two lanes at a time and spilled. On AVX2 a kiln_f8 is one ymm
 * register, on NEON a pair of q registers. The *u types are unaligned views for loads. */
typedef float kiln_f8 __attribute__((vector_size(32)));
typedef float kiln_f8u __attribute__((vector_size(32), aligned(4)));
typedef float kiln_f4 __attribute__((vector_size(16)));
typedef float kiln_f4u __attribute__((vector_size(16), aligned(4)));
typedef int32_t kiln_i32x4 __attribute__((vector_size(16)));
typedef uint32_t kiln_u32x8 __attribute__((vector_size(32)));
typedef uint16_t kiln_u16x8u __attribute__((vector_size(16), aligned(2)));
typedef _Float16 kiln_h8u __attribute__((vector_size(16), aligned(2)));
typedef _Float16 kiln_h2u __attribute__((vector_size(4), aligned(2)));
typedef float kiln_f2 __attribute__((vector_size(8)));
typedef uint8_t kiln_u8x16 __attribute__((vector_size(16)));
typedef uint8_t kiln_u8x16u __attribute__((vector_size(16), aligned(1)));
typedef uint8_t kiln_u8x8 __attribute__((vector_size(8)));
typedef uint8_t kiln_u8x8u __attribute__((vector_size(8), aligned(1)));

KILN_INLINE kiln_f8 kiln_load8(const float* p) { return *(const kiln_f8u*)p; }
KILN_INLINE void kiln_store8(float* p, kiln_f8 v) { *(kiln_f8u*)p = v; }
KILN_INLINE kiln_f8 kiln_splat8(float v) { return (kiln_f8){v, v, v, v, v, v, v, v}; }

/* Sixteen floats: a zmm on AVX-512, two ymm on AVX2, four q registers on NEON (attention's
 * accumulators and its exp). Lanes 0-7 and 8-15 are two kiln_f8. Masks are int32 lanes of
 * all ones or zeros, as vector compares give them. */
typedef float kiln_f16x __attribute__((vector_size(64)));
typedef float kiln_f16xu __attribute__((vector_size(64), aligned(4)));
typedef int32_t kiln_i32x16 __attribute__((vector_size(64)));
KILN_INLINE kiln_f16x kiln_load16(const float* p) { return *(const kiln_f16xu*)p; }
KILN_INLINE void kiln_store16(float* p, kiln_f16x v) { *(kiln_f16xu*)p = v; }
KILN_INLINE kiln_f16x kiln_splat16(float v) {
  return (kiln_f16x){v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v};
}
KILN_INLINE kiln_f8 kiln_lo8(kiln_f16x v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7); }
KILN_INLINE kiln_f8 kiln_hi8(kiln_f16x v) { return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15); }
/* m ? a : b per lane (C has no ?: on vectors; LLVM turns this back into a select: one
 * vminps for x < c ? x : c, a bsl/bif on NEON). */
KILN_INLINE kiln_f16x kiln_select16(kiln_i32x16 m, kiln_f16x a, kiln_f16x b) {
  return (kiln_f16x)(((kiln_i32x16)a & m) | ((kiln_i32x16)b & ~m));
}
KILN_INLINE kiln_f4 kiln_select4(kiln_i32x4 m, kiln_f4 a, kiln_f4 b) {
  return (kiln_f4)(((kiln_i32x4)a & m) | ((kiln_i32x4)b & ~m));
}

/* Sum of the lanes in a fixed tree order: ((0+4)+(2+6)) + ((1+5)+(3+7)). */
KILN_INLINE float kiln_hsum8(kiln_f8 v) {
  kiln_f4 a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  return (a[0] + a[2]) + (a[1] + a[3]);
}

KILN_INLINE kiln_f8 kiln_u8_to_f8(kiln_u8x8 v) { return __builtin_convertvector(v, kiln_f8); }
KILN_INLINE kiln_u8x8 kiln_u8_lo(kiln_u8x16 v) {
  return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
}
KILN_INLINE kiln_u8x8 kiln_u8_hi(kiln_u8x16 v) {
  return __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* The 32 nibbles of a Q4 block (low nibbles are elements 0..15, high ones 16..31) as
 * four kiln_f8 of u * d + m. */
KILN_INLINE void kiln_quads_to_f8(kiln_u8x16 q, kiln_f8 d, kiln_f8 m, kiln_f8 w[4]) {
  const kiln_u8x16 lo = q & 15, hi = q >> 4;
  w[0] = kiln_u8_to_f8(kiln_u8_lo(lo)) * d + m;
  w[1] = kiln_u8_to_f8(kiln_u8_hi(lo)) * d + m;
  w[2] = kiln_u8_to_f8(kiln_u8_lo(hi)) * d + m;
  w[3] = kiln_u8_to_f8(kiln_u8_hi(hi)) * d + m;
}

/* Elements 32*ib .. 32*ib+31 of a row as four kiln_f8, w[c] = elements 8c .. 8c+7. The
 * values are exactly the interpreter's dequantize_row values. */
KILN_INLINE void kiln_load_block(enum kiln_wt t, const void* row, int64_t ib, kiln_f8 w[4]) {
  switch (t) {
    case KILN_WT_f32: {
      const float* p = (const float*)row + ib * KILN_QK;
      for (int c = 0; c < 4; ++c) w[c] = kiln_load8(p + 8 * c);
      return;
    }
    case KILN_WT_f16: {
      const _Float16* p = (const _Float16*)row + ib * KILN_QK;
      for (int c = 0; c < 4; ++c) w[c] = __builtin_convertvector(*(const kiln_h8u*)(p + 8 * c), kiln_f8);
      return;
    }
    case KILN_WT_bf16: {
      const uint16_t* p = (const uint16_t*)row + ib * KILN_QK;
      for (int c = 0; c < 4; ++c) {
        kiln_u32x8 u = __builtin_convertvector(*(const kiln_u16x8u*)(p + 8 * c), kiln_u32x8);
        w[c] = (kiln_f8)(u << 16);
      }
      return;
    }
    /* Quantized blocks widen unsigned bytes u and take w = u * d + m, with m the q4_1
     * minimum, or -8d (q4_0, u = q + 8) or -128d (q8_0, u = q + 128). u * d is exact
     * (at most 8 + 11 significant bits), so with or without FMA w is the exact value
     * rounded once, as the interpreter computes it; and unsigned bytes widen in fewer
     * instructions than signed ones on NEON. */
    case KILN_WT_q4_0: {
      const kiln_block_q4_0* b = (const kiln_block_q4_0*)row + ib;
      const float d = (float)b->d;
      kiln_quads_to_f8(*(const kiln_u8x16u*)b->qs, kiln_splat8(d), kiln_splat8(-8.0f * d), w);
      return;
    }
    case KILN_WT_q4_1: {
      const kiln_block_q4_1* b = (const kiln_block_q4_1*)row + ib;
      /* d and m widened together (one load and one vcvtph2ps on x86). */
      const kiln_f2 dm = __builtin_convertvector(*(const kiln_h2u*)&b->d, kiln_f2);
      kiln_quads_to_f8(*(const kiln_u8x16u*)b->qs, kiln_splat8(dm[0]), kiln_splat8(dm[1]), w);
      return;
    }
    case KILN_WT_q8_0: {
      const kiln_block_q8_0* b = (const kiln_block_q8_0*)row + ib;
      const float d = (float)b->d;
      const kiln_f8 vd = kiln_splat8(d), vm = kiln_splat8(-128.0f * d);
      for (int c = 0; c < 4; ++c)
        w[c] = kiln_u8_to_f8(*(const kiln_u8x8u*)(b->qs + 8 * c) ^ 0x80) * vd + vm;
      return;
    }
  }
}

/* Element k of a row of a plain float type (for the k % 32 tail; block types have none). */
KILN_INLINE float kiln_load_elem(enum kiln_wt t, const void* row, int64_t k) {
  switch (t) {
    case KILN_WT_f32: return ((const float*)row)[k];
    case KILN_WT_f16: return (float)((const _Float16*)row)[k];
    case KILN_WT_bf16: return kiln_bf16_f32(((const uint16_t*)row)[k]);
    case KILN_WT_q4_0:
    case KILN_WT_q4_1:
    case KILN_WT_q8_0: return 0.0f;
  }
  return 0.0f;
}

/* e^x in float without libm: x = n*ln2 + r (two-constant Cody-Waite), e^r by the Cephes
 * expf polynomial on |r| <= ln2/2, 2^n by building the exponent bits. Branch-free so it
 * vectorises. Relative error < 2e-7 for x in [-87.3, 88.3] (kernels_test checks it);
 * e^x = 0 below -87.3365 (no denormals) and saturates at e^88.37 = 2.4e38 above (never
 * inf: silu and softmax only need it to be huge). NaN stays NaN. */
/* The reduction and polynomial of kiln_expf for a clamped xc of type T (float, or a
 * vector of floats: GNU vectors apply scalar operands lane by lane, S splats a constant),
 * so the scalar exp and kiln_expf16 share one definition: n = round(xc / ln2) and p =
 * e^(xc - n ln2). Adding 1.5 * 2^23 rounds to an integer. */
#define KILN_EXPF_POLY(T, S, xc, n, p)                                    \
  const T n = (xc * 1.44269504088896341f + S(12582912.0f)) - S(12582912.0f); \
  T p = S(1.9875691500e-4f);                                              \
  {                                                                       \
    T r = xc - n * 0.693359375f;                                          \
    r = r - n * -2.12194440e-4f;                                          \
    const T z = r * r;                                                    \
    p = p * r + 1.3981999507e-3f;                                         \
    p = p * r + 8.3334519073e-3f;                                         \
    p = p * r + 4.1665795894e-2f;                                         \
    p = p * r + 1.6666665459e-1f;                                         \
    p = p * r + 5.0000001201e-1f;                                         \
    p = p * z + r + 1.0f;                                                 \
  }
#define KILN_SCALAR(v) (v)

KILN_INLINE float kiln_expf(float x) {
  float xc = x < 88.37f ? x : 88.37f; /* NaN goes to the clamp; restored below */
  xc = xc > -87.5f ? xc : -87.5f;     /* keeps n in [-126, 127] */
  KILN_EXPF_POLY(float, KILN_SCALAR, xc, n, p)
  float scale = kiln_bits_f32((uint32_t)((int32_t)n + 127) << 23);
  float y = p * scale;
  y = x < -87.3365448f ? 0.0f : y;
  return x == x ? y : x;
}

/* kiln_expf on 16 lanes: the same operations in the same order lane by lane (the same
 * contractions into FMA, the clamps as selects that keep kiln_expf's NaN handling), so
 * the same bits (kernels_test checks, NaN and infinities included). Why: written as a
 * scalar loop, LLVM 16 vectorised attention's exp four lanes wide, a third of the kernel. */
KILN_INLINE kiln_f16x kiln_expf16(kiln_f16x x) {
  const kiln_f16x hi = kiln_splat16(88.37f), lo = kiln_splat16(-87.5f);
  kiln_f16x xc = kiln_select16(x < hi, x, hi);
  xc = kiln_select16(xc > lo, xc, lo);
  KILN_EXPF_POLY(kiln_f16x, kiln_splat16, xc, n, p)
  const kiln_f16x scale = (kiln_f16x)((__builtin_convertvector(n, kiln_i32x16) + 127) << 23);
  kiln_f16x y = p * scale;
  y = kiln_select16(x < kiln_splat16(-87.3365448f), kiln_splat16(0.0f), y);
  return kiln_select16(x == x, y, x);
}

/* One row of RMS normalisation (norm.c; also the prologue of qmatmul.c's rms_matmul, so
 * the fused op normalises with the same bits). The sum of squares is float in two 8-lane
 * accumulators (fixed order); the scale is taken in double like the interpreter, then
 * y = (x * scale) * w in float, the interpreter's order. yr may be xr. */
KILN_INLINE void kiln_rms_row(const float* xr, const float* restrict w, float* yr, int64_t D, float eps) {
  kiln_f8 a0 = kiln_splat8(0.0f), a1 = kiln_splat8(0.0f);
  int64_t k = 0;
  for (; k + 16 <= D; k += 16) {
    const kiln_f8 v0 = kiln_load8(xr + k), v1 = kiln_load8(xr + k + 8);
    a0 += v0 * v0;
    a1 += v1 * v1;
  }
  float ss = kiln_hsum8(a0 + a1);
  for (; k < D; ++k) ss += xr[k] * xr[k];
  const float scale = (float)(1.0 / __builtin_sqrt((double)ss / (double)D + (double)eps));
  const kiln_f8 vs = kiln_splat8(scale);
  for (k = 0; k + 8 <= D; k += 8) kiln_store8(yr + k, kiln_load8(xr + k) * vs * kiln_load8(w + k));
  for (; k < D; ++k) yr[k] = xr[k] * scale * w[k];
}

#endif /* KILN_KERNELS_COMMON_H */

/* codegen/kernels/qmatmul.c — y[T,N] = x[T,K] @ w[N,K]^T for q4_0/q4_1/q8_0 weights with
 * the activations quantized to int8 blocks, and integer dot products per block.
 *
 * Why (measured on this machine, AMD EPYC with AVX-512 VNNI, 2 threads, SmolLM2-135M
 * Q4_1; numbers in the block at the end of this comment): the float kernels of matmul.c
 * spend their time widening nibbles to floats (8 converts and 4 FMAs per row per 32
 * weights), not waiting for memory, so decode was 0.78-0.87x llama.cpp. With x in int8,
 * a block of 32 weights times one row is one vpdpbusd (VNNI) or maddubs+madd (AVX2) and
 * one float FMA of the block's scale; the nibbles are unpacked once per block for up to 8
 * rows. Activations are quantized once per call (K floats per row: nothing next to N*K),
 * so int8 pays for every q4/q8 matmul on targets with an int8 dot product (AVX2 maddubs,
 * VNNI, NEON sdot); where there is none the float kernel stays (codegen picks, see
 * lower.cpp's matmul_kernel).
 *
 * Activation blocks are GGML's Q8_1: per 32 values x, d = max|x| / 127, q = round(x / d)
 * (nearest, ties to even), and s = d * sum(q). Then with weight blocks
 *   q4_0: w = (u - 8) dw   sum w x ~ dw (d dot(u, q)) - 8 dw s
 *   q4_1: w = u dw + m     sum w x ~ dw (d dot(u, q)) + m s
 *   q8_0: w = v dw         sum w x ~ dw (d dot(v, q))
 * with u the unsigned nibbles (0..15) and v the signed bytes. dot() is exact in int32.
 * The one rounding that matters is q: relative error of the sums ~ 1/254 per element,
 * averaging out to an NMSE of ~1e-5 against float activations (kernels_test bounds it).
 *
 *   for each chunk of rows of x that fits the 64 KB stack buffer     (34 rows at K=1536)
 *     quantize the chunk (every thread: K*rows values, no shared scratch, no barrier)
 *     for each tile of weight rows (<= 16 KB), group of R <= 8 rows, weight row n
 *       for each block: unpack w once; for r < R: acc[r] += f32(dot(w, q[r])) * dw*d[r]
 *
 * Like matmul.c, a row's result does not depend on T, the grouping or nth (every row
 * sees the same operations in the same order). It differs from matmul.c's float kernel
 * by the int8 rounding, so codegen makes it a graph option (int8_activations).
 *
 * Variants (ISA in the name; only exported on the architecture they are for):
 *   kiln_matmul_<wt>_q8_ref      portable C (any target; the reference for the others)
 *   kiln_matmul_<wt>_q8_avx2     x86 AVX2: vpmaddubsw + vpmaddwd
 *   kiln_matmul_<wt>_q8_avxvnni  x86 AVX-VNNI: vpdpbusd (VEX, ymm)
 *   kiln_matmul_<wt>_q8_vnni     x86 AVX512-VNNI + VL: vpdpbusd (EVEX, ymm)
 *   kiln_matmul_<wt>_q8_dotprod  aarch64 +dotprod: sdot
 *   kiln_matmul_<wt>_q8_i8mm     aarch64 +i8mm (+dotprod): smmla for pairs of rows of x,
 *                                sdot for a row alone; its own float order (see below)
 *   kiln_matmul_<wt>x16_q8_{ref,vnni,dotprod}  pack-weights' 16-row layout (the section
 *                                "Packed weights" below): zmm vpdpbusd, sdot by element
 * In the bitcode the per-function target attributes are stripped like all others and
 * codegen gives every function the profile's features, so codegen only names a variant
 * whose features the profile has. In the native build (tests) the attributes stay.
 *
 * Measurements: kiln_bench vs llama-bench -p 128 -n 64 -r 3 on SmolLM2-135M Q4_1 (both
 * sides the shipped Q4_1), this machine, interleaved int8 / llama.cpp / float in one run,
 * three rounds, tokens/s (the machine was shared: load ~3 on 2 cores; the cleanest round
 * first, the range of all rounds after):
 *                      kiln int8 (vnni)    llama.cpp          kiln float (matmul.c)
 *   1 thread  decode   160 (160-178)       97 (97-134)        99 (90-100)
 *             prefill  346 (346-363)       179 (179-214)      345 (320-345)
 *   2 threads decode   285                 148                180
 *             prefill  661                 412                656
 * (2-thread rounds under load ranged 40-300 for every engine; only the one above had
 * all three undisturbed.) Decode gains 1.6-1.8x over the float kernel: with one group
 * of rows the loop is 1 vpdpbusd + 1 FMA per block and row. With one add into acc per
 * block (as matmul.c does) the asm showed the loop bound by that add's latency, and int8
 * decode was only ~1.1x float (79 vs 71 tok/s, 2 threads, loaded); grouping 2-4 blocks
 * per add (qmm_group) made it the 1.6-1.8x above. Prefill is the same either way (the R = 8 row groups
 * already reuse each unpacked block 8 times), so int8 is used for every call.
 *
 * Fused forms (graph passes; same qmm_group, so fused = unfused bits, tests check):
 *   kiln_matmul_swiglu_<wt>_q8_<isa>  (fuse-matmul-swiglu) gate and up of a 16-column tile
 *       into the stack, silu(g) * u written once: x quantized once, no [T, n_ff] gate/up
 *       round trip, and the two barriers (matmuls | silu | mul) go.
 *   kiln_rms_matmul_<wt>_q8_<isa>     (fuse-rmsnorm-matmul) the rows RMS-normalised in the
 *       prologue by each thread (kiln_rms_row, the norm kernel's own row code): the
 *       norm's barrier goes, at the cost of K floats per row per thread.
 * Why: a decode step of the default model (30 layers) ran ~10 barriers per layer; at 2
 * threads a barrier is ~1-3 us of a ~5 ms step, and every elementwise op between matmuls
 * is one. With both passes (--passes=fuse-matmul-swiglu,fuse-rmsnorm-matmul) a layer has
 * 3 fewer barriers (90 per token), 2 fewer activation quantizations, and the arena
 * halves (2.3 -> 1.2 MiB); the greedy text of the default model is unchanged.
 Measured under load (load average 8-9 on 2 cores, so only the order within a round means
 * anything), `kiln_bench Q4_1 --prompt 16 --gen 64 --reps 5 [--passes ...]`, decode tok/s,
 * three interleaved rounds:
 *                 unfused       + fuse-matmul-swiglu    + fuse-rmsnorm-matmul too
 *   2 threads     74 / 78 / 86  82 / 89 / 88            83 / 89 / 91
 *   1 thread      123 / 111     126 / 122               (rms alone: 119 / 118)
 * Fused was ahead in every 2-thread round (+3..13%), so both are in kiln compile's
 * pipeline (codegen/compile.h). The first swiglu kernel passed R to qmm_group as a
 * variable and ran ~30% slower at 1 thread (81-88 vs 113-126): qmm_group needs R constant
 * (its row loops unroll and the accumulators stay in registers), hence the switch below.
 * The 1.3x-llama.cpp decode target (bench/run_backend_bench.sh, Q4_1, 2 threads; 1.26x
 * before these passes on a quiet machine) needs that quiet run to be confirmed.
 * smmla (+i8mm, kiln_*_q8_i8mm): smmla gives 2x2 row x column sums of 8-byte chunks, not
 * the 8 lanes of 4 elements every other variant sums per block, so it cannot give the
 * reference's bits without a horizontal add per block and row (which the x86 variants
 * would have to pay too). It keeps its own order instead, documented at qmm_group_i8mm
 * and checked bit for bit against a scalar version under qemu (tests/cross/
 * qmatmul_i8mm_check.c); per matmul it is NMSE ~1e-13 from sdot. Whole-model logits move
 * further (int8 re-rounding of every matmul's input: about as far as int8 is from float
 * activations), which tests/cross/aarch64_test.sh bounds against the host. Speed: no
 * Arm hardware here, and qemu's timings say nothing about a phone. A static estimate
 * (bench/qmatmul_aarch64_mca.sh: llvm-mca-16, straight-line code of one block of 32 for
 * 2 weight rows, q4_1, accumulators behind pointers in both; LLVM 16 gives the same
 * figures for neoverse-v2, cortex-x3 and neoverse-n2, so one model serves all three):
 *                         sdot variant   smmla variant
 *   R = 8 rows (prefill)  89.5 cycles    45.5 cycles   (~2x: smmla does 32 MACs, sdot 16)
 *   R = 1 row  (decode)   12.5 cycles    10.0 cycles   (both sdot; one float convert and
 *                                                       FMA per 2 outputs instead of 2 per 1)
 * Decode on a phone is bound by memory, so expect the gain in prefill. Each weight pair
 * needs 4 zips per block: pack-weights (rows interleaved in pairs at compile time) would
 * remove them; not done.
 */
#include "common.h"
#include "lora_rows.h"

/* Bytes of stack for the quantized rows (K bytes + 2 floats per block of 32 per row). */
#define KILN_QMM_STACK 65536
/* Floats of stack for rms_matmul's normalised rows (K <= this): rows are normalised and
 * quantized this many floats at a time, so it bounds K, not the rows of a call. */
#define KILN_QMM_NORM_FLOATS 8192

enum kiln_isa {
  KILN_ISA_ref, KILN_ISA_avx2, KILN_ISA_avxvnni, KILN_ISA_vnni, KILN_ISA_dotprod, KILN_ISA_i8mm
};

typedef int32_t kiln_i32x8 __attribute__((vector_size(32)));
typedef int8_t kiln_i8x32 __attribute__((vector_size(32)));
typedef int8_t kiln_i8x32u __attribute__((vector_size(32), aligned(1)));

/* One weight block unpacked for the integer dot: b = 32 bytes in element order (unsigned
 * nibbles u for q4, |v| on x86 / v on NEON for q8_0), a = the signs source (x86 q8_0),
 * dw the scale, off the offset per unit of s (-8 dw for q4_0, m for q4_1, 0 for q8_0). */
typedef struct {
  kiln_i8x32 b, a;
  float dw, off;
} kiln_qw;

KILN_INLINE void qw_scales(enum kiln_wt wt, const void* row, int64_t ib, kiln_qw* o,
                           const uint8_t** qs) {
  switch (wt) {
    case KILN_WT_q4_0: {
      const kiln_block_q4_0* b = (const kiln_block_q4_0*)row + ib;
      o->dw = (float)b->d;
      o->off = -8.0f * o->dw;
      *qs = b->qs;
      return;
    }
    case KILN_WT_q4_1: {
      const kiln_block_q4_1* b = (const kiln_block_q4_1*)row + ib;
      const kiln_f2 dm = __builtin_convertvector(*(const kiln_h2u*)&b->d, kiln_f2);
      o->dw = dm[0];
      o->off = dm[1];
      *qs = b->qs;
      return;
    }
    case KILN_WT_q8_0: {
      const kiln_block_q8_0* b = (const kiln_block_q8_0*)row + ib;
      o->dw = (float)b->d;
      o->off = 0.0f;
      *qs = (const uint8_t*)b->qs;
      return;
    }
    default: return;
  }
}

/* Portable: nibbles in element order, q8_0 bytes as they are; dot in plain C. Lane l of
 * the int32x8 sums elements 4l..4l+3 in every variant (vpmaddubsw+vpmaddwd, vpdpbusd and
 * the two sdots all do), so the sums are exact and the same, and every variant gives the
 * same bits as this one (kernels_test checks). */
KILN_INLINE void qw_load_ref(enum kiln_wt wt, const void* row, int64_t ib, kiln_qw* o) {
  const uint8_t* qs;
  qw_scales(wt, row, ib, o, &qs);
  if (wt == KILN_WT_q8_0) {
    o->b = *(const kiln_i8x32u*)qs;
  } else {
    const kiln_u8x16 q = *(const kiln_u8x16u*)qs, lo = q & 15, hi = q >> 4;
    o->b = (kiln_i8x32)__builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                               12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                                               24, 25, 26, 27, 28, 29, 30, 31);
  }
}
KILN_INLINE void qdot_ref(enum kiln_wt wt, const kiln_qw* w, const int8_t* q, kiln_i32x8* p) {
  kiln_i32x8 s = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < 32; ++j) {
    const int32_t wj = wt == KILN_WT_q8_0 ? (int32_t)w->b[j] : (int32_t)(uint8_t)w->b[j];
    s[j >> 2] += wj * (int32_t)q[j]; /* lane l: elements 4l..4l+3, as vpdpbusd and sdot */
  }
  *p = s;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define KILN_AVX2 __attribute__((target("avx2,fma,f16c")))
#define KILN_AVXVNNI __attribute__((target("avx2,fma,f16c,avxvnni")))
#define KILN_VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")))

/* x86: q4 nibbles as unsigned bytes (vpmaddubsw/vpdpbusd take unsigned x signed); q8_0
 * as |v| with the sign moved onto the activation (GGML's trick), which keeps vpmaddubsw's
 * pair sums within int16: 2 * 128 * 127 < 32768 (u * q for q4: 2 * 15 * 127). */
#define KILN_DEFINE_QW_X86(isa, attr)                                                      \
  static inline attr void qw_load_##isa(enum kiln_wt wt, const void* row, int64_t ib,     \
                                        kiln_qw* o) {                                      \
    const uint8_t* qs;                                                                     \
    qw_scales(wt, row, ib, o, &qs);                                                        \
    if (wt == KILN_WT_q8_0) {                                                              \
      const __m256i v = _mm256_loadu_si256((const __m256i*)qs);                           \
      o->b = (kiln_i8x32)_mm256_sign_epi8(v, v);                                           \
      o->a = (kiln_i8x32)v;                                                                \
    } else {                                                                               \
      const __m128i raw = _mm_loadu_si128((const __m128i*)qs);                            \
      const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);                 \
      o->b = (kiln_i8x32)_mm256_and_si256(both, _mm256_set1_epi8(15));                     \
    }                                                                                      \
  }
KILN_DEFINE_QW_X86(avx2, KILN_AVX2)
KILN_DEFINE_QW_X86(avxvnni, KILN_AVXVNNI)
KILN_DEFINE_QW_X86(vnni, KILN_VNNI)

static inline KILN_AVX2 void qdot_avx2(enum kiln_wt wt, const kiln_qw* w, const int8_t* q,
                                       kiln_i32x8* p) {
  __m256i x = _mm256_loadu_si256((const __m256i*)q);
  if (wt == KILN_WT_q8_0) x = _mm256_sign_epi8(x, (__m256i)w->a);
  const __m256i s16 = _mm256_maddubs_epi16((__m256i)w->b, x);
  *p = (kiln_i32x8)_mm256_madd_epi16(s16, _mm256_set1_epi16(1));
}
static inline KILN_AVXVNNI void qdot_avxvnni(enum kiln_wt wt, const kiln_qw* w,
                                             const int8_t* q, kiln_i32x8* p) {
  __m256i x = _mm256_loadu_si256((const __m256i*)q);
  if (wt == KILN_WT_q8_0) x = _mm256_sign_epi8(x, (__m256i)w->a);
  *p = (kiln_i32x8)_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (__m256i)w->b, x);
}
static inline KILN_VNNI void qdot_vnni(enum kiln_wt wt, const kiln_qw* w, const int8_t* q,
                                       kiln_i32x8* p) {
  __m256i x = _mm256_loadu_si256((const __m256i*)q);
  if (wt == KILN_WT_q8_0) x = _mm256_sign_epi8(x, (__m256i)w->a);
  *p = (kiln_i32x8)_mm256_dpbusd_epi32(_mm256_setzero_si256(), (__m256i)w->b, x);
}
#endif

#if defined(__aarch64__)
#include <arm_neon.h>

#define KILN_DOTPROD __attribute__((target("dotprod")))

/* NEON sdot is signed x signed: q4 nibbles stay 0..15 (the offset term handles q4_0). The
 * two halves (elements 0..15 and 16..31) go to lanes 0..3 and 4..7 of the int32x8. */
static inline KILN_DOTPROD void qw_load_dotprod(enum kiln_wt wt, const void* row, int64_t ib,
                                                kiln_qw* o) {
  qw_load_ref(wt, row, ib, o);
}
static inline KILN_DOTPROD void qdot_dotprod(enum kiln_wt wt, const kiln_qw* w, const int8_t* q,
                                             kiln_i32x8* p) {
  const int8x16_t w0 = vld1q_s8((const int8_t*)&w->b), w1 = vld1q_s8((const int8_t*)&w->b + 16);
  const int32x4_t z = vdupq_n_s32(0);
  const int32x4_t lo = vdotq_s32(z, w0, vld1q_s8(q)), hi = vdotq_s32(z, w1, vld1q_s8(q + 16));
  int32_t t[8];
  vst1q_s32(t, lo);
  vst1q_s32(t + 4, hi);
  *p = (kiln_i32x8){t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]};
}
/* +i8mm: smmla (vmmlaq_s32) takes two rows of 8 bytes from each side and adds the 2x2
 * matrix of their dot products to an int32x4. Two weight rows (n, n+1) and two rows of x
 * (r, r+1) per call, four calls per block of 32: the int32x4 then holds the four block
 * dot products {r.n, r.n+1, r+1.n, r+1.n+1}, exact (|sum| < 32 * 128 * 127). A row of x
 * without a partner (R odd: decode's R = 1) takes sdot instead, whose lanes are summed
 * to the same exact block dots ({n, n+1, n, n+1}), so the float arithmetic after the
 * integer dot is the same element for element in both paths and a row's result does not
 * depend on T or the grouping (tests/cross/qmatmul_i8mm_check.c checks the bits).
 *
 * The float order differs from every other variant: they convert 8 lanes of 4-element
 * sums per block and sum the lanes at the end; here each block's whole dot is converted
 * and, per output, acc = fma(f32(dot), dw * d, acc) with blocks alternating between two
 * accumulators (even and odd blocks: the FMA latency chain halves), offsets dw-free
 * (off * s) in a chain of their own; y = (acc_even + acc_odd) + (off_even + off_odd).
 * So results are not the bits of the host's variants (NMSE of the difference ~1e-13:
 * the roundings of float sums; the cross test says what that means for the tokens). */
#define KILN_I8MM __attribute__((target("dotprod,i8mm")))

/* Block ib of a weight row: elements 0..15 in lo, 16..31 in hi (q4: nibbles 0..15). */
static inline KILN_I8MM void i8mm_wload(enum kiln_wt wt, const void* row, int64_t ib,
                                        int8x16_t* lo, int8x16_t* hi, float* dw, float* off) {
  kiln_qw o;
  const uint8_t* qs;
  qw_scales(wt, row, ib, &o, &qs);
  *dw = o.dw;
  *off = o.off;
  if (wt == KILN_WT_q8_0) {
    *lo = vld1q_s8((const int8_t*)qs);
    *hi = vld1q_s8((const int8_t*)qs + 16);
  } else {
    const uint8x16_t raw = vld1q_u8(qs);
    *lo = vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(15)));
    *hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
  }
}
/* 8-byte chunk c of two 16-byte halves side by side: {a[8c..8c+7], b[8c..8c+7]}. */
static inline KILN_I8MM int8x16_t i8mm_zip1(int8x16_t a, int8x16_t b) {
  return vreinterpretq_s8_s64(vzip1q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}
static inline KILN_I8MM int8x16_t i8mm_zip2(int8x16_t a, int8x16_t b) {
  return vreinterpretq_s8_s64(vzip2q_s64(vreinterpretq_s64_s8(a), vreinterpretq_s64_s8(b)));
}

/* One block for the rows of x at qa and qb (qa == qb for a row alone) and the weight rows
 * (lo0, hi0), (lo1, hi1): the exact dots {a.0, a.1, b.0, b.1}. */
static inline KILN_I8MM int32x4_t i8mm_dots(const int8_t* qa, const int8_t* qb, int pair,
                                            int8x16_t lo0, int8x16_t hi0, int8x16_t lo1,
                                            int8x16_t hi1) {
  const int8x16_t alo = vld1q_s8(qa), ahi = vld1q_s8(qa + 16);
  if (!pair) {
    const int32x4_t z = vdupq_n_s32(0);
    const int32x4_t d0 = vdotq_s32(vdotq_s32(z, lo0, alo), hi0, ahi);
    const int32x4_t d1 = vdotq_s32(vdotq_s32(z, lo1, alo), hi1, ahi);
    const int32x4_t p = vpaddq_s32(d0, d1); /* {d0 01, d0 23, d1 01, d1 23} */
    return vpaddq_s32(p, p);                /* {dot0, dot1, dot0, dot1} */
  }
  const int8x16_t blo = vld1q_s8(qb), bhi = vld1q_s8(qb + 16);
  int32x4_t acc = vdupq_n_s32(0);
  acc = vmmlaq_s32(acc, i8mm_zip1(alo, blo), i8mm_zip1(lo0, lo1));
  acc = vmmlaq_s32(acc, i8mm_zip2(alo, blo), i8mm_zip2(lo0, lo1));
  acc = vmmlaq_s32(acc, i8mm_zip1(ahi, bhi), i8mm_zip1(hi0, hi1));
  acc = vmmlaq_s32(acc, i8mm_zip2(ahi, bhi), i8mm_zip2(hi0, hi1));
  return acc;
}

/* One block ib into the accumulators of the P row pairs (R rows). */
static inline KILN_I8MM __attribute__((always_inline)) void i8mm_block(
    enum kiln_wt wt, const int8_t* restrict q, const float* restrict d,
    const float* restrict s, const void* w0, const void* w1, int64_t K, int64_t nb,
    int64_t ib, int R, float32x4_t* acc, float32x4_t* off) {
  int8x16_t lo0, hi0, lo1, hi1;
  float dw0, dw1, of0, of1;
  i8mm_wload(wt, w0, ib, &lo0, &hi0, &dw0, &of0);
  i8mm_wload(wt, w1, ib, &lo1, &hi1, &dw1, &of1);
  const float32x4_t dwv = {dw0, dw1, dw0, dw1}, ofv = {of0, of1, of0, of1};
  for (int ra = 0; ra < R; ra += 2) {
    const int rb = ra + 1 < R ? ra + 1 : ra, p = ra / 2;
    const int32x4_t dots = i8mm_dots(q + ra * K + ib * KILN_QK, q + rb * K + ib * KILN_QK,
                                     rb != ra, lo0, hi0, lo1, hi1);
    const float da = d[ra * nb + ib], db = d[rb * nb + ib];
    const float32x4_t dv = {da, da, db, db};
    acc[p] = vfmaq_f32(acc[p], vcvtq_f32_s32(dots), vmulq_f32(dwv, dv));
    if (wt != KILN_WT_q8_0) {
      const float sa = s[ra * nb + ib], sb = s[rb * nb + ib];
      const float32x4_t sv = {sa, sa, sb, sb};
      off[p] = vfmaq_f32(off[p], ofv, sv);
    }
  }
}

/* qmm_group for +i8mm (R constant, as qmm_group needs): columns in pairs (the last one
 * alone is computed twice and stored once), rows of x in pairs with an odd last row alone. */
static inline KILN_I8MM __attribute__((always_inline)) void qmm_group_i8mm_r(
    enum kiln_wt wt, const int8_t* restrict q, const float* restrict d,
    const float* restrict s, const void* restrict w, float* restrict y, int64_t K, int64_t N,
    int64_t n0, int64_t n1, int R) {
  const int64_t nb = K / KILN_QK, rb = kiln_row_bytes(wt, K);
  for (int64_t n = n0; n < n1; n += 2) {
    const int has1 = n + 1 < n1;
    const void* w0 = (const char*)w + n * rb;
    const void* w1 = (const char*)w + (has1 ? n + 1 : n) * rb;
    /* even blocks into acc0/off0, odd into acc1/off1: two independent FMA chains */
    float32x4_t acc0[4], acc1[4], off0[4], off1[4];
    for (int p = 0; p < 4; ++p) acc0[p] = acc1[p] = off0[p] = off1[p] = vdupq_n_f32(0.0f);
    int64_t ib = 0;
    for (; ib + 2 <= nb; ib += 2) {
      i8mm_block(wt, q, d, s, w0, w1, K, nb, ib, R, acc0, off0);
      i8mm_block(wt, q, d, s, w0, w1, K, nb, ib + 1, R, acc1, off1);
    }
    if (ib < nb) i8mm_block(wt, q, d, s, w0, w1, K, nb, ib, R, acc0, off0);
    for (int ra = 0; ra < R; ra += 2) {
      const int p = ra / 2;
      const float32x4_t v = vaddq_f32(vaddq_f32(acc0[p], acc1[p]), vaddq_f32(off0[p], off1[p]));
      y[ra * N + n] = vgetq_lane_f32(v, 0);
      if (has1) y[ra * N + n + 1] = vgetq_lane_f32(v, 1);
      if (ra + 1 < R) {
        y[(ra + 1) * N + n] = vgetq_lane_f32(v, 2);
        if (has1) y[(ra + 1) * N + n + 1] = vgetq_lane_f32(v, 3);
      }
    }
  }
}
static inline KILN_I8MM void qmm_group_i8mm(enum kiln_wt wt, const int8_t* restrict q,
                                            const float* restrict d, const float* restrict s,
                                            const void* restrict w, float* restrict y,
                                            int64_t K, int64_t N, int64_t n0, int64_t n1,
                                            int R) {
  switch (R) {
    case 8: qmm_group_i8mm_r(wt, q, d, s, w, y, K, N, n0, n1, 8); return;
    case 4: qmm_group_i8mm_r(wt, q, d, s, w, y, K, N, n0, n1, 4); return;
    case 3: qmm_group_i8mm_r(wt, q, d, s, w, y, K, N, n0, n1, 3); return;
    case 2: qmm_group_i8mm_r(wt, q, d, s, w, y, K, N, n0, n1, 2); return;
    default: qmm_group_i8mm_r(wt, q, d, s, w, y, K, N, n0, n1, 1); return;
  }
}
#endif


KILN_INLINE void qw_load(enum kiln_isa isa, enum kiln_wt wt, const void* row, int64_t ib,
                         kiln_qw* o) {
  switch (isa) {
#if defined(__x86_64__)
    case KILN_ISA_avx2: qw_load_avx2(wt, row, ib, o); return;
    case KILN_ISA_avxvnni: qw_load_avxvnni(wt, row, ib, o); return;
    case KILN_ISA_vnni: qw_load_vnni(wt, row, ib, o); return;
#endif
#if defined(__aarch64__)
    case KILN_ISA_dotprod: qw_load_dotprod(wt, row, ib, o); return;
#endif
    default: qw_load_ref(wt, row, ib, o); return;
  }
}
KILN_INLINE void qdot(enum kiln_isa isa, enum kiln_wt wt, const kiln_qw* w, const int8_t* q,
                      kiln_i32x8* p) {
  switch (isa) {
#if defined(__x86_64__)
    case KILN_ISA_avx2: qdot_avx2(wt, w, q, p); return;
    case KILN_ISA_avxvnni: qdot_avxvnni(wt, w, q, p); return;
    case KILN_ISA_vnni: qdot_vnni(wt, w, q, p); return;
#endif
#if defined(__aarch64__)
    case KILN_ISA_dotprod: qdot_dotprod(wt, w, q, p); return;
#endif
    default: qdot_ref(wt, w, q, p); return;
  }
}

/* Quantizes rows [0, R) of x (K a multiple of 32) into q (R*K bytes), d and s (R*K/32), and
 * when is is not null the integer sums of q per block (the packed kernels' offset terms).
 * Sixteen blocks at a time: their maxima first, then the two divisions per block as two
 * vector divisions, then the rounding. Every element goes through the same float
 * expressions as one block at a time would (maxima on bits and integer sums are exact in
 * any order), so the bits do not depend on the grouping. Why: every thread quantizes all
 * rows of every matmul it takes part in, so with several rows (streams, a DS2D verify
 * pass) this runs R times per thread per matmul; one block at a time it spent ~5.5 ns per
 * block, most of it in the scalar divisions and horizontal folds. */
#define KILN_QZ_GROUP 16
KILN_INLINE int32_t hmax_i32x16(kiln_i32x16 a) {
  typedef int32_t i32x8 __attribute__((vector_size(32)));
  i32x8 m = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7);
  const i32x8 h = __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
  const i32x8 gm = m > h;
  m = (m & gm) | (h & ~gm); /* C has no vector ?: */
  kiln_i32x4 l = __builtin_shufflevector(m, m, 0, 1, 2, 3);
  const kiln_i32x4 u = __builtin_shufflevector(m, m, 4, 5, 6, 7);
  const kiln_i32x4 gl = l > u;
  l = (l & gl) | (u & ~gl);
  int32_t r = l[0];
  for (int k = 1; k < 4; ++k) r = l[k] > r ? l[k] : r;
  return r;
}
KILN_INLINE void quantize_rows(const float* restrict x, int8_t* restrict q, float* restrict d,
                               float* restrict s, int32_t* restrict is, int64_t R, int64_t K) {
  const int64_t n = R * (K / KILN_QK);
  const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  for (int64_t i0 = 0; i0 < n; i0 += KILN_QZ_GROUP) {
    const int64_t m = kiln_min(KILN_QZ_GROUP, n - i0);
    /* max |x| per block on the bit patterns (non-negative floats order as their bits do) */
    _Alignas(64) int32_t mb[KILN_QZ_GROUP] = {0};
    for (int64_t b = 0; b < m; ++b) {
      const float* xb = x + (i0 + b) * KILN_QK;
      const kiln_i32x16 a0 = (kiln_i32x16)kiln_load16(xb) & 0x7fffffff;
      const kiln_i32x16 a1 = (kiln_i32x16)kiln_load16(xb + 16) & 0x7fffffff;
      const kiln_i32x16 g = a0 > a1;
      mb[b] = hmax_i32x16((a0 & g) | (a1 & ~g));
    }
    const kiln_f16x mx = (kiln_f16x)(*(const kiln_i32x16*)mb); /* the maxima, as floats */
    _Alignas(64) float db[KILN_QZ_GROUP], id[KILN_QZ_GROUP];
    *(kiln_f16x*)db = mx / kiln_splat16(127.0f);
    *(kiln_f16x*)id = kiln_select16(mx > kiln_splat16(0.0f), kiln_splat16(127.0f) / mx, kiln_splat16(0.0f));
    for (int64_t b = 0; b < m; ++b) {
      const int64_t i = i0 + b;
      const float* xb = x + i * KILN_QK;
      const kiln_f16x r0 = (kiln_load16(xb) * kiln_splat16(id[b]) + kiln_splat16(magic)) - kiln_splat16(magic);
      const kiln_f16x r1 = (kiln_load16(xb + 16) * kiln_splat16(id[b]) + kiln_splat16(magic)) - kiln_splat16(magic);
      const kiln_i32x16 q0 = __builtin_convertvector(r0, kiln_i32x16);
      const kiln_i32x16 q1 = __builtin_convertvector(r1, kiln_i32x16);
      typedef int8_t i8x16u __attribute__((vector_size(16), aligned(1)));
      *(i8x16u*)(q + i * KILN_QK) = __builtin_convertvector(q0, i8x16u);
      *(i8x16u*)(q + i * KILN_QK + 16) = __builtin_convertvector(q1, i8x16u);
      const kiln_i32x16 t = q0 + q1;
      int32_t st = 0;
      for (int k = 0; k < 16; ++k) st += t[k];
      d[i] = db[b];
      s[i] = db[b] * (float)st;
      if (is) is[i] = st;
    }
  }
}

/* rms_matmul's prologue: R rows RMS-normalised with weight nw (kiln_rms_row, the bits of
 * the rms_norm kernel) into nbuf, KILN_QMM_NORM_FLOATS / K rows at a time, each batch
 * quantized before the next. Blocks quantize independently, so the bits do not depend on
 * the batch size; the batches only keep the float buffer small without shortening the
 * call's chunk of rows (which would read the weights once more per chunk: a 16-node
 * verify pass at K = 576 was a 14-row and a 2-row call). */
KILN_INLINE void norm_quantize_rows(const float* restrict x, const float* restrict nw, float eps,
                                    float* restrict nbuf, int8_t* restrict q, float* restrict d,
                                    float* restrict s, int32_t* restrict is, int64_t R, int64_t K) {
  const int64_t nb = K / KILN_QK, batch = KILN_QMM_NORM_FLOATS / K;
  for (int64_t r0 = 0; r0 < R; r0 += batch) {
    const int64_t n = kiln_min(batch, R - r0);
    for (int64_t r = 0; r < n; ++r) kiln_rms_row(x + (r0 + r) * K, nw, nbuf + r * K, K, eps);
    quantize_rows(nbuf, q + r0 * K, d + r0 * nb, s + r0 * nb, is ? is + r0 * nb : 0, n, K);
  }
}

/* y[r*N + n] for r < R and n in [n0, n1), from R quantized rows (q, d, s at row 0). */
KILN_INLINE void qmm_group(enum kiln_isa isa, enum kiln_wt wt, const int8_t* restrict q,
                           const float* restrict d, const float* restrict s,
                           const void* restrict w, float* restrict y, int64_t K, int64_t N,
                           int64_t n0, int64_t n1, int R) {
#if defined(__aarch64__)
  if (isa == KILN_ISA_i8mm) {
    qmm_group_i8mm(wt, q, d, s, w, y, K, N, n0, n1, R);
    return;
  }
#endif
  const int64_t nb = K / KILN_QK, rb = kiln_row_bytes(wt, K);
  for (int64_t n = n0; n < n1; ++n) {
    const void* wr = (const char*)w + n * rb;
    kiln_f8 acc[8];
    float off[8];
    for (int r = 0; r < R; ++r) {
      acc[r] = kiln_splat8(0.0f);
      off[r] = 0.0f;
    }
    /* Blocks in groups of G: the group's block sums chain through FMAs that do not
     * depend on the previous group, and only one add per group goes into acc (with one
     * block per add, decode waited on that add's latency: 4 cycles per 32 weights). */
    const int64_t G = nb % 4 == 0 ? 4 : nb % 2 == 0 ? 2 : 1;
    for (int64_t ib = 0; ib < nb; ib += G) {
      kiln_f8 t[8];
      float o[8];
      for (int64_t g = 0; g < G; ++g) {
        kiln_qw wb;
        qw_load(isa, wt, wr, ib + g, &wb);
        for (int r = 0; r < R; ++r) {
          kiln_i32x8 p;
          qdot(isa, wt, &wb, q + r * K + (ib + g) * KILN_QK, &p);
          const kiln_f8 f = __builtin_convertvector(p, kiln_f8);
          const kiln_f8 sc = kiln_splat8(wb.dw * d[r * nb + ib + g]);
          const float so = wb.off * s[r * nb + ib + g];
          t[r] = g == 0 ? f * sc : t[r] + f * sc;
          o[r] = g == 0 ? so : o[r] + so;
        }
      }
      for (int r = 0; r < R; ++r) {
        acc[r] += t[r];
        if (wt != KILN_WT_q8_0) off[r] += o[r];
      }
    }
    for (int r = 0; r < R; ++r) y[r * N + n] = kiln_hsum8(acc[r]) + off[r];
  }
}

/* ---- Packed weights (pack-weights; layout in common.h and ir/packing.h) ----------------
 *
 * y[r*N + l] for r < R and the 16 rows l of one packed group (wg), from R quantized rows.
 * Per block of 32 and row of x: the integer dot of the block with each of the 16 weight
 * rows (exact int32; the q4_0 and q8_0 offsets, 8 and 128 per unit of x, taken off in
 * integers with the block's sum of q), converted once, then acc = fma(dot, dw * d, acc);
 * q4_1's minimum goes into a second chain off = fma(m, s, off); y = acc + off. Every
 * variant does exactly this per output, so they agree bit for bit, for any R or split
 * (kernels_test checks): the order differs from the GGUF-row kernels above (which convert 8
 * lane sums per block), by float rounding only.
 *
 * Cost per block and row of x, for 16 outputs: 8 integer dot instructions (zmm: 16 lanes x
 * 4 bytes, x's 4 bytes broadcast from memory), one convert, one multiply, one FMA (two for
 * q4_1); the GGUF-row kernels spend a dot, a convert, a broadcast multiply and an FMA per
 * block and row of x for each output. Nibbles are unpacked once per block for R rows. */
#define KILN_PACK_MAX_R 8 /* rows of x per pass over a group (zmm: 8 accumulators, 8 offsets, 8 lines) */

KILN_INLINE int64_t pack_bytes(enum kiln_wt wt) {
  return wt == KILN_WT_q4_0 ? (int64_t)sizeof(kiln_pack_q4_0)
       : wt == KILN_WT_q4_1 ? (int64_t)sizeof(kiln_pack_q4_1) : (int64_t)sizeof(kiln_pack_q8_0);
}
/* Software prefetch of the weights 4 KiB ahead of the block being read (one prefetch per
 * 64-byte line). A thread walks its groups' blocks in address order, yet without this the
 * loads of a block and the dot products of the one before did not overlap well: measured
 * one thread, SmolLM2's SwiGLU and LM-head shapes, weights in L3, 1.10-1.25x faster at
 * 1 row and 1.07-1.15x at 3-4 rows (2 KiB ahead gave less; 8 KiB the same). A prefetch
 * past the end of the weights is harmless: prefetches never fault. Bits are unchanged.
 *
 * Which prefetch is the target's (TargetProfile::weight_prefetch, docs/profiles.md):
 *  - non-temporal (KILN_WEIGHT_PREFETCH_NT: prefetchnta on x86, a streaming PRFM on
 *    AArch64): a decode step reads each weight once, ~90 MB of them, so keeping them out
 *    of L2/L3 leaves those caches to what is read again (activations, the KV cache,
 *    norms). On an AMD EPYC (32 MB L3, 2 threads) kiln_bench decode was 1.08-1.25x
 *    faster with it than with an ordinary prefetch (five alternated rounds, median 1.11x).
 *  - outer cache (KILN_WEIGHT_PREFETCH_L2: prefetcht2 on x86): on an Intel Xeon with
 *    AVX512-VNNI (2 vCPUs of a VM) prefetchnta made the kernel 2x slower streamed and 4x
 *    slower with the weights in L2 (bench/qmatmul_rows --weight-prefetch both): there
 *    the non-temporal line is read back from memory rather than from L2.
 * codegen (compile_graph) gives kiln_weight_prefetch the profile's value and makes it a
 * constant, so the branch below folds away; it is weak and writable so that the bitcode
 * does not fold this default first, and so that a host build (bench/qmatmul_rows) can
 * compare the two in one run. */
#define KILN_PACK_PREFETCH 4096
__attribute__((weak)) int kiln_weight_prefetch = KILN_WEIGHT_PREFETCH_NT;
KILN_INLINE void pack_prefetch(enum kiln_wt wt, const char* blk) {
  if (kiln_weight_prefetch == KILN_WEIGHT_PREFETCH_L2)
    for (int64_t l = 0; l < pack_bytes(wt); l += 64) __builtin_prefetch(blk + KILN_PACK_PREFETCH + l, 0, 1);
  else
    for (int64_t l = 0; l < pack_bytes(wt); l += 64) __builtin_prefetch(blk + KILN_PACK_PREFETCH + l, 0, 0);
}
/* Offset of the quants in a packed block, and x's integer offset per unit of q's sum. */
KILN_INLINE int64_t pack_qs(enum kiln_wt wt) { return wt == KILN_WT_q4_1 ? 64 : 32; }
KILN_INLINE int32_t pack_zero(enum kiln_wt wt) {
  return wt == KILN_WT_q4_0 ? 8 : wt == KILN_WT_q8_0 ? 128 : 0;
}

/* Portable: the definition the others match. */
KILN_INLINE void qmm_p16_ref(enum kiln_wt wt, const int8_t* restrict q, const float* restrict d,
                             const float* restrict s, const int32_t* restrict is,
                             const void* restrict wg, float* restrict y, int64_t K, int64_t N,
                             int R) {
  const int64_t nb = K / KILN_QK;
  for (int r = 0; r < R; ++r)
    for (int l = 0; l < 16; ++l) {
      float acc = 0.0f, off = 0.0f;
      for (int64_t ib = 0; ib < nb; ++ib) {
        const char* blk = (const char*)wg + ib * pack_bytes(wt);
        const uint8_t* qs = (const uint8_t*)blk + pack_qs(wt);
        const int8_t* x = q + r * K + ib * KILN_QK;
        int32_t dot = 0;
        if (wt == KILN_WT_q8_0) {
          for (int j = 0; j < 8; ++j)
            for (int e = 0; e < 4; ++e) dot += (int32_t)qs[64 * j + 4 * l + e] * x[4 * j + e];
        } else {
          for (int j = 0; j < 4; ++j)
            for (int e = 0; e < 4; ++e) {
              const uint8_t b = qs[64 * j + 4 * l + e];
              dot += (int32_t)(b & 15) * x[4 * j + e] + (int32_t)(b >> 4) * x[16 + 4 * j + e];
            }
        }
        dot -= pack_zero(wt) * is[r * nb + ib];
        const float dw = (float)((const _Float16*)blk)[l];
        acc = __builtin_fmaf((float)dot, dw * d[r * nb + ib], acc);
        if (wt == KILN_WT_q4_1) off = __builtin_fmaf((float)((const _Float16*)blk)[16 + l], s[r * nb + ib], off);
      }
      y[r * N + l] = acc + off;
    }
}

#if defined(__x86_64__)
/* AVX512-VNNI: lane l of a zmm is weight row l. Per block the lines are loaded (and q4
 * nibbles unpacked) once into 8 zmm, then each row of x runs its 8 vpdpbusd into two
 * chains of its own and one convert + FMA into its accumulator: the rows are independent
 * chains the core overlaps, and only acc (and q4_1's off) live across blocks, so up to 8
 * rows share one pass over the weights (16 + 8 zmm for q4_1). */
static inline KILN_VNNI __attribute__((always_inline)) void qmm_p16_vnni_r(
    enum kiln_wt wt, const int8_t* restrict q, const float* restrict d, const float* restrict s,
    const int32_t* restrict is, const void* restrict wg, float* restrict y, int64_t K, int64_t N,
    int R) {
  typedef int32_t i32u __attribute__((aligned(1)));
  const int64_t nb = K / KILN_QK;
  __m512 acc[KILN_PACK_MAX_R], off[KILN_PACK_MAX_R];
  for (int r = 0; r < R; ++r) acc[r] = off[r] = _mm512_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(15);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const char* blk = (const char*)wg + ib * pack_bytes(wt);
    const char* qs = blk + pack_qs(wt);
    pack_prefetch(wt, blk);
    /* w[2j] pairs with x's bytes 4j.. and w[2j+1] with the next group: for q8_0 the lines
     * 2j and 2j+1, for q4 line j's low nibbles (elements 4j..) and high ones (16+4j..). */
    __m512i w[8];
    int xo[8];
    if (wt == KILN_WT_q8_0) {
      for (int j = 0; j < 8; ++j) w[j] = _mm512_loadu_si512(qs + 64 * j), xo[j] = 4 * j;
    } else {
      for (int j = 0; j < 4; ++j) {
        const __m512i raw = _mm512_loadu_si512(qs + 64 * j);
        w[2 * j] = _mm512_and_si512(raw, m4), xo[2 * j] = 4 * j;
        w[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4), xo[2 * j + 1] = 16 + 4 * j;
      }
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)blk));
    const __m512 m = wt == KILN_WT_q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(blk + 32)))
                                        : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) {
      const int8_t* x = q + r * K + ib * KILN_QK;
      __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
      for (int j = 0; j < 8; j += 2) {
        s0 = _mm512_dpbusd_epi32(s0, w[j], _mm512_set1_epi32(*(const i32u*)(x + xo[j])));
        s1 = _mm512_dpbusd_epi32(s1, w[j + 1], _mm512_set1_epi32(*(const i32u*)(x + xo[j + 1])));
      }
      __m512i dot = _mm512_add_epi32(s0, s1);
      if (wt != KILN_WT_q4_1) dot = _mm512_sub_epi32(dot, _mm512_set1_epi32(pack_zero(wt) * is[r * nb + ib]));
      const __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(d[r * nb + ib]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc[r]);
      if (wt == KILN_WT_q4_1) off[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(s[r * nb + ib]), off[r]);
    }
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(y + r * N, _mm512_add_ps(acc[r], off[r]));
}
static inline KILN_VNNI void qmm_p16_vnni(enum kiln_wt wt, const int8_t* restrict q,
                                          const float* restrict d, const float* restrict s,
                                          const int32_t* restrict is, const void* restrict wg,
                                          float* restrict y, int64_t K, int64_t N, int R) {
  switch (R) {
    case 8: qmm_p16_vnni_r(wt, q, d, s, is, wg, y, K, N, 8); return;
    case 7: qmm_p16_vnni_r(wt, q, d, s, is, wg, y, K, N, 7); return;
    case 6: qmm_p16_vnni_r(wt, q, d, s, is, wg, y, K, N, 6); return;
    case 5: qmm_p16_vnni_r(wt, q, d, s, is, wg, y, K, N, 5); return;
    case 4: qmm_p16_vnni_r(wt, q, d, s, is, wg, y, K, N, 4); return;
    case 3: qmm_p16_vnni_r(wt, q, d, s, is, wg, y, K, N, 3); return;
    case 2: qmm_p16_vnni_r(wt, q, d, s, is, wg, y, K, N, 2); return;
    default: qmm_p16_vnni_r(wt, q, d, s, is, wg, y, K, N, 1); return;
  }
}
#endif

#if defined(__aarch64__)
/* AArch64 +dotprod: sdot by element. A 16-byte slice of a packed line is 4 weight rows x
 * 4 bytes, and vdotq_laneq_s32 adds to lane i the dot of row i's 4 bytes with one 4-byte
 * group of x, so a line (16 rows) is 4 sdots per row of x and the int32x4 quarter c of the
 * accumulators holds rows 4c..4c+3: the lanes are outputs, as in the zmm kernel. sdot is
 * signed x signed: q4 nibbles (0..15) are fine as they are, and q8_0's stored v + 128
 * becomes v again by flipping the top bit, so that dot needs no offset (the integer is
 * the reference's sum((v + 128) x) - 128 sum(x) exactly). The float steps are the
 * reference's, lane for lane: results are its bits. */
static inline KILN_DOTPROD __attribute__((always_inline)) void qmm_p16_dotprod_r(
    enum kiln_wt wt, const int8_t* restrict q, const float* restrict d, const float* restrict s,
    const int32_t* restrict is, const void* restrict wg, float* restrict y, int64_t K, int64_t N,
    int R) {
  const int64_t nb = K / KILN_QK;
  float32x4_t acc[KILN_PACK_MAX_R][4], off[KILN_PACK_MAX_R][4];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c) acc[r][c] = off[r][c] = vdupq_n_f32(0.0f);
  const uint8x16_t m4 = vdupq_n_u8(15), sign = vdupq_n_u8(0x80);
  for (int64_t ib = 0; ib < nb; ++ib) {
    const char* blk = (const char*)wg + ib * pack_bytes(wt);
    const uint8_t* qs = (const uint8_t*)blk + pack_qs(wt);
    pack_prefetch(wt, blk);
    int32x4_t dot[KILN_PACK_MAX_R][4];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < 4; ++c) dot[r][c] = vdupq_n_s32(0);
    int8x16_t xv[KILN_PACK_MAX_R][2];
    for (int r = 0; r < R; ++r) {
      xv[r][0] = vld1q_s8(q + r * K + ib * KILN_QK);
      xv[r][1] = vld1q_s8(q + r * K + ib * KILN_QK + 16);
    }
    /* Line j of the block against x's 4-byte group g (lane g & 3 of xv[r][g >> 2]); the
     * lane must be a constant, hence the macro. */
#define KILN_P16_SDOT(w, c, g)                                                          \
  for (int r = 0; r < R; ++r)                                                           \
    dot[r][c] = vdotq_laneq_s32(dot[r][c], (w), xv[r][(g) >> 2], (g) & 3);
#define KILN_P16_Q8_LINE(j)                                                            \
  for (int c = 0; c < 4; ++c) {                                                         \
    const int8x16_t w = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(qs + 64 * (j) + 16 * c), sign)); \
    KILN_P16_SDOT(w, c, j)                                                              \
  }
#define KILN_P16_Q4_LINE(j)                                                            \
  for (int c = 0; c < 4; ++c) {                                                         \
    const uint8x16_t raw = vld1q_u8(qs + 64 * (j) + 16 * c);                            \
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(raw, m4));                        \
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));                       \
    KILN_P16_SDOT(lo, c, j)                                                             \
    KILN_P16_SDOT(hi, c, 4 + (j))                                                       \
  }
    if (wt == KILN_WT_q8_0) {
      KILN_P16_Q8_LINE(0) KILN_P16_Q8_LINE(1) KILN_P16_Q8_LINE(2) KILN_P16_Q8_LINE(3)
      KILN_P16_Q8_LINE(4) KILN_P16_Q8_LINE(5) KILN_P16_Q8_LINE(6) KILN_P16_Q8_LINE(7)
    } else {
      KILN_P16_Q4_LINE(0) KILN_P16_Q4_LINE(1) KILN_P16_Q4_LINE(2) KILN_P16_Q4_LINE(3)
    }
#undef KILN_P16_Q4_LINE
#undef KILN_P16_Q8_LINE
#undef KILN_P16_SDOT
    const float16_t* dh = (const float16_t*)blk;
    for (int c = 0; c < 4; ++c) {
      const float32x4_t dw = vcvt_f32_f16(vld1_f16(dh + 4 * c));
      for (int r = 0; r < R; ++r) {
        int32x4_t dt = dot[r][c];
        if (wt == KILN_WT_q4_0) dt = vsubq_s32(dt, vdupq_n_s32(8 * is[r * nb + ib]));
        const float32x4_t sc = vmulq_n_f32(dw, d[r * nb + ib]);
        acc[r][c] = vfmaq_f32(acc[r][c], vcvtq_f32_s32(dt), sc);
      }
      if (wt == KILN_WT_q4_1) {
        const float32x4_t m = vcvt_f32_f16(vld1_f16(dh + 16 + 4 * c));
        for (int r = 0; r < R; ++r) off[r][c] = vfmaq_n_f32(off[r][c], m, s[r * nb + ib]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 4; ++c) vst1q_f32(y + r * N + 4 * c, vaddq_f32(acc[r][c], off[r][c]));
}
static inline KILN_DOTPROD void qmm_p16_dotprod(enum kiln_wt wt, const int8_t* restrict q,
                                                const float* restrict d, const float* restrict s,
                                                const int32_t* restrict is, const void* restrict wg,
                                                float* restrict y, int64_t K, int64_t N, int R) {
  if (R > 4) { /* NEON has 32 q registers: 4 rows' accumulators (16 + 16 for q4_1) at most */
    qmm_p16_dotprod_r(wt, q, d, s, is, wg, y, K, N, 4);
    qmm_p16_dotprod(wt, q + 4 * K, d + 4 * (K / KILN_QK), s + 4 * (K / KILN_QK), is + 4 * (K / KILN_QK), wg,
                    y + 4 * N, K, N, R - 4);
    return;
  }
  switch (R) {
    case 4: qmm_p16_dotprod_r(wt, q, d, s, is, wg, y, K, N, 4); return;
    case 3: qmm_p16_dotprod_r(wt, q, d, s, is, wg, y, K, N, 3); return;
    case 2: qmm_p16_dotprod_r(wt, q, d, s, is, wg, y, K, N, 2); return;
    default: qmm_p16_dotprod_r(wt, q, d, s, is, wg, y, K, N, 1); return;
  }
}
#endif

/* R as a constant in each instantiation (the row loops unroll, accumulators stay in registers). */
KILN_INLINE void qmm_p16(enum kiln_isa isa, enum kiln_wt wt, const int8_t* restrict q,
                         const float* restrict d, const float* restrict s,
                         const int32_t* restrict is, const void* restrict wg, float* restrict y,
                         int64_t K, int64_t N, int R) {
#if defined(__x86_64__)
  if (isa == KILN_ISA_vnni) {
    qmm_p16_vnni(wt, q, d, s, is, wg, y, K, N, R);
    return;
  }
#endif
#if defined(__aarch64__)
  if (isa == KILN_ISA_dotprod) {
    qmm_p16_dotprod(wt, q, d, s, is, wg, y, K, N, R);
    return;
  }
#endif
  qmm_p16_ref(wt, q, d, s, is, wg, y, K, N, R);
}

/* Rows of x for the next pass over a packed group, `left` of the call's `rows` to go. A call
 * of up to KILN_PACK_MAX_R rows (decode, streams, a DS2D verify) makes one pass: the group
 * comes from DRAM once, and its loads overlap every row's work. A call with more rows
 * (prefill) reads a group from DRAM in its first pass and from L1 in the others, where the
 * kernel is bound by its own instructions, and there passes of 4 rows beat passes of 8:
 * at 8 rows the zmm kernel (8 accumulators, 8 q4_1 offsets, 8 weight lines) spills. A row's
 * result does not depend on the passes, so this changes speed only. Measured on this
 * machine (bench/qmatmul_rows, one thread, SmolLM2's FFN, q4_1, weights in L2, ms for 8
 * rows): 2.31-2.35 in one pass, 2.02-2.07 in two of 4; 7 rows 2.00 -> 1.83-1.87 as 4 + 3;
 * with the weights streamed from DRAM instead, 7 rows in two passes were 5-8% slower (the
 * second pass issues no new loads), hence one pass for calls of up to 8 rows. */
KILN_INLINE int pack_pass_rows(int64_t rows, int64_t left) {
  if (rows > KILN_PACK_MAX_R && left >= 7) return 4;
  return (int)kiln_min(KILN_PACK_MAX_R, left);
}

/* Groups [n0, n1) (multiples of 16) of a packed weight on `rows` quantized rows. */
KILN_INLINE void qmm_packed(enum kiln_isa isa, enum kiln_wt wt, const int8_t* q, const float* d,
                            const float* s, const int32_t* is, const void* restrict w,
                            float* restrict yc, int64_t K, int64_t N, int64_t n0, int64_t n1,
                            int64_t rows) {
  const int64_t nb = K / KILN_QK;
  for (int64_t n = n0; n < n1; n += KILN_PACK_ROWS) {
    const void* wg = (const char*)w + n / KILN_PACK_ROWS * nb * pack_bytes(wt);
    for (int64_t t = 0, R; t < rows; t += R) {
      R = pack_pass_rows(rows, rows - t);
      qmm_p16(isa, wt, q + t * K, d + t * nb, s + t * nb, is + t * nb, wg, yc + t * N + n, K, N, R);
    }
  }
}

/* The column tiles [n0, n1) of one weight on `rows` quantized rows (qmatmul's inner loops). */
KILN_INLINE void qmm_tiles(enum kiln_isa isa, enum kiln_wt wt, const int8_t* q, const float* d,
                           const float* s, const void* restrict w, float* restrict yc, int64_t K,
                           int64_t N, int64_t n0, int64_t n1, int64_t rows, int64_t tile) {
  const int64_t nb = K / KILN_QK;
  for (int64_t nt = n0; nt < n1; nt += tile) {
    const int64_t ne = kiln_min(n1, nt + tile);
    int64_t t = 0;
    for (; t + 8 <= rows; t += 8)
      qmm_group(isa, wt, q + t * K, d + t * nb, s + t * nb, w, yc + t * N, K, N, nt, ne, 8);
    if (rows - t >= 4) {
      qmm_group(isa, wt, q + t * K, d + t * nb, s + t * nb, w, yc + t * N, K, N, nt, ne, 4);
      t += 4;
    }
    if (rows - t == 3) {  // three streams decoding together: one pass over the weights
      qmm_group(isa, wt, q + t * K, d + t * nb, s + t * nb, w, yc + t * N, K, N, nt, ne, 3);
      t += 3;
    }
    if (rows - t >= 2) {
      qmm_group(isa, wt, q + t * K, d + t * nb, s + t * nb, w, yc + t * N, K, N, nt, ne, 2);
      t += 2;
    }
    if (rows - t >= 1)
      qmm_group(isa, wt, q + t * K, d + t * nb, s + t * nb, w, yc + t * N, K, N, nt, ne, 1);
  }
}

/* With nw (rms_matmul), rows are first RMS-normalised with weight nw into a float buffer
 * on the stack (kiln_rms_row: the bits of the rms_norm kernel), by every thread for
 * itself: the norm costs K floats per row per thread, and its barrier goes. */
KILN_INLINE void qmatmul(enum kiln_isa isa, enum kiln_wt wt, const float* restrict x,
                         const void* restrict w, float* restrict y, int64_t T, int64_t K,
                         int64_t N, int32_t tid, int32_t nth, const float* restrict nw, float eps,
                         int packed) {
  const int64_t nb = K / KILN_QK, row_bytes = K + 12 * nb;
  const int64_t chunk = KILN_QMM_STACK / row_bytes;
  if (chunk < 1 || (nw && K > KILN_QMM_NORM_FLOATS)) {
    /* K too large for the stack buffer: the float kernel (pack-weights leaves such weights
     * unpacked; fuse-rmsnorm-matmul fuses only K <= KILN_QMM_NORM_FLOATS) */
    switch (wt) {
      case KILN_WT_q4_0: kiln_matmul_q4_0(x, w, y, T, K, N, tid, nth); return;
      case KILN_WT_q4_1: kiln_matmul_q4_1(x, w, y, T, K, N, tid, nth); return;
      default: kiln_matmul_q8_0(x, w, y, T, K, N, tid, nth); return;
    }
  }
  int64_t n0, n1;
  kiln_split(N, 16, tid, nth, &n0, &n1);
  if (n0 >= n1) return;
  _Alignas(64) int8_t buf[KILN_QMM_STACK];
  _Alignas(64) float nbuf[KILN_QMM_NORM_FLOATS];
  const int64_t tile = kiln_max(1, kiln_min(16, 16384 / kiln_max(1, kiln_row_bytes(wt, K))));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t rows = kiln_min(chunk, T - t0);
    int8_t* q = buf;
    float* d = (float*)(buf + rows * K);
    float* s = d + rows * nb;
    int32_t* is = (int32_t*)(s + rows * nb);
    if (nw) norm_quantize_rows(x + t0 * K, nw, eps, nbuf, q, d, s, packed ? is : 0, rows, K);
    else quantize_rows(x + t0 * K, q, d, s, packed ? is : 0, rows, K);
    if (packed) qmm_packed(isa, wt, q, d, s, is, w, y + t0 * N, K, N, n0, n1, rows);
    else qmm_tiles(isa, wt, q, d, s, w, y + t0 * N, K, N, n0, n1, rows, tile);
  }
}

/* q, k and v as one call (fuse-qkv): rows normalised and quantized once, then each
 * weight's columns split over the threads exactly as three qmatmul calls split them, so
 * every output element is computed by the same code on the same int8 rows: the unfused
 * bits, with two of the three prologues gone. Same weight type and K for all three. */
KILN_INLINE void qmatmul3(enum kiln_isa isa, enum kiln_wt wt, const float* restrict x,
                          const float* restrict nw, const void* const w[3], float* const y[3],
                          int64_t T, int64_t K, const int64_t N[3], float eps, int32_t tid,
                          int32_t nth, int packed) {
  const int64_t nb = K / KILN_QK, row_bytes = K + 12 * nb;
  const int64_t chunk = KILN_QMM_STACK / row_bytes;
  if (chunk < 1 || K > KILN_QMM_NORM_FLOATS) { /* the pass checks K; stay correct anyway */
    for (int m = 0; m < 3; ++m) qmatmul(isa, wt, x, w[m], y[m], T, K, N[m], tid, nth, nw, eps, packed);
    return;
  }
  int64_t n0[3], n1[3];
  for (int m = 0; m < 3; ++m) kiln_split(N[m], 16, tid, nth, &n0[m], &n1[m]);
  if (n0[0] >= n1[0] && n0[1] >= n1[1] && n0[2] >= n1[2]) return;
  _Alignas(64) int8_t buf[KILN_QMM_STACK];
  _Alignas(64) float nbuf[KILN_QMM_NORM_FLOATS];
  const int64_t tile = kiln_max(1, kiln_min(16, 16384 / kiln_max(1, kiln_row_bytes(wt, K))));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t rows = kiln_min(chunk, T - t0);
    int8_t* q = buf;
    float* d = (float*)(buf + rows * K);
    float* s = d + rows * nb;
    int32_t* is = (int32_t*)(s + rows * nb);
    norm_quantize_rows(x + t0 * K, nw, eps, nbuf, q, d, s, packed ? is : 0, rows, K);
    for (int m = 0; m < 3; ++m) {
      if (n0[m] >= n1[m]) continue;
      if (packed) qmm_packed(isa, wt, q, d, s, is, w[m], y[m] + t0 * N[m], K, N[m], n0[m], n1[m], rows);
      else qmm_tiles(isa, wt, q, d, s, w[m], y[m] + t0 * N[m], K, N[m], n0[m], n1[m], rows, tile);
    }
  }
}

/* The LoRA side paths of matmul_swiglu's fused form (op lora's operands for gate and up,
 * one scale and slots): each tile of gate and up values gets its rows' terms added as
 * kiln_lora_add adds them (lora_rows.h: the same shrink of the row, the same expand of the
 * tile's columns, which start at a multiple of 16 as the unfused split's do), before the
 * SiLU, so the result is the unfused graph's bit for bit. */
typedef struct {
  const float *ag, *bg, *au, *bu, *scale; /* a [K,R,in], b [K,R,N] (rank-major), scale [K] */
  const int32_t *slots, *rank_g, *rank_u; /* slots [T], ranks [K] */
  int64_t R;
} kiln_swiglu_lora;
#define KILN_SWIGLU_LORA_ROWS 16 /* rows whose shrinks the stack holds (chunks shrink to it) */

/* y[t, n] = silu(x wg[n]) * (x wu[n]) (fuse-matmul-swiglu): x is quantized once, and each
 * tile of up to 16 columns is computed for gate and up into the stack and combined by the
 * thread that owns it, so no barrier separates the matmuls from the SwiGLU and no [T, N]
 * gate/up values go through memory. The same split of N as qmatmul. */
KILN_INLINE void qmatmul_swiglu(enum kiln_isa isa, enum kiln_wt wt, const float* restrict x,
                                const void* restrict wg, const void* restrict wu,
                                float* restrict y, int64_t T, int64_t K, int64_t N, int32_t tid,
                                int32_t nth, int packed, const kiln_swiglu_lora* lo) {
  const int64_t nb = K / KILN_QK, row_bytes = K + 12 * nb, rb = kiln_row_bytes(wt, K);
  int64_t chunk = KILN_QMM_STACK / row_bytes; /* >= 1: the pass checks K */
  if (lo) chunk = kiln_min(chunk, KILN_SWIGLU_LORA_ROWS); /* a row's bits do not depend on its chunk */
  float hl[KILN_SWIGLU_LORA_ROWS][2][KILN_LORA_MAX_RANK];
  int64_t rkl[KILN_SWIGLU_LORA_ROWS][2];
  int64_t n0, n1;
  kiln_split(N, 16, tid, nth, &n0, &n1);
  if (n0 >= n1 || chunk < 1) return;
  _Alignas(64) int8_t buf[KILN_QMM_STACK];
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t rows = kiln_min(chunk, T - t0);
    int8_t* q = buf;
    float* d = (float*)(buf + rows * K);
    float* s = d + rows * nb;
    int32_t* is = (int32_t*)(s + rows * nb);
    quantize_rows(x + t0 * K, q, d, s, packed ? is : 0, rows, K);
    if (lo) /* each row's shrink for gate and up, once per chunk (every thread its own) */
      for (int64_t r = 0; r < rows; ++r)
        for (int side = 0; side < 2; ++side) {
          const int64_t sl = lo->slots[t0 + r];
          const int64_t rk = kiln_min(kiln_max((side ? lo->rank_u : lo->rank_g)[sl], 0), lo->R);
          rkl[r][side] = sl == 0 || lo->scale[sl] == 0.0f ? 0 : rk;
          if (rkl[r][side])
            lora_shrink((side ? lo->au : lo->ag) + sl * lo->R * K, x + (t0 + r) * K, hl[r][side], rkl[r][side], K);
        }
    for (int64_t nt = n0; nt < n1; nt += 16) {
      const int64_t ne = kiln_min(n1, nt + 16), W = ne - nt;
      /* a packed group is 16 rows: nt / 16 groups in, as rb * nt bytes are for GGUF rows */
      const void* g = (const char*)wg + nt * rb;
      const void* u = (const char*)wu + nt * rb;
      for (int64_t t = 0; t < rows;) {
        const int R = packed ? pack_pass_rows(rows, rows - t)
                    : rows - t >= 8 ? 8 : rows - t >= 4 ? 4 : rows - t == 3 ? 3 : rows - t >= 2 ? 2 : 1;
        float gv[8 * 16], uv[8 * 16];
        if (packed) {
          qmm_p16(isa, wt, q + t * K, d + t * nb, s + t * nb, is + t * nb, g, gv, K, 16, R);
          qmm_p16(isa, wt, q + t * K, d + t * nb, s + t * nb, is + t * nb, u, uv, K, 16, R);
        } else {
        /* R as a constant in each call, as qmatmul does: qmm_group's row loops unroll and
         * its accumulators stay in registers (with R a variable, decode ran ~30% slower). */
#define KILN_SWIGLU_GROUP(Rc)                                                              \
  qmm_group(isa, wt, q + t * K, d + t * nb, s + t * nb, g, gv, K, 16, 0, W, Rc);          \
  qmm_group(isa, wt, q + t * K, d + t * nb, s + t * nb, u, uv, K, 16, 0, W, Rc);
        switch (R) {
          case 8: KILN_SWIGLU_GROUP(8) break;
          case 4: KILN_SWIGLU_GROUP(4) break;
          case 3: KILN_SWIGLU_GROUP(3) break;
          case 2: KILN_SWIGLU_GROUP(2) break;
          default: KILN_SWIGLU_GROUP(1) break;
        }
#undef KILN_SWIGLU_GROUP
        }
        if (lo)
          for (int r = 0; r < R; ++r)
            for (int side = 0; side < 2; ++side) {
              const int64_t row = t + r, rk = rkl[row][side], sl = lo->slots[t0 + row];
              float* v = (side ? uv : gv) + r * 16;
              if (rk) lora_expand(hl[row][side], rk, (side ? lo->bu : lo->bg) + sl * lo->R * N + nt, N, lo->scale[sl], v, v, W);
            }
        for (int r = 0; r < R; ++r)
          for (int64_t j = 0; j < W; ++j) {
            const float a = gv[r * 16 + j];
            y[(t0 + t + r) * N + nt + j] = a / (1.0f + kiln_expf(-a)) * uv[r * 16 + j];
          }
        t += R;
      }
    }
  }
}

/* The exported kernels: kiln_<op>_<name>_q8_<isa> for weight type wt, with name = wt for
 * GGUF rows (packed = 0) or wt + "x16" for pack-weights' layout (packed = 1). */
#define KILN_DEFINE_QMATMUL_OPS(name, wt, isa, attr, packed)                                 \
  attr void kiln_matmul_##name##_q8_##isa(const float* x, const void* w, float* y, int64_t T, \
                                          int64_t K, int64_t N, int32_t tid, int32_t nth) {  \
    qmatmul(KILN_ISA_##isa, KILN_WT_##wt, x, w, y, T, K, N, tid, nth, 0, 0.0f, packed);      \
  }                                                                                          \
  attr void kiln_rms_matmul_##name##_q8_##isa(const float* x, const float* nw, const void* w, \
                                              float* y, int64_t T, int64_t K, int64_t N,     \
                                              float eps, int32_t tid, int32_t nth) {         \
    qmatmul(KILN_ISA_##isa, KILN_WT_##wt, x, w, y, T, K, N, tid, nth, nw, eps, packed);      \
  }                                                                                          \
  attr void kiln_rms_matmul3_##name##_q8_##isa(                                              \
      const float* x, const float* nw, const void* w0, const void* w1, const void* w2,       \
      float* y0, float* y1, float* y2, int64_t T, int64_t K, int64_t N0, int64_t N1,         \
      int64_t N2, float eps, int32_t tid, int32_t nth) {                                     \
    const void* w[3] = {w0, w1, w2};                                                         \
    float* y[3] = {y0, y1, y2};                                                              \
    const int64_t N[3] = {N0, N1, N2};                                                       \
    qmatmul3(KILN_ISA_##isa, KILN_WT_##wt, x, nw, w, y, T, K, N, eps, tid, nth, packed);     \
  }                                                                                          \
  attr void kiln_matmul_swiglu_##name##_q8_##isa(const float* x, const void* wg,             \
                                                 const void* wu, float* y, int64_t T,         \
                                                 int64_t K, int64_t N, int32_t tid,           \
                                                 int32_t nth) {                               \
    qmatmul_swiglu(KILN_ISA_##isa, KILN_WT_##wt, x, wg, wu, y, T, K, N, tid, nth, packed, 0); \
  }                                                                                          \
  attr void kiln_matmul_swiglu_lora_##name##_q8_##isa(                                       \
      const float* x, const void* wg, const void* wu, const float* ag, const float* bg,      \
      const float* au, const float* bu, const float* scale, const int32_t* slots,            \
      const int32_t* rank_g, const int32_t* rank_u, float* y, int64_t T, int64_t K, int64_t N, \
      int64_t R, int32_t tid, int32_t nth) {                                                 \
    const kiln_swiglu_lora lo = {ag, bg, au, bu, scale, slots, rank_g, rank_u, R};           \
    qmatmul_swiglu(KILN_ISA_##isa, KILN_WT_##wt, x, wg, wu, y, T, K, N, tid, nth, packed, &lo); \
  }
#define KILN_DEFINE_QMATMUL(wt, isa, attr) KILN_DEFINE_QMATMUL_OPS(wt, wt, isa, attr, 0)
#define KILN_DEFINE_QMATMUL_PACKED(wt, isa, attr) KILN_DEFINE_QMATMUL_OPS(wt##x16, wt, isa, attr, 1)
#define KILN_NO_ATTR
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL, ref, KILN_NO_ATTR)
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL_PACKED, ref, KILN_NO_ATTR)
#if defined(__x86_64__)
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL, avx2, KILN_AVX2)
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL, avxvnni, KILN_AVXVNNI)
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL, vnni, KILN_VNNI)
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL_PACKED, vnni, KILN_VNNI)
#endif
#if defined(__aarch64__)
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL, dotprod, KILN_DOTPROD)
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL_PACKED, dotprod, KILN_DOTPROD)
KILN_QUANT_WEIGHT_TYPES(KILN_DEFINE_QMATMUL, i8mm, KILN_I8MM)
#endif

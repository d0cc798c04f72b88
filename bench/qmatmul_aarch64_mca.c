/* bench/qmatmul_aarch64_mca.c — the inner block of the aarch64 int8 matmuls for llvm-mca
 * (qmatmul_aarch64_mca.sh): one block of 32 (q4_1 weights, K = 576) for two weight rows
 * and R rows of x (R = 8: prefill's groups; R = 1: decode), in the sdot variant's order
 * (qw_load + qdot per row, as qmm_group) and the smmla variant's (i8mm_block). Both keep
 * their accumulators behind pointers, so both pay the same loads/stores on top. */
#include "qmatmul.c"
#ifndef MCA_R
#define MCA_R 8
#endif
KILN_I8MM void blk_i8mm(const int8_t* q, const float* d, const float* s, const void* w0,
                        const void* w1, float32x4_t* acc, float32x4_t* off, int64_t ib) {
  __asm__ volatile("// LLVM-MCA-BEGIN i8mm");
  i8mm_block(KILN_WT_q4_1, q, d, s, w0, w1, 576, 18, ib, MCA_R, acc, off);
  __asm__ volatile("// LLVM-MCA-END");
}
KILN_I8MM void blk_dotprod(const int8_t* q, const float* d, const float* s, const void* w0,
                           const void* w1, kiln_f8* t, float* o, int64_t ib) {
  __asm__ volatile("// LLVM-MCA-BEGIN dotprod");
  kiln_qw wb[2];
  qw_load(KILN_ISA_dotprod, KILN_WT_q4_1, w0, ib, &wb[0]);
  qw_load(KILN_ISA_dotprod, KILN_WT_q4_1, w1, ib, &wb[1]);
#pragma clang loop unroll(full)
  for (int n = 0; n < 2; ++n)
#pragma clang loop unroll(full)
    for (int r = 0; r < MCA_R; ++r) {
      kiln_i32x8 p;
      qdot(KILN_ISA_dotprod, KILN_WT_q4_1, &wb[n], q + r * 576 + ib * 32, &p);
      const kiln_f8 f = __builtin_convertvector(p, kiln_f8);
      t[n * 8 + r] = t[n * 8 + r] + f * kiln_splat8(wb[n].dw * d[r * 18 + ib]);
      o[n * 8 + r] = o[n * 8 + r] + wb[n].off * s[r * 18 + ib];
    }
  __asm__ volatile("// LLVM-MCA-END");
}

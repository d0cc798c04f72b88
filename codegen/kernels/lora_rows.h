/* codegen/kernels/lora_rows.h — one row's LoRA side path, shared by op lora's kernel
 * (lora.c) and matmul_swiglu's fused form (qmatmul.c), so that both compute it with the
 * same instructions in the same order and the fused graph keeps the unfused bits. */
#pragma once
#include "common.h"

#define KILN_LORA_MAX_RANK 64

/* sum_i u[i] * v[i] in eight lanes, combined in a fixed tree, then the tail. */
KILN_INLINE float lora_dot(const float* u, const float* v, int64_t n) {
  kiln_f8 acc = kiln_splat8(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc += kiln_load8(u + i) * kiln_load8(v + i);
  float s = kiln_hsum8(acc);
  for (; i < n; ++i) s += u[i] * v[i];
  return s;
}

/* h[r] = dot(a_r, x) for r < rk, four ranks at a time: the four sums are independent
 * chains (one chain per rank waited on its FMA latency: 72 dependent FMAs per rank at
 * in = 576), each in lora_dot()'s lane order, so h is the same bits as rk calls of lora_dot(). */
KILN_INLINE void lora_shrink(const float* a, const float* x, float* h, int64_t rk, int64_t in) {
  int64_t r = 0;
  if (in % 8 == 0)
    for (; r + 4 <= rk; r += 4) {
      const float* a0 = a + r * in;
      kiln_f8 s0 = kiln_splat8(0.0f), s1 = s0, s2 = s0, s3 = s0;
      for (int64_t i = 0; i < in; i += 8) {
        const kiln_f8 xv = kiln_load8(x + i);
        s0 += kiln_load8(a0 + i) * xv;
        s1 += kiln_load8(a0 + in + i) * xv;
        s2 += kiln_load8(a0 + 2 * in + i) * xv;
        s3 += kiln_load8(a0 + 3 * in + i) * xv;
      }
      h[r] = kiln_hsum8(s0), h[r + 1] = kiln_hsum8(s1), h[r + 2] = kiln_hsum8(s2), h[r + 3] = kiln_hsum8(s3);
    }
  for (; r < rk; ++r) h[r] = lora_dot(a + r * in, x, in);
}

/* y[j] = base[j] + sc * sum_{r < rk} h[r] * b[r * out + j] for j < n (base NULL: no base),
 * eight columns at a time, the ranks in order; b points at the first column's entry of
 * rank 0 (rank-major, rows of `out`). y may be base. */
KILN_INLINE void lora_expand(const float* h, int64_t rk, const float* b, int64_t out, float sc,
                             const float* base, float* y, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    kiln_f8 acc = kiln_splat8(0.0f);
    for (int64_t r = 0; r < rk; ++r) acc += kiln_splat8(h[r]) * kiln_load8(b + r * out + j);
    const kiln_f8 v = kiln_splat8(sc) * acc;
    kiln_store8(y + j, base ? kiln_load8(base + j) + v : v);
  }
  for (; j < n; ++j) {
    float acc = 0.0f;
    for (int64_t r = 0; r < rk; ++r) acc += h[r] * b[r * out + j];
    y[j] = base ? base[j] + sc * acc : sc * acc;
  }
}

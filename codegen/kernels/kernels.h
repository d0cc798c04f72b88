/* codegen/kernels/kernels.h — the kernel templates kiln specialises into generated code.
 *
 * These C functions are compiled to LLVM bitcode with clang-16 for each target at build
 * time and embedded in kiln. When kiln compiles a model it links them into the model's
 * module, binds the static arguments (shapes, strides, epsilons) to constants, inlines
 * and optimises them for the target profile: the model's arithmetic runs in code kiln
 * emits, specialised to the model (the approach of Glow's libjit).
 *
 * Conventions: row-major float activations [rows, features]; weight matrices are [N, K]
 * rows of K in their storage type (GGUF block layouts, see ir/dtype.h); every kernel
 * takes (tid, nth) last and does the share of the work of thread tid out of nth, with a
 * static partition (no shared counters). Inputs are validated by the runtime before a
 * step starts, so kernels do no checking.
 *
 * Results do not depend on nth, and a row's result does not depend on the other rows of
 * the step (matmul reads each weight block once for up to 8 rows but sums every row in
 * the same order), so S streams in one step, or a DS2D verify step, give bit for bit the
 * results of single-row steps. In place (y == x, or y == a) is allowed for rms_norm,
 * add, mul, silu and rope; other outputs must not overlap their inputs. Pointers need
 * only their element's alignment (4 bytes for floats, 2 for f16/bf16 and block rows).
 * The implementations are the .c files beside this header; tests/unit/kernels_test.cpp
 * checks them against the interpreter.
 */
#ifndef KILN_KERNELS_H
#define KILN_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_WEIGHT_TYPES(X) X(f32) X(f16) X(bf16) X(q4_0) X(q4_1) X(q8_0)

/* out[t, :] = dequant(table[tokens[t], :]), table [V, D] */
#define KILN_DECLARE_EMBED(wt)                                                          \
  void kiln_embed_##wt(const void* table, const int32_t* tokens, float* out, int64_t T, \
                       int64_t D, int32_t tid, int32_t nth);
/* y[t, n] = sum_k x[t, k] * w[n, k], w [N, K] */
#define KILN_DECLARE_MATMUL(wt)                                                          \
  void kiln_matmul_##wt(const float* x, const void* w, float* y, int64_t T, int64_t K, \
                        int64_t N, int32_t tid, int32_t nth);
KILN_WEIGHT_TYPES(KILN_DECLARE_EMBED)
KILN_WEIGHT_TYPES(KILN_DECLARE_MATMUL)

/* The same y for q4_0/q4_1/q8_0 weights with x quantized to int8 blocks of 32 first
 * (qmatmul.c): kiln_matmul_<wt>_q8_<isa>, isa = ref (portable), avx2, avxvnni, vnni
 * (avx512vnni+vl) on x86-64, dotprod and i8mm (smmla; its own float order) on aarch64. Results differ from kiln_matmul_<wt>
 * by the int8 rounding of x (NMSE ~1e-5). Call only a variant the CPU supports. */
#define KILN_QUANT_WEIGHT_TYPES(X, isa, attr) X(q4_0, isa, attr) X(q4_1, isa, attr) X(q8_0, isa, attr)
#define KILN_DECLARE_QMATMUL(wt, isa, attr)                                                  \
  void kiln_matmul_##wt##_q8_##isa(const float* x, const void* w, float* y, int64_t T,      \
                                   int64_t K, int64_t N, int32_t tid, int32_t nth);         \
  /* y = rms_norm(x, nw, eps) @ w^T, the norm in the prologue (rms_matmul op) */             \
  void kiln_rms_matmul_##wt##_q8_##isa(const float* x, const float* nw, const void* w,      \
                                       float* y, int64_t T, int64_t K, int64_t N, float eps, \
                                       int32_t tid, int32_t nth);                           \
  /* q, k and v: three rms_matmuls on one x and norm, quantized once (fuse-qkv) */        \
  void kiln_rms_matmul3_##wt##_q8_##isa(const float* x, const float* nw, const void* w0,   \
                                        const void* w1, const void* w2, float* y0,         \
                                        float* y1, float* y2, int64_t T, int64_t K,        \
                                        int64_t N0, int64_t N1, int64_t N2, float eps,     \
                                        int32_t tid, int32_t nth);
#define KILN_QMATMUL_ISAS(X) X(ref) X(avx2) X(avxvnni) X(vnni) X(dotprod) X(i8mm)
#define KILN_DECLARE_QMATMUL_ISA(isa) KILN_QUANT_WEIGHT_TYPES(KILN_DECLARE_QMATMUL, isa, )
KILN_QMATMUL_ISAS(KILN_DECLARE_QMATMUL_ISA)
/* y[t, n] = silu(x wg[n]) * (x wu[n]) with x quantized as above (matmul_swiglu op). */
#define KILN_DECLARE_QMATMUL_SWIGLU(wt, isa, attr)                                               \
  void kiln_matmul_swiglu_##wt##_q8_##isa(const float* x, const void* wg, const void* wu,       \
                                          float* y, int64_t T, int64_t K, int64_t N, int32_t tid, \
                                          int32_t nth);                                            \
  /* with LoRA side paths on gate and up (op lora's operands, R the padded rank) */             \
  void kiln_matmul_swiglu_lora_##wt##_q8_##isa(                                                 \
      const float* x, const void* wg, const void* wu, const float* ag, const float* bg,         \
      const float* au, const float* bu, const float* scale, const int32_t* slots,               \
      const int32_t* rank_g, const int32_t* rank_u, float* y, int64_t T, int64_t K, int64_t N,  \
      int64_t R, int32_t tid, int32_t nth);
#define KILN_DECLARE_QMATMUL_SWIGLU_ISA(isa) KILN_QUANT_WEIGHT_TYPES(KILN_DECLARE_QMATMUL_SWIGLU, isa, )
KILN_QMATMUL_ISAS(KILN_DECLARE_QMATMUL_SWIGLU_ISA)

/* The same ops on weights packed by pack-weights (ir/packing.h: 16 rows interleaved), named
 * by the packed type: kiln_matmul_q4_1x16_q8_vnni, kiln_embed_q8_0x16, ... Their float order
 * is their own (each block's whole integer dot converted once, then one FMA per block and
 * output), the same in every ISA variant: ref (portable), vnni (x86 AVX512-VNNI, zmm) and
 * dotprod (aarch64 sdot by element). */
#define KILN_PACKED_WEIGHT_TYPES(X, isa, attr) X(q4_0x16, isa, attr) X(q4_1x16, isa, attr) X(q8_0x16, isa, attr)
#define KILN_PACKED_ISAS(X) X(ref) X(vnni) X(dotprod)
#define KILN_DECLARE_PACKED_ISA(isa)                                \
  KILN_PACKED_WEIGHT_TYPES(KILN_DECLARE_QMATMUL, isa, )             \
  KILN_PACKED_WEIGHT_TYPES(KILN_DECLARE_QMATMUL_SWIGLU, isa, )
KILN_PACKED_ISAS(KILN_DECLARE_PACKED_ISA)
#define KILN_DECLARE_EMBED_PACKED(wt, isa, attr) KILN_DECLARE_EMBED(wt)
KILN_PACKED_WEIGHT_TYPES(KILN_DECLARE_EMBED_PACKED, , )
/* How the packed kernels prefetch weights ahead of their reads (qmatmul.c explains why
 * each): the value of kiln_weight_prefetch, which codegen sets from the target profile's
 * weight_prefetch and makes a constant. */
enum kiln_weight_prefetch_kind { KILN_WEIGHT_PREFETCH_NT = 0, KILN_WEIGHT_PREFETCH_L2 = 1 };
extern int kiln_weight_prefetch;
#define KILN_WEIGHT_PREFETCH_SYMBOL "kiln_weight_prefetch"

/* y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * w, w [D] */
void kiln_rms_norm(const float* x, const float* w, float* y, int64_t T, int64_t D, float eps,
                   int32_t tid, int32_t nth);
/* y[i] = a[i] + b[i % bn] (bn == n, or bn is one row that broadcasts) */
void kiln_add(const float* a, const float* b, float* y, int64_t n, int64_t bn, int32_t tid,
              int32_t nth);
void kiln_mul(const float* a, const float* b, float* y, int64_t n, int64_t bn, int32_t tid,
              int32_t nth);
/* y = x * sigmoid(x) */
void kiln_silu(const float* x, float* y, int64_t n, int32_t tid, int32_t nth);
/* rotary embedding, GGUF "normal" mode: adjacent pairs (2i, 2i+1) of each head of hd
 * rotate by pos * theta^(-2i/nrot) / factors[i] for i < nrot/2 (factors NULL: 1) */
void kiln_rope(const float* x, float* y, const int32_t* pos, int64_t T, int64_t F, int64_t hd,
               int64_t nrot, float theta, const float* factors, int32_t tid, int32_t nth);
/* y[r, :] = x[rows[r], :] */
void kiln_gather_rows(const float* x, const int32_t* rows, float* y, int64_t R, int64_t F,
                      int32_t tid, int32_t nth);
/* y[0, :] = x[T-1, :] */
void kiln_last_row(const float* x, float* y, int64_t T, int64_t F, int32_t tid, int32_t nth);
/* cache + streams[t]*stream_stride + pos[t]*F  <-  x[t, :]  (stride in floats; the
 * interpreter's [S,C,F] cache has stream_stride = C*F). streams may be NULL for a
 * single-stream cache: every row is stream 0. The rows of a step name distinct
 * (stream, position) pairs (threads write rows in parallel). */
void kiln_kv_write(float* cache, const float* x, const int32_t* pos, const int32_t* streams,
                   int64_t T, int64_t F, int64_t stream_stride, int32_t tid, int32_t nth);
/* The same into an f16 cache (kv-type f16): x rounded to nearest-even half. Each kernel
 * here has an _f16 twin that reads or writes such a cache (strides in elements). */
void kiln_kv_write_f16(_Float16* cache, const float* x, const int32_t* pos, const int32_t* streams,
                       int64_t T, int64_t F, int64_t stream_stride, int32_t tid, int32_t nth);
/* Causal grouped-query attention: row t (head h) attends rows 0..pos[t] of its stream's
 * k/v cache (kv head h / (H/KVH)) with scale 1/sqrt(hd); caches are laid out as for
 * kv_write (streams may be NULL). Up to KILN_ATT_G heads that share a kv head run as one
 * pass, each with C floats of scores: `scratch` holds at least
 * nth * kiln_attention_heads_per_pass(H, KVH) * C floats (C = cache rows per stream). */
#define KILN_ATT_G 4
static inline int64_t kiln_attention_heads_per_pass(int64_t H, int64_t KVH) {
  return H / KVH < KILN_ATT_G ? H / KVH : KILN_ATT_G;
}
void kiln_attention(const float* q, const void* kc, const void* vc, const int32_t* pos,
                    const int32_t* streams, float* out, float* scratch, int64_t T, int64_t C,
                    int64_t H, int64_t KVH, int64_t hd, int64_t stream_stride, int32_t tid,
                    int32_t nth);
void kiln_attention_f16(const float* q, const void* kc, const void* vc, const int32_t* pos,
                        const int32_t* streams, float* out, float* scratch, int64_t T, int64_t C,
                        int64_t H, int64_t KVH, int64_t hd, int64_t stream_stride, int32_t tid,
                        int32_t nth);
/* DS2D tree verification (ir/tree.h): rows are blocks of N tree nodes; node j = t % N
 * writes row pos[t] - depth[j] + j and attends rows below its block's base plus the block
 * rows of its ancestors-or-self (bit i of anc[j]); a node's result is bit for bit the
 * causal kernel's for its root-to-node path. N <= 64. Scratch as for kiln_attention. */
void kiln_kv_write_tree(float* cache, const float* x, const int32_t* pos, const int32_t* streams,
                        int64_t T, int64_t F, int64_t stream_stride, int64_t N, const int32_t* depth,
                        int32_t tid, int32_t nth);
void kiln_kv_write_tree_f16(_Float16* cache, const float* x, const int32_t* pos, const int32_t* streams,
                            int64_t T, int64_t F, int64_t stream_stride, int64_t N, const int32_t* depth,
                            int32_t tid, int32_t nth);
void kiln_tree_attention(const float* q, const void* kc, const void* vc, const int32_t* pos,
                         const int32_t* streams, float* out, float* scratch, int64_t T, int64_t C,
                         int64_t H, int64_t KVH, int64_t hd, int64_t stream_stride, int64_t N,
                         const int32_t* depth, const uint64_t* anc, int32_t tid, int32_t nth);
void kiln_tree_attention_f16(const float* q, const void* kc, const void* vc, const int32_t* pos,
                             const int32_t* streams, float* out, float* scratch, int64_t T, int64_t C,
                             int64_t H, int64_t KVH, int64_t hd, int64_t stream_stride, int64_t N,
                             const int32_t* depth, const uint64_t* anc, int32_t tid, int32_t nth);

/* LoRA side path: y[t, :] = scale[s] * sum_{r < rank[s]} b[s, r, :] (a[s, r, :] . x[t, :])
 * with s = slots[t]; a [K, R, in], b [K, R, out], scale [K], rank [K], R <= 64. Threads
 * split the output columns. */
void kiln_lora(const float* x, const float* a, const float* b, const float* scale,
               const int32_t* slots, const int32_t* rank, float* y, int64_t T, int64_t in,
               int64_t out, int64_t R, int32_t tid, int32_t nth);
/* y = m + the same, m the projection's output [T, out], split by columns as the matmul
 * kernels split it (so no barrier is needed after the matmul). */
void kiln_lora_add(const float* x, const float* a, const float* b, const float* scale,
                   const int32_t* slots, const int32_t* rank, const float* m, float* y,
                   int64_t T, int64_t in, int64_t out, int64_t R, int32_t tid, int32_t nth);

#ifdef __cplusplus
}
#endif

#endif /* KILN_KERNELS_H */

/* kiln/model_abi.h — the contract between code kiln compiles and the kiln runtime.
 *
 * `kiln compile` emits an object file (model.o) that defines one constant
 * kiln_compiled_model, named in the generated model.h. It describes the compiled graph
 * (sizes, limits, the hash of the weight layout it was compiled against) and points at
 * the step function: one forward pass over n_rows tokens, each row belonging to one
 * stream. The runtime owns memory (weights from model.kiln, the activation arena, the
 * KV cache) and threads; every thread of a step calls `step` with its own tid, and the
 * generated code meets at `barrier` between dependent operations.
 *
 * Plain C so that apps in C, C++ or anything with a C FFI can link the artifact.
 */
#ifndef KILN_MODEL_ABI_H
#define KILN_MODEL_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_ABI_VERSION 7u

typedef struct kiln_step_args {
  const int32_t* tokens;      /* [n_rows] token ids, each < n_vocab */
  const int32_t* positions;   /* [n_rows] position of each row in its stream, < max_context */
  const int32_t* streams;     /* [n_rows] stream of each row, < max_streams */
  const int32_t* logit_rows;  /* [n_logit_rows] rows whose logits are wanted, < n_rows */
  int64_t n_rows;             /* 1..max_rows */
  int64_t n_logit_rows;       /* 0..max_rows */
  const uint8_t* weights;     /* weight blob of model.kiln, 64-byte aligned */
  uint8_t* arena;             /* arena_bytes of scratch, 64-byte aligned */
  uint8_t* kv;                /* kv_bytes of KV cache: max_streams regions of kv_stream_bytes */
  float* logits;              /* out: [n_logit_rows, n_vocab] */
  /* Every thread of the step calls barrier(ctx) at the same points; it returns once all
   * n_threads threads have arrived. */
  void (*barrier)(void* ctx);
  void* barrier_ctx;
  /* LoRA (graphs compiled with lora-as-input; unused otherwise): */
  const int32_t* adapter_slots; /* [n_rows] adapter slot of each row, < lora_slots; 0 = none */
  const uint8_t* adapters;      /* adapter_bytes: every lora.* input at its fixed offset, 64-byte aligned */
} kiln_step_args;

/* One state buffer of a stream's KV region: rows of row_bytes starting at offset (within
 * the stream's kv_stream_bytes); row p holds position p. The runtime uses the table to
 * copy a prompt's cache between streams and to move rows, without knowing the model. */
typedef struct kiln_kv_block {
  uint64_t offset;
  uint64_t row_bytes;
} kiln_kv_block;

/* One LoRA target of a model compiled with LoRA slots (kiln compile --lora-slots): the
 * factors of projection `module` in layer `layer` live in the adapter region as
 *   A: f32 [lora_slots][lora_rank][in]  at a_offset, slot s at a_offset + s * a_slot_stride
 *   B: f32 [lora_slots][lora_rank][out] at b_offset, slot s at b_offset + s * b_slot_stride
 *      (B transposed: rank-major, columns in the base GGUF's row order)
 *   rank: i32 [lora_slots] at rank_offset: the slot's rank on this target (0: the adapter
 *      does not touch it); the code reads rows [0, rank) of A and B only (ABI 5).
 * The runtime fills slots from adapter files with this table alone, without knowing the
 * model. */
typedef struct kiln_lora_target {
  int32_t layer;
  int32_t module;             /* 0 q, 1 k, 2 v, 3 o, 4 gate, 5 up, 6 down (frontend/lora_names.h) */
  int64_t in, out;            /* the base matrix is [out, in] */
  uint64_t a_offset, b_offset;
  uint64_t a_slot_stride, b_slot_stride;
  uint64_t rank_offset;
} kiln_lora_target;

/* DS2D tree verification (docs/architecture.md, "DS2D"). A verify entry point is the step
 * over a token tree: rows come in blocks of n_nodes per stream (block b is the tree of
 * stream streams[b * n_nodes]); row j of a block is node j, node 0 the root (the last
 * accepted token, not yet in the cache). For a stream whose cache holds `base` tokens,
 * node j has position base + depth[j] (args->positions) and writes its K/V to KV row
 * base + j (= positions[row] - depth[j] + j, so no new step argument); it attends to
 * cache rows [0, base) and to rows base + i of its ancestors-or-self i (a constant mask
 * compiled into the entry point). base + n_nodes must not exceed max_context. */
typedef struct kiln_tree_template {
  int32_t n_nodes;          /* nodes per stream; node 0 is the root */
  const int32_t* parent;    /* [n_nodes]; parent[0] = -1, parent[j] < j */
  const int32_t* depth;     /* [n_nodes]; depth[0] = 0 */
  void (*verify)(const kiln_step_args* args, int32_t tid, int32_t n_threads);
    /* args->n_rows = n_streams * n_nodes (<= max_rows); logits for args->logit_rows */
} kiln_tree_template;

typedef struct kiln_compiled_model {
  uint32_t abi_version;       /* KILN_ABI_VERSION */
  uint32_t format_version;    /* the model.kiln format version this code reads */
  uint64_t model_hash;        /* must equal the hash stored in model.kiln */
  const char* name;           /* model name, e.g. "smollm2_135m_instruct" */
  const char* target;         /* LLVM target triple the code was compiled for */
  const char* profile;        /* kiln profile name, e.g. "host" */
  int64_t n_vocab;
  int64_t n_layer;
  int64_t max_rows;           /* rows (tokens) per step at most */
  int64_t max_streams;
  int64_t max_context;        /* KV rows per stream */
  int64_t max_threads;        /* the step may be run by 1..max_threads threads */
  uint64_t weights_bytes;     /* size of the weight blob it expects */
  uint64_t arena_bytes;
  uint64_t kv_bytes;          /* = max_streams * kv_stream_bytes */
  uint64_t kv_stream_bytes;
  void (*step)(const kiln_step_args* args, int32_t tid, int32_t n_threads);
  int64_t n_kv_blocks;            /* entries of kv_blocks: one per state buffer (K and V per layer) */
  const kiln_kv_block* kv_blocks;
  uint64_t adapter_bytes;         /* size of the adapter region (0: no LoRA inputs) */
  /* LoRA descriptor (all zero without LoRA). Slot 0 is the zero adapter. */
  int64_t lora_slots;             /* K: resident adapters, slot 0 included */
  int64_t lora_rank;              /* R: the compiled maximum rank */
  uint64_t lora_scale_offset;     /* f32 [lora_slots] scale of each slot in the adapter region */
  int64_t n_lora_targets;
  const kiln_lora_target* lora_targets;
  /* DS2D (ABI 4); no templates and draft_layers = 0 when compiled without DS2D: */
  int64_t n_tree_templates;
  const kiln_tree_template* tree_templates;   /* ascending n_nodes */
  int64_t draft_layers;                       /* 0: no early-exit draft entry */
  void (*draft)(const kiln_step_args* args, int32_t tid, int32_t n_threads);
    /* ordinary causal step through the first draft_layers layers, then the final norm and
       LM head; writes those layers' KV at positions (the verify pass overwrites them).
       (Compiled with a layer list, kiln compile --ds2d-draft-layers=0-9,20-29, it runs
       draft_layers layers with the middle ones skipped instead.) */
  /* ABI 6: for models compiled with LoRA slots, the step without the LoRA side paths (and
     with the fusions they prevent); the runtime runs it instead of `step` when no row of
     the step has an adapter (adapter_slots all 0): the same results. NULL otherwise. */
  void (*step_base)(const kiln_step_args* args, int32_t tid, int32_t n_threads);
  /* ABI 7: the instruction-set extensions the code may use, comma-separated LLVM feature
     names ("avx2,fma,avx512f,..."; runtime/cpu_features.h lists the ones checked);
     kiln_model_load refuses the model on a CPU that lacks one. NULL or "": none checked. */
  const char* cpu_features;
} kiln_compiled_model;

#ifdef __cplusplus
}
#endif

#endif /* KILN_MODEL_ABI_H */

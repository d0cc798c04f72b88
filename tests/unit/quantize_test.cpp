// tests/unit/quantize_test.cpp — quantize-int4 and the fusions (fuse-dequant-matmul,
// fuse-matmul-swiglu) on the tiny LLaMA:
// what the passes write, their numbers against the interpreter, and compiled code
// against the interpreter.
#include <gtest/gtest.h>

#include "frontend/llama.h"
#include "ir/interpreter.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/pass.h"
#include "passes/passes.h"
#include "support/file.h"
#include "tests/unit/numeric.h"
#include "tests/unit/step_runner.h"
#include "tests/unit/tiny_model.h"

namespace kiln {
namespace {

struct Tiny {
  std::string bytes;
  std::shared_ptr<const GgufFile> file;
  LlamaConfig cfg;
};

Tiny tiny(DType matrices, DType embed, bool tied = true) {
  testing::TinyLlamaSpec spec;
  spec.matrix_type = matrices;
  spec.embed_type = embed;
  spec.tied = tied;
  Tiny t;
  t.bytes = testing::tiny_llama_gguf(spec);
  auto f = GgufFile::parse(MappedFile::borrow(t.bytes.data(), t.bytes.size(), "tiny.gguf"));
  EXPECT_TRUE(f.ok());
  t.file = std::shared_ptr<const GgufFile>(std::move(f).value());
  auto c = read_llama_config(*t.file);
  EXPECT_TRUE(c.ok());
  t.cfg = *c;
  return t;
}

Graph lower(const Tiny& t) {
  auto g = build_llama_graph(t.file, t.cfg, {.max_context = 32});
  EXPECT_TRUE(g.ok()) << g.error().message;
  return std::move(*g);
}

Status run(Graph& g, std::string_view pipeline) {
  PassManagerOptions o;
  o.verify_each = true;
  PassManager pm(o);
  KILN_TRY(pm.add_pipeline(pipeline));
  return pm.run(g);
}

const std::vector<int32_t> kPrompt = {1, 7, 33, 5, 60, 2, 19};

// Logits of the prompt's last token, from the interpreter.
std::vector<float> logits(const Graph& g) {
  Interpreter in(g);
  auto out = in.run(single_stream_inputs(kPrompt, 0, 0));
  EXPECT_TRUE(out.ok()) << out.error().message;
  return out.ok() ? out->at("logits").f32 : std::vector<float>{};
}

size_t count(const Graph& g, Op op) { return g.nodes_of(op).size(); }

TEST(QuantizeInt4, FloatWeightsBecomeBlocksReadThroughDequant) {
  Tiny t = tiny(DType::F16, DType::F16, /*tied=*/false);
  Graph ref = lower(t), g = lower(t);
  g.set_attr("quantize", std::string("int4"));
  Status s = run(g, "quantize-int4");
  ASSERT_TRUE(s.ok()) << s.error().message;
  for (const Node* w : g.nodes_of(Op::Weight)) {
    std::string name(*w->str_attr("name"));
    if (w->type().rank() == 1) { EXPECT_EQ(w->type().dtype, DType::F32) << name; }  // norms untouched
    else if (name == "token_embd.weight" || name == "output.weight") { EXPECT_EQ(w->type().dtype, DType::Q8_0) << name; }
    else EXPECT_EQ(w->type().dtype, DType::Q4_1) << name;
  }
  EXPECT_EQ(count(g, Op::Dequant), count(g, Op::MatMul));  // every matmul reads dequant(Wq)
  // INT4 changes the numbers, by a bounded amount (4-bit weights, 7 tokens, 2 layers).
  auto a = logits(ref), b = logits(g);
  double e = testing::nmse(b, a);
  EXPECT_GT(e, 0.0);
  EXPECT_LT(e, 5e-2);
  RecordProperty("nmse_q4_1", std::to_string(e));

  // Symmetric q4_0, int4 head, groups of 64: also bounded, and a second run is a no-op.
  Graph g0 = lower(t);
  g0.set_attr("quantize", std::string("q4_0"));
  g0.set_attr("quantize_head", std::string("int4"));
  g0.set_attr("group_size", int64_t{64});
  s = run(g0, "quantize-int4");
  ASSERT_TRUE(s.ok()) << s.error().message;
  for (const Node* w : g0.nodes_of(Op::Weight))
    if (w->type().rank() == 2) { EXPECT_EQ(w->type().dtype, DType::Q4_0) << *w->str_attr("name"); }
  double e0 = testing::nmse(logits(g0), a);
  EXPECT_GT(e0, 0.0);
  EXPECT_LT(e0, 0.15);  // 4-bit embedding and head too
  auto again = create_quantize_int4_pass()->run(g0);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

TEST(QuantizeInt4, GroupSizeSharesOneScaleAcrossBlocks) {
  Tiny t = tiny(DType::F32, DType::F32);
  Graph g = lower(t);
  g.set_attr("quantize", std::string("q4_0"));
  g.set_attr("group_size", int64_t{64});
  Status st = run(g, "quantize-int4");
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto v = g.weights()->find("blk.0.attn_q.weight");
  ASSERT_TRUE(v);
  ASSERT_EQ(v->dtype, DType::Q4_0);
  const auto* b = reinterpret_cast<const BlockQ4_0*>(v->data);
  // Rows of 64: two blocks per group, one scale.
  for (int64_t i = 0; i < (int64_t)(v->nbytes / sizeof(BlockQ4_0)); i += 2) EXPECT_EQ(b[i].d, b[i + 1].d);
  // ffn_down's rows of 96 = 64 + 32: the second group is one block.
  auto down = g.weights()->find("blk.0.ffn_down.weight");
  ASSERT_TRUE(down);
  const auto* d = reinterpret_cast<const BlockQ4_0*>(down->data);
  int same = 0;
  for (int64_t r = 0; r < 64; ++r) {
    EXPECT_EQ(d[3 * r].d, d[3 * r + 1].d);
    same += d[3 * r + 1].d == d[3 * r + 2].d;
  }
  EXPECT_LT(same, 64);
}

TEST(QuantizeInt4, GgufBlocksAreRepackedLosslessly) {
  // q4_1 is kept as it is: nothing changes.
  Tiny t1 = tiny(DType::Q4_1, DType::Q8_0);
  Graph g1 = lower(t1);
  std::string before = print_graph(g1);
  auto changed = create_quantize_int4_pass()->run(g1);
  ASSERT_TRUE(changed.ok());
  EXPECT_FALSE(*changed);
  EXPECT_EQ(print_graph(g1), before);
  // q4_0 to q4_1 (m = -8d): the same numbers, bit for bit.
  Tiny t0 = tiny(DType::Q4_0, DType::Q8_0);
  Graph ref = lower(t0), g0 = lower(t0);
  g0.set_attr("quantize", std::string("q4_1"));
  ASSERT_TRUE(run(g0, "quantize-int4").ok());
  for (const Node* w : g0.nodes_of(Op::Weight))
    if (w->type().rank() == 2 && *w->str_attr("name") != "token_embd.weight") {
      EXPECT_EQ(w->type().dtype, DType::Q4_1);
    }
  EXPECT_TRUE(testing::same_bits(logits(g0), logits(ref)));
}

TEST(QuantizeInt4, BadOptionsAreErrors) {
  Tiny t = tiny(DType::F16, DType::F16);
  for (auto [k, v] : std::vector<std::pair<const char*, Attr>>{
           {"quantize", std::string("int3")}, {"quantize_head", std::string("f16")}, {"group_size", int64_t{48}}}) {
    Graph g = lower(t);
    g.set_attr(k, v);
    auto r = create_quantize_int4_pass()->run(g);
    ASSERT_FALSE(r.ok()) << k;
    EXPECT_NE(r.error().message.find(k), std::string::npos) << r.error().message;
  }
}

TEST(QuantizeInt4, NonFiniteWeightsAreErrorsNamingTheElement) {
  Tiny t = tiny(DType::F16, DType::F16);
  const GgufTensor* q = t.file->tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  const uint64_t at = t.file->data_offset() + q->offset + 2 * 5;  // element [0, 5]
  t.bytes[at] = 0x00, t.bytes[at + 1] = 0x7e;                      // f16 NaN
  auto f = GgufFile::parse(MappedFile::borrow(t.bytes.data(), t.bytes.size(), "tiny.gguf"));
  ASSERT_TRUE(f.ok());
  t.file = std::shared_ptr<const GgufFile>(std::move(f).value());
  Graph g = lower(t);
  g.set_attr("quantize", std::string("int4"));
  Status st = run(g, "quantize-int4");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("blk.0.attn_q.weight"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("[0, 5] is nan"), std::string::npos) << st.error().message;
}

TEST(FuseDequantMatmul, SameLogitsAndNoDequantLeft) {
  Tiny t = tiny(DType::Q4_1, DType::Q8_0);
  Graph g = lower(t);
  ASSERT_GT(count(g, Op::Dequant), 0u);
  auto before = logits(g);
  ASSERT_TRUE(run(g, "fuse-dequant-matmul").ok());
  EXPECT_EQ(count(g, Op::Dequant), 0u);
  for (const Node* m : g.nodes_of(Op::MatMul)) EXPECT_EQ(m->operand(1)->op(), Op::Weight);
  EXPECT_TRUE(testing::same_bits(logits(g), before));  // the rewrite is exact
}

// The F16 tiny model quantized to INT4, compiled (float activations: the interpreter's
// math) and with int8 activations, against the interpreter on the unfused graph.
TEST(QuantizeInt4, CompiledCodeMatchesTheInterpreter) {
  Tiny t = tiny(DType::F16, DType::F16);
  for (int64_t int8 : {0, 1}) {
    SCOPED_TRACE(int8 ? "int8 activations" : "float activations");
    Graph g = lower(t);
    g.set_attr("quantize", std::string("int4"));
    g.set_attr("int8_activations", int8);
    ASSERT_TRUE(run(g, "quantize-int4").ok());
    auto want = logits(g);
    Status s = testing::plan_for_codegen(g, 16, 2, "fuse-dequant-matmul,cse,dce,freeze-base,plan-memory");
    ASSERT_TRUE(s.ok()) << s.error().message;
    auto r = testing::StepRunner::create(g);
    ASSERT_TRUE(r.ok()) << r.error().message;
    testing::StepRows rows;
    rows.tokens = kPrompt;
    for (size_t i = 0; i < kPrompt.size(); ++i) rows.positions.push_back((int32_t)i);
    rows.streams.assign(kPrompt.size(), 0);
    rows.logit_rows = {(int32_t)kPrompt.size() - 1};
    auto got = (*r)->step(rows, {2}, want.size());
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_LT(testing::nmse(*got, want), int8 ? 1e-3 : 1e-9);
  }
}


// One prefill step of kPrompt through compiled code.
std::vector<float> compiled_logits(const Graph& g, size_t n, int* barriers = nullptr) {
  auto r = testing::StepRunner::create(g);
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r.ok()) return {};
  testing::StepRows rows;
  rows.tokens = kPrompt;
  for (size_t i = 0; i < kPrompt.size(); ++i) rows.positions.push_back((int32_t)i);
  rows.streams.assign(kPrompt.size(), 0);
  rows.logit_rows = {(int32_t)kPrompt.size() - 1};
  auto got = (*r)->step(rows, {2}, n);
  EXPECT_TRUE(got.ok()) << got.error().message;
  if (barriers) *barriers = (*r)->barriers();
  return got.ok() ? *got : std::vector<float>{};
}

// Compiles both graphs (int8 activations, 2 threads): the fused kernels must give the
// unfused kernels' bits, close to the interpreter's `want`; reports each step's barriers.
void expect_compiled_same(Graph& plain, Graph& fused, const std::vector<float>& want, int* b_plain, int* b_fused) {
  for (Graph* g : {&plain, &fused}) {
    g->set_attr("int8_activations", int64_t{1});
    Status s = testing::plan_for_codegen(*g, 16, 2, "fuse-dequant-matmul,cse,dce,freeze-base,plan-memory");
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  auto a = compiled_logits(plain, want.size(), b_plain), b = compiled_logits(fused, want.size(), b_fused);
  EXPECT_TRUE(testing::same_bits(a, b));
  EXPECT_LT(testing::nmse(b, want), 1e-3);
}

TEST(FuseMatmulSwiGlu, OneOpPerLayerSameNumbersFewerBarriers) {
  for (DType wt : {DType::Q4_1, DType::Q4_0, DType::Q8_0}) {
    SCOPED_TRACE(std::string(dtype_name(wt)));
    Tiny t = tiny(wt, DType::Q8_0);
    Graph plain = lower(t), fused = lower(t);
    ASSERT_TRUE(run(fused, "fuse-matmul-swiglu").ok());
    EXPECT_EQ(count(fused, Op::MatMulSwiGlu), (size_t)t.cfg.n_layer);
    EXPECT_EQ(count(fused, Op::Silu), 0u);
    EXPECT_EQ(count(fused, Op::Mul), 0u);
    // Interpreter: the fused op computes what the three did, bit for bit.
    auto want = logits(plain);
    EXPECT_TRUE(testing::same_bits(logits(fused), want));
    // Compiled (int8 activations): the fused kernel gives the unfused kernels' bits, close
    // to the interpreter, with two barriers fewer per layer.
    int b_plain = 0, b_fused = 0;
    ASSERT_NO_FATAL_FAILURE(expect_compiled_same(plain, fused, want, &b_plain, &b_fused));
    EXPECT_EQ(b_fused, b_plain - 2 * t.cfg.n_layer);
  }
}


TEST(FuseRmsNormMatmul, NormsFoldIntoMatmulsSameBitsFewerBarriers) {
  for (const char* pipeline : {"fuse-rmsnorm-matmul", "fuse-matmul-swiglu,fuse-rmsnorm-matmul"}) {
    SCOPED_TRACE(pipeline);
    Tiny t = tiny(DType::Q4_1, DType::Q8_0);
    Graph plain = lower(t), fused = lower(t);
    ASSERT_TRUE(run(fused, pipeline).ok());
    bool swiglu = std::string(pipeline).find("swiglu") != std::string::npos;
    // q, k, v (and gate, up without the swiglu fusion) read the norm; the output norm stays.
    EXPECT_EQ(count(fused, Op::RmsMatMul), (size_t)t.cfg.n_layer * (swiglu ? 3 : 5));
    EXPECT_EQ(count(fused, Op::RmsNorm), (size_t)(swiglu ? t.cfg.n_layer + 1 : 1));
    auto want = logits(plain);
    EXPECT_TRUE(testing::same_bits(logits(fused), want));
    int b_plain = 0, b_fused = 0;
    ASSERT_NO_FATAL_FAILURE(expect_compiled_same(plain, fused, want, &b_plain, &b_fused));
    EXPECT_LT(b_fused, b_plain);
    RecordProperty(swiglu ? "barriers_swiglu_rms" : "barriers_rms", std::to_string(b_plain) + " -> " + std::to_string(b_fused));
  }
}

// fuse-qkv: q, k and v of every layer as one kiln_rms_matmul3 call; the interpreter
// ignores the grouping (same bits), the compiled code gives the three calls' bits (prefill
// of kPrompt: several rows per chunk) for every quantized weight type.
TEST(FuseQkv, OneCallPerLayerSameBits) {
  for (DType wt : {DType::Q4_1, DType::Q4_0, DType::Q8_0}) {
    SCOPED_TRACE(std::string(dtype_name(wt)));
    Tiny t = tiny(wt, DType::Q8_0);
    Graph plain = lower(t), fused = lower(t);
    ASSERT_TRUE(run(plain, "fuse-matmul-swiglu,fuse-rmsnorm-matmul").ok());
    ASSERT_TRUE(run(fused, "fuse-matmul-swiglu,fuse-rmsnorm-matmul,fuse-qkv").ok());
    size_t leaders = 0;
    for (const Node* n : fused.nodes_of(Op::RmsMatMul)) leaders += n->int_attr("qkv").value_or(0) == 1;
    EXPECT_EQ(leaders, (size_t)t.cfg.n_layer);
    EXPECT_EQ(count(fused, Op::RmsMatMul), count(plain, Op::RmsMatMul));
    auto want = logits(plain);
    EXPECT_TRUE(testing::same_bits(logits(fused), want));
    int b_plain = 0, b_fused = 0;
    ASSERT_NO_FATAL_FAILURE(expect_compiled_same(plain, fused, want, &b_plain, &b_fused));
    EXPECT_LE(b_fused, b_plain);
  }
}

}  // namespace
}  // namespace kiln

// tests/unit/lora_test.cpp — the lora op and the lora-as-input pass against merged weights.
//
// The oracle is independent of the pass: the same tiny LLaMA with each adapter merged
// into its weights (W + s * B @ A, computed here in float and written to a new GGUF),
// run by the interpreter without the pass.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "frontend/adapter.h"
#include "frontend/gguf_writer.h"
#include "frontend/llama.h"
#include "frontend/lora_names.h"
#include "ir/interpreter.h"
#include "ir/verifier.h"
#include "passes/passes.h"
#include "tests/unit/merged_model.h"
#include "tests/unit/tiny_model.h"

namespace kiln {
namespace {

// ---- the op -----------------------------------------------------------------------------

struct OpGraph {
  Graph g;
  Node *x, *a, *b, *s, *slots, *rank;
  OpGraph(int64_t in, int64_t out, int64_t K, int64_t R) {
    x = g.add(Op::Input, {}, {DType::F32, {kDynamic, in}}, {{"name", std::string("x")}});
    a = g.add(Op::Input, {}, {DType::F32, {K, R, in}}, {{"name", std::string("a")}});
    b = g.add(Op::Input, {}, {DType::F32, {K, R, out}}, {{"name", std::string("b")}});
    s = g.add(Op::Input, {}, {DType::F32, {K}}, {{"name", std::string("s")}});
    slots = g.add(Op::Input, {}, {DType::I32, {kDynamic}}, {{"name", std::string("slots")}});
    rank = g.add(Op::Input, {}, {DType::I32, {K}}, {{"name", std::string("rank")}});
  }
};

TEST(LoraOp, InfersShapeAndRejectsMismatches) {
  OpGraph o(6, 5, 3, 2);
  auto t = infer_type(Op::Lora, {o.x, o.a, o.b, o.s, o.slots, o.rank}, {});
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->str(), "f32[?,5]");

  OpGraph bad_in(6, 5, 3, 2);
  Node* x7 = bad_in.g.add(Op::Input, {}, {DType::F32, {kDynamic, 7}}, {{"name", std::string("x7")}});
  auto e = infer_type(Op::Lora, {x7, bad_in.a, bad_in.b, bad_in.s, bad_in.slots, bad_in.rank}, {});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("lora a f32[3,2,6] must be [K,R,in]"), std::string::npos)
      << e.error().message;

  Node* b4 = o.g.add(Op::Input, {}, {DType::F32, {3, 4, 5}}, {{"name", std::string("b4")}});
  e = infer_type(Op::Lora, {o.x, o.a, b4, o.s, o.slots, o.rank}, {});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("R = 2"), std::string::npos) << e.error().message;

  Node* s2 = o.g.add(Op::Input, {}, {DType::F32, {2}}, {{"name", std::string("s2")}});
  e = infer_type(Op::Lora, {o.x, o.a, o.b, s2, o.slots, o.rank}, {});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("slot count K"), std::string::npos) << e.error().message;

  Node* fslots = o.g.add(Op::Input, {}, {DType::F32, {kDynamic}}, {{"name", std::string("fs")}});
  e = infer_type(Op::Lora, {o.x, o.a, o.b, o.s, fslots, o.rank}, {});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("adapter slots must be i32[T]"), std::string::npos)
      << e.error().message;

  Node* frank = o.g.add(Op::Input, {}, {DType::F32, {3}}, {{"name", std::string("fr")}});
  e = infer_type(Op::Lora, {o.x, o.a, o.b, o.s, o.slots, frank}, {});
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("lora rank must be i32[K]"), std::string::npos) << e.error().message;
}

TEST(LoraOp, InterpreterComputesPerRowSlots) {
  // in 3, out 2, K 2, R 2; slot 1: a = [[1,0,0],[0,1,0]], b^T = [[1,3],[2,4]] (B = [[1,2],[3,4]]),
  // scale 0.5.
  OpGraph o(3, 2, 2, 2);
  Node* y = o.g.add(Op::Lora, {o.x, o.a, o.b, o.s, o.slots, o.rank}, {DType::F32, {kDynamic, 2}});
  o.g.add(Op::Output, {y}, y->type(), {{"name", std::string("y")}});
  ASSERT_TRUE(verify(o.g).ok());
  std::map<std::string, Tensor> in = {
      {"x", Tensor::f32_of({2, 3}, {1, 2, 3, 4, 5, 6})},
      {"a", Tensor::f32_of({2, 2, 3}, {9, 9, 9, 9, 9, 9, 1, 0, 0, 0, 1, 0})},
      {"b", Tensor::f32_of({2, 2, 2}, {9, 9, 9, 9, 1, 3, 2, 4})},
      {"s", Tensor::f32_of({2}, {7, 0.5f})},
      {"slots", Tensor::i32_of({2}, {1, 0})},
      {"rank", Tensor::i32_of({2}, {2, 2})}};
  Interpreter it(o.g);
  auto r = it.run(in);
  ASSERT_TRUE(r.ok()) << r.error().message;
  // Row 0 (slot 1): h = (1, 2), y = 0.5 * (1+4, 3+8). Row 1 (slot 0): the zero adapter,
  // whatever slot 0's factors and scale hold.
  EXPECT_EQ(r->at("y").f32, (std::vector<float>{2.5f, 5.5f, 0.0f, 0.0f}));
  // Rank 1 on slot 1: only the first row of a and of b^T; rank 0: nothing.
  in["rank"] = Tensor::i32_of({2}, {2, 1});
  r = it.run(in);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->at("y").f32, (std::vector<float>{0.5f, 1.5f, 0.0f, 0.0f}));
  in["rank"] = Tensor::i32_of({2}, {2, 0});
  r = it.run(in);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->at("y").f32, (std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f}));
  in["rank"] = Tensor::i32_of({2}, {2, 2});

  in["slots"] = Tensor::i32_of({2}, {0, 2});
  r = it.run(in);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("adapter slot 2 of row 1 is outside the 2 slots"),
            std::string::npos)
      << r.error().message;
}

// ---- the pass on the tiny LLaMA ---------------------------------------------------------

constexpr int64_t kSlots = 3, kRank = 16;

struct Model {
  std::string bytes;
  std::shared_ptr<const GgufFile> file;
  LlamaConfig cfg;
};

Model open_model(std::string bytes, const std::string& name) {
  Model m;
  m.bytes = std::move(bytes);
  auto f = GgufFile::parse(MappedFile::borrow(m.bytes.data(), m.bytes.size(), name));
  EXPECT_TRUE(f.ok()) << f.error().message;
  m.file = std::shared_ptr<const GgufFile>(std::move(f).value());
  m.cfg = read_llama_config(*m.file).value();
  return m;
}

// A random adapter of rank r on every target of every layer (GGUF conventions).
LoraAdapter random_adapter(const Model& m, int64_t r, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  LoraAdapter ad;
  ad.name = "random";
  ad.rank = r;
  ad.scale = scale;
  for (int64_t l = 0; l < m.cfg.n_layer; ++l)
    for (int mod = 0; mod < (int)std::size(lora_names::kModules); ++mod) {
      LoraTarget t;
      t.base_tensor = fmt::format(fmt::runtime(lora_names::kModules[mod].gguf), l);
      auto shape = logical_shape(*m.file->tensor(t.base_tensor));
      t.layer = l, t.module = mod, t.rank = r, t.out = shape[0], t.in = shape[1];
      t.a.resize((size_t)(r * t.in));
      t.b.resize((size_t)(t.out * r));
      for (auto& v : t.a) v = nd(rng) / std::sqrt((float)t.in);
      for (auto& v : t.b) v = nd(rng) / std::sqrt((float)r);
      ad.targets.push_back(std::move(t));
    }
  return ad;
}

// The base model with the adapter merged: W + s * B @ A in f32 for every target; every
// other tensor byte for byte as in the base (tests/unit/merged_model.h).
std::string merged_gguf(const Model& m, const LoraAdapter& ad) { return testing::merged_model_gguf(*m.file, ad); }

Graph build(const Model& m, int64_t streams, bool lora, int64_t rank = kRank) {
  auto g = build_llama_graph(m.file, m.cfg, {.max_context = 32, .max_streams = streams, .all_logits = true});
  EXPECT_TRUE(g.ok()) << g.error().message;
  if (lora) {
    g->set_attr("lora_slots", kSlots);
    g->set_attr("lora_rank", rank);
    PassManagerOptions opts;
    opts.verify_each = true;
    PassManager pm(opts);
    EXPECT_TRUE(pm.add_pipeline("lora-as-input").ok());
    Status s = pm.run(*g);
    EXPECT_TRUE(s.ok()) << s.error().message;
  }
  EXPECT_TRUE(verify(*g).ok());
  return std::move(*g);
}

// Adapter inputs: `ad` in slot 1 (zero-padded to rank R), zeros in slots 0 and 2.
void bind_adapter(const Graph& g, const LoraAdapter& ad, std::map<std::string, Tensor>& in) {
  std::vector<float> scale((size_t)kSlots, 0.0f);
  scale[1] = ad.scale;
  in["lora.scale"] = Tensor::f32_of({kSlots}, scale);
  int64_t R = *g.int_attr("lora_rank");
  for (const auto& t : ad.targets) {
    ASSERT_LE(t.rank, R);
    Tensor a = Tensor::f32_of({kSlots, R, t.in}), b = Tensor::f32_of({kSlots, R, t.out});
    for (int64_t k = 0; k < t.rank; ++k)
      for (int64_t i = 0; i < t.in; ++i) a.f32[(R + k) * t.in + i] = t.a[k * t.in + i];
    for (int64_t o = 0; o < t.out; ++o)
      for (int64_t k = 0; k < t.rank; ++k) b.f32[(R + k) * t.out + o] = t.b[o * t.rank + k];
    in["lora." + t.base_tensor + ".a"] = std::move(a);
    in["lora." + t.base_tensor + ".b"] = std::move(b);
    in["lora." + t.base_tensor + ".rank"] = Tensor::i32_of({kSlots}, {0, (int32_t)t.rank, 0});
  }
}

std::vector<float> run_logits(const Graph& g, const std::map<std::string, Tensor>& in) {
  Interpreter it(g);
  auto r = it.run(in);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? r->at("logits").f32 : std::vector<float>{};
}

std::map<std::string, Tensor> step(const std::vector<int32_t>& tokens, int32_t slot) {
  auto in = single_stream_inputs(tokens, 0);
  in["adapter_slots"] = Tensor::i32_of({(int64_t)tokens.size()}, std::vector<int32_t>(tokens.size(), slot));
  return in;
}

// max |a - b| / max |b|
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num = std::max(num, std::fabs((double)a[i] - b[i]));
    den = std::max(den, std::fabs((double)b[i]));
  }
  return den > 0 ? num / den : num;
}

struct LoraModel : ::testing::Test {
  Model base = open_model(testing::tiny_llama_gguf(), "tiny.gguf");
  std::vector<int32_t> tokens = {3, 17, 42, 5, 60, 1};
};

TEST_F(LoraModel, PassRewritesEveryTargetOnce) {
  Graph g = build(base, 1, true);
  const size_t targets = 7 * (size_t)base.cfg.n_layer;
  EXPECT_EQ(g.nodes_of(Op::Lora).size(), targets);
  for (Node* l : g.nodes_of(Op::Lora)) {
    EXPECT_EQ(l->operand(3)->str_attr("name"), "lora.scale");
    EXPECT_EQ(l->operand(4)->str_attr("name"), "adapter_slots");
  }
  Node* a = g.find_input("lora.blk.1.ffn_down.weight.a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->type().str(), fmt::format("f32[{},{},{}]", kSlots, kRank, base.cfg.n_ff));
  EXPECT_EQ(g.find_input("lora.blk.1.ffn_down.weight.b")->type().str(),
            fmt::format("f32[{},{},{}]", kSlots, kRank, base.cfg.n_embd));
  EXPECT_EQ(g.find_input("lora.blk.1.ffn_down.weight.rank")->type().str(), fmt::format("i32[{}]", kSlots));
  // A second run changes nothing.
  size_t n = g.size();
  auto again = create_lora_as_input_pass()->run(g);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  EXPECT_EQ(g.size(), n);
}

// Done when: logits with the adapter as runtime input equal the merged model's.
TEST_F(LoraModel, AdapterInputEqualsMergedWeights) {
  LoraAdapter ad = random_adapter(base, 4, 11, 2.0f);
  Model merged = open_model(merged_gguf(base, ad), "merged.gguf");
  Graph g = build(base, 1, true);
  auto in = step(tokens, 1);
  bind_adapter(g, ad, in);
  std::vector<float> with_input = run_logits(g, in);
  std::vector<float> with_merge = run_logits(build(merged, 1, false), step(tokens, 1));
  std::vector<float> plain = run_logits(build(base, 1, false), step(tokens, 0));
  double err = rel_err(with_input, with_merge);
  EXPECT_LE(err, 1e-4);
  RecordProperty("rel_err", std::to_string(err));
  // The adapter matters: otherwise the comparison above proves nothing.
  EXPECT_GE(rel_err(plain, with_merge), 1e-2);
}

// fuse-matmul-swiglu on a LoRA graph: gate and up, each add(matmul, lora), become one
// matmul_swiglu with their side paths, and the logits stay those of the unfused graph for
// rows on the adapter and on the zero adapter (the interpreter runs both forms).
TEST_F(LoraModel, SwigluFusionTakesTheSidePaths) {
  LoraAdapter ad = random_adapter(base, 4, 14, 1.5f);
  Graph unfused = build(base, 1, true);
  Graph fused = build(base, 1, true);
  auto changed = create_fuse_matmul_swiglu_pass()->run(fused);
  ASSERT_TRUE(changed.ok()) << changed.error().message;
  EXPECT_TRUE(*changed);
  ASSERT_TRUE(verify(fused).ok());
  const auto fused_nodes = fused.nodes_of(Op::MatMulSwiGlu);
  ASSERT_EQ((int64_t)fused_nodes.size(), base.cfg.n_layer);
  for (const Node* f : fused_nodes) {
    ASSERT_EQ(f->operands().size(), 11u);
    EXPECT_NE(f->operand(3)->str_attr("name")->find("ffn_gate.weight.a"), std::string_view::npos);
    EXPECT_NE(f->operand(5)->str_attr("name")->find("ffn_up.weight.a"), std::string_view::npos);
    EXPECT_EQ(f->operand(7)->str_attr("name"), "lora.scale");
    EXPECT_EQ(f->operand(8)->str_attr("name"), "adapter_slots");
    EXPECT_NE(f->operand(10)->str_attr("name")->find("ffn_up.weight.rank"), std::string_view::npos);
  }
  // Only gate, up and their silu and mul went: down keeps its side path.
  EXPECT_EQ(fused.nodes_of(Op::Lora).size(), unfused.nodes_of(Op::Lora).size() - 2 * (size_t)base.cfg.n_layer);
  for (int32_t slot : {1, 0}) {
    auto in_u = step(tokens, slot), in_f = step(tokens, slot);
    bind_adapter(unfused, ad, in_u);
    bind_adapter(fused, ad, in_f);
    EXPECT_EQ(run_logits(fused, in_f), run_logits(unfused, in_u)) << "slot " << slot;
  }
}

// A rank below R, zero-padded, gives what the unpadded rank-r computation gives.
TEST_F(LoraModel, PaddedRankEqualsUnpadded) {
  LoraAdapter ad = random_adapter(base, 3, 12, 1.5f);
  Graph padded = build(base, 1, true, kRank);
  Graph exact = build(base, 1, true, 3);
  auto in_p = step(tokens, 1), in_e = step(tokens, 1);
  bind_adapter(padded, ad, in_p);
  bind_adapter(exact, ad, in_e);
  EXPECT_EQ(run_logits(padded, in_p), run_logits(exact, in_e));
}

// Rows of different streams with different slots in one step equal separate runs.
TEST_F(LoraModel, MixedSlotsInOneStepEqualSeparateRuns) {
  LoraAdapter ad = random_adapter(base, 5, 13, 1.0f);
  Graph g2 = build(base, 2, true);
  // Stream 0 (slot 0, the base model) and stream 1 (slot 1) prefill in one step.
  std::vector<int32_t> t0 = {3, 17, 42}, t1 = {9, 8, 7, 6};
  std::vector<int32_t> tok, pos, str, slot;
  for (size_t i = 0; i < t0.size(); ++i) tok.push_back(t0[i]), pos.push_back((int32_t)i), str.push_back(0), slot.push_back(0);
  for (size_t i = 0; i < t1.size(); ++i) tok.push_back(t1[i]), pos.push_back((int32_t)i), str.push_back(1), slot.push_back(1);
  int64_t T = (int64_t)tok.size();
  std::map<std::string, Tensor> in = {{"tokens", Tensor::i32_of({T}, tok)},
                                      {"positions", Tensor::i32_of({T}, pos)},
                                      {"streams", Tensor::i32_of({T}, str)},
                                      {"adapter_slots", Tensor::i32_of({T}, slot)}};
  bind_adapter(g2, ad, in);
  std::vector<float> both = run_logits(g2, in);

  Graph g1 = build(base, 1, true);
  auto in0 = step(t0, 0), in1 = step(t1, 1);
  bind_adapter(g1, ad, in0);
  bind_adapter(g1, ad, in1);
  std::vector<float> alone0 = run_logits(g1, in0), alone1 = run_logits(g1, in1);
  int64_t V = base.cfg.n_vocab;
  ASSERT_EQ((int64_t)both.size(), T * V);
  std::vector<float> first(both.begin(), both.begin() + (int64_t)t0.size() * V);
  std::vector<float> second(both.begin() + (int64_t)t0.size() * V, both.end());
  EXPECT_EQ(first, alone0);
  EXPECT_EQ(second, alone1);
  // Stream 0 saw the base model, stream 1 the adapter.
  EXPECT_EQ(first, run_logits(build(base, 1, false), step(t0, 0)));
}

// Slot 0 (the zero adapter) is the base model exactly, whatever the other slots hold.
TEST_F(LoraModel, ZeroSlotEqualsBaseModel) {
  LoraAdapter ad = random_adapter(base, 8, 14, 3.0f);
  Graph g = build(base, 1, true);
  auto in = step(tokens, 0);
  bind_adapter(g, ad, in);
  EXPECT_EQ(run_logits(g, in), run_logits(build(base, 1, false), step(tokens, 0)));
}

}  // namespace
}  // namespace kiln

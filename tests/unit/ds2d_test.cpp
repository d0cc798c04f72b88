// tests/unit/ds2d_test.cpp — DS2D tree verification: templates, the ds2d-unroll pass, and
// the equivalence DS2D relies on: a verify step over a token tree gives every node the
// logits (and the K/V) that running that node's root-to-node path as a plain sequence
// gives. Checked with the interpreter on the tiny test model over two streams; the
// compiled verify entry points are checked against it in ds2d_codegen_test.cpp.
#include <gtest/gtest.h>

#include <random>

#include "frontend/gguf.h"
#include "frontend/llama.h"
#include "ir/interpreter.h"
#include "ir/text.h"
#include "ir/tree.h"
#include "ir/verifier.h"
#include "passes/ds2d_unroll.h"
#include "codegen/compile.h"
#include "passes/pass.h"
#include "tests/unit/step_runner.h"
#include "support/file.h"
#include "tests/unit/numeric.h"
#include "tests/unit/tiny_model.h"

namespace kiln {
namespace {

using Tensors = std::map<std::string, Tensor>;

// ---- templates ----------------------------------------------------------------------

TEST(Ds2dTemplate, ChainAndTreeShapes) {
  auto chain = ds2d_template(4, "chain");
  ASSERT_TRUE(chain.ok()) << chain.error().message;
  EXPECT_EQ(*chain, (std::vector<int32_t>{-1, 0, 1, 2}));
  // Weights with p = .5,.2,.1,...: root 1, a .5, aa .25, b .2, aaa .125, then three of .1
  // in the order they were offered: ab, ba, c.
  auto tree = ds2d_template(8, "tree");
  ASSERT_TRUE(tree.ok()) << tree.error().message;
  EXPECT_EQ(*tree, (std::vector<int32_t>{-1, 0, 1, 0, 2, 1, 3, 0}));
  for (int64_t n : {1, 2, 4, 8, 16, 32, 64}) {
    auto t = ds2d_template(n, "tree");
    ASSERT_TRUE(t.ok()) << t.error().message;
    ASSERT_EQ((int64_t)t->size(), n);
    EXPECT_TRUE(tree_shape(*t).ok());
    // Every smaller budget's template is a prefix (the runtime may fill fewer nodes).
    auto half = ds2d_template(n / 2 ? n / 2 : 1, "tree");
    EXPECT_TRUE(std::equal(half->begin(), half->end(), t->begin()));
  }
  // "deep" (0.8, 0.15, 0.05): 8 nodes are a chain (0.8^7 = .21 outweighs the root's
  // second child, .15); 12 nodes branch: root's second child (.15) after a chain of 9,
  // then .134 (depth 9), .12 (a's second child) and .107 (depth 10).
  EXPECT_EQ(ds2d_template(8, "deep").value(), (std::vector<int32_t>{-1, 0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(ds2d_template(12, "deep").value(), (std::vector<int32_t>{-1, 0, 1, 2, 3, 4, 5, 6, 7, 0, 8, 1}));
  EXPECT_FALSE(ds2d_template(65, "tree").ok());
  EXPECT_FALSE(ds2d_template(8, "0.2,0.5").ok());  // increasing
  EXPECT_FALSE(ds2d_template(8, "wide").ok());
  auto b = ds2d_budgets("16,4,8,4");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (std::vector<int64_t>{4, 8, 16}));
  EXPECT_FALSE(ds2d_budgets("4,,8").ok());
  EXPECT_FALSE(ds2d_budgets("0").ok());
}

TEST(Ds2dTemplate, ShapeDepthsAndMask) {
  auto t = tree_shape({-1, 0, 0, 1});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->depth, (std::vector<int32_t>{0, 1, 1, 2}));
  EXPECT_EQ(tree_mask_text(*t), "1000/1100/1010/1101");
  EXPECT_FALSE(tree_shape({0, 0}).ok());
  EXPECT_FALSE(tree_shape({-1, 1}).ok());
  EXPECT_FALSE(tree_shape({}).ok());
}

// ---- the tiny model and its verify graph ----------------------------------------------

struct TinyModel {
  std::shared_ptr<std::string> bytes;
  std::shared_ptr<const GgufFile> file;
  LlamaConfig cfg;
};

TinyModel tiny() {
  testing::TinyLlamaSpec spec;
  TinyModel m;
  m.bytes = std::make_shared<std::string>(testing::tiny_llama_gguf(spec));
  auto f = GgufFile::parse(MappedFile::borrow(m.bytes->data(), m.bytes->size(), "tiny.gguf"));
  EXPECT_TRUE(f.ok()) << f.error().message;
  m.file = std::shared_ptr<const GgufFile>(std::move(f).value());
  m.cfg = read_llama_config(*m.file).value();
  return m;
}

Graph step_graph(const TinyModel& m, int64_t streams) {
  LlamaBuildOptions o;
  o.max_context = 64;
  o.max_streams = streams;
  o.all_logits = true;
  auto g = build_llama_graph(m.file, m.cfg, o);
  EXPECT_TRUE(g.ok()) << g.error().message;
  return std::move(g).value();
}

Graph verify_graph(const Graph& step, const std::vector<int32_t>& parent) {
  auto c = parse_graph(print_graph(step));
  EXPECT_TRUE(c.ok()) << c.error().message;
  Graph g = std::move(c).value();
  g.set_weights(step.weights());
  g.set_attr("ds2d_parent", DenseData{DType::I32, {}, parent});
  PassManagerOptions po;
  po.verify_each = true;
  PassManager pm(po);
  EXPECT_TRUE(pm.add_pipeline("ds2d-unroll").ok());
  Status s = pm.run(g);
  EXPECT_TRUE(s.ok()) << s.error().message;
  return g;
}

Tensor i32(const std::vector<int32_t>& v) { return Tensor::i32_of({(int64_t)v.size()}, v); }

Tensors rows(const std::vector<int32_t>& tok, const std::vector<int32_t>& pos, const std::vector<int32_t>& str) {
  return {{"tokens", i32(tok)}, {"positions", i32(pos)}, {"streams", i32(str)}};
}

// Logits of the last token of `seq` run as a plain sequence on a fresh cache of stream 0,
// and that cache's K rows of layer 0.
std::pair<std::vector<float>, Tensor> plain_run(const Graph& step, const std::vector<int32_t>& seq) {
  Interpreter it(step);
  std::vector<int32_t> pos(seq.size()), str(seq.size(), 0);
  for (size_t i = 0; i < seq.size(); ++i) pos[i] = (int32_t)i;
  auto out = it.run(rows(seq, pos, str));
  EXPECT_TRUE(out.ok()) << out.error().message;
  const Tensor& l = out->at("logits");
  int64_t V = l.cols();
  std::vector<float> last(l.f32.end() - V, l.f32.end());
  return {last, *it.state().at("kv.0.k")};
}

// The equivalence, for a template on two streams with different prompt lengths: each
// node's verify logits and its K row (at base + j) equal those of its path run alone
// (at base + depth[j]).
void check_tree_equivalence(const std::vector<int32_t>& parent, uint32_t seed) {
  TinyModel m = tiny();
  Graph step = step_graph(m, 2);
  Graph verify = verify_graph(step, parent);
  TreeShape tree = tree_shape(parent).value();
  const int64_t N = tree.size(), V = m.cfg.n_vocab;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> tokd(0, (int32_t)V - 1);
  std::vector<std::vector<int32_t>> prompt = {{}, {}};
  for (int i = 0; i < 6; ++i) prompt[0].push_back(tokd(rng));
  for (int i = 0; i < 3; ++i) prompt[1].push_back(tokd(rng));

  // Prefill both streams (all but the last prompt token: that one is the tree's root).
  Interpreter plain(step);
  std::vector<int32_t> tok, pos, str;
  for (int s = 0; s < 2; ++s)
    for (size_t i = 0; i + 1 < prompt[s].size(); ++i) tok.push_back(prompt[s][i]), pos.push_back((int32_t)i), str.push_back(s);
  ASSERT_TRUE(plain.run(rows(tok, pos, str)).ok());

  // One verify step: block s is the tree of stream s, node 0 = the last prompt token.
  std::vector<std::vector<int32_t>> node_tok(2);
  tok.clear(), pos.clear(), str.clear();
  for (int s = 0; s < 2; ++s) {
    int32_t base = (int32_t)prompt[s].size() - 1;
    for (int64_t j = 0; j < N; ++j) {
      node_tok[s].push_back(j == 0 ? prompt[s].back() : tokd(rng));
      tok.push_back(node_tok[s].back());
      pos.push_back(base + tree.depth[(size_t)j]);
      str.push_back(s);
    }
  }
  Interpreter tv(verify);
  tv.share_state(plain);
  auto out = tv.run(rows(tok, pos, str));
  ASSERT_TRUE(out.ok()) << out.error().message;
  const Tensor& logits = out->at("logits");
  const Tensor& kcache = *tv.state().at("kv.0.k");
  const int64_t C = kcache.shape[1], F = kcache.shape[2];

  double worst = 0;
  for (int s = 0; s < 2; ++s) {
    int32_t base = (int32_t)prompt[s].size() - 1;
    for (int64_t j = 0; j < N; ++j) {
      std::vector<int32_t> seq(prompt[s].begin(), prompt[s].end() - 1), path;
      for (int64_t k = j; k >= 0; k = tree.parent[(size_t)k]) path.insert(path.begin(), node_tok[s][(size_t)k]);
      seq.insert(seq.end(), path.begin(), path.end());
      auto [want, kref] = plain_run(step, seq);
      std::vector<float> got(logits.f32.begin() + (s * N + j) * V, logits.f32.begin() + (s * N + j + 1) * V);
      double e = testing::nmse(got, want);
      worst = std::max(worst, e);
      EXPECT_LT(e, 1e-12) << "stream " << s << " node " << j;
      // K row of node j: tree row base + j in stream s; path row base + depth[j] in stream 0.
      const float* kt = kcache.f32.data() + (s * C + base + j) * F;
      const float* kp = kref.f32.data() + (base + tree.depth[(size_t)j]) * F;
      EXPECT_TRUE(std::equal(kt, kt + F, kp)) << "K row of stream " << s << " node " << j;
    }
  }
  ::testing::Test::RecordProperty("worst_nmse", fmt::format("{:.3g}", worst));
}

TEST(Ds2dInterpreter, TreeVerifyEqualsEachPathAsASequence) {
  check_tree_equivalence(ds2d_template(8, "tree").value(), 1);
  check_tree_equivalence({-1, 0, 0, 0, 1, 1, 2, 4, 7}, 2);  // three children, a deep branch
  check_tree_equivalence({-1, 0, 1, 2}, 3);                  // a chain is the causal step
  check_tree_equivalence({-1}, 4);                           // the root alone
}

TEST(Ds2dInterpreter, BadTreeRowsAreErrors) {
  TinyModel m = tiny();
  Graph step = step_graph(m, 2);
  Graph verify = verify_graph(step, {-1, 0, 0});
  Interpreter it(verify);
  // Three rows per tree: 4 rows is not whole blocks.
  auto r = it.run(rows({1, 2, 3, 4}, {0, 1, 1, 2}, {0, 0, 0, 0}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("whole blocks"), std::string::npos) << r.error().message;
  // Node 2 at depth 1 must have the root's position + 1.
  r = it.run(rows({1, 2, 3}, {0, 1, 2}, {0, 0, 0}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("implies position"), std::string::npos) << r.error().message;
  // A block must stay on one stream.
  r = it.run(rows({1, 2, 3}, {0, 1, 1}, {0, 1, 0}));
  ASSERT_FALSE(r.ok());
  // The last node's KV row must fit the cache (base 62 + node 2 = 64 = C).
  r = it.run(rows({1, 2, 3}, {62, 63, 63}, {0, 0, 0}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("outside the cache"), std::string::npos) << r.error().message;
}

// ---- the pass ---------------------------------------------------------------------------

TEST(Ds2dUnroll, MarksEveryKvWriteAndAttentionAndRoundTrips) {
  TinyModel m = tiny();
  Graph step = step_graph(m, 1);
  step.set_attr("ds2d_nodes", int64_t{4});
  step.set_attr("ds2d_topology", std::string("tree"));  // the default ("deep") is a chain at 4
  PassManager pm;
  ASSERT_TRUE(pm.add_pipeline("ds2d-unroll").ok());
  ASSERT_TRUE(pm.run(step).ok());
  ASSERT_TRUE(verify(step).ok());
  for (const Node* n : step.nodes()) {
    if (n->op() == Op::Attention) {
      EXPECT_EQ(n->str_attr("tree_mask"), "1000/1100/1110/1001");
    }
    if (n->op() == Op::KvWrite || n->op() == Op::Attention) {
      EXPECT_EQ(n->dense_attr("tree_parent")->i32, (std::vector<int32_t>{-1, 0, 1, 0}));
    }
  }
  std::string text = print_graph(step);
  auto back = parse_graph(text);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(print_graph(*back), text);
  // Running it again changes nothing.
  auto again = find_pass("ds2d-unroll")->create()->run(step);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
}

TEST(Ds2dUnroll, VerifierRejectsAWrongMask) {
  TinyModel m = tiny();
  Graph g = verify_graph(step_graph(m, 1), {-1, 0, 0});
  for (Node* n : g.nodes_of(Op::Attention)) n->set_attr("tree_mask", std::string("100/110/111"));
  Status s = verify(g);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("not the ancestor mask"), std::string::npos) << s.error().message;
  Graph none = step_graph(m, 1);
  auto r = find_pass("ds2d-unroll")->create()->run(none);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("ds2d_nodes"), std::string::npos);
}

// ---- compiled entry points (tiny model, through the JIT) -------------------------------

// The tiny model compiled as `kiln compile` plans it, with verify entry points for two
// templates and the draft entry through layer 0, run on 1-3 threads (also lagging ones):
//  * each verify entry gives the interpreter's verify logits (float activations) and
//    writes the interpreter's KV rows;
//  * each node's verify logits are bit for bit the compiled step's logits for its path
//    run as a plain chunk, and its K/V row (base + j) is the path's (base + depth[j]);
//  * the draft entry gives the interpreter's logits for the draft graph and writes the
//    KV of its layers where the step does.
TEST(Ds2dCodegen, VerifyAndDraftEntriesMatchInterpreterAndPlainSteps) {
  TinyModel m = tiny();
  LlamaBuildOptions bo;
  bo.max_context = 48;
  bo.max_streams = 2;
  auto built = build_llama_graph(m.file, m.cfg, bo);
  ASSERT_TRUE(built.ok()) << built.error().message;
  Graph g = std::move(built).value();
  const int64_t kRows = 16;
  Status s = testing::plan_for_codegen(g, kRows, 3, "fuse-dequant-matmul,cse,dce,freeze-base,plan-memory");
  ASSERT_TRUE(s.ok()) << s.error().message;
  // "4,8" with the default topology, plus a hand-made 8-node tree through ds2d_parent.
  auto ds = ds2d_graphs(g, "4,8", "tree", 1);
  ASSERT_TRUE(ds.ok()) << ds.error().message;
  std::vector<int32_t> bushy = {-1, 0, 0, 0, 1, 1, 2, 4};
  ds->verify.push_back(verify_graph(g, bushy));
  ds->verify.erase(ds->verify.begin() + 1);  // keep 4 (tree) and 8 (bushy): ascending sizes
  CodegenOptions opts;
  for (const Graph& v : ds->verify) opts.tree_verify.push_back(&v);
  opts.draft = &*ds->draft;
  opts.draft_layers = ds->draft_layers;
  auto runner = testing::StepRunner::create(g, opts);
  ASSERT_TRUE(runner.ok()) << runner.error().message;
  testing::StepRunner& r = **runner;
  const kiln_compiled_model& cm = r.model();
  ASSERT_EQ(cm.n_tree_templates, 2);
  EXPECT_EQ(cm.tree_templates[0].n_nodes, 4);
  EXPECT_EQ(cm.tree_templates[1].n_nodes, 8);
  EXPECT_EQ(std::vector<int32_t>(cm.tree_templates[1].parent, cm.tree_templates[1].parent + 8), bushy);
  EXPECT_EQ(std::vector<int32_t>(cm.tree_templates[1].depth, cm.tree_templates[1].depth + 8),
            tree_shape(bushy)->depth);
  EXPECT_EQ(cm.draft_layers, 1);
  ASSERT_NE(cm.draft, nullptr);
  const int64_t V = m.cfg.n_vocab;

  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> tokd(0, (int32_t)V - 1);
  const testing::Schedule schedules[] = {{1}, {2}, {3}, {3, 1}, {3, -1}};
  for (int ti = 0; ti < 2; ++ti) {
    const Graph& vg = ds->verify[(size_t)ti];
    TreeShape tree = tree_shape(vg.nodes_of(Op::Attention)[0]->dense_attr("tree_parent")->i32).value();
    const int64_t N = tree.size();
    SCOPED_TRACE(fmt::format("template of {} nodes", N));
    // Prefill 5 and 3 tokens on streams 0 and 1, in the compiled step and the interpreter.
    std::vector<std::vector<int32_t>> prompt(2);
    for (int i = 0; i < 6; ++i) prompt[0].push_back(tokd(rng));
    for (int i = 0; i < 4; ++i) prompt[1].push_back(tokd(rng));
    testing::StepRows pre;
    for (int st = 0; st < 2; ++st)
      for (size_t i = 0; i + 1 < prompt[st].size(); ++i)
        pre.tokens.push_back(prompt[st][i]), pre.positions.push_back((int32_t)i), pre.streams.push_back(st);
    pre.logit_rows = {0};
    r.reset_kv();
    ASSERT_TRUE(r.step(pre, {1}, (size_t)V).ok());
    Interpreter ip(g);
    ASSERT_TRUE(ip.run(pre.interpreter_inputs()).ok());
    Interpreter iv(vg);
    iv.share_state(ip);

    testing::StepRows ver;
    std::vector<std::vector<int32_t>> node_tok(2);
    for (int st = 0; st < 2; ++st)
      for (int64_t j = 0; j < N; ++j) {
        node_tok[st].push_back(j == 0 ? prompt[st].back() : tokd(rng));
        ver.tokens.push_back(node_tok[st].back());
        ver.positions.push_back((int32_t)prompt[st].size() - 1 + tree.depth[(size_t)j]);
        ver.streams.push_back(st);
        ver.logit_rows.push_back((int32_t)(st * N + j));
      }
    auto want = iv.run(ver.interpreter_inputs());
    ASSERT_TRUE(want.ok()) << want.error().message;
    std::vector<float> verify_logits;
    for (const auto& sch : schedules) {
      auto got = r.step(ver, sch, (size_t)(2 * N * V), cm.tree_templates[ti].verify);
      ASSERT_TRUE(got.ok()) << got.error().message;
      EXPECT_LT(testing::nmse(*got, want->at("logits").f32), 1e-10) << "nth " << sch.nth << " lag " << sch.lag;
      if (verify_logits.empty()) verify_logits = *got;
      else EXPECT_TRUE(testing::same_bits(*got, verify_logits)) << "thread count changed the result";
    }
    // The KV the verify entry wrote is the interpreter's, and a snapshot for the paths.
    std::vector<Node*> states = g.nodes_of(Op::State);
    std::vector<std::vector<float>> kv_after;
    for (const Node* st : states) {
      kv_after.push_back(r.state(st));
      const Tensor& it = *ip.state().at(std::string(*st->str_attr("name")));
      // f16 caches: a K/V value within float rounding of the interpreter's can round to
      // the neighbouring half (2^-11 relative) when it sits near a rounding boundary.
      EXPECT_LT(testing::nmse(kv_after.back(), it.f32), st->type().dtype == DType::F16 ? 1e-8 : 1e-10) << st->loc();
    }
    // Each node's path as a plain chunk in the compiled step: the same logits, bit for bit.
    for (int st = 0; st < 2; ++st) {
      int32_t base = (int32_t)prompt[st].size() - 1;
      for (int64_t j = 0; j < N; ++j) {
        testing::StepRows path;
        std::vector<int32_t> toks;
        for (int64_t k = j; k >= 0; k = tree.parent[(size_t)k]) toks.insert(toks.begin(), node_tok[st][(size_t)k]);
        for (size_t i = 0; i < toks.size(); ++i)
          path.tokens.push_back(toks[i]), path.positions.push_back(base + (int32_t)i), path.streams.push_back(st);
        path.logit_rows = {(int32_t)toks.size() - 1};
        auto got = r.step(path, {2}, (size_t)V);
        ASSERT_TRUE(got.ok()) << got.error().message;
        std::vector<float> tree_row(verify_logits.begin() + (st * N + j) * V,
                                    verify_logits.begin() + (st * N + j + 1) * V);
        EXPECT_TRUE(testing::same_bits(*got, tree_row)) << "stream " << st << " node " << j
                                                        << " nmse " << testing::nmse(*got, tree_row);
        for (size_t si = 0; si < states.size(); ++si) {
          std::vector<float> now = r.state(states[si]);
          const int64_t C = states[si]->type().shape[1], F = states[si]->type().shape[2];
          const float* a = now.data() + (st * C + base + tree.depth[(size_t)j]) * F;
          const float* b = kv_after[si].data() + (st * C + base + j) * F;
          EXPECT_TRUE(std::equal(a, a + F, b)) << states[si]->loc() << " stream " << st << " node " << j;
        }
      }
    }
  }

  // Draft: a decode step through layer 0 and the LM head, on both streams.
  r.reset_kv();
  Interpreter idraft(*ds->draft);
  testing::StepRows d;
  d.tokens = {3, 9, 4};
  d.positions = {0, 1, 0};
  d.streams = {0, 0, 1};
  d.logit_rows = {1, 2};
  auto want = idraft.run(d.interpreter_inputs());
  ASSERT_TRUE(want.ok()) << want.error().message;
  auto got = r.step(d, {2}, (size_t)(2 * V), cm.draft);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_LT(testing::nmse(*got, want->at("logits").f32), 1e-10);
  // Layer 0's KV is where the step writes it; layer 1's is untouched.
  for (const Node* st : g.nodes_of(Op::State)) {
    std::string name(*st->str_attr("name"));
    std::vector<float> kv = r.state(st);
    if (idraft.state().count(name)) {
      EXPECT_LT(testing::nmse(kv, idraft.state().at(name)->f32), 1e-10) << name;
    } else {
      EXPECT_TRUE(std::all_of(kv.begin(), kv.end(), [](float x) { return x == 0; })) << name;
    }
  }
}

// A draft with layers skipped (here layer 0 of two): the skipped layer passes its input on
// and writes no KV; the compiled draft entry equals the interpreter on the draft graph.
TEST(Ds2dCodegen, DraftWithSkippedLayers) {
  TinyModel m = tiny();
  auto built = build_llama_graph(m.file, m.cfg, {.max_context = 16, .max_streams = 2});
  ASSERT_TRUE(built.ok()) << built.error().message;
  Graph g = std::move(built).value();
  ASSERT_TRUE(testing::plan_for_codegen(g, 4, 2, "fuse-dequant-matmul,cse,dce,freeze-base,plan-memory").ok());
  auto ds = ds2d_graphs(g, "none", "tree", std::vector<int64_t>{1});
  ASSERT_TRUE(ds.ok()) << ds.error().message;
  EXPECT_TRUE(ds->verify.empty());
  EXPECT_EQ(ds->draft_layers, 1);
  std::vector<std::string> states;
  for (const Node* s : ds->draft->nodes_of(Op::State)) states.emplace_back(*s->str_attr("name"));
  EXPECT_EQ(states, (std::vector<std::string>{"kv.1.k", "kv.1.v"}));
  // The embedding feeds layer 1's norm directly.
  for (const Node* n : ds->draft->nodes())
    if (n->loc() == "blk.1.attn_norm") {
      EXPECT_EQ(n->operand(0)->op(), Op::Embed);
    }
  EXPECT_FALSE(ds2d_graphs(g, "none", "tree", std::vector<int64_t>{0, 1}).ok());  // not a proper subset
  EXPECT_FALSE(ds2d_graphs(g, "none", "tree", std::vector<int64_t>{2}).ok());     // no such layer

  CodegenOptions opts;
  opts.draft = &*ds->draft;
  opts.draft_layers = ds->draft_layers;
  auto runner = testing::StepRunner::create(g, opts);
  ASSERT_TRUE(runner.ok()) << runner.error().message;
  testing::StepRunner& r = **runner;
  Interpreter id(*ds->draft);
  testing::StepRows d;
  d.tokens = {3, 9, 4};
  d.positions = {0, 1, 0};
  d.streams = {0, 0, 1};
  d.logit_rows = {1, 2};
  auto want = id.run(d.interpreter_inputs());
  ASSERT_TRUE(want.ok()) << want.error().message;
  auto got = r.step(d, {2}, (size_t)(2 * m.cfg.n_vocab), r.model().draft);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_LT(testing::nmse(*got, want->at("logits").f32), 1e-10);
  for (const Node* st : g.nodes_of(Op::State)) {
    std::string name(*st->str_attr("name"));
    std::vector<float> kv = r.state(st);
    bool zero = std::all_of(kv.begin(), kv.end(), [](float x) { return x == 0; });
    EXPECT_EQ(zero, name.rfind("kv.0.", 0) == 0) << name;
  }
}

}  // namespace
}  // namespace kiln

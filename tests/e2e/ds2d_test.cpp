// tests/e2e/ds2d_test.cpp — DS2D entry points of the default model, through the JIT.
//
// The default model is planned as `kiln compile` plans it (two streams), its verify and
// draft entry points are made by ds2d_graphs and compiled with the step into one object
// (tests/unit/step_runner.h runs them). For a handful of token trees, on one and on two
// streams with different prompt lengths:
//  * every node's verify logits equal the logits plain sequential decoding (one token per
//    step) gives at the end of that node's root-to-node path — bit for bit with float
//    activations, within a rounding bound with int8 activations (where both sides round
//    the same rows the same way, so they agree exactly in practice too);
//  * the verify logits equal the interpreter's verify logits (float activations);
//  * the draft entry equals the interpreter on the draft graph.
#include <gtest/gtest.h>

#include <random>

#include "codegen/compile.h"
#include "frontend/gguf.h"
#include "frontend/llama.h"
#include "ir/interpreter.h"
#include "ir/tree.h"
#include "runtime/sampler.h"
#include "tests/unit/numeric.h"
#include "tests/unit/step_runner.h"

namespace kiln {
namespace {

constexpr int64_t kRows = 32;
constexpr int64_t kContext = 96;

struct Compiled {
  Graph step;
  Ds2dGraphs ds2d;
  std::unique_ptr<testing::StepRunner> runner;
  int64_t n_vocab = 0;
};

std::unique_ptr<Compiled> compile_default(bool int8, const char* templates, int64_t draft_layers) {
  auto f = GgufFile::open(KILN_DEFAULT_MODEL);
  EXPECT_TRUE(f.ok()) << f.error().message;
  if (!f.ok()) return nullptr;
  std::shared_ptr<const GgufFile> file(std::move(f).value());
  LlamaConfig cfg = read_llama_config(*file).value();
  // f32 KV: the checks below hold compiled code to the interpreter at 1e-8, and an f16
  // cache would turn their float-rounding differences into half-ulp ones here and there.
  auto g = build_llama_graph(file, cfg, {.max_context = kContext, .max_streams = 2, .kv_type = DType::F32});
  EXPECT_TRUE(g.ok()) << g.error().message;
  auto c = std::make_unique<Compiled>(Compiled{std::move(g).value(), {}, nullptr, cfg.n_vocab});
  c->step.set_attr("int8_activations", int64_t{int8 ? 1 : 0});
  Status s = testing::plan_for_codegen(c->step, kRows, 2, kBackendPipeline);
  EXPECT_TRUE(s.ok()) << s.error().message;
  auto ds = ds2d_graphs(c->step, templates, "tree", draft_layers);
  EXPECT_TRUE(ds.ok()) << ds.error().message;
  if (!ds.ok()) return nullptr;
  c->ds2d = std::move(ds).value();
  CodegenOptions opts;
  for (const Graph& v : c->ds2d.verify) opts.tree_verify.push_back(&v);
  opts.draft = c->ds2d.draft ? &*c->ds2d.draft : nullptr;
  opts.draft_layers = c->ds2d.draft_layers;
  auto r = testing::StepRunner::create(c->step, opts);
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r.ok()) return nullptr;
  c->runner = std::move(r).value();
  return c;
}

Compiled* float_model() {
  static auto c = compile_default(false, "4,16", 8);
  return c.get();
}
Compiled* int8_model() {
  static auto c = compile_default(true, "8", 0);
  return c.get();
}

// Prompts (token ids from the model's vocabulary, fixed by the seed) for `streams`
// streams, of different lengths.
std::vector<std::vector<int32_t>> prompts(std::mt19937& rng, int64_t V, int streams) {
  std::uniform_int_distribution<int32_t> tok(100, (int32_t)V - 1);
  std::vector<std::vector<int32_t>> p((size_t)streams);
  for (int s = 0; s < streams; ++s)
    for (int i = 0; i < 7 - 3 * s; ++i) p[(size_t)s].push_back(tok(rng));
  return p;
}

// Rows of one step: tokens at positions of streams, logits for logit_rows.
testing::StepRows step_rows(std::vector<int32_t> tokens, std::vector<int32_t> positions, std::vector<int32_t> streams,
                            std::vector<int32_t> logit_rows) {
  testing::StepRows r;
  r.tokens = std::move(tokens);
  r.positions = std::move(positions);
  r.streams = std::move(streams);
  r.logit_rows = std::move(logit_rows);
  return r;
}

struct TreeRun {
  std::vector<float> logits;  // [streams * N, V]
  std::vector<std::vector<int32_t>> node_tok;
};

// Prefills every stream's prompt but its last token (one token per step), then runs the
// verify entry of template `ti` over random trees rooted at each last token.
TreeRun run_tree(Compiled& c, int ti, const std::vector<std::vector<int32_t>>& prompt, std::mt19937& rng) {
  testing::StepRunner& r = *c.runner;
  const kiln_tree_template& t = r.model().tree_templates[ti];
  const int64_t N = t.n_nodes, V = c.n_vocab, S = (int64_t)prompt.size();
  r.reset_kv();
  for (int64_t s = 0; s < S; ++s)
    for (size_t i = 0; i + 1 < prompt[(size_t)s].size(); ++i) {
      testing::StepRows one = step_rows({prompt[(size_t)s][i]}, {(int32_t)i}, {(int32_t)s}, {0});
      EXPECT_TRUE(r.step(one, {2}, (size_t)V).ok());
    }
  std::uniform_int_distribution<int32_t> tok(100, (int32_t)V - 1);
  TreeRun out;
  testing::StepRows ver;
  out.node_tok.resize((size_t)S);
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < N; ++j) {
      out.node_tok[(size_t)s].push_back(j == 0 ? prompt[(size_t)s].back() : tok(rng));
      ver.tokens.push_back(out.node_tok[(size_t)s].back());
      ver.positions.push_back((int32_t)prompt[(size_t)s].size() - 1 + t.depth[j]);
      ver.streams.push_back((int32_t)s);
      ver.logit_rows.push_back((int32_t)(s * N + j));
    }
  auto got = r.step(ver, {2}, (size_t)(S * N * V), t.verify);
  EXPECT_TRUE(got.ok()) << got.error().message;
  if (got.ok()) out.logits = std::move(got).value();
  return out;
}

// Decodes each node's path one token per step after its stream's prompt and compares
// the last step's logits with the node's verify logits; returns the largest |difference|.
double check_paths(Compiled& c, int ti, const std::vector<std::vector<int32_t>>& prompt, const TreeRun& tr,
                   bool exact) {
  testing::StepRunner& r = *c.runner;
  const kiln_tree_template& t = r.model().tree_templates[ti];
  const int64_t N = t.n_nodes, V = c.n_vocab;
  double worst = 0;
  for (size_t s = 0; s < prompt.size(); ++s) {
    int32_t base = (int32_t)prompt[s].size() - 1;
    for (int64_t j = 0; j < N; ++j) {
      std::vector<int32_t> path;
      for (int64_t k = j; k >= 0; k = t.parent[k]) path.insert(path.begin(), tr.node_tok[s][(size_t)k]);
      std::vector<float> last;
      for (size_t i = 0; i < path.size(); ++i) {
        testing::StepRows one = step_rows({path[i]}, {base + (int32_t)i}, {(int32_t)s}, {0});
        auto got = r.step(one, {2}, (size_t)V);
        EXPECT_TRUE(got.ok()) << got.error().message;
        if (got.ok()) last = std::move(got).value();
      }
      std::vector<float> row(tr.logits.begin() + ((int64_t)s * N + j) * V,
                             tr.logits.begin() + ((int64_t)s * N + j + 1) * V);
      double d = 0;
      for (int64_t v = 0; v < V; ++v) d = std::max(d, (double)std::fabs(row[v] - last[v]));
      worst = std::max(worst, d);
      if (exact) { EXPECT_TRUE(testing::same_bits(row, last)) << "stream " << s << " node " << j << " max diff " << d; }
      else EXPECT_LT(d, 2e-3) << "stream " << s << " node " << j;
      EXPECT_EQ(Sampler::argmax(row), Sampler::argmax(last)) << "stream " << s << " node " << j;
    }
  }
  return worst;
}

TEST(Ds2dCompiled, VerifyEqualsSequentialDecodeOfEveryPathFloat) {
  Compiled* c = float_model();
  ASSERT_TRUE(c);
  ASSERT_EQ(c->runner->model().n_tree_templates, 2);
  std::mt19937 rng(11);
  double worst = 0;
  for (int ti = 0; ti < 2; ++ti)
    for (int streams : {1, 2}) {
      auto p = prompts(rng, c->n_vocab, streams);
      TreeRun tr = run_tree(*c, ti, p, rng);
      worst = std::max(worst, check_paths(*c, ti, p, tr, true));
    }
  ::testing::Test::RecordProperty("worst_abs_diff", fmt::format("{:.3g}", worst));
}

TEST(Ds2dCompiled, VerifyEqualsSequentialDecodeOfEveryPathInt8) {
  Compiled* c = int8_model();
  ASSERT_TRUE(c);
  std::mt19937 rng(12);
  auto p = prompts(rng, c->n_vocab, 2);
  TreeRun tr = run_tree(*c, 0, p, rng);
  double worst = check_paths(*c, 0, p, tr, false);
  std::printf("int8 activations: largest |verify - sequential| logit difference %.3g\n", worst);
  ::testing::Test::RecordProperty("worst_abs_diff", fmt::format("{:.3g}", worst));
}

TEST(Ds2dCompiled, VerifyAndDraftMatchInterpreter) {
  Compiled* c = float_model();
  ASSERT_TRUE(c);
  std::mt19937 rng(13);
  auto p = prompts(rng, c->n_vocab, 2);
  TreeRun tr = run_tree(*c, 0, p, rng);
  // The same prefill and tree in the interpreter.
  Interpreter ip(c->step);
  testing::StepRows pre;
  for (size_t s = 0; s < p.size(); ++s)
    for (size_t i = 0; i + 1 < p[s].size(); ++i)
      pre.tokens.push_back(p[s][i]), pre.positions.push_back((int32_t)i), pre.streams.push_back((int32_t)s);
  pre.logit_rows = {0};
  ASSERT_TRUE(ip.run(pre.interpreter_inputs()).ok());
  const Graph& vg = c->ds2d.verify[0];
  const kiln_tree_template& t = c->runner->model().tree_templates[0];
  Interpreter iv(vg);
  iv.share_state(ip);
  testing::StepRows ver;
  for (size_t s = 0; s < p.size(); ++s)
    for (int64_t j = 0; j < t.n_nodes; ++j) {
      ver.tokens.push_back(tr.node_tok[s][(size_t)j]);
      ver.positions.push_back((int32_t)p[s].size() - 1 + t.depth[j]);
      ver.streams.push_back((int32_t)s);
      ver.logit_rows.push_back((int32_t)(s * t.n_nodes + j));
    }
  auto want = iv.run(ver.interpreter_inputs());
  ASSERT_TRUE(want.ok()) << want.error().message;
  double e = testing::nmse(tr.logits, want->at("logits").f32);
  EXPECT_LT(e, 1e-8);
  ::testing::Test::RecordProperty("verify_nmse", fmt::format("{:.3g}", e));

  // Draft: one decode row per stream after the prefill.
  ASSERT_TRUE(c->ds2d.draft);
  Interpreter id(*c->ds2d.draft);
  id.share_state(ip);
  testing::StepRows d = step_rows({p[0].back(), p[1].back()}, {(int32_t)p[0].size() - 1, (int32_t)p[1].size() - 1},
                                  {0, 1}, {0, 1});
  auto dw = id.run(d.interpreter_inputs());
  ASSERT_TRUE(dw.ok()) << dw.error().message;
  auto dg = c->runner->step(d, {2}, (size_t)(2 * c->n_vocab), c->runner->model().draft);
  ASSERT_TRUE(dg.ok()) << dg.error().message;
  double de = testing::nmse(*dg, dw->at("logits").f32);
  EXPECT_LT(de, 1e-8);
  ::testing::Test::RecordProperty("draft_nmse", fmt::format("{:.3g}", de));
  EXPECT_EQ(c->runner->model().draft_layers, 8);
}

}  // namespace
}  // namespace kiln

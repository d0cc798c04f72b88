// tests/e2e/model_test.cpp — the default model through kiln's IR and interpreter,
// against llama.cpp goldens on the same GGUF (tests/goldens, made by
// scripts/make_goldens.sh; these tests never rebuild the reference).
//
// Tolerances (see docs/correctness.md):
//  * logits_f32.golden comes from llama.cpp running the F32 requant of the shipped file,
//    i.e. the same weight values in float; kiln's float interpreter must agree within
//    kF32Tol (absolute, on logits of magnitude ~10-30) at every golden id of every
//    position, with the same top-1 (observed: 8e-5, the goldens print 6 digits).
//  * logits_q4_1.golden comes from llama.cpp running the Q4_1 file itself, which rounds
//    activations to 8 bits inside its kernels (observed gap to its own F32 run: up to
//    2.03); agreement is looser (kQ41Tol), top-1 must still match wherever llama.cpp's
//    own top-2 margin exceeds twice that tolerance, and greedy tokens may part only at
//    such a near-tie.
#include <gtest/gtest.h>

#include <cmath>

#include "frontend/llama.h"
#include "ir/interpreter.h"
#include "ir/text.h"
#include "ir/verifier.h"
#include "runtime/sampler.h"
#include "tests/e2e/goldens.h"

namespace kiln {
namespace {

constexpr float kF32Tol = 1e-3f;
constexpr float kQ41Tol = 2.5f;

struct Model {
  std::shared_ptr<const GgufFile> file;
  LlamaConfig cfg;
};

const Model& model() {
  static Model m = [] {
    auto f = GgufFile::open(KILN_DEFAULT_MODEL);
    if (!f.ok()) {
      ADD_FAILURE() << f.error().message << " (run scripts/setup.sh)";
      return Model{};
    }
    Model m{std::shared_ptr<const GgufFile>(std::move(f).value()), {}};
    m.cfg = read_llama_config(*m.file).value();
    return m;
  }();
  return m;
}

Graph build(bool all_logits, int64_t ctx = 256) {
  // An f32 KV cache, as llama.cpp had when it made the goldens.
  auto g = build_llama_graph(model().file, model().cfg,
                             {.max_context = ctx, .all_logits = all_logits, .kv_type = DType::F32});
  EXPECT_TRUE(g.ok()) << g.error().message;
  return std::move(g).value();
}

TEST(DefaultModel, WholeModelIrRoundTrips) {
  ASSERT_TRUE(model().file);
  Graph g = build(false);
  ASSERT_TRUE(verify(g).ok());
  std::string text = print_graph(g);
  auto parsed = parse_graph(text, "model.kir");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  parsed->set_weights(g.weights());
  ASSERT_TRUE(verify(*parsed).ok());
  EXPECT_EQ(print_graph(*parsed), text);
  EXPECT_EQ(g.nodes_of(Op::Attention).size(), 30u);
  EXPECT_EQ(g.nodes_of(Op::MatMul).size(), 30u * 7 + 1);
}

// Compares one row of kiln's logits with a golden top-K list; returns the worst gap.
double compare_row(const float* row, int64_t V, const std::vector<std::pair<int32_t, float>>& top,
                   float tol, bool strict_top1, const std::string& where) {
  double worst = 0;
  for (auto [id, ref] : top) {
    worst = std::max(worst, (double)std::fabs(row[id] - ref));
    EXPECT_NEAR(row[id], ref, tol) << where << " token " << id;
  }
  int32_t ours = Sampler::argmax({row, (size_t)V});
  bool clear_margin = top.size() < 2 || top[0].second - top[1].second > 2 * tol;
  if (strict_top1 || clear_margin) { EXPECT_EQ(ours, top[0].first) << "top-1 differs at " << where; }
  return worst;
}

// One interpreter run per prompt serves both goldens: the prompt's logits at every
// position, then a greedy continuation through the KV cache, one token per step.
TEST(Goldens, LogitsAndGreedyContinuationMatchLlamaCpp) {
  ASSERT_TRUE(model().file);
  const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/goldens/";
  auto f32 = testing::read_logits_golden(dir + "logits_f32.golden");
  auto q41 = testing::read_logits_golden(dir + "logits_q4_1.golden");
  ASSERT_GE(f32.size(), 5u);
  ASSERT_EQ(f32.size(), q41.size());
  Graph g = build(true);
  const int64_t V = model().cfg.n_vocab;
  double worst_f32 = 0, worst_q41 = 0;
  size_t q41_greedy_steps = 0, q41_greedy_total = 0;
  for (size_t p = 0; p < f32.size(); ++p) {
    const auto& gf = f32[p];
    const auto& gq = q41[p];
    SCOPED_TRACE(gf.prompt);
    ASSERT_EQ(gf.tokens, gq.tokens);
    int64_t T = (int64_t)gf.tokens.size();
    Interpreter interp(g);
    auto out = interp.run(single_stream_inputs(gf.tokens, 0));
    ASSERT_TRUE(out.ok()) << out.error().message;
    const Tensor& logits = (*out)["logits"];
    ASSERT_EQ(logits.shape, (std::vector<int64_t>{T, V}));
    for (int64_t t = 0; t < T; ++t) {
      std::string where = "prompt " + std::to_string(p) + " position " + std::to_string(t);
      const float* row = logits.f32.data() + t * V;
      worst_f32 = std::max(worst_f32, compare_row(row, V, gf.top[(size_t)t], kF32Tol, true, where));
      worst_q41 = std::max(worst_q41, compare_row(row, V, gq.top[(size_t)t], kQ41Tol, false, where));
    }

    std::vector<float> last(logits.f32.end() - V, logits.f32.end());
    std::vector<int32_t> produced;
    bool q41_alive = true;
    for (size_t i = 0; i < gf.greedy.size(); ++i) {
      int32_t next = Sampler::argmax(last);
      produced.push_back(next);
      if (q41_alive && i < gq.greedy.size()) {
        if (next == gq.greedy[i]) {
          q41_greedy_steps++;
        } else {
          // llama.cpp's Q4_1 kernels round activations; a divergence is acceptable only
          // where its own top-2 margin is within that noise.
          const auto& gt = gq.gtop[i];
          EXPECT_LT(gt[0].second - gt[1].second, 2 * kQ41Tol)
              << "Q4_1 greedy diverged at step " << i << " with a clear margin";
          q41_alive = false;
        }
      }
      if (next != gf.greedy[i]) break;
      auto o = interp.run(single_stream_inputs({next}, (int32_t)(T + i)));
      ASSERT_TRUE(o.ok()) << o.error().message;
      last = (*o)["logits"].f32;
    }
    q41_greedy_total += gq.greedy.size();
    std::vector<int32_t> expect(gf.greedy.begin(), gf.greedy.begin() + (long)produced.size());
    EXPECT_EQ(produced, expect) << "F32 greedy continuation diverged";
    EXPECT_EQ(produced.size(), gf.greedy.size());
  }
  RecordProperty("max_abs_logit_diff_f32", std::to_string(worst_f32));
  RecordProperty("max_abs_logit_diff_q4_1", std::to_string(worst_q41));
  std::printf("max |logit - golden|: F32 requant %.5f, Q4_1 as shipped %.5f; Q4_1 greedy tokens "
              "equal before the first near-tie: %zu of %zu\n",
              worst_f32, worst_q41, q41_greedy_steps, q41_greedy_total);
}

}  // namespace
}  // namespace kiln

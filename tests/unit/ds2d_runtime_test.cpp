// tests/unit/ds2d_runtime_test.cpp — the model-independent pieces of DS2D in the runtime
// (runtime/ds2d.h): the n-gram drafter, the draft tree and template filling, greedy
// acceptance, KV compaction, and the speculative-sampling acceptance rule, checked
// statistically (chi-square) against the distribution the sampler draws from — with a
// plausible wrong rule shown to fail the same test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <span>
#include <vector>

#include "runtime/ds2d.h"
#include "runtime/sampler.h"

namespace kiln::ds2d {
namespace {

TEST(Ds2dNgram, LongestSuffixMatchProposesWhatFollowed) {
  NgramDrafter d(1, 3);
  d.append(std::vector<int32_t>{1, 2, 3, 4, 5, 9, 9, 1, 2, 3});
  auto c = d.draft(3, 4);
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(c[0].tokens, (std::vector<int32_t>{4, 5, 9}));  // "1 2 3" -> "4 5 9"
  ASSERT_EQ(c[0].prob.size(), 3u);
  EXPECT_GT(c[0].prob[0], c[0].prob[2]);  // confidence falls along the draft
  // A continuation reaching the end of the text is cut there.
  NgramDrafter e(1, 2);
  e.append(std::vector<int32_t>{7, 8, 7});
  auto ce = e.draft(5, 1);
  ASSERT_EQ(ce.size(), 1u);
  EXPECT_EQ(ce[0].tokens, (std::vector<int32_t>{8, 7}));
}

TEST(Ds2dNgram, SeveralContinuationsMergedMostFrequentFirst) {
  NgramDrafter d(1, 2);
  // "5 6" is followed by 1 (twice) and by 2 (most recently), "3 6" by 4.
  d.append(std::vector<int32_t>{5, 6, 1, 0, 5, 6, 1, 0, 3, 6, 4, 5, 6, 2, 0, 5, 6});
  auto c = d.draft(1, 4);
  ASSERT_GE(c.size(), 3u);
  EXPECT_EQ(c[0].tokens, (std::vector<int32_t>{1}));  // seen twice: first
  EXPECT_EQ(c[1].tokens, (std::vector<int32_t>{2}));
  EXPECT_EQ(c[2].tokens, (std::vector<int32_t>{4}));  // from the 1-token match "6"
  EXPECT_GT(c[0].prob[0], c[1].prob[0]);
  EXPECT_EQ(c[0].source, 2);
  EXPECT_TRUE(c[0].top);
  EXPECT_FALSE(c[1].top);
  EXPECT_EQ(c[2].source, 1);
  EXPECT_TRUE(c[2].top);
  // Weights are relative to the match length's best draft: 1 for it, 1/2 for the
  // continuation seen once against its twice (not shares of all occurrences: the source's
  // learnt accuracy is its best draft's and already counts the competition).
  EXPECT_FLOAT_EQ(c[0].weight, 1.0f);
  EXPECT_FLOAT_EQ(c[1].weight, 0.5f);
  // "6" -> 1 twice (already drafted by "5 6"), -> 4 once: 4 is the 1-token match's best
  // draft not drafted before, the one its accuracy is learnt on.
  EXPECT_FLOAT_EQ(c[2].weight, 1.0f);
  // Nothing to propose for a suffix never seen before.
  NgramDrafter none(1, 3);
  none.append(std::vector<int32_t>{1, 2, 3, 4});
  EXPECT_TRUE(none.draft(4, 4).empty());
}

TEST(Ds2dNgram, IncrementalAppendEqualsOneAppend) {
  std::vector<int32_t> text = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 1, 4, 1, 5};
  NgramDrafter a(1, 4), b(1, 4);
  a.append(text);
  for (int32_t t : text) b.append(t);
  auto ca = a.draft(6, 5), cb = b.draft(6, 5);
  ASSERT_EQ(ca.size(), cb.size());
  for (size_t i = 0; i < ca.size(); ++i) EXPECT_EQ(ca[i].tokens, cb[i].tokens);
  EXPECT_EQ(ca[0].tokens, (std::vector<int32_t>{9, 2, 6, 5, 3, 5}));
}

// Sampler::usable over a vocabulary-sized row: the first NaN or +inf wherever it is (the
// vector body or the tail), -inf alone is not enough, and finite logits whose sum
// overflows are usable.
TEST(SamplerUsable, FindsTheFirstNaNOrInfAnywhere) {
  std::vector<float> l(49155);
  for (size_t i = 0; i < l.size(); ++i) l[i] = (float)((i * 37) % 101) - 50.0f;
  int64_t bad = 7;
  EXPECT_TRUE(Sampler::usable(l, &bad));
  EXPECT_EQ(bad, -1);
  for (size_t at : {size_t{0}, size_t{5}, size_t{30001}, l.size() - 1}) {
    for (float v : {NAN, INFINITY}) {
      auto m = l;
      m[at] = v;
      m[l.size() - 2] = NAN;  // a later one does not count
      if (at == l.size() - 1) m[l.size() - 2] = 0.0f;
      EXPECT_FALSE(Sampler::usable(m, &bad));
      EXPECT_EQ(bad, (int64_t)at);
    }
  }
  auto m = l;
  m[9] = INFINITY;
  m[13] = -INFINITY;  // +inf and -inf in one lane sum: NaN, still found
  EXPECT_FALSE(Sampler::usable(m, &bad));
  EXPECT_EQ(bad, 9);
  std::vector<float> neg(l.size(), -INFINITY);
  EXPECT_FALSE(Sampler::usable(neg, &bad));
  EXPECT_EQ(bad, -1);
  neg[30000] = -1e30f;
  EXPECT_TRUE(Sampler::usable(neg, &bad));
  std::vector<float> big(l.size(), 3e38f);  // the sums overflow; every logit is finite
  EXPECT_TRUE(Sampler::usable(big, &bad));
  EXPECT_FALSE(Sampler::usable(std::vector<float>{}, &bad));
}

// A corpus of separate texts drafts for another text: its suffix is looked up in the
// corpus, continuations stop at the end of the text they come from, and no match spans
// two texts.
TEST(Ds2dNgram, CorpusDraftsForAnotherTextWithinItsOwnTexts) {
  NgramDrafter corpus(2, 3);
  corpus.append_text(std::vector<int32_t>{10, 11, 12, 13, 14});
  corpus.append_text(std::vector<int32_t>{20, 21, 10, 11, 15});
  corpus.append_text(std::vector<int32_t>{13, 14, 40});
  // "... 10 11": the two texts holding it propose 12 13 14 and 15 (cut at its text's end).
  auto c = corpus.draft_for(std::vector<int32_t>{7, 10, 11}, 4, 4);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].tokens, (std::vector<int32_t>{15}));  // equally frequent: the most recent first
  EXPECT_EQ(c[1].tokens, (std::vector<int32_t>{12, 13, 14}));
  EXPECT_EQ(c[0].source, 2);
  // "14 20" appears only across the end of the first text and the start of the second.
  EXPECT_TRUE(corpus.draft_for(std::vector<int32_t>{14, 20}, 4, 4).empty());
  // "13 14" ends the first text (nothing follows there) and starts the third.
  auto e = corpus.draft_for(std::vector<int32_t>{13, 14}, 4, 4);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].tokens, (std::vector<int32_t>{40}));
  // Below the corpus's shortest match length: nothing.
  EXPECT_TRUE(corpus.draft_for(std::vector<int32_t>{11}, 4, 4).empty());
  // draft() is draft_for() on the drafter's own text.
  NgramDrafter self(1, 3);
  self.append(std::vector<int32_t>{1, 2, 3, 4, 5, 9, 9, 1, 2, 3});
  EXPECT_EQ(self.draft(3, 4)[0].tokens, self.draft_for(self.text(), 3, 4)[0].tokens);
}

// Truncating undoes appends: the drafter then drafts as one that never had them.
TEST(Ds2dNgram, TruncateEqualsNeverAppended) {
  const std::vector<int32_t> text = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 1, 4};
  NgramDrafter a(1, 4), b(1, 4);
  a.append(text);
  b.append(text);
  b.append(std::vector<int32_t>{1, 5, 9, 1});  // "1 5 9" again, then a new continuation
  b.truncate(text.size());
  EXPECT_EQ(b.text(), a.text());
  for (int32_t next : {1, 9, 7}) {
    a.append(next);
    b.append(next);
    auto ca = a.draft(4, 6), cb = b.draft(4, 6);
    ASSERT_EQ(ca.size(), cb.size());
    for (size_t i = 0; i < ca.size(); ++i) {
      EXPECT_EQ(ca[i].tokens, cb[i].tokens);
      EXPECT_EQ(ca[i].weight, cb[i].weight);
    }
  }
}

// parents: chain 0-1-2-3, branches 4 (under 0) and 5 (under 1)
const std::vector<int32_t> kParents = {-1, 0, 1, 2, 0, 1};

TEST(Ds2dRecycle, TopKIsSortedAndBreaksTiesLikeArgmax) {
  const std::vector<float> logits = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 7.0f, 2.0f, -INFINITY};
  int32_t ids[4];
  float v[4];
  top_k(logits, 4, ids, v);
  EXPECT_EQ(std::vector<int32_t>(ids, ids + 4), (std::vector<int32_t>{5, 1, 3, 4}));
  EXPECT_EQ(ids[0], Sampler::argmax(logits));
  EXPECT_EQ(v[0], 7.0f);
  EXPECT_EQ(v[3], 2.0f);
  // Fewer logits than k: the rest are -1.
  top_k(std::vector<float>{1.0f, 2.0f}, 4, ids, v);
  EXPECT_EQ(std::vector<int32_t>(ids, ids + 4), (std::vector<int32_t>{1, 0, -1, -1}));
  // Against a full sort on a larger row.
  std::vector<float> big(1000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = std::sin((float)i * 0.37f) * 10.0f;
  std::vector<int32_t> order(big.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = (int32_t)i;
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return big[(size_t)a] > big[(size_t)b]; });
  top_k(big, 4, ids, v);
  EXPECT_EQ(std::vector<int32_t>(ids, ids + 4), std::vector<int32_t>(order.begin(), order.begin() + 4));
}

TEST(Ds2dRecycle, DraftsWalkWhatTheModelPredictedAfterEachToken) {
  SuccessorTable t(10);
  auto logits_for = [](std::vector<std::pair<int32_t, float>> top) {
    std::vector<float> l(10, -5.0f);
    for (auto [id, v] : top) l[(size_t)id] = v;
    return l;
  };
  EXPECT_TRUE(t.draft(1, 3, 8, 17).empty());  // nothing observed yet
  t.observe(1, logits_for({{2, 4.0f}, {7, 3.0f}}));
  t.observe(2, logits_for({{3, 4.0f}, {8, 2.0f}}));
  t.observe(3, logits_for({{4, 4.0f}}));
  EXPECT_EQ(t.next(1)[0], 2);
  EXPECT_EQ(t.next(1)[1], 7);
  auto c = t.draft(1, 3, 8, 17);
  ASSERT_GE(c.size(), 3u);
  // The first choices from the root: 1 -> 2 -> 3 -> 4, cut at max_len.
  EXPECT_EQ(c[0].tokens, (std::vector<int32_t>{2, 3, 4}));
  EXPECT_TRUE(c[0].top);
  EXPECT_EQ(c[0].source, 17);
  EXPECT_FLOAT_EQ(c[0].weight, 1.0f);
  // The root's second successor, weighted by its share relative to the first (e^-1).
  EXPECT_EQ(c[1].tokens[0], 7);
  EXPECT_FALSE(c[1].top);
  EXPECT_NEAR(c[1].weight, std::exp(-1.0f), 1e-6);
  // An alternative deeper down the first chain: 2 then 8 (e^-2).
  bool deeper = false;
  for (const auto& k : c)
    if (k.tokens.size() >= 2 && k.tokens[0] == 2 && k.tokens[1] == 8) {
      deeper = true;
      EXPECT_NEAR(k.weight, std::exp(-2.0f), 1e-6);
    }
  EXPECT_TRUE(deeper);
  // A newer observation replaces the old successors; out-of-range tokens are ignored.
  t.observe(1, logits_for({{9, 1.0f}}));
  EXPECT_EQ(t.draft(1, 1, 1, 17)[0].tokens, (std::vector<int32_t>{9}));
  t.observe(42, logits_for({{9, 1.0f}}));
  EXPECT_TRUE(t.draft(42, 3, 8, 17).empty());
  // max_candidates bounds the drafts, keeping the likeliest alternatives.
  EXPECT_EQ(t.draft(2, 3, 1, 17).size(), 1u);
  t.observe(1, logits_for({{2, 4.0f}, {7, 3.0f}}));
  auto two = t.draft(1, 3, 3, 17);
  ASSERT_EQ(two.size(), 3u);
  EXPECT_EQ(two[1].tokens[0], 7);                                  // e^-1
  EXPECT_EQ(two[2].tokens, (std::vector<int32_t>{2, 8}));          // e^-2, before the root's e^-9 ones
  // Logits with no finite maximum leave the table as it was.
  t.observe(1, std::vector<float>(10, -INFINITY));
  t.observe(1, std::vector<float>(10, NAN));
  EXPECT_EQ(t.next(1)[0], 2);
  int32_t none[1] = {7};
  float nv[1] = {1.0f};
  top_k(std::vector<float>{1.0f}, 0, none, nv);  // k = 0: nothing written
  EXPECT_EQ(none[0], 7);
}

TEST(Ds2dTree, CandidatesMergeIntoAPrefixTreeAndFillByLikelihood) {
  DraftTree t(100);
  t.add({{5, 6, 7}, {0.6f, 0.5f, 0.4f}});
  t.add({{5, 8}, {0.3f, 0.2f}});
  t.add({{9}, {0.05f}});
  t.sort();
  ASSERT_EQ(t.nodes.size(), 6u);  // root, 5, 6, 7, 8, 9
  ASSERT_EQ(t.nodes[0].children.size(), 2u);
  EXPECT_NEAR(t.nodes[1].prob, 0.6f, 1e-6);  // shared prefix: the likelier candidate's

  Shape s = Shape::from_parents(kParents);
  EXPECT_EQ(s.depth, (std::vector<int32_t>{0, 1, 2, 3, 1, 2}));
  Filled f = fill(t, s);
  EXPECT_EQ(f.tokens[0], 100);
  EXPECT_EQ(f.tokens[1], 5);
  EXPECT_EQ(f.tokens[2], 6);  // the chain takes the likelier branch
  EXPECT_EQ(f.tokens[3], 7);
  EXPECT_EQ(f.tokens[4], 9);  // the root's second child
  EXPECT_EQ(f.tokens[5], 8);  // node 5's second child
  for (int j = 0; j < 6; ++j) EXPECT_TRUE(f.valid[(size_t)j]);
  EXPECT_EQ(f.max_depth, 3);

  // A smaller tree leaves slots empty (never accepted).
  DraftTree u(100);
  u.add({{5}, {0.5f}});
  Filled g = fill(u, s);
  EXPECT_TRUE(g.valid[1]);
  for (int j : {2, 3, 4, 5}) EXPECT_FALSE(g.valid[(size_t)j]) << j;
  EXPECT_NEAR(g.expected, 0.5f, 1e-6);
}

// Logits that make `tok` the argmax.
std::vector<float> onehot(int v, int tok) {
  std::vector<float> l((size_t)v, 0.0f);
  l[(size_t)tok] = 5.0f;
  return l;
}

TEST(Ds2dAccept, GreedyFollowsTheArgmaxPath) {
  Shape s = Shape::from_parents(kParents);
  Filled f;
  f.tokens = {100, 5, 6, 7, 9, 8};
  f.valid = {1, 1, 1, 1, 1, 1};
  // The model continues 5, 8, 3: node 1 (5) accepted, then 8 = node 5, then 3 is new.
  std::vector<std::vector<float>> lg = {onehot(128, 5), onehot(128, 8), onehot(128, 7),
                                        onehot(128, 1), onehot(128, 2), onehot(128, 3)};
  auto at = [&](int32_t j) { return std::span<const float>(lg[(size_t)j]); };
  Accepted a = accept_greedy(s, f, at);
  EXPECT_EQ(a.path, (std::vector<int32_t>{0, 1, 5}));
  EXPECT_EQ(a.bonus, 3);
  // An invalid node is never accepted even if its token matches.
  f.valid[5] = 0;
  a = accept_greedy(s, f, at);
  EXPECT_EQ(a.path, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(a.bonus, 8);
}

TEST(Ds2dCompact, AcceptedRowsMoveIntoPlaceInEveryBlock) {
  // Two blocks (K and V of one layer), rows of 8 bytes, 16 rows each.
  std::vector<kiln_kv_block> blocks = {{0, 8}, {128, 8}};
  std::vector<uint8_t> kv(256);
  for (size_t b = 0; b < 2; ++b)
    for (int r = 0; r < 16; ++r) std::memset(&kv[b * 128 + (size_t)r * 8], (int)(b * 100 + (size_t)r), 8);
  const int32_t base = 4;
  std::vector<int32_t> path = {0, 1, 5, 7};  // base+1 stays, base+5 -> base+2, base+7 -> base+3
  compact_kv(kv.data(), blocks, base, path);
  for (size_t b = 0; b < 2; ++b) {
    auto row = [&](int r) { return (size_t)kv[b * 128 + (size_t)r * 8 + 3]; };
    EXPECT_EQ(row(3), b * 100 + 3);  // the cache before the tree is untouched
    EXPECT_EQ(row(base + 0), b * 100 + base + 0);
    EXPECT_EQ(row(base + 1), b * 100 + base + 1);
    EXPECT_EQ(row(base + 2), b * 100 + base + 5);
    EXPECT_EQ(row(base + 3), b * 100 + base + 7);
  }
}

// ---- speculative sampling, statistically ------------------------------------------------

constexpr int kV = 6;
const std::vector<float> kRootLogits = {1.0f, 0.2f, 2.0f, -0.5f, 0.7f, 1.5f};
std::vector<float> child_logits(int32_t tok) {  // a different distribution after each token
  std::vector<float> l((size_t)kV);
  for (int i = 0; i < kV; ++i) l[(size_t)i] = std::sin(1.7f * (float)(i + 1) * (float)(tok + 2));
  return l;
}

// Pearson chi-square of observed counts against expected probabilities.
double chi_square(const std::map<int, long>& counts, const std::map<int, double>& p, long n) {
  double x2 = 0;
  for (auto& [k, pk] : p) {
    const double e = pk * (double)n;
    auto it = counts.find(k);
    const double o = it == counts.end() ? 0.0 : (double)it->second;
    x2 += (o - e) * (o - e) / e;
  }
  for (auto& [k, c] : counts)
    if (!p.count(k)) x2 += 1e9;  // a token the distribution cannot give
  return x2;
}

// The root's drafted children are 2, 0 and 4 (deterministic drafts; 2 is the likeliest);
// child 2 has children 3 and 1.
struct SpecCase {
  Shape shape = Shape::from_parents(std::vector<int32_t>{-1, 0, 0, 0, 1, 1});
  Filled f;
  std::vector<float> store;
  SpecCase() {
    f.tokens = {9, 2, 0, 4, 3, 1};
    f.valid = {1, 1, 1, 1, 1, 1};
  }
  std::span<const float> logits(int32_t j) {
    store = j == 0 ? kRootLogits : child_logits(f.tokens[(size_t)j]);
    return store;
  }
};

// The exact distribution of the first two tokens under plain sampling.
std::map<int, double> exact_pairs(const SamplerParams& sp) {
  Sampler s(sp);
  TokenDistribution d0, d1;
  s.distribution(kRootLogits, d0);
  std::map<int, double> p;
  for (size_t i = 0; i < d0.ids.size(); ++i) {
    s.distribution(child_logits(d0.ids[i]), d1);
    for (size_t j = 0; j < d1.ids.size(); ++j) p[d0.ids[i] * kV + d1.ids[j]] += d0.probs[i] * d1.probs[j];
  }
  return p;
}

TEST(Ds2dSpeculative, TreeAcceptanceKeepsTheSamplerDistribution) {
  const SamplerParams sp{0.9f, 5, 1.0f, 1234};  // top-k 5 drops token 3 at the root
  const long n = 200000;
  for (int wrong = 0; wrong < 2; ++wrong) {
    Sampler s(sp), plain({sp.temperature, sp.top_k, sp.top_p, 99});
    SpecCase c;
    std::map<int, long> counts;
    long drafted_accepted = 0;
    for (long t = 0; t < n; ++t) {
      Accepted a;
      if (!wrong) {
        a = accept_sampled(c.shape, c.f, s, [&](int32_t j) { return c.logits(j); });
      } else {
        // A plausible wrong rule: accept child x with its ORIGINAL p(x), no renormalising
        // after a rejection, and the bonus from the full p when all are rejected.
        TokenDistribution d;
        int32_t u = 0;
        a.path = {0};
        for (;;) {
          s.distribution(c.logits(u), d);
          int32_t next = -1;
          for (int32_t k : c.shape.children[(size_t)u]) {
            double px = 0;
            for (size_t i = 0; i < d.ids.size(); ++i)
              if (d.ids[i] == c.f.tokens[(size_t)k]) px = d.probs[i];
            if (s.uniform() < px) { next = k; break; }
          }
          if (next < 0) { a.bonus = s.draw(d); break; }
          a.path.push_back(next);
          u = next;
        }
      }
      drafted_accepted += (long)a.path.size() - 1;
      // The first two tokens emitted: path tokens, then the bonus, then (if needed) what
      // plain decoding would draw after it.
      std::vector<int> out;
      for (size_t i = 1; i < a.path.size(); ++i) out.push_back(c.f.tokens[(size_t)a.path[i]]);
      out.push_back(a.bonus);
      if (out.size() < 2) out.push_back(plain.sample(child_logits(out[0])));
      ++counts[out[0] * kV + out[1]];
    }
    const auto p = exact_pairs(sp);
    const double x2 = chi_square(counts, p, n);
    const double df = (double)p.size() - 1;
    // About the 99.99th percentile of chi-square(df) for df ~ 20-30.
    const double crit = df + 3.9 * std::sqrt(2 * df) + 8;
    if (!wrong) {
      EXPECT_LT(x2, crit) << "df " << df;
      EXPECT_GT(drafted_accepted, n / 2);  // the drafts are used, not just the residual
    } else {
      EXPECT_GT(x2, 10 * crit) << "the test must catch a wrong acceptance rule";
    }
  }
}

TEST(Ds2dSpeculative, GreedySamplerAcceptsExactlyTheArgmaxPath) {
  Sampler s({0.0f, 0, 1.0f, 0});
  SpecCase c;
  Accepted a = accept_sampled(c.shape, c.f, s, [&](int32_t j) { return c.logits(j); });
  Accepted g = accept_greedy(c.shape, c.f, [&](int32_t j) { return c.logits(j); });
  EXPECT_EQ(a.path, g.path);
  EXPECT_EQ(a.bonus, g.bonus);
  EXPECT_EQ(g.path, (std::vector<int32_t>{0, 1}));  // the argmax of the root logits is 2
}

}  // namespace
}  // namespace kiln::ds2d

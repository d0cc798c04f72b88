// runtime/ds2d.h — the model-independent pieces of DS2D (dynamic self-speculative tree
// decoding, docs/ds2d.md): drafting without a draft model, the draft tree and how it
// fills a compiled tree template, which path of a verified tree is accepted (greedy, or
// speculative sampling at temperature > 0), and the KV compaction that follows.
//
// The controller in ds2d.cpp (the kiln_ds2d_* C API of kiln.h) puts them together over a
// session; everything here is plain data in, plain data out, and unit-tested on its own
// (tests/unit/ds2d_test.cpp).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "kiln/model_abi.h"
#include "runtime/sampler.h"

namespace kiln::ds2d {

// A drafted continuation of the text after the root token: tokens[i] follows
// tokens[0..i), and prob[i] estimates the chance that tokens[0..i] are all accepted
// (non-increasing).
struct Candidate {
  std::vector<int32_t> tokens;
  std::vector<float> prob;
  int32_t source = 0;   // who drafted it: n for an n-gram match of n tokens, 0 early exit
  float weight = 1.0f;  // its chance relative to its source's best draft (which has 1)
  bool top = true;      // the source's best draft this step (the one its accuracy is learnt on)
};

// Prompt lookup: the text so far (prompt, accepted tokens, the root) is indexed by its
// n-grams, n_min <= n <= n_max. A draft takes the longest suffix of the text that
// occurred before and proposes what followed it then — several continuations when the
// suffix occurred several times (identical ones merged and counted; the most frequent
// first, then the most recent);
// shorter suffixes add continuations until max_candidates are found.
class NgramDrafter {
 public:
  explicit NgramDrafter(int n_min = 1, int n_max = 4) : n_min_(n_min), n_max_(n_max) {}
  void reset() { text_.clear(); index_.clear(); text_start_ = 0; }
  void append(std::span<const int32_t> tokens);
  void append(int32_t token) { append(std::span<const int32_t>(&token, 1)); }
  // Appends a text of its own: no n-gram spans its start and no continuation runs past
  // its end (a corpus of separate texts).
  void append_text(std::span<const int32_t> tokens);
  // Drops the tokens past the first `size` (appended since text() had that size, within
  // the current text), as if they had never been appended.
  void truncate(size_t size);
  const std::vector<int32_t>& text() const { return text_; }
  // Continuations of text() of up to max_len tokens.
  std::vector<Candidate> draft(int max_len, int max_candidates) const {
    return draft_for(text_, max_len, max_candidates);
  }
  // The same for another text `context` (a stream's) whose suffixes are looked up here:
  // continuations from this text of the longest suffix of `context` found in it.
  std::vector<Candidate> draft_for(std::span<const int32_t> context, int max_len, int max_candidates) const;

 private:
  static constexpr int32_t kTextEnd = -1;  // between the texts of append_text; never a token
  static uint64_t key(const int32_t* end, int n);  // hash of the n tokens before end, and n
  int n_min_, n_max_;
  std::vector<int32_t> text_;
  size_t text_start_ = 0;  // where the text of the last append_text begins (n-grams start there or later)
  // key -> positions p where the n-gram text_[p - n, p) ends (p is where its continuation
  // starts), in increasing order.
  std::unordered_map<uint64_t, std::vector<int32_t>> index_;
};

// Token recycling: what the model itself predicted after a token, the last time a step
// fed it that token, drafts what follows it now — no draft model and no extra pass, the
// logits are there anyway. Every row a step computes (plain or verify) leaves its top
// kWidth next tokens here, keyed by the token the row was fed; a draft walks the table
// from the root: the root's successors, then theirs. A prediction depends on more than
// the last token, so this guesses (its accuracy is learnt like every source's), but it
// guesses where the text does not repeat itself, where n-gram lookup has nothing (open
// chat). The table outlives prompts: what the model said after "the" in one reply is a
// fair guess in the next.
class SuccessorTable {
 public:
  static constexpr int kWidth = 4;
  explicit SuccessorTable(int32_t n_vocab = 0) { reset(n_vocab); }
  void reset(int32_t n_vocab);
  // Records the top kWidth tokens of `logits` as the successors of `token`.
  void observe(int32_t token, std::span<const float> logits);
  // Successors of `token`, most likely first (-1: none known).
  std::span<const int32_t> next(int32_t token) const {
    return {next_.data() + (size_t)token * kWidth, (size_t)kWidth};
  }
  // Continuations of `root` of up to max_len tokens, at most max_candidates: the first
  // chain (the root's first successor, then first choices), then the alternatives — the
  // root's other successors and the first chain's second choices, each followed by first
  // choices — likeliest first. Candidate::weight is the softmax share of the branching
  // successor relative to the first choice at the same place (the first chain: 1).
  std::vector<Candidate> draft(int32_t root, int max_len, int max_candidates, int32_t source) const;

 private:
  std::vector<int32_t> next_;  // n_vocab x kWidth token ids
  std::vector<float> rel_;     // exp(logit - top logit) of each successor
};

// The k largest logits, largest first (ties: the lower token id first, as Sampler::argmax);
// ids[i] = -1 past the vocabulary.
void top_k(std::span<const float> logits, int k, int32_t* ids, float* values);

// Draft candidates merged into one prefix tree. Node 0 is the root (the last accepted
// token); a node's prob estimates the chance that the path to it is accepted.
struct DraftTree {
  struct Node {
    int32_t token = -1;
    int32_t parent = -1;
    float prob = 1.0f;
    std::vector<int32_t> children;  // sorted by prob, most likely first (after sort())
  };
  std::vector<Node> nodes;

  explicit DraftTree(int32_t root_token = 0) { reset(root_token); }
  void reset(int32_t root_token);
  // Merges c under the root: a shared prefix keeps one node whose prob is the largest
  // of the candidates' (capped by its parent's).
  void add(const Candidate& c);
  void sort();  // orders children by prob (call once all candidates are in)
};

// A compiled tree template seen by the runtime (kiln_tree_template without the entry).
struct Shape {
  int32_t n_nodes = 1;
  std::vector<int32_t> parent, depth;
  std::vector<std::vector<int32_t>> children;  // derived from parent, ascending
  static Shape from_parents(std::span<const int32_t> parent);
};

// A template filled from a tree: template node j holds tokens[j]; valid[j] is false
// where the tree had nothing to put (the row is computed but never accepted).
struct Filled {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> valid;
  std::vector<float> prob;  // the tree node's prob (0 where not valid)
  float expected = 0;       // sum of prob over the draft nodes: expected accepted drafts
  int32_t max_depth = 0;    // deepest valid node
};

// Fills `shape` by likelihood: template nodes in order, each takes the most likely
// unused child (in the tree) of the tree node its template parent holds. Templates list
// the main chain first and branches after, so the best path lands on the chain.
Filled fill(const DraftTree& tree, const Shape& shape);

// The verified tree's accepted path: node indices root = path[0], path[1..k] (drafts
// accepted) and the token sampled after path[k] (the next root).
struct Accepted {
  std::vector<int32_t> path;
  int32_t bonus = -1;
};

// Greedy acceptance: follow the child whose token is the argmax of its parent's logits.
// logits(j) gives node j's logits (only valid nodes are asked).
template <typename Logits>
Accepted accept_greedy(const Shape& shape, const Filled& f, Logits&& logits) {
  Accepted a;
  int32_t u = 0;
  a.path.push_back(0);
  for (;;) {
    const int32_t b = Sampler::argmax(logits(u));
    int32_t next = -1;
    for (int32_t c : shape.children[(size_t)u])
      if (f.valid[(size_t)c] && f.tokens[(size_t)c] == b) { next = c; break; }
    if (next < 0) { a.bonus = b; return a; }
    a.path.push_back(next);
    u = next;
  }
}

// Speculative sampling over a tree of deterministic drafts: the output has exactly the
// distribution the sampler gives token by token. At node u with target distribution p
// and drafted children x1, x2, ... (distinct tokens): accept x_i with probability p(x_i);
// on rejection set p(x_i) = 0, renormalise and try the next child; when every child is
// rejected, draw from what remains of p (the residual). An accepted child continues the
// walk with its own distribution.
// `u01` gives uniform numbers in [0, 1); `dist` is scratch.
int32_t accept_children(TokenDistribution& dist, std::span<const int32_t> children_tokens,
                        Sampler& sampler, int32_t* accepted_index);

template <typename Logits>
Accepted accept_sampled(const Shape& shape, const Filled& f, Sampler& sampler, Logits&& logits) {
  Accepted a;
  TokenDistribution d;
  std::vector<int32_t> kids, kid_tokens;
  int32_t u = 0;
  a.path.push_back(0);
  for (;;) {
    sampler.distribution(logits(u), d);
    kids.clear();
    kid_tokens.clear();
    for (int32_t c : shape.children[(size_t)u])
      if (f.valid[(size_t)c]) { kids.push_back(c); kid_tokens.push_back(f.tokens[(size_t)c]); }
    int32_t which = -1;
    const int32_t t = accept_children(d, kid_tokens, sampler, &which);
    if (which < 0) { a.bonus = t; return a; }
    u = kids[(size_t)which];
    a.path.push_back(u);
  }
}

// Moves the accepted path's KV rows into place in one stream's KV region: for
// m = 1..k, row base + path[m] -> base + m in every block (path[m] >= m, rising, so no
// row is overwritten before it is read).
void compact_kv(uint8_t* stream_kv, std::span<const kiln_kv_block> blocks, int32_t base,
                std::span<const int32_t> path);

}  // namespace kiln::ds2d

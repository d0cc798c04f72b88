// passes/ds2d_unroll.cpp — turns the step graph into the verify graph of one DS2D tree
// template: every kv_write and attention gets the template's constant parent array
// (tree_parent) and attention the ancestor mask it implies (tree_mask), so the backend
// emits a verify entry point whose attention is specialised on those constants (ir/tree.h
// gives the semantics). Which template: the graph attribute ds2d_parent (dense<i32>), or
// ds2d_nodes (a node budget) with ds2d_topology (passes/ds2d_unroll.h; default "deep").
// The pass records ds2d_parent on the graph. Everything else — weights, arena and KV
// offsets — is untouched, so a verify graph cloned from the planned step graph shares
// its memory plan (n_streams * n_nodes rows must fit max_rows).
//
//   %40 = attention(%35, %38, %39, %1, %2) {head_dim = 64, n_head = 9, n_kv_head = 3}
//     ->
//   %40 = attention(%35, %38, %39, %1, %2) {head_dim = 64, n_head = 9, n_kv_head = 3,
//           tree_mask = "1000/1100/1110/1001", tree_parent = dense<i32: -1 0 1 0>}
#include "passes/ds2d_unroll.h"

#include <algorithm>
#include <cstdlib>
#include <queue>

#include <fmt/format.h>

#include "ir/tree.h"
#include "passes/passes.h"

namespace kiln {

Result<std::vector<int64_t>> ds2d_budgets(std::string_view text) {
  std::vector<int64_t> out;
  size_t b = 0;
  while (b <= text.size()) {
    size_t e = std::min(text.find(',', b), text.size());
    std::string item(text.substr(b, e - b));
    char* end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end || v < 1 || v > kMaxTreeNodes)
      return make_error("DS2D template budget '{}' is not a node count in 1..{}", item, kMaxTreeNodes);
    out.push_back(v);
    b = e + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<std::vector<int32_t>> ds2d_template(int64_t nodes, std::string_view topology) {
  if (nodes < 1 || nodes > kMaxTreeNodes)
    return make_error("a DS2D template has 1..{} nodes, got {}", kMaxTreeNodes, nodes);
  std::vector<int32_t> parent((size_t)nodes);
  if (topology == "chain") {
    for (int64_t j = 0; j < nodes; ++j) parent[(size_t)j] = (int32_t)j - 1;
    return parent;
  }
  std::string spec = topology == "tree"   ? "0.5,0.2,0.1,0.05,0.03"
                     : topology == "deep" ? "0.8,0.15,0.05"
                                          : std::string(topology);
  std::vector<double> p;
  for (size_t b = 0; b <= spec.size();) {
    size_t e = std::min(spec.find(',', b), spec.size());
    std::string item = spec.substr(b, e - b);
    char* end = nullptr;
    double v = std::strtod(item.c_str(), &end);
    if (item.empty() || *end || !(v > 0 && v < 1) || (!p.empty() && v > p.back()))
      return make_error("DS2D topology '{}': expected chain, tree, deep, or non-increasing probabilities "
                        "in (0,1) such as 0.5,0.2,0.1 ('{}' does not fit)", topology, item);
    p.push_back(v);
    b = e + 1;
  }
  // Best-first growth: a candidate is (weight, order, parent, rank among its siblings).
  // Taking a node offers its first child and its next sibling; with non-increasing p no
  // other candidate can outweigh these, so the result is the `nodes` heaviest nodes.
  struct Cand {
    double w;
    int64_t order;
    int32_t parent;
    size_t rank;
    bool operator<(const Cand& o) const { return w != o.w ? w < o.w : order > o.order; }
  };
  std::priority_queue<Cand> q;
  std::vector<double> weight;
  int64_t order = 0;
  q.push({1.0, order++, -1, 0});
  for (int64_t j = 0; j < nodes; ++j) {
    Cand c = q.top();
    q.pop();
    parent[(size_t)j] = c.parent;
    weight.push_back(c.w);
    q.push({c.w * p[0], order++, (int32_t)j, 0});
    if (c.parent >= 0 && c.rank + 1 < p.size())
      q.push({weight[(size_t)c.parent] * p[c.rank + 1], order++, c.parent, c.rank + 1});
  }
  return parent;
}

namespace {

class Ds2dUnrollPass final : public Pass {
 public:
  std::string_view name() const override { return "ds2d-unroll"; }

  Result<bool> run(Graph& g) override {
    std::vector<int32_t> parent;
    if (auto it = g.attrs().find("ds2d_parent"); it != g.attrs().end()) {
      auto* d = std::get_if<DenseData>(&it->second);
      if (!d || d->dtype != DType::I32) return make_error("graph attribute ds2d_parent must be dense<i32: ...>");
      parent = d->i32;
    } else if (auto nodes = g.int_attr("ds2d_nodes")) {
      std::string topology(kDefaultDs2dTopology);
      if (auto t = g.attrs().find("ds2d_topology"); t != g.attrs().end()) {
        auto* s = std::get_if<std::string>(&t->second);
        if (!s) return make_error("graph attribute ds2d_topology must be a string");
        topology = *s;
      }
      KILN_ASSIGN(parent, ds2d_template(*nodes, topology));
    } else {
      return make_error("needs the graph attribute ds2d_parent (a parent array) or ds2d_nodes (a node budget)");
    }
    KILN_ASSIGN(TreeShape tree, tree_shape(parent));
    if (auto rows = g.int_attr("max_rows"); rows && *rows < tree.size())
      return make_error("a {}-node template does not fit max_rows = {}", tree.size(), *rows);
    DenseData dense{DType::I32, {}, parent};
    std::string mask = tree_mask_text(tree);
    bool changed = false;
    for (Node* n : g.nodes()) {
      if (n->op() != Op::KvWrite && n->op() != Op::Attention) continue;
      const DenseData* had = n->dense_attr("tree_parent");
      if (had && *had == dense) continue;
      n->set_attr("tree_parent", dense);
      if (n->op() == Op::Attention) n->set_attr("tree_mask", mask);
      changed = true;
    }
    g.set_attr("ds2d_parent", dense);
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> create_ds2d_unroll_pass() { return std::make_unique<Ds2dUnrollPass>(); }

}  // namespace kiln

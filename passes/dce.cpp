// passes/dce.cpp — dead-code elimination.
//
// A node is live if it has side effects (output, kv_write), is part of the graph's
// interface (input, state: callers bind them by name even when unused), or a live node
// uses it. Everything else is removed. One backward sweep suffices: nodes are in order.
//
//   %1 = add(%0, %0)        (unused)         ->   (removed)
//   %2 = output(%0)                               %1 = output(%0)
#include <unordered_set>

#include "passes/passes.h"

namespace kiln {
namespace {

class DcePass final : public Pass {
 public:
  std::string_view name() const override { return "dce"; }
  Result<bool> run(Graph& g) override {
    std::vector<Node*> nodes = g.nodes();
    std::unordered_set<const Node*> live;
    for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
      Node* n = *it;
      if (op_info(n->op()).side_effects || live.count(n))
        for (Node* o : n->operands()) live.insert(o);
      if (op_info(n->op()).side_effects || n->op() == Op::Input || n->op() == Op::State)
        live.insert(n);
    }
    size_t before = g.size();
    g.erase_if([&](const Node* n) { return !live.count(n); });
    return g.size() != before;
  }
};

}  // namespace

std::unique_ptr<Pass> create_dce_pass() { return std::make_unique<DcePass>(); }

}  // namespace kiln

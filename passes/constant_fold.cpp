// passes/constant_fold.cpp — evaluate nodes whose operands are all constants.
//
// A pure, non-leaf node whose operands are all `constant` nodes is computed at compile
// time and replaced by a `constant` holding the result (dense f32 or i32 data in attribute
// "value"; the location is kept). The arithmetic is not written again here: each such node
// is copied into a tiny graph (its constant operands, the node, an output) and run by the
// reference interpreter, so every op has exactly one definition of its semantics. Nodes
// are visited in order and their operands rewritten to earlier results, so a whole chain
// of constants folds in one sweep.
//
//   %0 = constant {value = dense<f32: 1.0 2.0>} : f32[2]
//   %1 = constant {value = dense<f32: 3.0 4.0>} : f32[2]
//   %2 = add(%0, %1) : f32[2]            ->   %2 = constant {value = dense<f32: 4.0 6.0>}
//   %3 = silu(%x, ...)                        %3 = ...
//
// The operands that become unused are left in place for dce. Results with more than
// kMaxFoldElements elements are not folded, so the IR never grows by a large tensor, and
// a node the interpreter rejects (say, a token outside the table) is left alone so that
// the error is reported when the graph runs, where it belongs.
#include <unordered_map>

#include <fmt/format.h>

#include "ir/interpreter.h"
#include "passes/passes.h"
#include "support/log.h"

namespace kiln {
namespace {

constexpr int64_t kMaxFoldElements = int64_t{1} << 16;

// The dtype the interpreter reads each operand as: token ids and positions are i32, all
// else is f32. Operands of any other dtype are not folded (the interpreter would read the
// wrong buffer).
DType operand_dtype(Op op, size_t index) {
  bool ids = (op == Op::Embed && index == 1) || (op == Op::Rope && index == 1) ||
             (op == Op::Attention && index == 3);
  return ids ? DType::I32 : DType::F32;
}

bool foldable(const Node* n) {
  if (op_info(n->op()).side_effects || n->operands().empty()) return false;
  for (size_t i = 0; i < n->operands().size(); ++i) {
    const Node* o = n->operand(i);
    if (o->op() != Op::Constant || o->type().dtype != operand_dtype(n->op(), i)) return false;
  }
  const TensorType& t = n->type();
  return t.is_static() && t.elements() <= kMaxFoldElements &&
         (t.dtype == DType::F32 || t.dtype == DType::I32);
}

// Runs `n` on its constant operands in a graph of its own. nullopt: the interpreter
// rejected it (left for run time); Error: the interpreter and the node's type disagree.
Result<std::optional<DenseData>> evaluate(const Node* n) {
  Graph tiny("fold");
  std::unordered_map<const Node*, Node*> copy;
  std::vector<Node*> operands;
  for (const Node* o : n->operands()) {
    Node*& c = copy[o];
    if (!c) c = tiny.add(Op::Constant, {}, o->type(), o->attrs());
    operands.push_back(c);
  }
  Node* m = tiny.add(n->op(), operands, n->type(), n->attrs(), n->loc());
  tiny.add(Op::Output, {m}, n->type(), {{"name", std::string("folded")}});
  auto out = Interpreter(tiny).run({});
  if (!out.ok()) {
    spdlog::debug("constant-fold: leaving {} unfolded: {}", op_name(n->op()), out.error().message);
    return std::optional<DenseData>();
  }
  const Tensor& t = out->at("folded");
  if (t.dtype != n->type().dtype || t.shape != n->type().shape)
    return make_error("{}{}: the interpreter produced {}[{}] for a node typed {}",
                      op_name(n->op()), n->loc().empty() ? "" : " at " + n->loc(),
                      dtype_name(t.dtype), fmt::join(t.shape, ","), n->type().str());
  DenseData d;
  d.dtype = t.dtype;
  if (t.dtype == DType::I32) d.i32 = t.i32;
  else d.f32 = t.f32;
  return std::optional<DenseData>(std::move(d));
}

class ConstantFoldPass final : public Pass {
 public:
  std::string_view name() const override { return "constant-fold"; }
  Result<bool> run(Graph& g) override {
    std::unordered_map<const Node*, Node*> folded;  // node -> the constant replacing it
    for (Node* n : g.nodes()) {
      for (size_t i = 0; i < n->operands().size(); ++i) {
        auto r = folded.find(n->operand(i));
        if (r != folded.end()) n->set_operand(i, r->second);
      }
      if (!foldable(n)) continue;
      KILN_ASSIGN(std::optional<DenseData> value, evaluate(n));
      if (!value) continue;
      folded[n] = g.insert_before(n, Op::Constant, {}, n->type(), {{"value", std::move(*value)}},
                                  n->loc());
    }
    if (folded.empty()) return false;
    g.erase_if([&](const Node* n) { return folded.count(n) != 0; });
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> create_constant_fold_pass() { return std::make_unique<ConstantFoldPass>(); }

}  // namespace kiln

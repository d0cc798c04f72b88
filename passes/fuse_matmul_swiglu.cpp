// passes/fuse_matmul_swiglu.cpp — the gate and up projections and SwiGLU as one op.
//
//        h                                         h
//      /   \\                                       |
//  matmul  matmul      (Wg, Wu: same q4/q8 type)   |
//  (Wg)    (Wu)                           ==>  matmul_swiglu(h, Wg, Wu)
//    |       |                                     |
//   silu     |                                  f32[T,N]
//     \\     /
//       mul
//        |
//
// Unfused, a decode step of one layer runs the two matmuls, a barrier, silu, a barrier and
// mul (each an elementwise pass over [T, n_ff] through memory), and quantizes h twice. The
// fused kernel (qmatmul.c, qmatmul_swiglu) quantizes h once, computes the gate and up
// values of each 16-column tile in the stack and writes silu(g) * u; the thread that owns
// a column computes both of its rows, so no barrier is needed inside. Two barriers per
// layer go. Matched only where that kernel exists: q4_0/q4_1/q8_0 weights of one type and
// shape, K a multiple of 32, int8 activations on (graph attribute int8_activations, default
// on), and gate, silu and up used only here. matmul(h, dequant(W)) counts as a matmul on W
// (the fused op reads the blocks, as fuse-dequant-matmul would make it).
#include "passes/passes.h"

namespace kiln {
namespace {

class FuseMatmulSwiGluPass final : public Pass {
 public:
  std::string_view name() const override { return "fuse-matmul-swiglu"; }
  Result<bool> run(Graph& g) override {
    if (g.int_attr("int8_activations").value_or(1) == 0) return false;
    auto users = g.users();
    auto only_user = [&](const Node* n, const Node* u) { return users[n].size() == 1 && users[n][0] == u; };
    auto quant_weight = [](const Node* w) {
      DType t = w->type().dtype;
      return w->op() == Op::Weight && (t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q8_0);
    };
    bool changed = false;
    for (Node* m : g.nodes()) {
      if (m->op() != Op::Mul) continue;
      for (int side = 0; side < 2; ++side) {
        Node* s = m->operand(side);
        Node* up = m->operand(1 - side);
        if (s->op() != Op::Silu || up->op() != Op::MatMul) continue;
        Node* gate = s->operand(0);
        if (gate->op() != Op::MatMul || gate->operand(0) != up->operand(0)) continue;
        // The weights, seen through dequant (this pass may run before fuse-dequant-matmul).
        auto raw = [](Node* w) { return w->op() == Op::Dequant ? w->operand(0) : w; };
        Node *wg = raw(gate->operand(1)), *wu = raw(up->operand(1));
        if (!quant_weight(wg) || !quant_weight(wu) || wg->type() != wu->type()) continue;
        int64_t K = wg->type().shape[1];
        if (K % 32 != 0 || K > 32768) continue;
        if (!only_user(gate, s) || !only_user(s, m) || !only_user(up, m) || gate == up) continue;
        Node* f = g.insert_before(m, Op::MatMulSwiGlu, {gate->operand(0), wg, wu}, m->type(), {}, m->loc());
        g.replace_all_uses(m, f);
        changed = true;
        break;
      }
    }
    if (!changed) return false;
    // The matmuls, silu and mul that fed the fused nodes are now unused.
    for (bool again = true; again;) {
      auto u = g.users();
      size_t before = g.size();
      g.erase_if([&](const Node* n) {
        return (n->op() == Op::Mul || n->op() == Op::Silu || n->op() == Op::MatMul || n->op() == Op::Dequant) &&
               u[n].empty();
      });
      again = g.size() != before;
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> create_fuse_matmul_swiglu_pass() { return std::make_unique<FuseMatmulSwiGluPass>(); }

}  // namespace kiln

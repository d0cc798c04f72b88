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
//
// With LoRA (lora-as-input), gate and up are add(matmul(h, W), lora(h, a, b, scale, slots,
// rank)): both sides adapted, on one scale and slots, fuse into the 11-operand form
// matmul_swiglu(h, Wg, Wu, ag, bg, au, bu, scale, slots, rank_g, rank_u), whose kernel
// adds each tile's side path before the SiLU, with op lora's kernel's arithmetic, so the
// bits are the unfused graph's. Unfused, a step on an adapter lost this fusion (about 8%
// of its decode rate on an Intel Xeon host, 2 threads).
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
    // A projection: matmul(h, W), or add(matmul(h, W), lora(h, ...)) with each node used
    // only on the way to `user`; {matmul, lora or null}, or {null, null} if neither.
    auto projection = [&](Node* p, const Node* user) -> std::pair<Node*, Node*> {
      if (!only_user(p, user)) return {nullptr, nullptr};
      if (p->op() == Op::MatMul) return {p, nullptr};
      if (p->op() != Op::Add || p->operand(0)->op() != Op::MatMul || p->operand(1)->op() != Op::Lora)
        return {nullptr, nullptr};
      Node *mm = p->operand(0), *l = p->operand(1);
      if (!only_user(mm, p) || !only_user(l, p) || l->operand(0) != mm->operand(0)) return {nullptr, nullptr};
      return {mm, l};
    };
    bool changed = false;
    for (Node* m : g.nodes()) {
      if (m->op() != Op::Mul) continue;
      for (int side = 0; side < 2; ++side) {
        Node* s = m->operand(side);
        if (s->op() != Op::Silu || !only_user(s, m)) continue;
        auto [gate, lora_g] = projection(s->operand(0), s);
        auto [up, lora_u] = projection(m->operand(1 - side), m);
        if (!gate || !up || gate->operand(0) != up->operand(0) || gate == up) continue;
        if ((lora_g == nullptr) != (lora_u == nullptr)) continue;
        if (lora_g && (lora_g->operand(3) != lora_u->operand(3) || lora_g->operand(4) != lora_u->operand(4))) continue;
        // The weights, seen through dequant (this pass may run before fuse-dequant-matmul).
        auto raw = [](Node* w) { return w->op() == Op::Dequant ? w->operand(0) : w; };
        Node *wg = raw(gate->operand(1)), *wu = raw(up->operand(1));
        if (!quant_weight(wg) || !quant_weight(wu) || wg->type() != wu->type()) continue;
        int64_t K = wg->type().shape[1];
        if (K % 32 != 0 || K > 32768) continue;
        std::vector<Node*> operands = {gate->operand(0), wg, wu};
        if (lora_g)
          operands.insert(operands.end(), {lora_g->operand(1), lora_g->operand(2), lora_u->operand(1),
                                           lora_u->operand(2), lora_g->operand(3), lora_g->operand(4),
                                           lora_g->operand(5), lora_u->operand(5)});
        Node* f = g.insert_before(m, Op::MatMulSwiGlu, operands, m->type(), {}, m->loc());
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
        return (n->op() == Op::Mul || n->op() == Op::Silu || n->op() == Op::MatMul || n->op() == Op::Dequant ||
                n->op() == Op::Add || n->op() == Op::Lora) &&
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

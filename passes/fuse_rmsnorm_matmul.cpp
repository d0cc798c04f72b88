// passes/fuse_rmsnorm_matmul.cpp — rms_norm folded into the matmuls that read it.
//
//        x    nw                                   x    nw
//        |    |                                    |    |
//       rms_norm -> h : f32[T,K]         ==>   rms_matmul(x, nw, Wq)  rms_matmul(x, nw, Wk) ...
//      /    |    \                             (each thread normalises the rows itself
//  matmul matmul matmul                         in the activation-quantization prologue)
//   (Wq)   (Wk)   (Wv)
//
// Unfused, the norm writes h and a barrier separates it from the matmuls (their threads
// read rows another thread normalised). Fused, every matmul's prologue normalises the rows
// it is about to quantize (K floats per row: nothing next to the N*K weights), with the
// norm kernel's own row function, so the results are the unfused kernels' bits and one
// barrier per norm goes. Matched when every user of the norm is a matmul on q4_0/q4_1/q8_0
// weights (directly or through dequant) with K a multiple of 32 and at most 8192, and int8
// activations are on (graph attribute int8_activations, default on). A norm that also
// feeds matmul_swiglu (run fuse-matmul-swiglu after this pass to fuse both) or anything
// else stays.
#include "passes/passes.h"

namespace kiln {
namespace {

class FuseRmsNormMatmulPass final : public Pass {
 public:
  std::string_view name() const override { return "fuse-rmsnorm-matmul"; }
  Result<bool> run(Graph& g) override {
    if (g.int_attr("int8_activations").value_or(1) == 0) return false;
    auto users = g.users();
    auto raw = [](Node* w) { return w->op() == Op::Dequant ? w->operand(0) : w; };
    auto fusable = [&](const Node* h, Node* u) {
      if (u->op() != Op::MatMul || u->operand(0) != h) return false;
      Node* w = raw(u->operand(1));
      DType t = w->type().dtype;
      int64_t K = w->type().shape[1];
      return w->op() == Op::Weight && (t == DType::Q4_0 || t == DType::Q4_1 || t == DType::Q8_0) && K % 32 == 0 &&
             K <= 8192;
    };
    bool changed = false;
    for (Node* h : g.nodes()) {
      if (h->op() != Op::RmsNorm || users[h].empty()) continue;
      bool all = true;
      for (Node* u : users[h]) all &= fusable(h, u);
      if (!all) continue;
      for (Node* u : users[h]) {
        Node* f = g.insert_before(u, Op::RmsMatMul, {h->operand(0), h->operand(1), raw(u->operand(1))}, u->type(),
                                  {{"eps", *h->float_attr("eps")}}, u->loc());
        g.replace_all_uses(u, f);
      }
      changed = true;
    }
    if (!changed) return false;
    for (bool again = true; again;) {  // the norms, matmuls and dequants left unused
      auto u = g.users();
      size_t before = g.size();
      g.erase_if([&](const Node* n) {
        return (n->op() == Op::RmsNorm || n->op() == Op::MatMul || n->op() == Op::Dequant) && u[n].empty();
      });
      again = g.size() != before;
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> create_fuse_rmsnorm_matmul_pass() { return std::make_unique<FuseRmsNormMatmulPass>(); }

}  // namespace kiln

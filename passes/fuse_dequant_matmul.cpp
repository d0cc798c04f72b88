// passes/fuse_dequant_matmul.cpp — matmul(x, dequant(Wq)) becomes one quantized matmul.
//
// The frontend (for GGUF q4_0/q4_1/q8_0 tensors) and quantize-int4 (for float weights)
// write the quantization out in the IR: the weight is stored in blocks and `dequant` makes
// it f32. Executed as written that is an f32 copy of every matrix per step (N*K*4 bytes:
// 8x the q4 bytes). The matmul kernels read the blocks themselves (codegen/kernels/
// qmatmul.c: nibbles unpacked in registers, int8 activations), so the pair folds into
// the matmul on the quantized weight; a dequant left without users is removed.
//
//        x        Wq : q4_1[N,K]                   x        Wq : q4_1[N,K]
//        |         |                               |         |
//        |     dequant -> f32[N,K]        ==>      +--matmul-+  (int8 x int4 kernel)
//        |         |                                    |
//        +--matmul-+                                  f32[T,N]
//             |
//           f32[T,N]
//
// Numerically the two are the same function (the interpreter computes matmul on a
// quantized weight by dequantizing rows), so the rewrite is exact; codegen needs it (it
// has no dequant kernel). A dequant with a user other than matmul is left alone.
#include "passes/passes.h"

namespace kiln {
namespace {

class FuseDequantMatmulPass final : public Pass {
 public:
  std::string_view name() const override { return "fuse-dequant-matmul"; }
  Result<bool> run(Graph& g) override {
    bool changed = false;
    for (Node* n : g.nodes()) {
      if (n->op() != Op::MatMul || n->operand(1)->op() != Op::Dequant) continue;
      n->set_operand(1, n->operand(1)->operand(0));
      changed = true;
    }
    if (!changed) return false;
    auto users = g.users();
    g.erase_if([&](const Node* n) { return n->op() == Op::Dequant && users[n].empty(); });
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> create_fuse_dequant_matmul_pass() { return std::make_unique<FuseDequantMatmulPass>(); }

}  // namespace kiln

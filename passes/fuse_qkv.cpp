// passes/fuse_qkv.cpp — the q, k and v projections of a layer as one kernel call.
//
//   after fuse-rmsnorm-matmul:                        after fuse-qkv (adjacent, in q, k, v order):
//
//        x    nw                                            x    nw
//      / | \\  |                                             |    |
//  rms_matmul(x,nw,Wq)  rms_matmul(x,nw,Wk)  ...   ==>  rms_matmul(x,nw,Wq) {qkv = 1}  --+  one
//         |                    |                         rms_matmul(x,nw,Wk)              |  kiln_rms_matmul3
//         q                    k          v              rms_matmul(x,nw,Wv)           --+  call
//                                                              |    |    |
//   (each call normalises and quantizes x itself)              q    k    v
//
// Each rms_matmul's prologue RMS-normalises and int8-quantizes the rows of x (every thread
// for itself), so a layer did that three times for q, k and v. The three stay separate
// single-output nodes (their consumers do not change), but they are moved next to each
// other and the first is marked qkv = 1; codegen (lower.cpp) then emits one
// kiln_rms_matmul3 call (qmatmul.c) that normalises and quantizes once and splits each
// weight's columns over the threads exactly as three calls would: the unfused bits, no
// barrier between them (there was none before either), two prologues fewer. Matched when
// exactly three rms_matmuls share x, the norm weight and eps, with one weight type and K.
// With float activations (plain matmuls, no prologue) there is nothing to share: no match.
// The interpreter ignores the attribute.
#include <algorithm>
#include <map>
#include <tuple>
#include <unordered_map>

#include "passes/passes.h"

namespace kiln {
namespace {

class FuseQkvPass final : public Pass {
 public:
  std::string_view name() const override { return "fuse-qkv"; }
  Result<bool> run(Graph& g) override {
    std::vector<Node*> nodes = g.nodes();
    std::unordered_map<const Node*, size_t> index;
    for (size_t i = 0; i < nodes.size(); ++i) index[nodes[i]] = i;
    std::map<std::tuple<const Node*, const Node*, double>, std::vector<Node*>> groups;
    for (Node* n : nodes)
      if (n->op() == Op::RmsMatMul) groups[{n->operand(0), n->operand(1), *n->float_attr("eps")}].push_back(n);
    bool changed = false;
    for (auto& [key, ms] : groups) {
      if (ms.size() != 3 || ms[0]->int_attr("qkv")) continue;  // already fused: the pass is idempotent
      const TensorType& w0 = ms[0]->operand(2)->type();
      bool ok = true;
      for (Node* m : ms) {
        const TensorType& w = m->operand(2)->type();
        // The weights must exist where the group will run (at the first of the three).
        ok &= w.dtype == w0.dtype && w.shape[1] == w0.shape[1] && index[m->operand(2)] < index[ms[0]] &&
              !m->has_attr("place");
      }
      if (!ok) continue;
      std::vector<Node*> fused;
      for (Node* m : ms) {
        auto attrs = m->attrs();
        if (m == ms[0]) attrs["qkv"] = int64_t{1};
        fused.push_back(g.insert_before(ms[0], Op::RmsMatMul, m->operands(), m->type(), attrs, m->loc()));
      }
      for (size_t i = 0; i < 3; ++i) g.replace_all_uses(ms[i], fused[i]);
      std::vector<const Node*> old(ms.begin(), ms.end());
      g.erase_if([&](const Node* n) { return std::find(old.begin(), old.end(), n) != old.end(); });
      changed = true;
    }
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> create_fuse_qkv_pass() { return std::make_unique<FuseQkvPass>(); }

}  // namespace kiln

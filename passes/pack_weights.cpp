// passes/pack_weights.cpp — quantized weights in the kernels' interleaved layout, made once
// at compile time.
//
//   before (GGUF rows, one block after another):      after (packed_rows = 16, ir/packing.h):
//
//   row 0:  [d|qs 0..31] [d|qs 32..63] ...             rows 0..15, block 0: [d0..d15 | 64-byte lines:
//   row 1:  [d|qs 0..31] [d|qs 32..63] ...                                   elements 4j..4j+3 of
//   ...                                                                      all 16 rows]
//   row 15: [d|qs 0..31] [d|qs 32..63] ...             rows 0..15, block 1: ...
//
// Why: the int8 kernels on GGUF rows (qmatmul.c) pay per weight row and block a float
// convert, a scale multiply and an FMA for every row of x, plus the nibble unpacking; so a
// step with several rows (multi-stream decoding, DS2D verify, prefill) costs nearly one
// decode step per extra row on a machine where the model sits in cache. With 16 rows
// interleaved, one integer dot instruction (vpdpbusd on a zmm, NEON sdot by element) adds 4
// elements into 16 per-row sums with x's 4 bytes broadcast, and the float work is one
// convert and one FMA per block for 16 outputs: the per-row cost drops several-fold.
// The bytes are a permutation (same size), the runtime never repacks, and the interpreter
// reads a packed weight by unpacking rows (unpack_row), so the graph's meaning is unchanged.
//
// Packs a q4_0/q4_1/q8_0 weight [N, K] (N % 16 == 0, K % 32 == 0) when every user reads it
// through a kernel that has the packed form: matmul, rms_matmul, matmul_swiglu (int8
// activations) and embed (the tied embedding/LM head). Graph attributes: pack_weights (rows
// per group: 16, or 0 = off; absent = 16) — kiln compile sets it from the profile (codegen
// has packed kernels for AVX512-VNNI and AArch64 dotprod) — and int8_activations (0: the
// float kernels read GGUF rows, nothing is packed).
#include <algorithm>
#include <map>

#include "ir/overlay_weights.h"
#include "ir/packing.h"
#include "passes/freeze_base.h"
#include "passes/passes.h"

namespace kiln {
namespace {

bool reads_packed(const Node* u, const Node* w) {
  switch (u->op()) {
    case Op::MatMul: return u->operand(1) == w && u->operand(0) != w;
    case Op::RmsMatMul: return u->operand(2) == w && u->operand(0) != w && u->operand(1) != w;
    case Op::MatMulSwiGlu: return u->operand(0) != w;
    case Op::Embed: return u->operand(0) == w && u->operand(1) != w;
    default: return false;
  }
}

class PackWeightsPass final : public Pass {
 public:
  std::string_view name() const override { return "pack-weights"; }

  Result<bool> run(Graph& g) override {
    if (is_frozen(g))
      return make_error("must run before freeze-base: the weights are already frozen into one blob at fixed offsets");
    const int64_t rows = g.int_attr("pack_weights").value_or(kPackRows);
    if (rows == 0 || g.int_attr("int8_activations").value_or(1) == 0) return false;
    if (rows != kPackRows)
      return make_error("graph attribute pack_weights = {}: expected {} (rows per group) or 0 (off)", rows, kPackRows);
    // A tensor may be named by several weight nodes: pack it only if every one qualifies.
    auto users = g.users();
    std::map<std::string, bool, std::less<>> ok;
    for (Node* w : g.nodes()) {
      if (w->op() != Op::Weight) continue;
      std::string name(*w->str_attr("name"));
      bool fits = packable(w->type().dtype, w->type().shape) && !users[w].empty() &&
                  w->int_attr("packed_rows").value_or(0) == 0;
      for (Node* u : users[w]) fits &= reads_packed(u, w);
      auto [it, fresh] = ok.emplace(name, fits);
      if (!fresh) it->second &= fits;
    }

    if (std::none_of(ok.begin(), ok.end(), [](const auto& e) { return e.second; })) return false;
    if (!g.weights()) return make_error("the graph has no weight source to pack");
    auto packed = std::make_shared<OverlayWeights>(g.weights(), "packed by pack-weights");
    bool changed = false;
    for (Node* w : g.nodes()) {
      if (w->op() != Op::Weight) continue;
      std::string name(*w->str_attr("name"));
      if (!ok[name]) continue;
      if (!packed->has(name)) {
        auto v = g.weights()->find(name);
        if (!v) return make_error("weight \"{}\" is not in {}", name, g.weights()->describe());
        const int64_t N = w->type().shape[0], K = w->type().shape[1];
        if (v->dtype != w->type().dtype || v->nbytes != dtype_bytes(v->dtype, (uint64_t)(N * K)))
          return make_error("weight \"{}\" in {} does not match its node type {}", name,
                            g.weights()->describe(), w->type().str());
        OverlayWeights::Tensor t{v->dtype, v->shape, std::vector<uint8_t>(v->nbytes)};
        pack_rows(v->dtype, v->data, N, K, t.bytes.data());
        packed->set(name, std::move(t));
      }
      w->set_attr("packed_rows", kPackRows);
      changed = true;
    }
    if (!packed->empty()) g.set_weights(packed);
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> create_pack_weights_pass() { return std::make_unique<PackWeightsPass>(); }

}  // namespace kiln

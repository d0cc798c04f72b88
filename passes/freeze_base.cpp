// passes/freeze_base.cpp — freeze the base model: weights become constants at fixed
// offsets of one blob, and the step's shapes are checked static but for the row count.
//
//   %w = weight {name = "blk.0.attn_q.weight"} : q4_1[576,576]          (read from GGUF)
//     ->
//   %w = weight {name = "blk.0.attn_q.weight", offset = 1327104} : q4_1[576,576]
//                                                  (bytes at blob + offset, 64-aligned)
//
// Matrices feeding matmul/embed keep their storage type (the kernels read every kiln
// dtype); any other weight (norm scales, ...) is converted to f32 here, once, so the
// generated code never converts at run time. The blob replaces the graph's weight source,
// so the verifier and the interpreter read exactly the bytes the compiled code will.
// Needs the graph attribute max_rows (the most rows one step processes).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ir/packing.h"
#include "passes/freeze_base.h"
#include "passes/passes.h"

namespace kiln {

std::optional<WeightView> FrozenWeights::find(std::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) return std::nullopt;
  const Entry& e = it->second;
  return WeightView{e.dtype, e.shape, reinterpret_cast<const uint8_t*>(blob_.data()) + e.offset,
                    e.nbytes};
}

std::vector<std::pair<std::string, FrozenWeights::Entry>> FrozenWeights::ordered() const {
  std::vector<std::pair<std::string, Entry>> v(entries_.begin(), entries_.end());
  std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.offset < b.second.offset; });
  return v;
}

// The first element of a weight that is NaN or infinite, as (row, column, value), read a
// row at a time (unpacked first if pack-weights interleaved it): one corrupt value makes
// logits NaN at run time, and it is far cheaper to find here, once, than from a reply of
// garbage (llama.cpp checks only when asked, with --check-tensors).
namespace {
struct NonFinite {
  int64_t row, col;
  float value;
};
std::optional<NonFinite> first_non_finite(DType dt, const uint8_t* data, const std::vector<int64_t>& shape,
                                          bool packed) {
  if (dt == DType::I32) return std::nullopt;
  const int64_t K = shape.empty() ? 1 : shape.back();
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < shape.size(); ++d) rows *= shape[d];
  const uint64_t row_bytes = dtype_bytes(dt, (uint64_t)K);
  std::vector<uint8_t> unpacked(packed ? row_bytes : 0);
  std::vector<float> f((size_t)K);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = data + (uint64_t)r * row_bytes;
    if (packed) {
      unpack_row(dt, data, K, r, unpacked.data());
      row = unpacked.data();
    }
    dequantize_row(dt, row, f.data(), (uint64_t)K);  // f32: a copy
    for (int64_t c = 0; c < K; ++c)
      if (!std::isfinite(f[(size_t)c])) return NonFinite{r, c, f[(size_t)c]};
  }
  return std::nullopt;
}
}  // namespace

class FreezeBasePass final : public Pass {
 public:
  std::string_view name() const override { return "freeze-base"; }

  Result<bool> run(Graph& g) override {
    auto max_rows = g.int_attr("max_rows");
    if (!max_rows || *max_rows < 1)
      return make_error("needs the graph attribute max_rows >= 1 (kiln compile --max-rows)");
    if (!g.weights()) return make_error("the graph has no weight source to freeze");
    if (dynamic_cast<const FrozenWeights*>(g.weights().get())) return false;  // already frozen

    // Static shapes everywhere but the leading (row) dimension of activations.
    for (const Node* n : g.nodes())
      for (size_t d = 0; d < n->type().shape.size(); ++d)
        if (n->type().shape[d] == kDynamic && d != 0)
          return make_error("{} at {}: dimension {} of {} is dynamic; only the row count may be",
                            op_name(n->op()), n->loc(), d, n->type().str());

    auto users = g.users();
    auto frozen = std::make_shared<FrozenWeights>();
    frozen->origin_ = g.weights()->describe();
    for (Node* n : g.nodes()) {
      if (n->op() != Op::Weight) continue;
      std::string wname(*n->str_attr("name"));
      auto existing = frozen->entries_.find(wname);
      if (existing != frozen->entries_.end()) {  // the same tensor named twice
        n->set_type({existing->second.dtype, existing->second.shape});
        n->set_attr("offset", (int64_t)existing->second.offset);
        continue;
      }
      auto src = g.weights()->find(wname);
      if (!src) return make_error("weight \"{}\" is not in {}", wname, g.weights()->describe());
      bool matrix_only = true;
      for (Node* u : users[n])
        matrix_only &= u->op() == Op::MatMul || u->op() == Op::Embed || u->op() == Op::Dequant ||
                       u->op() == Op::MatMulSwiGlu || (u->op() == Op::RmsMatMul && u->operand(2) == n);
      DType dt = matrix_only ? src->dtype : DType::F32;

      uint64_t offset = (frozen->blob_.size() + FrozenWeights::kAlign - 1) / FrozenWeights::kAlign *
                        FrozenWeights::kAlign;
      frozen->blob_.resize(offset);
      uint64_t elems = 1;
      for (auto d : src->shape) elems *= (uint64_t)d;
      if (auto bad = first_non_finite(src->dtype, src->data, src->shape, n->int_attr("packed_rows").value_or(0) > 0))
        return make_error("weight \"{}\" ({}[{}]) holds {} at row {}, column {}: the model file's weights are corrupt",
                          wname, dtype_name(src->dtype), fmt::join(src->shape, ","), bad->value, bad->row, bad->col);
      uint64_t nbytes = dtype_bytes(dt, elems);
      if (dt == src->dtype) {
        frozen->blob_.append(reinterpret_cast<const char*>(src->data), src->nbytes);
      } else {
        std::vector<float> f((size_t)elems);
        dequantize_row(src->dtype, src->data, f.data(), elems);
        frozen->blob_.append(reinterpret_cast<const char*>(f.data()), nbytes);
      }
      frozen->entries_[wname] = {dt, src->shape, offset, nbytes};
      n->set_type({dt, src->shape});
      n->set_attr("offset", (int64_t)offset);
    }
    frozen->blob_.resize((frozen->blob_.size() + FrozenWeights::kAlign - 1) / FrozenWeights::kAlign *
                         FrozenWeights::kAlign);
    g.set_attr("weights_bytes", (int64_t)frozen->blob_.size());
    g.set_weights(std::move(frozen));
    return true;
  }
};

std::unique_ptr<Pass> create_freeze_base_pass() { return std::make_unique<FreezeBasePass>(); }

}  // namespace kiln

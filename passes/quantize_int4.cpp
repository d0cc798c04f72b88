// passes/quantize_int4.cpp — float weights to INT4 blocks; the quantization written in the IR.
//
// Every matrix a matmul reads (and the embedding table) that is stored as f32/f16/bf16
// becomes 4-bit groupwise blocks; the matmul then reads dequant(Wq), so the interpreter
// runs exactly the weights the compiled code will (fuse-dequant-matmul folds the pair):
//
//   %w = weight {name = "blk.0.attn_q.weight"} : f16[576,576]
//   %q = matmul(%h, %w) : f32[?,576]
//     ->
//   %w = weight {name = "blk.0.attn_q.weight"} : q4_1[576,576]      (blocks of 32)
//   %d = dequant(%w) : f32[576,576]
//   %q = matmul(%h, %d) : f32[?,576]
//
// Options are graph attributes (kiln compile sets them from --quantize/--group-size/
// --quantize-head and the profile's group_size):
//   quantize       "int4" (= "q4_1"), "q4_1" (scale and minimum per group: w = q*d + m),
//                  "q4_0" (symmetric: w = (q-8)*d), or "none"; default "int4"
//   group_size     elements sharing one scale: 32 (default) or a multiple of 32 (a row's
//                  last group may be shorter: 576 = 4 x 128 + 64). The storage is GGUF's
//                  32-element block, so a larger group repeats its scale in each of its
//                  blocks: the same kernels and bytes, numerically group-G quantization.
//   quantize_head  the embedding table and LM head: "q8_0" (default; they feed every
//                  logit) or "int4" (the type above)
// Scales are rounded to f16 after quantizing, as llama.cpp's reference quantizers do
// (same rounding rules), so a kiln INT4 model of the F16 file is close to llama-quantize's.
//
// Weights already in GGUF blocks are repacked losslessly, never requantized: q4_0/q4_1
// stay as they are (kiln's INT4 block is GGUF's), and q4_0 to q4_1 when q4_1 is asked for
// (m = -8d is exact in f16). q8_0 matrices stay q8_0.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include <fmt/format.h>

#include "frontend/gguf_names.h"
#include "ir/overlay_weights.h"
#include "passes/freeze_base.h"
#include "passes/passes.h"
#include "support/half.h"

namespace kiln {
namespace {

// The graph's weights with some tensors replaced by quantized copies of the same name.
void quantize_row(DType t, const float* x, uint8_t* out, int64_t n, int64_t G) {
  for (int64_t g0 = 0; g0 < n; g0 += G) {
    const int64_t len = std::min(G, n - g0);  // the last group of a row may be shorter
    const float* xg = x + g0;
    float amax = 0, vmax = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t j = 0; j < len; ++j) {
      if (std::fabs(xg[j]) > amax) amax = std::fabs(xg[j]), vmax = xg[j];
      lo = std::min(lo, xg[j]);
      hi = std::max(hi, xg[j]);
    }
    for (int64_t b = 0; b < len / 32; ++b) {
      const float* xb = xg + b * 32;
      uint8_t* ob = out + ((g0 + b * 32) / 32) * dtype_info(t).block_bytes;
      switch (t) {
        case DType::Q4_0: {  // ggml quantize_row_q4_0_ref: d = max / -8 (max: largest |x|, signed)
          BlockQ4_0 blk{};
          const float d = vmax / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
          blk.d = f32_to_fp16(d);
          for (int j = 0; j < 16; ++j) {
            const uint8_t a = (uint8_t)std::min(15, (int)(xb[j] * id + 8.5f));
            const uint8_t c = (uint8_t)std::min(15, (int)(xb[j + 16] * id + 8.5f));
            blk.qs[j] = (uint8_t)(a | (c << 4));
          }
          std::memcpy(ob, &blk, sizeof blk);
          break;
        }
        case DType::Q4_1: {  // ggml quantize_row_q4_1_ref: m = min, d = (max - min) / 15
          BlockQ4_1 blk{};
          const float d = (hi - lo) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
          blk.d = f32_to_fp16(d);
          blk.m = f32_to_fp16(lo);
          for (int j = 0; j < 16; ++j) {
            const uint8_t a = (uint8_t)std::min(15, (int)((xb[j] - lo) * id + 0.5f));
            const uint8_t c = (uint8_t)std::min(15, (int)((xb[j + 16] - lo) * id + 0.5f));
            blk.qs[j] = (uint8_t)(a | (c << 4));
          }
          std::memcpy(ob, &blk, sizeof blk);
          break;
        }
        case DType::Q8_0: {  // ggml quantize_row_q8_0_ref: d = max|x| / 127, round to nearest
          BlockQ8_0 blk{};
          const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
          blk.d = f32_to_fp16(d);
          for (int j = 0; j < 32; ++j) blk.qs[j] = (int8_t)std::lround(xb[j] * id);
          std::memcpy(ob, &blk, sizeof blk);
          break;
        }
        default: return;
      }
    }
  }
}

class QuantizeInt4Pass final : public Pass {
 public:
  std::string_view name() const override { return "quantize-int4"; }

  Result<bool> run(Graph& g) override {
    if (is_frozen(g))
      return make_error("must run before freeze-base: the weights are already frozen into one blob at fixed offsets");
    auto str = [&](const char* k, const char* dflt) -> std::string {
      auto it = g.attrs().find(k);
      if (it == g.attrs().end()) return dflt;
      if (auto* s = std::get_if<std::string>(&it->second)) return *s;
      return "";
    };
    std::string mode = str("quantize", "int4"), head_mode = str("quantize_head", "q8_0");
    auto type_of = [](const std::string& m) -> std::optional<DType> {
      if (m == "int4" || m == "q4_1") return DType::Q4_1;
      if (m == "q4_0") return DType::Q4_0;
      if (m == "q8_0") return DType::Q8_0;
      return std::nullopt;
    };
    if (mode == "none") return false;
    auto body = type_of(mode);
    if (!body || *body == DType::Q8_0)
      return make_error("graph attribute quantize = \"{}\": expected int4, q4_0, q4_1 or none", mode);
    auto head = head_mode == "int4" ? body : type_of(head_mode);
    if (!head || (head_mode != "int4" && head_mode != "q8_0"))
      return make_error("graph attribute quantize_head = \"{}\": expected q8_0 or int4", head_mode);
    int64_t G = g.int_attr("group_size").value_or(32);
    if (G < 32 || G % 32 != 0)
      return make_error("graph attribute group_size = {}: must be a positive multiple of 32", G);
    if (!g.weights()) return make_error("the graph has no weight source to quantize");

    auto users = g.users();
    auto qw = std::make_shared<OverlayWeights>(g.weights(), "quantized by quantize-int4");
    bool changed = false;
    std::map<std::string, DType, std::less<>> done;  // a tensor named by several nodes
    for (Node* w : g.nodes()) {
      if (w->op() != Op::Weight || w->type().rank() != 2) continue;
      bool matrix = !users[w].empty();
      for (Node* u : users[w])
        matrix &= (u->op() == Op::MatMul && u->operand(1) == w) || u->op() == Op::Embed || u->op() == Op::Dequant;
      if (!matrix) continue;
      std::string name(*w->str_attr("name"));
      bool is_head = name == gguf_names::kTokenEmbd || name == gguf_names::kOutput;
      DType target = is_head ? *head : *body;
      DType src = w->type().dtype;
      const int64_t N = w->type().shape[0], K = w->type().shape[1];

      auto it = done.find(name);
      if (it == done.end()) {
        auto v = g.weights()->find(name);
        if (!v) return make_error("weight \"{}\" is not in {}", name, g.weights()->describe());
        if (is_float(src)) {
          if (K % 32 != 0)
            return make_error("weight \"{}\" {}: rows of {} are not a multiple of the block size 32", name,
                              w->type().str(), K);
        } else if (src == DType::Q4_0 && target == DType::Q4_1) {  // lossless: m = -8d
        } else {
          target = src;  // already in blocks: kept as it is
        }
        if (target != src) {
          OverlayWeights::Tensor t{target, w->type().shape, std::vector<uint8_t>(dtype_bytes(target, (uint64_t)(N * K)))};
          const uint64_t src_row = dtype_bytes(src, (uint64_t)K), dst_row = dtype_bytes(target, (uint64_t)K);
          std::vector<float> row((size_t)K);
          for (int64_t r = 0; r < N; ++r) {
            const uint8_t* s = v->data + r * src_row;
            uint8_t* d = t.bytes.data() + r * dst_row;
            if (src == DType::Q4_0) {  // repack q4_0 -> q4_1 block by block
              for (int64_t b = 0; b < K / 32; ++b) {
                BlockQ4_0 a;
                std::memcpy(&a, s + b * sizeof a, sizeof a);
                BlockQ4_1 o;
                o.d = a.d;
                o.m = f32_to_fp16(-8.0f * fp16_to_f32(a.d));
                std::memcpy(o.qs, a.qs, sizeof o.qs);
                std::memcpy(d + b * sizeof o, &o, sizeof o);
              }
            } else {
              dequantize_row(src, s, row.data(), (uint64_t)K);
              // A NaN or infinity has no 4-bit code (and would make its block's scale NaN).
              for (int64_t k = 0; k < K; ++k)
                if (!std::isfinite(row[(size_t)k]))
                  return make_error("weight \"{}\": element [{}, {}] is {}; only finite weights can be quantized",
                                    name, r, k, row[(size_t)k]);
              quantize_row(target, row.data(), d, K, G);
            }
          }
          qw->set(name, std::move(t));
        }
        it = done.emplace(name, target).first;
      }
      target = it->second;
      if (target == src) continue;
      w->set_type({target, w->type().shape});
      changed = true;
      // Matmuls read the blocks through an explicit dequant (one per weight).
      Node* dq = nullptr;
      for (Node* u : users[w]) {
        if (u->op() != Op::MatMul) continue;
        if (!dq) dq = g.insert_before(u, Op::Dequant, {w}, {DType::F32, w->type().shape}, {}, w->loc());
        u->set_operand(1, dq);
      }
    }
    if (!qw->empty()) g.set_weights(qw);
    return changed;
  }
};

}  // namespace

std::unique_ptr<Pass> create_quantize_int4_pass() { return std::make_unique<QuantizeInt4Pass>(); }

}  // namespace kiln

// ir/interpreter.cpp — one evaluation routine per op, in op table order.
#include "ir/interpreter.h"
#include "ir/packing.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>

#include "ir/tree.h"
#include "support/half.h"

namespace kiln {

Tensor Tensor::f32_of(std::vector<int64_t> shape, std::vector<float> data) {
  Tensor t;
  t.dtype = DType::F32;
  t.shape = std::move(shape);
  if (data.empty()) data.assign((size_t)t.elements(), 0.0f);
  t.f32 = std::move(data);
  return t;
}

Tensor Tensor::i32_of(std::vector<int64_t> shape, std::vector<int32_t> data) {
  Tensor t;
  t.dtype = DType::I32;
  t.shape = std::move(shape);
  t.i32 = std::move(data);
  return t;
}

int64_t Tensor::elements() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace {

using TensorPtr = std::shared_ptr<const Tensor>;

Result<WeightView> weight_view(const Graph& g, const Node* w) {
  auto name = w->str_attr("name");
  if (!g.weights()) return make_error("weight \"{}\": the graph has no weight source", *name);
  auto v = g.weights()->find(*name);
  if (!v) return make_error("weight \"{}\" is not in {}", *name, g.weights()->describe());
  if (v->dtype != w->type().dtype || v->shape != w->type().shape)
    return make_error("weight \"{}\" in {} does not match its node type {}", *name,
                      g.weights()->describe(), w->type().str());
  return *v;
}

// A matrix operand: either f32 rows in memory or rows of a (possibly quantized) weight.
struct RowSource {
  const float* f32 = nullptr;
  const uint8_t* raw = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  uint64_t row_bytes = 0;
  bool packed = false;  // pack-weights' x16 layout (ir/packing.h): rows unpacked one at a time

  void row(int64_t r, float* dst) const {
    if (f32) {
      std::copy(f32 + r * cols, f32 + (r + 1) * cols, dst);
    } else if (packed) {
      std::vector<uint8_t> blocks(row_bytes);
      unpack_row(dtype, raw, cols, r, blocks.data());
      dequantize_row(dtype, blocks.data(), dst, (uint64_t)cols);
    } else {
      dequantize_row(dtype, raw + r * row_bytes, dst, (uint64_t)cols);
    }
  }
};

bool is_packed(const Node* w) { return w->int_attr("packed_rows").value_or(0) > 0; }

// Dot product with eight float partial sums (which vectorize) folded in double: as
// accurate as a double loop for the lengths models use, and several times faster.
float dot(const float* a, const float* b, int64_t n) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; ++j) part[j] += a[k + j] * b[k + j];
  double acc = 0;
  for (int j = 0; j < 8; ++j) acc += part[j];
  for (; k < n; ++k) acc += (double)a[k] * b[k];
  return (float)acc;
}

// Runs fn over [0, n) split in contiguous halves on two threads (plain std::thread:
// no spinning thread pool to fight other processes on a busy machine).
void parallel_rows(int64_t n, bool parallel, const std::function<void(int64_t, int64_t)>& fn) {
  unsigned hw = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  if (!parallel || hw == 1 || n < 64) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> threads;
  int64_t chunk = (n + hw - 1) / hw;
  for (unsigned i = 1; i < hw; ++i) {
    int64_t b = std::min(n, chunk * i), e = std::min(n, chunk * (i + 1));
    threads.emplace_back(fn, b, e);
  }
  fn(0, std::min(n, chunk));
  for (auto& t : threads) t.join();
}

Status same_rows(const Tensor& idx, int64_t rows, std::string_view what,
                 const std::function<Error(const std::string&)>& where) {
  if (idx.elements() != rows)
    return where(fmt::format("{} has {} entries for {} rows", what, idx.elements(), rows));
  return Status::success();
}

// Addresses rows of a [C,F] cache, or of an [S,C,F] cache through each row's stream.
struct CacheView {
  int64_t S = 1, C = 0, F = 0;
  const Tensor* streams = nullptr;
  int64_t row(int64_t t, int64_t p) const {
    int64_t s = streams ? streams->i32[t] : 0;
    return (s * C + p) * F;
  }
};

Result<CacheView> cache_view(const Tensor& cache, Result<std::shared_ptr<const Tensor>> streams,
                             const Tensor& pos, int64_t rows,
                             const std::function<Error(const std::string&)>& where) {
  if (!streams.ok()) return streams.error();
  CacheView v;
  v.F = cache.shape.back();
  v.C = cache.shape[cache.shape.size() - 2];
  v.S = cache.shape.size() == 3 ? cache.shape[0] : 1;
  KILN_TRY(same_rows(pos, rows, "positions", where));
  if (*streams) {
    v.streams = streams->get();
    KILN_TRY(same_rows(*v.streams, rows, "streams", where));
    for (int64_t t = 0; t < rows; ++t)
      if (v.streams->i32[t] < 0 || v.streams->i32[t] >= v.S)
        return where(fmt::format("stream {} of row {} is outside the cache's {} streams",
                                 v.streams->i32[t], t, v.S));
  }
  return v;
}

Status check_row_broadcast(const Tensor& a, const Tensor& b, std::string_view op) {
  if (a.elements() == b.elements() || b.elements() == a.cols()) return Status::success();
  return make_error("{}: shapes [{}] and [{}] do not broadcast", op, fmt::join(a.shape, ","),
                    fmt::join(b.shape, ","));
}

// For a tree node (tree_parent), the cache row of each row t: node j = t % N of its block
// goes to positions[t] - depth[j] + j, and a block must be one stream at one base (the
// tokens before the tree). For an ordinary node, the cache row is positions[t].
Result<std::vector<int64_t>> kv_rows(const TreeShape& tree, const Tensor& pos, const CacheView& cv,
                                     int64_t T, const std::function<Error(const std::string&)>& where) {
  std::vector<int64_t> rows((size_t)T);
  int64_t N = tree.size();
  if (N && T % N)
    return where(fmt::format("{} rows are not whole blocks of the {}-node tree", T, N));
  for (int64_t t = 0; t < T; ++t) {
    int64_t p = pos.i32[t];
    if (N) {
      int64_t j = t % N, b = t - j;
      p = p - tree.depth[(size_t)j] + j;
      int64_t base = pos.i32[t] - tree.depth[(size_t)j];
      if (base != pos.i32[b] || (cv.streams && cv.streams->i32[t] != cv.streams->i32[b]))
        return where(fmt::format("row {} (node {}) has position {} and stream {}, but its tree's root "
                                 "(row {}) implies position {} + depth {} on stream {}",
                                 t, j, pos.i32[t], cv.streams ? cv.streams->i32[t] : 0, b, pos.i32[b],
                                 tree.depth[(size_t)j], cv.streams ? cv.streams->i32[b] : 0));
    }
    if (pos.i32[t] < 0 || p < 0 || p >= cv.C)
      return where(N ? fmt::format("position {} (cache row {}) is outside the cache of {} rows", pos.i32[t], p, cv.C)
                     : fmt::format("position {} is outside the cache of {} rows", p, cv.C));
    rows[(size_t)t] = p;
  }
  return rows;
}

// Op lora's side path (ops.def): y[t] = scale[s] * b[s]^T @ (a[s] @ x[t]) over the slot's
// ranks, s = slots[t], nothing for slot 0. Also the side paths of matmul_swiglu's fused form.
Result<TensorPtr> lora_side(const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& scale,
                            const Tensor& slots, const Tensor& rank,
                            const std::function<Error(const std::string&)>& where) {
  int64_t T = x.rows(), In = x.cols();
  if (a.shape.size() != 3 || b.shape.size() != 3)
    return where("a and b must be [K,R,in] and [K,R,out]");
  int64_t K = a.shape[0], R = a.shape[1], Out = b.shape[2];
  if (a.shape[2] != In || b.shape[0] != K || b.shape[1] != R || scale.elements() != K ||
      rank.elements() != K)
    return where(fmt::format("x has {} columns; a [{}], b [{}], scale [{}] and rank [{}] do not fit", In,
                             fmt::join(a.shape, ","), fmt::join(b.shape, ","),
                             fmt::join(scale.shape, ","), fmt::join(rank.shape, ",")));
  KILN_TRY(same_rows(slots, T, "adapter slots", where));
  auto out = std::make_shared<Tensor>(Tensor::f32_of({T, Out}));
  std::vector<double> h((size_t)R);
  for (int64_t t = 0; t < T; ++t) {
    int32_t s = slots.i32[t];
    if (s < 0 || s >= K)
      return where(fmt::format("adapter slot {} of row {} is outside the {} slots", s, t, K));
    // Slot 0 is the zero adapter, whatever its factors hold.
    if (s == 0) {
      for (int64_t o = 0; o < Out; ++o) out->f32[t * Out + o] = 0.0f;
      continue;
    }
    // The slot's rank on this target: rows at or past it are not part of the adapter
    // (0: the adapter does not target this projection).
    const int64_t rk = std::clamp<int64_t>(rank.i32[s], 0, R);
    // Shrink: h = a[s] @ x[t] (rk values), then expand: y[t] = scale[s] * b[s]^T @ h.
    const float* xt = x.f32.data() + t * In;
    for (int64_t r = 0; r < rk; ++r) {
      const float* ar = a.f32.data() + (s * R + r) * In;
      double acc = 0;
      for (int64_t i = 0; i < In; ++i) acc += (double)ar[i] * xt[i];
      h[r] = acc;
    }
    double sc = scale.f32[s];
    for (int64_t o = 0; o < Out; ++o) {
      double acc = 0;
      for (int64_t r = 0; r < rk; ++r) acc += (double)b.f32[(size_t)((s * R + r) * Out + o)] * h[r];
      out->f32[t * Out + o] = (float)(sc * acc);
    }
  }
  return TensorPtr(out);
}

}  // namespace

Result<Tensor> load_weight(const Graph& g, const Node* w) {
  KILN_ASSIGN(WeightView v, weight_view(g, w));
  Tensor t = Tensor::f32_of(w->type().shape);
  int64_t cols = w->type().shape.back();
  RowSource rs{nullptr, v.data, v.dtype, t.elements() / cols, cols, dtype_bytes(v.dtype, (uint64_t)cols), is_packed(w)};
  for (int64_t r = 0; r < rs.rows; ++r) rs.row(r, t.f32.data() + r * cols);
  return t;
}

Interpreter::Interpreter(const Graph& g) : g_(g) {}

void Interpreter::reset_state() {
  for (auto& [name, t] : state_) std::fill(t->f32.begin(), t->f32.end(), 0.0f);
}

Result<std::map<std::string, Tensor>> Interpreter::run(const std::map<std::string, Tensor>& inputs) {
  std::vector<Node*> nodes = g_.nodes();
  // Free each value after its last use, so a long prompt does not hold every activation.
  std::unordered_map<const Node*, size_t> last_use;
  for (size_t i = 0; i < nodes.size(); ++i)
    for (Node* o : nodes[i]->operands()) last_use[o] = i;

  std::unordered_map<const Node*, TensorPtr> val;
  std::map<std::string, Tensor> outputs;

  auto get = [&](const Node* n) -> Result<TensorPtr> {
    auto it = val.find(n);
    if (it != val.end()) return it->second;
    if (n->op() == Op::Weight || n->op() == Op::Dequant) {  // dequant(w) is w as f32
      const Node* w = n->op() == Op::Dequant ? n->operand(0) : n;
      auto c = dequantized_.find(w);
      if (c != dequantized_.end()) return c->second;
      KILN_ASSIGN(Tensor t, load_weight(g_, w));
      auto p = std::make_shared<const Tensor>(std::move(t));
      if (w->type().elements() <= (1 << 20)) dequantized_[w] = p;
      return p;
    }
    return make_error("value of {} is not available", op_name(n->op()));
  };
  auto rows_of = [&](const Node* n, RowSource& rs, TensorPtr& keep) -> Status {
    if (n->op() == Op::Dequant) n = n->operand(0);  // rows dequantized one at a time
    if (n->op() == Op::Weight) {
      KILN_ASSIGN(WeightView v, weight_view(g_, n));
      rs.raw = v.data;
      rs.dtype = v.dtype;
      rs.rows = v.shape[0];
      rs.cols = v.shape[1];
      rs.row_bytes = dtype_bytes(v.dtype, (uint64_t)rs.cols);
      rs.packed = is_packed(n);
      return Status::success();
    }
    KILN_ASSIGN(keep, get(n));
    rs.f32 = keep->f32.data();
    rs.rows = keep->rows();
    rs.cols = keep->cols();
    return Status::success();
  };

  for (size_t idx = 0; idx < nodes.size(); ++idx) {
    const Node* n = nodes[idx];
    auto where = [&](const std::string& msg) {
      return make_error("{}{}: {}", op_name(n->op()), n->loc().empty() ? "" : " at " + n->loc(), msg);
    };
    std::shared_ptr<Tensor> out;
    switch (n->op()) {
      case Op::Input: {
        std::string name(*n->str_attr("name"));
        auto it = inputs.find(name);
        if (it == inputs.end()) return make_error("missing input \"{}\"", name);
        const Tensor& t = it->second;
        const TensorType& ty = n->type();
        bool ok = t.dtype == ty.dtype && (int64_t)t.shape.size() == ty.rank();
        for (size_t d = 0; ok && d < t.shape.size(); ++d)
          ok = ty.shape[d] == kDynamic || ty.shape[d] == t.shape[d];
        if (!ok)
          return make_error("input \"{}\" must be {}, got {}[{}]", name, ty.str(),
                            dtype_name(t.dtype), fmt::join(t.shape, ","));
        size_t have = t.dtype == DType::I32 ? t.i32.size() : t.f32.size();
        if ((int64_t)have != t.elements())
          return make_error("input \"{}\" has {} values for shape [{}]", name, have,
                            fmt::join(t.shape, ","));
        out = std::make_shared<Tensor>(t);
        break;
      }
      case Op::Weight:
      case Op::Dequant:
        continue;  // read lazily by its users (a row at a time, or whole through get())
      case Op::Constant: {
        const DenseData* d = n->dense_attr("value");
        out = std::make_shared<Tensor>();
        out->dtype = d->dtype;
        out->shape = n->type().shape;
        out->f32 = d->f32;
        out->i32 = d->i32;
        break;
      }
      case Op::State: {
        std::string name(*n->str_attr("name"));
        auto& s = state_[name];
        if (!s) s = std::make_shared<Tensor>(Tensor::f32_of(n->type().shape));
        val[n] = s;
        continue;
      }
      case Op::Embed: {
        RowSource table;
        TensorPtr keep;
        KILN_TRY(rows_of(n->operand(0), table, keep));
        KILN_ASSIGN(TensorPtr tok, get(n->operand(1)));
        int64_t T = tok->elements(), D = table.cols;
        out = std::make_shared<Tensor>(Tensor::f32_of({T, D}));
        for (int64_t t = 0; t < T; ++t) {
          int32_t id = tok->i32[t];
          if (id < 0 || id >= table.rows)
            return where(fmt::format("token {} at index {} is outside the vocabulary of {}", id, t,
                                     table.rows));
          table.row(id, out->f32.data() + t * D);
        }
        break;
      }
      case Op::RmsNorm: {
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        KILN_ASSIGN(TensorPtr w, get(n->operand(1)));
        double eps = *n->float_attr("eps");
        int64_t R = x->rows(), C = x->cols();
        if (w->elements() != C) return where(fmt::format("weight has {} values for rows of {}", w->elements(), C));
        out = std::make_shared<Tensor>(Tensor::f32_of(x->shape));
        for (int64_t r = 0; r < R; ++r) {
          const float* xr = x->f32.data() + r * C;
          double ss = 0;
          for (int64_t c = 0; c < C; ++c) ss += (double)xr[c] * xr[c];
          float scale = (float)(1.0 / std::sqrt(ss / (double)C + eps));
          for (int64_t c = 0; c < C; ++c) out->f32[r * C + c] = xr[c] * scale * w->f32[c];
        }
        break;
      }
      case Op::MatMul: {
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        RowSource w;
        TensorPtr keep;
        KILN_TRY(rows_of(n->operand(1), w, keep));
        int64_t T = x->rows(), K = x->cols(), N = w.rows;
        if (w.cols != K) return where(fmt::format("x has {} columns, weight {}", K, w.cols));
        out = std::make_shared<Tensor>(Tensor::f32_of({T, N}));
        float* o = out->f32.data();
        const float* xs = x->f32.data();
        // Threads pay off only for multi-token steps; for one token, starting them costs
        // more than the work.
        parallel_rows(N, T >= 4, [&](int64_t r0, int64_t r1) {
          std::vector<float> row((size_t)K);
          for (int64_t r = r0; r < r1; ++r) {
            w.row(r, row.data());
            for (int64_t t = 0; t < T; ++t) o[t * N + r] = dot(xs + t * K, row.data(), K);
          }
        });
        break;
      }
      case Op::RmsMatMul: {  // rms_norm as Op::RmsNorm computes it, then matmul as Op::MatMul
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        KILN_ASSIGN(TensorPtr nw, get(n->operand(1)));
        RowSource w;
        TensorPtr keep;
        KILN_TRY(rows_of(n->operand(2), w, keep));
        double eps = *n->float_attr("eps");
        int64_t T = x->rows(), K = x->cols(), N = w.rows;
        if (nw->elements() != K || w.cols != K)
          return where(fmt::format("x has {} columns, norm weight {} values, weight {} columns", K, nw->elements(), w.cols));
        std::vector<float> h((size_t)(T * K));
        for (int64_t r = 0; r < T; ++r) {
          const float* xr = x->f32.data() + r * K;
          double ss = 0;
          for (int64_t c = 0; c < K; ++c) ss += (double)xr[c] * xr[c];
          float scale = (float)(1.0 / std::sqrt(ss / (double)K + eps));
          for (int64_t c = 0; c < K; ++c) h[r * K + c] = xr[c] * scale * nw->f32[c];
        }
        out = std::make_shared<Tensor>(Tensor::f32_of({T, N}));
        float* o = out->f32.data();
        parallel_rows(N, T >= 4, [&](int64_t r0, int64_t r1) {
          std::vector<float> row((size_t)K);
          for (int64_t r = r0; r < r1; ++r) {
            w.row(r, row.data());
            for (int64_t t = 0; t < T; ++t) o[t * N + r] = dot(h.data() + t * K, row.data(), K);
          }
        });
        break;
      }
      case Op::MatMulSwiGlu: {  // silu(x @ Wg^T) * (x @ Wu^T), each as matmul and silu compute it
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        // The fused form with LoRA side paths adds each side's term, as add(matmul, lora) does.
        TensorPtr lg, lu;
        if (n->operands().size() == 11)
          for (int side = 0; side < 2; ++side) {
            std::array<TensorPtr, 6> v;
            const auto path = swiglu_side_path(n->operands(), side);
            for (size_t i = 0; i < v.size(); ++i) {
              KILN_ASSIGN(v[i], get(path[i]));
            }
            KILN_ASSIGN((side ? lu : lg), lora_side(*v[0], *v[1], *v[2], *v[3], *v[4], *v[5], where));
          }
        RowSource wg, wu;
        TensorPtr keep_g, keep_u;
        KILN_TRY(rows_of(n->operand(1), wg, keep_g));
        KILN_TRY(rows_of(n->operand(2), wu, keep_u));
        int64_t T = x->rows(), K = x->cols(), N = wg.rows;
        if (wg.cols != K || wu.cols != K || wu.rows != N)
          return where(fmt::format("x has {} columns, weights [{},{}] and [{},{}]", K, N, wg.cols, wu.rows, wu.cols));
        out = std::make_shared<Tensor>(Tensor::f32_of({T, N}));
        float* o = out->f32.data();
        const float* xs = x->f32.data();
        parallel_rows(N, T >= 4, [&](int64_t r0, int64_t r1) {
          std::vector<float> rg((size_t)K), ru((size_t)K);
          for (int64_t r = r0; r < r1; ++r) {
            wg.row(r, rg.data());
            wu.row(r, ru.data());
            for (int64_t t = 0; t < T; ++t) {
              float g = dot(xs + t * K, rg.data(), K), u = dot(xs + t * K, ru.data(), K);
              if (lg) g += lg->f32[t * N + r], u += lu->f32[t * N + r];
              float sg = (float)(g / (1.0 + std::exp(-(double)g)));
              o[t * N + r] = sg * u;
            }
          }
        });
        break;
      }
      case Op::Lora: {
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        KILN_ASSIGN(TensorPtr a, get(n->operand(1)));
        KILN_ASSIGN(TensorPtr b, get(n->operand(2)));
        KILN_ASSIGN(TensorPtr scale, get(n->operand(3)));
        KILN_ASSIGN(TensorPtr slots, get(n->operand(4)));
        KILN_ASSIGN(TensorPtr rank, get(n->operand(5)));
        KILN_ASSIGN(TensorPtr y, lora_side(*x, *a, *b, *scale, *slots, *rank, where));
        out = std::const_pointer_cast<Tensor>(y);
        break;
      }
      case Op::Add:
      case Op::Mul: {
        KILN_ASSIGN(TensorPtr a, get(n->operand(0)));
        KILN_ASSIGN(TensorPtr b, get(n->operand(1)));
        KILN_TRY(check_row_broadcast(*a, *b, op_name(n->op())));
        out = std::make_shared<Tensor>(Tensor::f32_of(a->shape));
        int64_t E = a->elements(), B = b->elements();
        bool add = n->op() == Op::Add;
        for (int64_t i = 0; i < E; ++i) {
          float bv = b->f32[B == E ? i : i % B];
          out->f32[i] = add ? a->f32[i] + bv : a->f32[i] * bv;
        }
        break;
      }
      case Op::Silu: {
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        out = std::make_shared<Tensor>(Tensor::f32_of(x->shape));
        for (int64_t i = 0; i < x->elements(); ++i) {
          float v = x->f32[i];
          out->f32[i] = (float)(v / (1.0 + std::exp(-(double)v)));
        }
        break;
      }
      case Op::Rope: {
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        KILN_ASSIGN(TensorPtr pos, get(n->operand(1)));
        int64_t hd = *n->int_attr("head_dim"), nrot = *n->int_attr("n_rot");
        double theta = *n->float_attr("theta");
        int64_t T = x->rows(), F = x->cols();
        KILN_TRY(same_rows(*pos, T, "positions", where));
        if (F % hd) return where(fmt::format("{} features are not whole heads of {}", F, hd));
        TensorPtr factors;
        if (n->operands().size() > 2) { KILN_ASSIGN(factors, get(n->operand(2))); }
        out = std::make_shared<Tensor>(*x);
        // GGUF LLaMA weights expect the "normal" rotation: adjacent pairs (2i, 2i+1) of each
        // head turn by pos * theta^(-2i/n_rot) (divided by factors[i] when given);
        // dimensions past n_rot pass through.
        for (int64_t t = 0; t < T; ++t) {
          double p = pos->i32[t];
          for (int64_t i = 0; i < nrot / 2; ++i) {
            double freq = std::pow(theta, -2.0 * (double)i / (double)nrot);
            if (factors) freq /= (double)factors->f32[(size_t)i];
            double ang = p * freq;
            double c = std::cos(ang), s = std::sin(ang);
            for (int64_t h = 0; h < F / hd; ++h) {
              float* v = out->f32.data() + t * F + h * hd + 2 * i;
              double x0 = v[0], x1 = v[1];
              v[0] = (float)(x0 * c - x1 * s);
              v[1] = (float)(x0 * s + x1 * c);
            }
          }
        }
        break;
      }
      case Op::LastRow: {
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        int64_t R = x->rows(), C = x->cols();
        if (R == 0) return where("no rows");
        out = std::make_shared<Tensor>(Tensor::f32_of({1, C}));
        std::copy(x->f32.begin() + (R - 1) * C, x->f32.begin() + R * C, out->f32.begin());
        break;
      }
      case Op::GatherRows: {
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        KILN_ASSIGN(TensorPtr rows, get(n->operand(1)));
        int64_t R = rows->elements(), T = x->rows(), C = x->cols();
        out = std::make_shared<Tensor>(Tensor::f32_of({R, C}));
        for (int64_t i = 0; i < R; ++i) {
          int32_t r = rows->i32[i];
          if (r < 0 || r >= T) return where(fmt::format("row {} is outside the {} rows of x", r, T));
          std::copy(x->f32.begin() + r * C, x->f32.begin() + (r + 1) * C, out->f32.begin() + i * C);
        }
        break;
      }
      case Op::KvWrite: {
        KILN_ASSIGN(TensorPtr cache_c, get(n->operand(0)));
        KILN_ASSIGN(TensorPtr x, get(n->operand(1)));
        KILN_ASSIGN(TensorPtr pos, get(n->operand(2)));
        // The cache is the persistent state buffer; writing it in place is the point.
        auto cache = std::const_pointer_cast<Tensor>(cache_c);
        KILN_ASSIGN(CacheView cv, cache_view(*cache, n->operands().size() > 3 ? get(n->operand(3)) : Result<TensorPtr>(TensorPtr()), *pos, x->rows(), where));
        if (x->cols() != cv.F)
          return where(fmt::format("x has {} columns, the cache {}", x->cols(), cv.F));
        KILN_ASSIGN(TreeShape tree, node_tree(n));
        KILN_ASSIGN(std::vector<int64_t> rows, kv_rows(tree, *pos, cv, x->rows(), where));
        // An f16 cache is kept in floats here, each value rounded to nearest-even half as
        // it is written (what the kernels store), so reads need no conversion.
        const bool half = n->operand(0)->type().dtype == DType::F16;
        for (int64_t t = 0; t < x->rows(); ++t) {
          int64_t p = rows[(size_t)t];
          float* dst = cache->f32.data() + cv.row(t, p);
          const float* src = x->f32.data() + t * cv.F;
          for (int64_t k = 0; k < cv.F; ++k) dst[k] = half ? fp16_to_f32(f32_to_fp16(src[k])) : src[k];
        }
        val[n] = cache;
        continue;
      }
      case Op::Attention: {
        KILN_ASSIGN(TensorPtr q, get(n->operand(0)));
        KILN_ASSIGN(TensorPtr kc, get(n->operand(1)));
        KILN_ASSIGN(TensorPtr vc, get(n->operand(2)));
        KILN_ASSIGN(TensorPtr pos, get(n->operand(3)));
        int64_t H = *n->int_attr("n_head"), KVH = *n->int_attr("n_kv_head");
        int64_t hd = *n->int_attr("head_dim");
        int64_t T = q->rows();
        KILN_ASSIGN(CacheView cv, cache_view(*kc, n->operands().size() > 4 ? get(n->operand(4)) : Result<TensorPtr>(TensorPtr()), *pos, T, where));
        if (q->cols() != H * hd || cv.F != KVH * hd)
          return where(fmt::format("q has {} columns and the cache {}; heads need {} and {}",
                                   q->cols(), cv.F, H * hd, KVH * hd));
        double scale = 1.0 / std::sqrt((double)hd);
        out = std::make_shared<Tensor>(Tensor::f32_of({T, H * hd}));
        KILN_ASSIGN(TreeShape tree, node_tree(n));
        KILN_ASSIGN(std::vector<int64_t> own, kv_rows(tree, *pos, cv, T, where));
        std::vector<int64_t> seen;  // the cache rows row t attends to, ascending
        for (int64_t t = 0; t < T; ++t) {
          seen.clear();
          if (tree.size()) {
            // Tree: the rows before the block, then the block rows of ancestors-or-self.
            int64_t j = t % tree.size(), base = own[(size_t)t] - j;
            for (int64_t r = 0; r < base; ++r) seen.push_back(r);
            for (int64_t i = 0; i <= j; ++i)
              if (tree.ancestors[(size_t)j] >> i & 1) seen.push_back(base + i);
          } else {
            // Causal: a query at position p sees rows 0..p of its stream's cache.
            for (int64_t r = 0; r <= own[(size_t)t]; ++r) seen.push_back(r);
          }
          int64_t base = cv.row(t, 0);  // row 0 of this row's stream
          std::vector<double> score(seen.size());
          for (int64_t h = 0; h < H; ++h) {
            int64_t kvh = h / (H / KVH);
            const float* qv = q->f32.data() + t * H * hd + h * hd;
            double mx = -INFINITY;
            for (size_t m = 0; m < seen.size(); ++m) {
              const float* kv = kc->f32.data() + base + seen[m] * cv.F + kvh * hd;
              double s = 0;
              for (int64_t d = 0; d < hd; ++d) s += (double)qv[d] * kv[d];
              score[m] = s * scale;
              mx = std::max(mx, score[m]);
            }
            double sum = 0;
            for (auto& sc : score) sum += (sc = std::exp(sc - mx));
            float* o = out->f32.data() + t * H * hd + h * hd;
            for (int64_t d = 0; d < hd; ++d) {
              double acc = 0;
              for (size_t m = 0; m < seen.size(); ++m)
                acc += score[m] * vc->f32[base + seen[m] * cv.F + kvh * hd + d];
              o[d] = (float)(acc / sum);
            }
          }
        }
        break;
      }
      case Op::Output: {
        KILN_ASSIGN(TensorPtr x, get(n->operand(0)));
        outputs[std::string(*n->str_attr("name"))] = *x;
        continue;
      }
    }
    val[n] = std::move(out);
    // Drop operands whose last use this was.
    for (Node* o : n->operands()) {
      auto lu = last_use.find(o);
      if (lu != last_use.end() && lu->second == idx && o->op() != Op::State &&
          o->op() != Op::KvWrite)
        val.erase(o);
    }
  }
  return outputs;
}

}  // namespace kiln

// ir/graph.cpp — the op table, types, graph editing, and the shape rules of every op.
#include "ir/graph.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include <fmt/format.h>

namespace kiln {

static const std::vector<OpInfo> kOps = {
#define KILN_OP(E, name, lo, hi, fx, doc) {Op::E, name, lo, hi, fx, doc},
#include "ir/ops.def"
};

const OpInfo& op_info(Op op) { return kOps[static_cast<size_t>(op)]; }
const std::vector<OpInfo>& all_ops() { return kOps; }

std::optional<Op> op_from_name(std::string_view name) {
  for (const auto& i : kOps)
    if (i.name == name) return i.op;
  return std::nullopt;
}

bool TensorType::is_static() const {
  return std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d >= 0; });
}

int64_t TensorType::elements() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string TensorType::str() const {
  std::string s = std::string(dtype_name(dtype)) + "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += shape[i] == kDynamic ? "?" : std::to_string(shape[i]);
  }
  return s + "]";
}

std::optional<int64_t> Node::int_attr(std::string_view key) const {
  auto it = attrs_.find(key);
  if (it == attrs_.end()) return std::nullopt;
  if (auto* i = std::get_if<int64_t>(&it->second)) return *i;
  return std::nullopt;
}

std::optional<double> Node::float_attr(std::string_view key) const {
  auto it = attrs_.find(key);
  if (it == attrs_.end()) return std::nullopt;
  if (auto* d = std::get_if<double>(&it->second)) return *d;
  if (auto* i = std::get_if<int64_t>(&it->second)) return (double)*i;
  return std::nullopt;
}

std::optional<std::string_view> Node::str_attr(std::string_view key) const {
  auto it = attrs_.find(key);
  if (it == attrs_.end()) return std::nullopt;
  if (auto* s = std::get_if<std::string>(&it->second)) return std::string_view(*s);
  return std::nullopt;
}

const DenseData* Node::dense_attr(std::string_view key) const {
  auto it = attrs_.find(key);
  if (it == attrs_.end()) return nullptr;
  return std::get_if<DenseData>(&it->second);
}

std::optional<int64_t> Graph::int_attr(std::string_view key) const {
  auto it = attrs_.find(key);
  if (it == attrs_.end()) return std::nullopt;
  if (auto* i = std::get_if<int64_t>(&it->second)) return *i;
  return std::nullopt;
}

Node* Graph::add(Op op, std::vector<Node*> operands, TensorType type,
                 std::map<std::string, Attr, std::less<>> attrs, std::string loc) {
  auto n = std::make_unique<Node>();
  n->op_ = op;
  n->operands_ = std::move(operands);
  n->type_ = std::move(type);
  n->attrs_ = std::move(attrs);
  n->loc_ = std::move(loc);
  n->id_ = next_id_++;
  nodes_.push_back(std::move(n));
  return nodes_.back().get();
}

Result<Node*> Graph::build(Op op, std::vector<Node*> operands,
                           std::map<std::string, Attr, std::less<>> attrs, std::string loc) {
  auto t = infer_type(op, operands, attrs);
  if (!t.ok())
    return make_error("{}{}: {}", op_name(op), loc.empty() ? "" : " at " + loc,
                      t.error().message);
  return add(op, std::move(operands), std::move(t).value(), std::move(attrs), std::move(loc));
}

Node* Graph::insert_before(Node* before, Op op, std::vector<Node*> operands, TensorType type,
                           std::map<std::string, Attr, std::less<>> attrs, std::string loc) {
  Node* n = add(op, std::move(operands), std::move(type), std::move(attrs), std::move(loc));
  auto owned = std::move(nodes_.back());
  nodes_.pop_back();
  auto it = std::find_if(nodes_.begin(), nodes_.end(),
                         [&](const std::unique_ptr<Node>& p) { return p.get() == before; });
  nodes_.insert(it, std::move(owned));
  return n;
}

std::vector<Node*> Graph::nodes() const {
  std::vector<Node*> out;
  out.reserve(nodes_.size());
  for (auto& n : nodes_) out.push_back(n.get());
  return out;
}

void Graph::replace_all_uses(Node* from, Node* to) {
  for (auto& n : nodes_)
    for (auto& o : n->operands_)
      if (o == from) o = to;
}

void Graph::erase_if(const std::function<bool(const Node*)>& dead) {
  nodes_.erase(std::remove_if(nodes_.begin(), nodes_.end(),
                              [&](const std::unique_ptr<Node>& n) { return dead(n.get()); }),
               nodes_.end());
}

std::map<const Node*, std::vector<Node*>> Graph::users() const {
  std::map<const Node*, std::vector<Node*>> u;
  for (auto& n : nodes_)
    for (Node* o : n->operands_) u[o].push_back(n.get());
  return u;
}

Node* Graph::find_input(std::string_view name) const {
  for (auto& n : nodes_)
    if ((n->op() == Op::Input || n->op() == Op::State) && n->str_attr("name") == name)
      return n.get();
  return nullptr;
}

Node* Graph::find_output(std::string_view name) const {
  for (auto& n : nodes_)
    if (n->op() == Op::Output && n->str_attr("name") == name) return n.get();
  return nullptr;
}

std::vector<Node*> Graph::nodes_of(Op op) const {
  std::vector<Node*> out;
  for (auto& n : nodes_)
    if (n->op() == op) out.push_back(n.get());
  return out;
}

// ---- shape rules ---------------------------------------------------------------------

namespace {

using Attrs = std::map<std::string, Attr, std::less<>>;

Result<int64_t> need_int(const Attrs& a, std::string_view key) {
  auto it = a.find(key);
  if (it == a.end()) return make_error("missing attribute '{}'", key);
  if (auto* i = std::get_if<int64_t>(&it->second)) return *i;
  return make_error("attribute '{}' must be an integer", key);
}

Status need_float(const Attrs& a, std::string_view key) {
  auto it = a.find(key);
  if (it == a.end()) return make_error("missing attribute '{}'", key);
  if (!std::holds_alternative<double>(it->second) && !std::holds_alternative<int64_t>(it->second))
    return make_error("attribute '{}' must be a number", key);
  return Status::success();
}

// A number attribute that must be finite and at least `lo` (above it when strict).
Status need_bounded(const Attrs& a, std::string_view key, double lo, bool strict) {
  KILN_TRY(need_float(a, key));
  const Attr& v = a.find(key)->second;
  const double d = std::holds_alternative<double>(v) ? std::get<double>(v) : (double)std::get<int64_t>(v);
  if (!std::isfinite(d) || d < lo || (strict && d == lo))
    return make_error("attribute '{}' = {} must be a finite number {} {}", key, d, strict ? ">" : ">=", lo);
  return Status::success();
}

Status need_string(const Attrs& a, std::string_view key) {
  auto it = a.find(key);
  if (it == a.end()) return make_error("missing attribute '{}'", key);
  if (!std::holds_alternative<std::string>(it->second))
    return make_error("attribute '{}' must be a string", key);
  return Status::success();
}

// Dimensions agree when equal or when either is dynamic.
bool dims_agree(int64_t a, int64_t b) { return a == b || a == kDynamic || b == kDynamic; }

Status need_rank(const Node* n, int64_t rank, std::string_view what) {
  if (n->type().rank() != rank)
    return make_error("{} must have rank {}, got {}", what, rank, n->type().str());
  return Status::success();
}

Status need_f32(const Node* n, std::string_view what) {
  if (n->type().dtype != DType::F32)
    return make_error("{} must be f32, got {}", what, n->type().str());
  return Status::success();
}

// Weights may be any float or quantized type; i32 data is never a weight.
Status need_weight_dtype(const Node* n, std::string_view what) {
  if (n->type().dtype == DType::I32)
    return make_error("{} must be a float or quantized tensor, got {}", what, n->type().str());
  return Status::success();
}

Status need_row_indices(const Node* idx, const Node* x, std::string_view what) {
  if (idx->type().dtype != DType::I32 || idx->type().rank() != 1)
    return make_error("{} must be i32[T], got {}", what, idx->type().str());
  if (x && !dims_agree(idx->type().shape[0], x->type().shape[0]))
    return make_error("{} {} do not match the {} rows of {}", what, idx->type().str(),
                      x->type().shape[0], x->type().str());
  return Status::success();
}

// A cache is [C,F] (one stream) or [S,C,F] with a streams[T] operand at `streams_at`.
Status need_cache(const std::vector<Node*>& o, size_t cache, size_t streams_at, const Node* rows) {
  const TensorType& t = o[cache]->type();
  if (t.dtype != DType::F32 && t.dtype != DType::F16)  // f16: half the bytes (kv-type)
    return make_error("the cache must be f32 or f16, got {}", t.str());
  bool has_streams = o.size() > streams_at;
  if (t.rank() != (has_streams ? 3 : 2))
    return make_error("the cache must be {} {}, got {}", has_streams ? "[S,C,F] with" : "[C,F] without",
                      "a streams operand", t.str());
  if (has_streams) KILN_TRY(need_row_indices(o[streams_at], rows, "streams"));
  return Status::success();
}

Status need_positions(const Node* pos, const Node* x) {
  if (pos->type().dtype != DType::I32 || pos->type().rank() != 1)
    return make_error("positions must be i32[T], got {}", pos->type().str());
  if (!dims_agree(pos->type().shape[0], x->type().shape[0]))
    return make_error("positions {} do not match the {} rows of {}", pos->type().str(),
                      x->type().shape[0], x->type().str());
  return Status::success();
}

Result<TensorType> elementwise(const std::vector<Node*>& o) {
  KILN_TRY(need_f32(o[0], "lhs"));
  KILN_TRY(need_f32(o[1], "rhs"));
  const auto& a = o[0]->type().shape;
  const auto& b = o[1]->type().shape;
  bool same = a.size() == b.size() &&
              std::equal(a.begin(), a.end(), b.begin(), dims_agree);
  bool row = a.size() == 2 && ((b.size() == 1 && dims_agree(b[0], a[1])) ||
                               (b.size() == 2 && b[0] == 1 && dims_agree(b[1], a[1])));
  if (!same && !row)
    return make_error("shapes {} and {} do not match (rhs may be equal or one row)",
                      o[0]->type().str(), o[1]->type().str());
  return o[0]->type();
}

}  // namespace

Result<TensorType> infer_type(Op op, const std::vector<Node*>& o, const Attrs& a) {
  const OpInfo& info = op_info(op);
  if ((int)o.size() < info.min_operands || (int)o.size() > info.max_operands) {
    if (info.min_operands == info.max_operands)
      return make_error("takes {} operands, got {}", info.min_operands, o.size());
    return make_error("takes {} to {} operands, got {}", info.min_operands, info.max_operands,
                      o.size());
  }
  for (size_t i = 0; i < o.size(); ++i)
    if (!o[i]) return make_error("operand {} is missing", i);

  switch (op) {
    case Op::Input:
    case Op::Weight:
    case Op::State:
    case Op::Constant:
      return make_error("leaf nodes have no inferred type; give one");
    case Op::Embed: {
      const auto& t = o[0]->type();
      KILN_TRY(need_rank(o[0], 2, "the embedding table"));
      KILN_TRY(need_weight_dtype(o[0], "the embedding table"));
      if (o[1]->type().dtype != DType::I32 || o[1]->type().rank() != 1)
        return make_error("tokens must be i32[T], got {}", o[1]->type().str());
      return TensorType{DType::F32, {o[1]->type().shape[0], t.shape[1]}};
    }
    case Op::RmsNorm: {
      KILN_TRY(need_bounded(a, "eps", 0.0, false));
      KILN_TRY(need_f32(o[0], "x"));
      KILN_TRY(need_rank(o[0], 2, "x"));
      KILN_TRY(need_weight_dtype(o[1], "the weight"));
      if (o[1]->type().rank() != 1 || !dims_agree(o[1]->type().shape[0], o[0]->type().shape[1]))
        return make_error("weight {} does not match the rows of {}", o[1]->type().str(),
                          o[0]->type().str());
      return o[0]->type();
    }
    case Op::MatMul: {
      KILN_TRY(need_f32(o[0], "x"));
      KILN_TRY(need_rank(o[0], 2, "x"));
      KILN_TRY(need_rank(o[1], 2, "the weight"));
      KILN_TRY(need_weight_dtype(o[1], "the weight"));
      const auto& x = o[0]->type().shape;
      const auto& w = o[1]->type().shape;
      if (!dims_agree(x[1], w[1]))
        return make_error("x {} has {} columns but the weight {} expects {}",
                          o[0]->type().str(), x[1], o[1]->type().str(), w[1]);
      return TensorType{DType::F32, {x[0], w[0]}};
    }
    case Op::RmsMatMul: {
      KILN_TRY(need_bounded(a, "eps", 0.0, false));
      KILN_TRY(need_f32(o[0], "x"));
      KILN_TRY(need_rank(o[0], 2, "x"));
      KILN_TRY(need_weight_dtype(o[1], "the norm weight"));
      KILN_TRY(need_rank(o[2], 2, "the weight"));
      KILN_TRY(need_weight_dtype(o[2], "the weight"));
      const auto& x = o[0]->type().shape;
      const auto& w = o[2]->type().shape;
      if (o[1]->type().rank() != 1 || !dims_agree(o[1]->type().shape[0], x[1]))
        return make_error("norm weight {} does not match the rows of {}", o[1]->type().str(), o[0]->type().str());
      if (!dims_agree(x[1], w[1]))
        return make_error("x {} has {} columns but the weight {} expects {}", o[0]->type().str(), x[1],
                          o[2]->type().str(), w[1]);
      return TensorType{DType::F32, {x[0], w[0]}};
    }
    case Op::MatMulSwiGlu: {
      KILN_TRY(need_f32(o[0], "x"));
      KILN_TRY(need_rank(o[0], 2, "x"));
      for (int i = 1; i <= 2; ++i) {
        KILN_TRY(need_rank(o[i], 2, i == 1 ? "the gate weight" : "the up weight"));
        KILN_TRY(need_weight_dtype(o[i], i == 1 ? "the gate weight" : "the up weight"));
      }
      if (o[1]->type() != o[2]->type())
        return make_error("gate {} and up {} weights differ", o[1]->type().str(), o[2]->type().str());
      const auto& x = o[0]->type().shape;
      const auto& w = o[1]->type().shape;
      if (!dims_agree(x[1], w[1]))
        return make_error("x {} has {} columns but the weights {} expect {}", o[0]->type().str(), x[1],
                          o[1]->type().str(), w[1]);
      if (o.size() != 3 && o.size() != 11)
        return make_error("takes 3 operands, or 11 with LoRA side paths, got {}", o.size());
      if (o.size() == 11)  // each side path as op lora checks it, giving the projection's shape
        for (int side = 0; side < 2; ++side) {
          const auto side_path = swiglu_side_path(o, side);
          KILN_ASSIGN(TensorType l, infer_type(Op::Lora, {side_path.begin(), side_path.end()}, {}));
          if (!dims_agree(l.shape[1], w[0]))
            return make_error("the {} side path gives {} columns, the weights {}", side ? "up" : "gate", l.shape[1],
                              w[0]);
        }
      return TensorType{DType::F32, {x[0], w[0]}};
    }
    case Op::Dequant:
      if (o[0]->op() != Op::Weight)
        return make_error("dequant reads a weight, got {}", op_name(o[0]->op()));
      KILN_TRY(need_rank(o[0], 2, "the weight"));
      KILN_TRY(need_weight_dtype(o[0], "the weight"));
      return TensorType{DType::F32, o[0]->type().shape};
    case Op::Lora: {
      KILN_TRY(need_f32(o[0], "x"));
      KILN_TRY(need_rank(o[0], 2, "x"));
      KILN_TRY(need_f32(o[1], "lora a"));
      KILN_TRY(need_rank(o[1], 3, "lora a ([K,R,in])"));
      KILN_TRY(need_f32(o[2], "lora b"));
      KILN_TRY(need_rank(o[2], 3, "lora b ([K,R,out])"));
      KILN_TRY(need_f32(o[3], "lora scale"));
      KILN_TRY(need_rank(o[3], 1, "lora scale ([K])"));
      KILN_TRY(need_row_indices(o[4], o[0], "adapter slots"));
      if (o[5]->type().dtype != DType::I32 || o[5]->type().rank() != 1)
        return make_error("lora rank must be i32[K], got {}", o[5]->type().str());
      const auto& x = o[0]->type().shape;
      const auto& A = o[1]->type().shape;
      const auto& B = o[2]->type().shape;
      const auto& s = o[3]->type().shape;
      if (!dims_agree(A[2], x[1]))
        return make_error("lora a {} must be [K,R,in] with in = the {} columns of x {}",
                          o[1]->type().str(), x[1], o[0]->type().str());
      if (!dims_agree(B[0], A[0]) || !dims_agree(s[0], A[0]) || !dims_agree(o[5]->type().shape[0], A[0]))
        return make_error("lora a {}, b {}, scale {} and rank {} must agree on the slot count K",
                          o[1]->type().str(), o[2]->type().str(), o[3]->type().str(), o[5]->type().str());
      if (!dims_agree(B[1], A[1]))
        return make_error("lora b {} must be [K,R,out] with R = {} as in a {}", o[2]->type().str(),
                          A[1], o[1]->type().str());
      return TensorType{DType::F32, {x[0], B[2]}};
    }
    case Op::Add:
    case Op::Mul:
      return elementwise(o);
    case Op::Silu:
      KILN_TRY(need_f32(o[0], "x"));
      return o[0]->type();
    case Op::Rope: {
      KILN_TRY(need_f32(o[0], "x"));
      KILN_TRY(need_rank(o[0], 2, "x"));
      KILN_TRY(need_positions(o[1], o[0]));
      KILN_ASSIGN(int64_t hd, need_int(a, "head_dim"));
      KILN_ASSIGN(int64_t nrot, need_int(a, "n_rot"));
      KILN_TRY(need_bounded(a, "theta", 0.0, true));
      int64_t f = o[0]->type().shape[1];
      if (hd <= 0 || (f != kDynamic && f % hd != 0))
        return make_error("head_dim {} does not divide the {} features", hd, f);
      if (nrot <= 0 || nrot > hd || nrot % 2)
        return make_error("n_rot {} must be even and in 1..head_dim ({})", nrot, hd);
      if (o.size() > 2 && (o[2]->type().dtype != DType::F32 || o[2]->type().shape != std::vector<int64_t>{nrot / 2}))
        return make_error("frequency factors must be f32[{}] (one per rotated pair), not {}", nrot / 2,
                          o[2]->type().str());
      return o[0]->type();
    }
    case Op::LastRow: {
      KILN_TRY(need_f32(o[0], "x"));
      KILN_TRY(need_rank(o[0], 2, "x"));
      return TensorType{o[0]->type().dtype, {1, o[0]->type().shape[1]}};
    }
    case Op::GatherRows: {
      KILN_TRY(need_f32(o[0], "x"));
      KILN_TRY(need_rank(o[0], 2, "x"));
      KILN_TRY(need_row_indices(o[1], nullptr, "rows"));
      return TensorType{DType::F32, {o[1]->type().shape[0], o[0]->type().shape[1]}};
    }
    case Op::KvWrite: {
      KILN_TRY(need_f32(o[1], "x"));
      KILN_TRY(need_rank(o[1], 2, "x"));
      KILN_TRY(need_positions(o[2], o[1]));
      KILN_TRY(need_cache(o, 0, 3, o[1]));
      if (!dims_agree(o[0]->type().shape.back(), o[1]->type().shape[1]))
        return make_error("x {} does not fit cache rows of {}", o[1]->type().str(),
                          o[0]->type().str());
      return o[0]->type();
    }
    case Op::Attention: {
      KILN_TRY(need_f32(o[0], "q"));
      KILN_TRY(need_rank(o[0], 2, "q"));
      KILN_TRY(need_cache(o, 1, 4, o[0]));
      KILN_TRY(need_cache(o, 2, 4, o[0]));
      KILN_TRY(need_positions(o[3], o[0]));
      KILN_ASSIGN(int64_t nh, need_int(a, "n_head"));
      KILN_ASSIGN(int64_t nkv, need_int(a, "n_kv_head"));
      KILN_ASSIGN(int64_t hd, need_int(a, "head_dim"));
      if (nh <= 0 || nkv <= 0 || hd <= 0 || nh % nkv)
        return make_error("n_head {} must be a positive multiple of n_kv_head {}", nh, nkv);
      if (!dims_agree(o[0]->type().shape[1], nh * hd))
        return make_error("q {} must have n_head*head_dim = {} columns", o[0]->type().str(),
                          nh * hd);
      for (int i = 1; i <= 2; ++i)
        if (!dims_agree(o[i]->type().shape.back(), nkv * hd))
          return make_error("cache {} must have n_kv_head*head_dim = {} columns",
                            o[i]->type().str(), nkv * hd);
      if (o[1]->type() != o[2]->type())
        return make_error("key cache {} and value cache {} differ", o[1]->type().str(),
                          o[2]->type().str());
      return o[0]->type();
    }
    case Op::Output:
      KILN_TRY(need_string(a, "name"));
      return o[0]->type();
  }
  return make_error("unknown op");
}

}  // namespace kiln

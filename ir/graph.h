// ir/graph.h — kiln's graph IR: typed values, nodes from the op table, and the graph.
//
// A Graph is a list of Nodes in a valid execution order. Each Node produces exactly one
// value (so a Node* is the value); its operands are earlier Nodes. Leaves (input,
// weight, constant, state) have no operands. A node carries a location: the GGUF tensor
// or layer it came from, so dumps and diagnostics point back at the model.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ir/dtype.h"
#include "support/result.h"

namespace kiln {

enum class Op : uint8_t {
#define KILN_OP(E, name, lo, hi, fx, doc) E,
#include "ir/ops.def"
};

struct OpInfo {
  Op op;
  std::string_view name;
  int min_operands;
  int max_operands;
  bool side_effects;
  std::string_view summary;
};
const OpInfo& op_info(Op op);
inline std::string_view op_name(Op op) { return op_info(op).name; }
std::optional<Op> op_from_name(std::string_view name);
// Every op, in table order (for --help texts and exhaustive tests).
const std::vector<OpInfo>& all_ops();

// A dimension of -1 is dynamic (printed `?`): the token count of a step.
constexpr int64_t kDynamic = -1;

struct TensorType {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;

  int64_t rank() const { return (int64_t)shape.size(); }
  bool is_static() const;
  int64_t elements() const;  // only for static shapes
  std::string str() const;   // "f32[?,576]"
  bool operator==(const TensorType&) const = default;
};

// Attribute values: integers, floats, strings, or dense data (constants).
struct DenseData {
  DType dtype = DType::F32;  // f32 or i32
  std::vector<float> f32;
  std::vector<int32_t> i32;
  bool operator==(const DenseData&) const = default;
};
using Attr = std::variant<int64_t, double, std::string, DenseData>;

class Node {
 public:
  Op op() const { return op_; }
  const TensorType& type() const { return type_; }
  void set_type(TensorType t) { type_ = std::move(t); }
  const std::vector<Node*>& operands() const { return operands_; }
  Node* operand(size_t i) const { return operands_[i]; }
  void set_operand(size_t i, Node* n) { operands_[i] = n; }
  const std::string& loc() const { return loc_; }
  void set_loc(std::string l) { loc_ = std::move(l); }
  // Where the node was written, for diagnostics on IR text ("g.kir:12 %q"); empty for
  // nodes a frontend or pass made. Not part of the IR: never printed.
  const std::string& src() const { return src_; }
  void set_src(std::string s) { src_ = std::move(s); }
  uint32_t id() const { return id_; }

  // Attributes, kept sorted by key so printing is deterministic.
  const std::map<std::string, Attr, std::less<>>& attrs() const { return attrs_; }
  void set_attr(std::string key, Attr v) { attrs_[std::move(key)] = std::move(v); }
  bool has_attr(std::string_view key) const { return attrs_.find(key) != attrs_.end(); }
  std::optional<int64_t> int_attr(std::string_view key) const;
  std::optional<double> float_attr(std::string_view key) const;  // ints convert
  std::optional<std::string_view> str_attr(std::string_view key) const;
  const DenseData* dense_attr(std::string_view key) const;

 private:
  friend class Graph;
  Op op_ = Op::Input;
  TensorType type_;
  std::vector<Node*> operands_;
  std::map<std::string, Attr, std::less<>> attrs_;
  std::string loc_;
  std::string src_;
  uint32_t id_ = 0;
};

class WeightSource;

class Graph {
 public:
  explicit Graph(std::string name = "main") : name_(std::move(name)) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  Graph(Graph&&) = default;
  Graph& operator=(Graph&&) = default;

  const std::string& name() const { return name_; }
  void set_name(std::string n) { name_ = std::move(n); }

  // Graph-wide attributes: compile limits (max_rows, max_threads) that passes read, and
  // results they record (arena_bytes, kv_stream_bytes). Printed in the graph header.
  using AttrMap = std::map<std::string, Attr, std::less<>>;
  const AttrMap& attrs() const { return attrs_; }
  void set_attr(std::string key, Attr v) { attrs_[std::move(key)] = std::move(v); }
  std::optional<int64_t> int_attr(std::string_view key) const;

  // Appends a node. Its type is given, or inferred from the operands when omitted.
  Node* add(Op op, std::vector<Node*> operands, TensorType type,
            std::map<std::string, Attr, std::less<>> attrs = {}, std::string loc = {});
  // Appends a node whose type is inferred; returns an Error if the operands do not fit.
  Result<Node*> build(Op op, std::vector<Node*> operands,
                      std::map<std::string, Attr, std::less<>> attrs = {}, std::string loc = {});
  // Inserts a node right before `before` (for rewrites that need a new value early).
  Node* insert_before(Node* before, Op op, std::vector<Node*> operands, TensorType type,
                      std::map<std::string, Attr, std::less<>> attrs = {}, std::string loc = {});

  // Nodes in execution order.
  std::vector<Node*> nodes() const;
  size_t size() const { return nodes_.size(); }
  // Rewrites every use of `from` to `to`.
  void replace_all_uses(Node* from, Node* to);
  // Removes nodes for which `dead` is true. They must have no remaining users.
  void erase_if(const std::function<bool(const Node*)>& dead);
  // Users of each node (computed on demand; invalidated by any change).
  std::map<const Node*, std::vector<Node*>> users() const;

  Node* find_input(std::string_view name) const;
  Node* find_output(std::string_view name) const;
  std::vector<Node*> nodes_of(Op op) const;

  // Where `weight` nodes get their bytes (a GGUF file, later a .kiln file).
  const std::shared_ptr<const WeightSource>& weights() const { return weights_; }
  void set_weights(std::shared_ptr<const WeightSource> w) { weights_ = std::move(w); }

 private:
  std::string name_;
  AttrMap attrs_;
  std::vector<std::unique_ptr<Node>> nodes_;
  uint32_t next_id_ = 0;
  std::shared_ptr<const WeightSource> weights_;
};

// Bytes of a named frozen tensor, in the dtype and shape its weight node declares.
struct WeightView {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // logical [rows, cols] order, as in TensorType
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual std::optional<WeightView> find(std::string_view name) const = 0;
  virtual std::string describe() const = 0;  // e.g. the file path, for messages
};

// Computes the result type of `op` on `operands` with `attrs`, or says what is wrong.
// matmul_swiglu's LoRA form (11 operands: x, Wg, Wu, ag, bg, au, bu, scale, slots,
// rank_g, rank_u; ir/ops.def): side 0 (gate) or 1 (up)'s side path as op lora takes its
// operands: x, a, b, scale, slots, rank. The one place that layout is read.
template <class T>
std::array<T, 6> swiglu_side_path(const std::vector<T>& o, int side) {
  return {o[0], o[3 + 2 * side], o[4 + 2 * side], o[7], o[8], o[9 + side]};
}

Result<TensorType> infer_type(Op op, const std::vector<Node*>& operands,
                              const std::map<std::string, Attr, std::less<>>& attrs);

}  // namespace kiln

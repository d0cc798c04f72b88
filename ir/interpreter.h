// ir/interpreter.h — the reference interpreter: runs any verified graph in float.
//
// It is deliberately plain: each op is a short loop nest over f32 (accumulating in
// double), quantized weights are dequantized row by row as they are read. It is the
// oracle every pass and every generated kernel is checked against, so clarity wins over
// speed; matmul rows are split over threads only because whole-model tests
// would otherwise take minutes.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir/graph.h"
#include "support/result.h"

namespace kiln {

// A concrete tensor: f32 or i32 data with a static shape.
struct Tensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<float> f32;
  std::vector<int32_t> i32;

  static Tensor f32_of(std::vector<int64_t> shape, std::vector<float> data = {});
  static Tensor i32_of(std::vector<int64_t> shape, std::vector<int32_t> data);
  int64_t elements() const;
  int64_t rows() const { return shape.empty() ? 1 : shape[0]; }
  int64_t cols() const { return shape.empty() ? 1 : elements() / rows(); }
};

class Interpreter {
 public:
  // The graph must outlive the interpreter and have passed verify().
  explicit Interpreter(const Graph& g);

  // Binds inputs by name, runs every node, returns outputs by name. Missing or
  // mis-shaped inputs and out-of-range tokens or positions are Errors.
  Result<std::map<std::string, Tensor>> run(const std::map<std::string, Tensor>& inputs);

  // Zeroes every state buffer (the KV cache), as for a new conversation.
  void reset_state();
  // Named state buffers (created on first run).
  const std::map<std::string, std::shared_ptr<Tensor>>& state() const { return state_; }
  // Uses the state buffers `other` has (call after its first run): two graphs
  // over one KV cache, as a step and a DS2D verify entry point share it.
  void share_state(const Interpreter& other) { state_ = other.state_; }

 private:
  const Graph& g_;
  std::map<std::string, std::shared_ptr<Tensor>> state_;
  std::map<const Node*, std::shared_ptr<const Tensor>> dequantized_;  // small weights only
};

// Dequantizes a whole weight node to f32 (for tests and constant folding).
Result<Tensor> load_weight(const Graph& g, const Node* weight);

}  // namespace kiln

// ir/overlay_weights.h — a WeightSource that replaces some tensors of another one.
//
// Passes that rewrite weight bytes (quantize-int4, pack-weights) keep their new tensors
// here and read every other tensor through to the source they wrap, so a pass never copies
// weights it does not change. Overlays stack: each pass wraps the graph's current source.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln {

class OverlayWeights final : public WeightSource {
 public:
  struct Tensor {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  OverlayWeights(std::shared_ptr<const WeightSource> base, std::string what)
      : base_(std::move(base)), what_(std::move(what)) {}
  std::optional<WeightView> find(std::string_view name) const override {
    if (auto it = own_.find(name); it != own_.end())
      return WeightView{it->second.dtype, it->second.shape, it->second.bytes.data(), it->second.bytes.size()};
    return base_->find(name);
  }
  std::string describe() const override { return base_->describe() + " (" + what_ + ")"; }

  bool has(std::string_view name) const { return own_.find(name) != own_.end(); }
  void set(std::string name, Tensor t) { own_[std::move(name)] = std::move(t); }
  bool empty() const { return own_.empty(); }

 private:
  std::shared_ptr<const WeightSource> base_;
  std::string what_;
  std::map<std::string, Tensor, std::less<>> own_;
};

}  // namespace kiln

// passes/freeze_base.h — the frozen weight blob that freeze-base builds.
#pragma once

#include <map>
#include <string>

#include "ir/graph.h"

namespace kiln {

// Every weight of the graph laid out in one 64-byte aligned blob, in graph order: the
// bytes model.kiln carries and compiled code addresses by offset.
class FrozenWeights final : public WeightSource {
 public:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t offset;
    uint64_t nbytes;
  };
  static constexpr uint64_t kAlign = 64;

  std::optional<WeightView> find(std::string_view name) const override;
  std::string describe() const override { return "the frozen weights of " + origin_; }

  const std::string& blob() const { return blob_; }
  const std::map<std::string, Entry, std::less<>>& entries() const { return entries_; }
  // Entries in blob order (for the tensor table in model.kiln).
  std::vector<std::pair<std::string, Entry>> ordered() const;

 private:
  friend class FreezeBasePass;
  std::string origin_;
  std::string blob_;
  std::map<std::string, Entry, std::less<>> entries_;
};

// Whether freeze-base has run: the weights are bytes of one blob at recorded offsets, so
// passes that rewrite weights (quantize-int4, pack-weights) must run before it.
inline bool is_frozen(const Graph& g) { return dynamic_cast<const FrozenWeights*>(g.weights().get()) != nullptr; }

}  // namespace kiln

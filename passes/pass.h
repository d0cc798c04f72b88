// passes/pass.h — the pass interface and the pass manager.
//
// A pass rewrites a Graph in place and reports whether it changed anything. Passes are
// registered by name in passes/registry.cpp (the one list of every pass), so text
// pipelines like `--passes=cse,dce` and `--print-after=NAME` come from one place.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ir/graph.h"
#include "support/result.h"

namespace kiln {

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string_view name() const = 0;
  // Returns true if the graph changed.
  virtual Result<bool> run(Graph& g) = 0;
};

struct PassInfo {
  std::string_view name;
  std::string_view summary;
  std::function<std::unique_ptr<Pass>()> create;
  // Its changes leave the values a step computes as they were (it changes weights' layout
  // or type, or attributes of existing nodes), so a memory plan made before it still holds.
  // Any other pass that changes a planned graph must be followed by plan-memory again.
  bool keeps_memory_plan = false;
};

// Every registered pass, in registry order.
const std::vector<PassInfo>& registered_passes();
const PassInfo* find_pass(std::string_view name);

struct PassManagerOptions {
  bool verify_each = false;                 // run the verifier after every pass
  bool print_after_all = false;             // dump the graph after every pass
  std::vector<std::string> print_after;     // dump after the named passes
  bool time_passes = false;                 // report per-pass wall time
  std::function<void(std::string_view)> out;  // where dumps and timings go (default stderr)
};

class PassManager {
 public:
  explicit PassManager(PassManagerOptions opts = {}) : opts_(std::move(opts)) {}

  void add(std::unique_ptr<Pass> p) { passes_.push_back(std::move(p)); }
  // Parses "a,b,c" against the registry; an unknown name is an error listing the known ones.
  Status add_pipeline(std::string_view text);
  Status run(Graph& g);
  size_t size() const { return passes_.size(); }
  bool has(std::string_view name) const;  // a pass of that name is in the pipeline
  std::string pipeline() const;           // the pass names, comma-separated

 private:
  PassManagerOptions opts_;
  std::vector<std::unique_ptr<Pass>> passes_;
};

}  // namespace kiln

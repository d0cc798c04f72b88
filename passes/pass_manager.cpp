// passes/pass_manager.cpp — runs passes in order with the dump/verify/timing options.
#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "ir/text.h"
#include "ir/verifier.h"
#include "passes/pass.h"

namespace kiln {

const PassInfo* find_pass(std::string_view name) {
  for (const auto& p : registered_passes())
    if (p.name == name) return &p;
  return nullptr;
}

Status PassManager::add_pipeline(std::string_view text) {
  size_t b = 0;
  while (b <= text.size()) {
    size_t e = text.find(',', b);
    if (e == std::string_view::npos) e = text.size();
    std::string_view name = text.substr(b, e - b);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (name.empty()) return make_error("empty pass name in the pass list '{}'", text);
    const PassInfo* p = find_pass(name);
    if (!p) {
      std::string known;
      for (const auto& q : registered_passes()) known += (known.empty() ? "" : ", ") + std::string(q.name);
      return make_error("unknown pass '{}' (known passes: {})", name, known);
    }
    add(p->create());
    b = e + 1;
  }
  return Status::success();
}

bool PassManager::has(std::string_view name) const {
  for (const auto& p : passes_)
    if (p->name() == name) return true;
  return false;
}

std::string PassManager::pipeline() const {
  std::string out;
  for (const auto& p : passes_) out += (out.empty() ? "" : ",") + std::string(p->name());
  return out;
}

Status PassManager::run(Graph& g) {
  auto out = opts_.out ? opts_.out : [](std::string_view s) { std::fwrite(s.data(), 1, s.size(), stderr); };
  std::vector<std::pair<std::string, double>> times;
  // A memory plan holds for the graph plan-memory saw. A later change to the values a step
  // computes (by any pass but those that keep the plan) leaves new values without offsets
  // and old ones sharing bytes that their new lifetimes overlap, so plan-memory must run
  // again after it; otherwise the pipeline fails here, not in codegen (or not at all). IR
  // text printed after plan-memory comes in planned (it has arena_bytes).
  bool planned = g.int_attr("arena_bytes").has_value();
  std::string stale_by;  // the pass that changed the planned graph, until plan-memory runs again
  for (auto& p : passes_) {
    auto t0 = std::chrono::steady_clock::now();
    auto changed = p->run(g);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!changed.ok()) return make_error("pass '{}': {}", p->name(), changed.error().message);
    const PassInfo* info = find_pass(p->name());
    if (p->name() == "plan-memory") {
      planned = true;
      stale_by.clear();
    } else if (planned && *changed && !(info && info->keeps_memory_plan) && stale_by.empty()) {
      stale_by = p->name();
    }
    times.emplace_back(std::string(p->name()), ms);
    if (opts_.verify_each) {
      Status s = verify(g);
      if (!s.ok()) return make_error("after pass '{}': {}", p->name(), s.error().message);
    }
    bool dump = opts_.print_after_all;
    for (auto& n : opts_.print_after) dump |= n == p->name();
    if (dump) out(fmt::format("// ----- IR after {}{} -----\n{}", p->name(), *changed ? "" : " (unchanged)", print_graph(g)));
  }
  if (!stale_by.empty())
    return make_error("pass '{}' changed the graph after plan-memory, whose memory plan then no longer holds: "
                      "run plan-memory again after it", stale_by);
  if (opts_.time_passes) {
    double total = 0;
    for (auto& [n, ms] : times) total += ms;
    std::string report = "===-- pass timing --===\n";
    for (auto& [n, ms] : times)
      report += fmt::format("  {:>10.3f} ms  {:>5.1f}%  {}\n", ms, total > 0 ? 100 * ms / total : 0.0, n);
    report += fmt::format("  {:>10.3f} ms  100.0%  total\n", total);
    out(report);
  }
  return Status::success();
}

}  // namespace kiln

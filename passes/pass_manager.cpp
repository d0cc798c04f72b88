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
  for (auto& p : passes_) {
    auto t0 = std::chrono::steady_clock::now();
    auto changed = p->run(g);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (!changed.ok()) return make_error("pass '{}': {}", p->name(), changed.error().message);
    times.emplace_back(std::string(p->name()), ms);
    if (opts_.verify_each) {
      Status s = verify(g);
      if (!s.ok()) return make_error("after pass '{}': {}", p->name(), s.error().message);
    }
    bool dump = opts_.print_after_all;
    for (auto& n : opts_.print_after) dump |= n == p->name();
    if (dump) out(fmt::format("// ----- IR after {}{} -----\n{}", p->name(), *changed ? "" : " (unchanged)", print_graph(g)));
  }
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

// bench/bench_util.h — timing helpers the benchmarks share.
//
// This machine is shared: its speed drifts over seconds. So the benches time the sides of
// a ratio back to back within each repetition and report the median of the repetitions'
// own ratios, never a ratio of two medians taken minutes apart.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace kiln::bench {

using clk = std::chrono::steady_clock;

inline double secs(clk::time_point a, clk::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// The upper median (the middle element of an odd count): one measured value, not a mean.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The multi-stream benches' prompt: 40 token ids spread over the vocabulary (the timings
// do not depend on which ids), and the style request of reply k: 14 tokens of its own,
// the length of `kiln run --style`'s request with the chat template's turn end.
inline std::vector<int32_t> bench_prompt() {
  std::vector<int32_t> p(40);
  for (size_t i = 0; i < p.size(); ++i) p[i] = 1000 + (int32_t)(i * 53 % 15000);
  return p;
}
constexpr int kStyleTokens = 14;
inline std::vector<int32_t> style_request(int k) {
  std::vector<int32_t> s;
  for (int i = 0; i < kStyleTokens; ++i) s.push_back(2000 + 97 * k + 31 * i);
  return s;
}

// Decode rates of S = 1..max streams, rates[S][i] in tokens/s over all streams, measured
// back to back in repetition i. Returns the JSON array of the benches' "decode_by_streams":
// per S the median total and per-stream rate, and the step cost against one stream (the
// median over repetitions of S * rate(1) / rate(S): what one step over S rows costs in
// single-stream steps).
inline std::string decode_by_streams_json(const std::vector<std::vector<double>>& rates, int max_streams) {
  std::string out = "[";
  for (int S = 1; S <= max_streams; ++S) {
    std::vector<double> cost;
    for (size_t i = 0; i < rates[S].size(); ++i) cost.push_back(S * rates[1][i] / rates[S][i]);
    const double total = median(rates[S]);
    out += fmt::format("{}{{\"streams\": {}, \"total_tok_s\": {:.2f}, \"per_stream_tok_s\": {:.2f}, "
                       "\"step_cost_vs_1_stream\": {:.3f}}}",
                       S > 1 ? ", " : "", S, total, total / S, median(cost));
  }
  return out + "]";
}

}  // namespace kiln::bench

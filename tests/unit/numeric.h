// tests/unit/numeric.h — random data and error measures shared by the numeric tests
// (ggml test-backend-ops style: normalized mean squared error against a reference).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace kiln::testing {

inline std::vector<float> random_floats(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v((size_t)n);
  for (auto& x : v) x = nd(rng);
  return v;
}

inline std::vector<int32_t> random_ints(std::mt19937& rng, int64_t n, int32_t lo, int32_t hi) {
  std::uniform_int_distribution<int32_t> ud(lo, hi);
  std::vector<int32_t> v((size_t)n);
  for (auto& x : v) x = ud(rng);
  return v;
}

// sum (got - ref)^2 / sum ref^2; infinite when the sizes differ.
inline double nmse(const std::vector<float>& got, const std::vector<float>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double err = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double d = (double)got[i] - (double)ref[i];
    err += d * d;
    norm += (double)ref[i] * ref[i];
  }
  return norm > 0 ? err / norm : err;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

}  // namespace kiln::testing

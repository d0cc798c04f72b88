// runtime/sampler.cpp — see sampler.h. Order of filters follows common practice:
// top-k, then softmax at temperature, then top-p (nucleus), then a seeded draw.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace kiln {

int32_t Sampler::argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = (int32_t)i;
  return best;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (p_.temperature <= 0.0f || logits.size() < 2) return argmax(logits);
  std::vector<int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  size_t k = idx.size();
  if (p_.top_k > 0 && (size_t)p_.top_k < k) k = (size_t)p_.top_k;
  std::partial_sort(idx.begin(), idx.begin() + (long)k, idx.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  idx.resize(k);
  std::vector<double> prob(k);
  double mx = logits[idx[0]], sum = 0;
  for (size_t i = 0; i < k; ++i) sum += prob[i] = std::exp((logits[idx[i]] - mx) / p_.temperature);
  for (auto& p : prob) p /= sum;
  if (p_.top_p < 1.0f) {
    double acc = 0;
    size_t keep = k;
    for (size_t i = 0; i < k; ++i) {
      acc += prob[i];
      if (acc >= p_.top_p) { keep = i + 1; break; }
    }
    prob.resize(keep);
    idx.resize(keep);
  }
  std::discrete_distribution<size_t> dist(prob.begin(), prob.end());
  return idx[dist(rng_)];
}

}  // namespace kiln

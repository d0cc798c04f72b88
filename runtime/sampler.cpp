// runtime/sampler.cpp — see sampler.h. Order of filters follows common practice:
// top-k, then softmax at temperature, then top-p (nucleus), then a seeded draw.
#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include <fmt/format.h>

namespace kiln {

// The first index of the largest logit. Two passes: the maximum in eight independent
// lanes (a loop the compiler vectorises), then the first index holding it. The one-pass
// loop compared against logits[best], a dependent load per element, and took ~3% of a
// greedy decode step on 49152 logits (per stream).
int32_t Sampler::argmax(std::span<const float> logits) {
  const size_t n = logits.size();
  if (n < 16) {
    int32_t best = 0;
    for (size_t i = 1; i < n; ++i)
      if (logits[i] > logits[(size_t)best]) best = (int32_t)i;
    return best;
  }
  float m[8];
  for (int l = 0; l < 8; ++l) m[l] = logits[(size_t)l];
  size_t i = 8;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) m[l] = logits[i + (size_t)l] > m[l] ? logits[i + (size_t)l] : m[l];
  float mx = m[0];
  for (int l = 1; l < 8; ++l) mx = m[l] > mx ? m[l] : mx;
  for (; i < n; ++i) mx = logits[i] > mx ? logits[i] : mx;
  for (size_t k = 0; k < n; ++k)
    if (logits[k] == mx) return (int32_t)k;
  return 0;  // reached only when the logits hold NaNs
}

// Checked on every row a token is chosen from, so one cheap pass first: lane sums (four
// floats at a time: GCC vector types, which -Os and every target compile to SIMD) are NaN
// or +inf when some logit is NaN or +inf (or when finite ones overflow the sum); only
// then an exact scan finds the first offending logit. Lane maxima tell whether any logit
// is above -inf. The scalar form of this loop took ~31 us per 49152 logits (~1.7% of a
// decode step at -Os, which does not vectorise it); this one ~6 us.
bool Sampler::usable(std::span<const float> logits, int64_t* bad) {
  typedef float f4 __attribute__((vector_size(16)));
  const size_t n = logits.size();
  f4 sum = {0, 0, 0, 0}, hi = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    f4 v;
    std::memcpy(&v, logits.data() + i, sizeof v);
    sum += v;
    hi = v > hi ? v : hi;
  }
  bool suspect = false;
  float mx = -INFINITY;
  for (int l = 0; l < 4; ++l) {
    suspect = suspect || !(sum[l] < INFINITY);
    mx = hi[l] > mx ? hi[l] : mx;
  }
  for (; i < n; ++i) {
    suspect = suspect || !(logits[i] < INFINITY);
    mx = logits[i] > mx ? logits[i] : mx;
  }
  *bad = -1;
  if (suspect)
    for (size_t k = 0; k < n; ++k)
      if (!(logits[k] < INFINITY)) {  // NaN or +inf
        *bad = (int64_t)k;
        return false;
      }
  return mx > -INFINITY;  // (an empty span: nothing to choose from)
}

std::string Sampler::unusable_reason(std::span<const float> logits, int64_t bad) {
  if (bad < 0) return "every logit is -inf";
  return fmt::format("logits[{}] is {} (a step whose values overflowed: an adapter or adapter scale too "
                     "large for the model, or corrupt weights)", bad, logits[(size_t)bad]);
}

void Sampler::distribution(std::span<const float> logits, TokenDistribution& out) const {
  out.ids.clear();
  out.probs.clear();
  if (greedy() || logits.size() < 2) {
    out.ids.push_back(argmax(logits));
    out.probs.push_back(1.0);
    return;
  }
  std::vector<int32_t>& idx = out.ids;
  idx.resize(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  size_t k = idx.size();
  if (p_.top_k > 0 && (size_t)p_.top_k < k) k = (size_t)p_.top_k;
  std::partial_sort(idx.begin(), idx.begin() + (long)k, idx.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  idx.resize(k);
  std::vector<double>& prob = out.probs;
  prob.resize(k);
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
}

int32_t Sampler::draw(const TokenDistribution& d) {
  if (d.ids.size() == 1) return d.ids[0];
  std::discrete_distribution<size_t> dist(d.probs.begin(), d.probs.end());
  return d.ids[dist(rng_)];
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (greedy() || logits.size() < 2) return argmax(logits);
  TokenDistribution d;
  distribution(logits, d);
  return draw(d);
}

}  // namespace kiln

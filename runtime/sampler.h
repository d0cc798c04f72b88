// runtime/sampler.h — token sampling: greedy, temperature, top-k, top-p, seeded.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace kiln {

struct SamplerParams {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  int32_t top_k = 40;        // 0 = no limit
  float top_p = 0.95f;       // 1 = no limit
  uint64_t seed = 0;
};

// The distribution a sampler draws from, sparse: ids[i] has probability probs[i] (sum 1).
struct TokenDistribution {
  std::vector<int32_t> ids;
  std::vector<double> probs;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams p) : p_(p), rng_(p.seed) {}
  // Picks a token from logits. Greedy ties resolve to the lowest id.
  int32_t sample(std::span<const float> logits);
  static int32_t argmax(std::span<const float> logits);
  // Whether tokens can be chosen from logits: no NaN, no +inf, not every value -inf (a
  // step whose values overflowed: an adapter or scale too large for the model, corrupt
  // weights). Otherwise false, and *bad is the first offending index (-1: all -inf).
  // argmax and sample() need usable logits: with NaNs neither means anything.
  static bool usable(std::span<const float> logits, int64_t* bad);
  // What is wrong with logits that are not usable (bad from usable()), for a message.
  static std::string unusable_reason(std::span<const float> logits, int64_t bad);

  bool greedy() const { return p_.temperature <= 0.0f; }
  // The distribution sample() draws from (top-k, temperature, top-p); for a greedy
  // sampler the argmax with probability 1. Speculative sampling works on it directly.
  void distribution(std::span<const float> logits, TokenDistribution& out) const;
  // A draw from d (probabilities need not be normalised; their sum must be > 0).
  int32_t draw(const TokenDistribution& d);
  // A uniform number in [0, 1) from this sampler's generator.
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
};

}  // namespace kiln

// runtime/sampler.h — token sampling: greedy, temperature, top-k, top-p, seeded.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace kiln {

struct SamplerParams {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  int32_t top_k = 40;        // 0 = no limit
  float top_p = 0.95f;       // 1 = no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams p) : p_(p), rng_(p.seed) {}
  // Picks a token from logits. Greedy ties resolve to the lowest id.
  int32_t sample(std::span<const float> logits);
  static int32_t argmax(std::span<const float> logits);

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
};

}  // namespace kiln

// support/hash.h — a fast, stable 64-bit hash for content identity (not cryptographic).
//
// Reads 8-byte words with a multiply-xorshift mix (the splitmix64 finalizer) and folds
// the tail and the length in, so every byte and the size matter. Stable across
// platforms (little-endian reads): kiln writes it into artifacts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace kiln {

class Hasher {
 public:
  explicit Hasher(uint64_t seed = 0x6b696c6e2d763031ull /* "kiln-v01" */) : h_(seed) {}

  Hasher& add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      mix(w);
    }
    uint64_t tail = 0;
    for (size_t k = 0; i + k < n; ++k) tail |= (uint64_t)p[i + k] << (8 * k);
    mix(tail ^ ((uint64_t)n << 56));
    len_ += n;
    return *this;
  }
  Hasher& add(std::string_view s) { return add(s.data(), s.size()); }
  Hasher& add_u64(uint64_t v) { return add(&v, 8); }

  uint64_t digest() const { return fmix(h_ ^ len_); }

 private:
  static uint64_t fmix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
  }
  void mix(uint64_t w) { h_ = fmix(h_ ^ (w + 0x9e3779b97f4a7c15ull)) * 5 + 0x52dce729; }

  uint64_t h_;
  uint64_t len_ = 0;
};

inline uint64_t hash64(const void* data, size_t n) { return Hasher().add(data, n).digest(); }

}  // namespace kiln

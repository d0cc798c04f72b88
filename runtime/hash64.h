// runtime/hash64.h — XXH64, the 64-bit checksum of model.kiln.
//
// This is Yann Collet's XXH64 (xxHash, BSD-2) written out from its specification
// (github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md): four 64-bit lanes each
// consume 8 bytes per 32-byte stripe (acc = rotl(acc + lane * P2, 31) * P1), the lanes are
// merged, the tail is folded in 8/4/1-byte steps and the result is avalanched. It is not
// cryptographic; it catches truncation and corruption (a random error goes unnoticed with
// probability 2^-64; tests/unit/runtime_test.cpp flips every bit of a small file) at
// memory speed: 16 GB/s on one core of the dev machine, so a 100 MB weight file costs
// ~7 ms; a phone core is a few times slower, still far below the cost of paging the file
// in. Reading is little-endian on every host, so the value is the same everywhere and
// equals the reference XXH64(data, len, seed) (`xxhsum -H1`).
//
// Header-only so that the writer (compiler side) and the reader (runtime) share it without
// one library pulling in the other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kiln {

namespace xxh64_detail {

inline constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
inline constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
inline constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
inline constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
inline constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

inline uint64_t read64(const uint8_t* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

inline uint32_t read32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

inline uint64_t round(uint64_t acc, uint64_t lane) { return rotl(acc + lane * kP2, 31) * kP1; }

inline uint64_t merge(uint64_t h, uint64_t v) { return (h ^ round(0, v)) * kP1 + kP4; }

}  // namespace xxh64_detail

// XXH64 of n bytes at data with the given seed (model.kiln uses seed 0).
inline uint64_t xxh64(const void* data, size_t n, uint64_t seed = 0) {
  using namespace xxh64_detail;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  const uint8_t* const end = p + n;
  uint64_t h;
  if (n >= 32) {
    uint64_t v1 = seed + kP1 + kP2, v2 = seed + kP2, v3 = seed, v4 = seed - kP1;
    const uint8_t* const limit = end - 32;
    do {
      v1 = round(v1, read64(p));
      v2 = round(v2, read64(p + 8));
      v3 = round(v3, read64(p + 16));
      v4 = round(v4, read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge(h, v1);
    h = merge(h, v2);
    h = merge(h, v3);
    h = merge(h, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<uint64_t>(n);
  for (; end - p >= 8; p += 8) h = rotl(h ^ round(0, read64(p)), 27) * kP1 + kP4;
  if (end - p >= 4) {
    h = rotl(h ^ (uint64_t(read32(p)) * kP1), 23) * kP2 + kP3;
    p += 4;
  }
  for (; p < end; ++p) h = rotl(h ^ (uint64_t(*p) * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

}  // namespace kiln

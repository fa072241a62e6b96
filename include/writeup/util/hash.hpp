#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace writeup {

// 64-bit FNV-1a, stable across builds and platforms (used for fingerprints and cache keys).
std::uint64_t fnv1a64(std::string_view bytes, std::uint64_t seed = 0xcbf29ce484222325ULL);

// SplitMix64 finaliser: a good, stable mixing of a 64-bit value.
std::uint64_t splitmix64(std::uint64_t x);

// Lower-case, zero-padded hex of a 64-bit value (16 characters).
std::string to_hex64(std::uint64_t value);

}  // namespace writeup

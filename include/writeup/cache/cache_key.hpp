#pragma once
// Cache keys: a SHA-256 of the canonical request, in a versioned key space.
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace writeup::cache {

// SHA-256 (FIPS 180-4) of `bytes`, as 64 lower-case hex characters.
std::string sha256_hex(std::string_view bytes);

// "writeup:v1:" + space + ":" + sha256_hex(canonical.dump()).
//
// `canonical` must hold every field that changes the response (model name and fingerprint,
// prompt, every sampling parameter after defaults are applied, seed, n, length, stop). The
// default nlohmann::json object keeps its keys sorted, so key order in the input does not
// matter, and dumps doubles in their shortest round-trip form, so 0.7 and 0.70 give the same
// key. Callers must therefore store every real-valued parameter as a double, even when it is
// integral: 1 (an integer) and 1.0 (a double) dump differently ("1" vs "1.0") and give
// different keys. `space` must be non-empty and must not contain ':' (else
// std::invalid_argument). A string that is not valid UTF-8 makes dump() throw
// nlohmann::json::type_error.
std::string cache_key(std::string_view space, const nlohmann::json& canonical);

}  // namespace writeup::cache

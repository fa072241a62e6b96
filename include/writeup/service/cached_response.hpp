#pragma once
// What the response cache keys on and what it stores.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "writeup/generate/generation.hpp"

namespace writeup::service {

// The cache key of a request: the API's key space ("writeup" or "openai": their outputs
// differ), the model's name and weights fingerprint, the prompt as sent and every generation
// parameter after defaults were applied (floats compared as the float the server uses, so
// 0.7 and 0.70 are one key), seed, n, stop strings and logit_bias. "" when `fingerprint` is empty (model
// not loaded: nothing is cached).
std::string response_cache_key(std::string_view space, const std::string& model, const std::string& fingerprint,
                               const std::string& prompt, const generate::GenerationRequest& request);

// A completed generation as stored: versioned JSON of every sequence's text, tokens and
// finish reason.
std::string encode_results(const std::vector<generate::GeneratedSequence>& results);
// nullopt when `value` is not what encode_results() writes for `n` sequences.
std::optional<std::vector<generate::GeneratedSequence>> decode_results(std::string_view value, int n);

// Only complete generations are cached: none cancelled.
bool cacheable(const std::vector<generate::GeneratedSequence>& results);

}  // namespace writeup::service

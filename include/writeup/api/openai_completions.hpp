#pragma once
// OpenAI-compatible POST /v1/completions.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "writeup/generate/generation.hpp"
#include "writeup/generate/sampling_params.hpp"

namespace writeup::api {

struct CompletionRequest {
  std::string model;                       // "" = the configured default
  std::string prompt;                      // a string (or an array of exactly one string)
  int max_tokens = 16;                     // 1 .. limits.max_length
  float temperature = 1.0f;                // 0 .. 2, 0 = greedy
  float top_p = 1.0f;                      // 0 .. 1
  int top_k = 0;                           // extension: 0 = off
  int n = 1;                               // 1 .. limits.max_batch_size
  bool stream = false;                     // SSE chunks, then data: [DONE]
  std::vector<std::string> stop;           // up to 4 strings
  std::optional<std::uint64_t> seed;       // else the configured default seed
  float presence_penalty = 0.0f;           // -2 .. 2
  float frequency_penalty = 0.0f;          // -2 .. 2
  float repetition_penalty = 1.0f;         // extension: 0.01 .. 10, 1 = off
  bool echo = false;                       // prepend the prompt to each text
  std::string user;                        // accepted and ignored
};

struct CompletionLimits {
  int max_batch_size = 10;
  int max_length = 256;
};

// Throws ApiError (400, param = field) for bad or unknown fields.
CompletionRequest parse_completion_request(const nlohmann::json& body, const CompletionLimits& limits);
generate::SamplingParams to_sampling_params(const CompletionRequest& request, std::uint64_t seed);

// The whole response (non-streaming).
nlohmann::json make_completion(const std::string& id, std::int64_t created, const std::string& model,
                               const CompletionRequest& request,
                               const std::vector<generate::GeneratedSequence>& results,
                               int prompt_tokens);
// One SSE chunk for choice `index`: its new text, and finish_reason once it ends.
nlohmann::json make_completion_chunk(const std::string& id, std::int64_t created, const std::string& model,
                                     int index, const std::string& text,
                                     const std::optional<std::string>& finish_reason);

}  // namespace writeup::api

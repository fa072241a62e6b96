#pragma once
// OpenAI-compatible POST /v1/completions: the request's fields and the answer's JSON.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "writeup/generate/generation.hpp"
#include "writeup/generate/sampling_params.hpp"

namespace writeup::api {

// Prompts one request may carry (a list of strings or of token-id lists): each is its own
// generation. LangChain sends up to 20 per request by default.
inline constexpr int kMaxPrompts = 32;

// One prompt of a prompt array: text, or token ids (checked against the model's vocabulary by
// CompletionService::prepare_all).
struct CompletionPrompt {
  std::string text;
  std::vector<int> tokens;
  bool is_tokens = false;
};

struct CompletionRequest {
  std::string model;                       // "" = the configured default
  std::string prompt;                      // a string (or an array of exactly one string)
  std::vector<CompletionPrompt> prompts;   // the array forms; when empty, `prompt` is the one prompt
  int max_tokens = 16;                     // 1 .. limits.max_length
  float temperature = 1.0f;                // 0 .. 2, 0 = greedy
  float top_p = 1.0f;                      // 0 .. 1
  int top_k = 0;                           // extension: 0 = off
  int n = 1;                               // 1 .. limits.max_batch_size
  int best_of = 0;                         // 0 = n; else n .. limits.max_batch_size candidates
  bool stream = false;                     // SSE chunks, then data: [DONE]
  bool include_usage = false;              // stream_options.include_usage (stream only)
  std::vector<std::string> stop;           // up to 4 strings
  std::optional<std::uint64_t> seed;       // else a fresh seed (or the default when greedy)
  float presence_penalty = 0.0f;           // -2 .. 2
  float frequency_penalty = 0.0f;          // -2 .. 2
  float repetition_penalty = 1.0f;         // extension: 0.01 .. 10, 1 = off
  std::optional<int> logprobs;             // 0 .. 5: the legacy logprobs object
  std::vector<std::pair<int, float>> logit_bias;  // sorted by token id; ids checked by prepare_all
  bool echo = false;                       // prepend the prompt to each text
  std::string user;                        // accepted and ignored

  int candidates() const { return best_of > n ? best_of : n; }
  bool ranks_best_of() const { return best_of > n; }
};

// Every prompt of a request: `prompts`, or `prompt` alone.
std::vector<CompletionPrompt> prompt_list(const CompletionRequest& request);

struct CompletionLimits {
  int max_batch_size = 10;
  int max_length = 256;
};

// Throws ApiError (400, param = field) for bad or unknown fields.
CompletionRequest parse_completion_request(const nlohmann::json& body, const CompletionLimits& limits);
generate::SamplingParams to_sampling_params(const CompletionRequest& request, std::uint64_t seed);

// best_of: the indexes of the `n` sequences with the highest mean token logprob (over the
// tokens of their text), best first; sequences without a token rank last; ties keep order.
std::vector<int> best_of_order(const std::vector<generate::GeneratedSequence>& candidates, int n);

// The whole response (non-streaming), one prompt (kept for single-prompt callers).
nlohmann::json make_completion(const std::string& id, std::int64_t created, const std::string& model,
                               const CompletionRequest& request,
                               const std::vector<generate::GeneratedSequence>& results,
                               int prompt_tokens);
// One SSE chunk for choice `index`: its new text, and finish_reason once it ends.
nlohmann::json make_completion_chunk(const std::string& id, std::int64_t created, const std::string& model,
                                     int index, const std::string& text,
                                     const std::optional<std::string>& finish_reason);

// Building blocks of answers with several prompts, logprobs and usage chunks.
nlohmann::json make_choice(const std::string& text, int index, nlohmann::json logprobs,
                           const std::optional<std::string>& finish_reason);
nlohmann::json make_usage(int prompt_tokens, int completion_tokens);
// {id, object, created, model, choices} and, when `usage` is not discarded, "usage".
nlohmann::json make_completion_object(const std::string& id, std::int64_t created, const std::string& model,
                                      nlohmann::json choices,
                                      nlohmann::json usage = nlohmann::json(nlohmann::json::value_t::discarded));

}  // namespace writeup::api

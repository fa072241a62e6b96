#pragma once
// What a request asks of the engine, and what the service makes of its outputs.
#include <string>
#include <utility>
#include <vector>

#include "writeup/generate/sampling_params.hpp"

namespace writeup::generate {

struct GenerationRequest {
  std::vector<int> prompt;  // token ids, at least one
  SamplingParams params;    // max_tokens, sampling, stop strings, seed
  int n = 1;                // independent sequences sharing the prompt
  int logprobs = 0;         // alternatives reported with each token, 0..5 (engine::kMaxTopLogprobs)
  // Also report the log-probability of every prompt token after the first (and `logprobs`
  // alternatives at each position), once, before the first token: OpenAI's echo + logprobs.
  bool prompt_logprobs = false;
};

// A token's log-probability under the model (natural log) and the most likely tokens at its
// position.
struct TokenLogprob {
  int token = -1;
  float logprob = 0;
  std::vector<std::pair<int, float>> top;  // (token, logprob), most likely first; empty unless asked
};

struct GeneratedSequence {
  std::vector<int> tokens;    // new tokens (EOS excluded)
  std::string text;           // their text, cut before a stop string
  std::string finish_reason;  // "stop" (EOS or stop string), "length" or "cancelled"
  // When the request asked for logprobs (GenerationRequest::logprobs > 0 or an OpenAI logprobs
  // of 0): one per token of `tokens`. Not kept by the response cache (such requests are not
  // cached).
  std::vector<TokenLogprob> logprobs;
  // When GenerationRequest::prompt_logprobs: prompt tokens 1..T-1 (the first has none), the
  // same on every sequence.
  std::vector<TokenLogprob> prompt_logprobs;
};

}  // namespace writeup::generate

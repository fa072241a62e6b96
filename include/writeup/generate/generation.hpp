#pragma once
// What a request asks of the engine, and what the service makes of its outputs.
#include <string>
#include <vector>

#include "writeup/generate/sampling_params.hpp"

namespace writeup::generate {

struct GenerationRequest {
  std::vector<int> prompt;  // token ids, at least one
  SamplingParams params;    // max_tokens, sampling, stop strings, seed
  int n = 1;                // independent sequences sharing the prompt
  int logprobs = 0;         // alternatives reported with each token, 0..5 (engine::kMaxTopLogprobs)
};

struct GeneratedSequence {
  std::vector<int> tokens;    // new tokens (EOS excluded)
  std::string text;           // their text, cut before a stop string
  std::string finish_reason;  // "stop" (EOS or stop string), "length" or "cancelled"
};

}  // namespace writeup::generate

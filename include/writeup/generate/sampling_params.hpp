#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace writeup::generate {

// How to pick each next token. Order of application: logit_bias -> repetition/presence/frequency
// penalties -> temperature -> top-k -> top-p -> multinomial draw.
struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy (argmax); otherwise > 0
  int top_k = 0;                    // keep the k most likely tokens; 0 = off
  float top_p = 1.0f;               // keep the smallest set reaching this mass; 1 = off
  float repetition_penalty = 1.0f;  // CTRL/HF style over prompt + output; 1 = off
  float presence_penalty = 0.0f;    // OpenAI style: minus this once a token was generated
  float frequency_penalty = 0.0f;   // OpenAI style: minus this per time a token was generated
  int max_tokens = 16;              // new tokens at most
  std::vector<std::string> stop;    // stop strings (not included in the text)
  std::uint64_t seed = 42;          // sequence i draws from a generator seeded by (seed, i)
  // OpenAI's logit_bias: (token id, -100..100) added to that token's logit before anything else
  // (reported logprobs include it); sorted by token id, each id once. Empty = none.
  std::vector<std::pair<int, float>> logit_bias;

  // Throws std::invalid_argument naming the field when a value is out of range.
  void validate() const;
  bool greedy() const { return temperature == 0.0f; }
};

}  // namespace writeup::generate

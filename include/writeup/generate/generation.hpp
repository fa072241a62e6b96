#pragma once
#include <functional>
#include <string>
#include <vector>

#include "writeup/generate/sampling_params.hpp"

namespace writeup::model {
class GPT2Model;
}
namespace writeup::text {
class BpeTokenizer;
}

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

// Called after each new token of sequence `index` with the text it completed (may be empty).
using TokenCallback = std::function<void(int index, int token, const std::string& text)>;

// Appends `piece` to `text`; when a stop string now occurs, cuts `text` before it and returns
// true. Only the new text and the stop string's length before it are searched.
bool append_until_stop(std::string& text, const std::string& piece, const std::vector<std::string>& stops);

// Asked before every forward step; true ends the unfinished sequences as "cancelled".
using StopCheck = std::function<bool()>;

// Runs one request to completion on `model`: one prefill shared by the n sequences, then
// batched decode steps. Throws std::invalid_argument when the prompt is empty or prompt +
// max_tokens exceeds the context.
std::vector<GeneratedSequence> generate(const model::GPT2Model& model,
                                        const text::BpeTokenizer& tokenizer,
                                        const GenerationRequest& request,
                                        const TokenCallback& on_token = {},
                                        const StopCheck& should_stop = {});

}  // namespace writeup::generate

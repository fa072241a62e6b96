#pragma once
// What the engine reports: typed, per sequence and step. No text, no JSON, no HTTP status is
// made on the engine thread; the service's output processor turns these into texts.
#include <array>
#include <cstdint>

namespace writeup::engine {

// Why a sequence ended.
enum class FinishReason : std::uint8_t {
  none,       // it goes on
  length,     // max_tokens reached (the output's token is the last one)
  stop,       // the output processor found a stop string (Job::stop): no token
  eos,        // the model chose EOS (the output's token is EOS: not part of the text)
  cancelled,  // its request was cancelled (Job::cancel): no token
  error,      // its request failed: see JobSink::on_error
};
const char* to_string(FinishReason reason);

// Why a request failed.
enum class ErrorKind : std::uint8_t {
  out_of_memory,  // the device ran out of memory for this request even on its own
  invalid,        // the request cannot run on this model (too long, too many sequences, bad ids)
  timeout,        // its deadline passed before it finished
  shutdown,       // the server is stopping
  unavailable,    // the model could not be loaded on this worker (its weights are missing, say)
  internal,       // a bug, or the device failed: never the client's fault
};
const char* to_string(ErrorKind kind);

constexpr int kMaxTopLogprobs = 5;

struct Logprob {
  int token = -1;
  float logprob = 0;  // natural log
};

// One sequence's step: a new token and/or its end. Log-probabilities are the model's: the
// log-softmax of its logits over the tokenizer's ids, before penalties, temperature, top-k
// and top-p.
struct TokenOutput {
  int index = 0;         // the sequence within its request, 0..n-1
  int token = -1;        // the new token; -1 when the sequence ended without one (stop, cancelled)
  float logprob = 0;     // of `token`
  std::uint8_t n_top = 0;                   // alternatives in `top` (GenerationRequest::logprobs)
  std::array<Logprob, kMaxTopLogprobs> top{};  // the most likely tokens, most likely first
  FinishReason finish = FinishReason::none;
};

}  // namespace writeup::engine

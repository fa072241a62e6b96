#pragma once
// The server's engine for one process and one request at a time: what the command-line tools
// (writeup-generate, writeup-bench) and scripts/gpu-check.sh run, so that they exercise the same
// worker, scheduler, model runner and output processor as writeup-server.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "writeup/engine/output.hpp"
#include "writeup/engine/worker.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/service/output_processor.hpp"

namespace writeup::text {
class BpeTokenizer;
}

namespace writeup::service {

struct LocalEngineOptions {
  std::string path;                 // model directory
  model::LoadOptions load;          // device, dtype, packed kernels
  int slots = 1;                    // KV-cache slots: the largest n to run
  int prefill_chunk = 128;          // prompt tokens per step
};

// A worker (loaded when the constructor returns) and the model's tokenizer.
class LocalEngine {
 public:
  // Loads the tokenizer and the weights; throws std::runtime_error with the load error.
  explicit LocalEngine(LocalEngineOptions options);
  ~LocalEngine();

  struct Result {
    std::vector<generate::GeneratedSequence> sequences;
    std::vector<std::vector<generate::TokenLogprob>> logprobs;  // per sequence, per token of its text
  };
  // Runs `request` to its end. `on_output` (optional) sees every typed output on the engine's
  // thread as it comes (for timing); the texts are built by an OutputProcessor. Throws
  // std::invalid_argument when the engine refuses the request as invalid (too long, too many
  // sequences), std::runtime_error naming the error kind for any other failure.
  Result run(generate::GenerationRequest request,
             std::function<void(const engine::TokenOutput&)> on_output = {});

  engine::Worker& worker() { return *worker_; }
  const text::BpeTokenizer& tokenizer() const { return *tokenizer_; }
  std::shared_ptr<const text::BpeTokenizer> shared_tokenizer() const { return tokenizer_; }

 private:
  std::shared_ptr<const text::BpeTokenizer> tokenizer_;
  std::unique_ptr<engine::Worker> worker_;
};

}  // namespace writeup::service

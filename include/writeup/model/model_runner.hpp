#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <span>

#include "writeup/model/forward_step.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/kv_cache.hpp"
#include "writeup/model/sequence_chunk.hpp"

namespace writeup::model {

struct RunnerOptions {
  int slots = 1;             // KV-cache slots: sequences held at once
  int max_tokens = 0;        // positions per slot; 0 = the model's context
  int max_step_tokens = 0;   // tokens one step may carry (decode rows + prefill chunks); 0 = slots + 128
  bool generic = false;      // CPU: run the generic (device) path instead of the packed kernels (tests)
};

// One worker's model runner: the shared weights (one copy per device), this worker's KV cache,
// and the persistent step buffers (ForwardStep: token ids, positions, slots, lengths, wanted rows
// and, on CUDA, the pinned logits and the worker's stream). Runs on one thread (the worker's).
class ModelRunner {
 public:
  ModelRunner(std::shared_ptr<const GPT2Model> model, RunnerOptions options);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  // Appends each chunk's tokens to its slot's keys/values and returns float32 logits [chunks, V]
  // of each chunk's last token, on the CPU. The logits' memory may be the runner's: valid until
  // the next call. Throws std::invalid_argument when a chunk is out of range (slot, context,
  // token id) or the step carries more than max_step_tokens; c10::OutOfMemoryError when the
  // device has no room (the writes are idempotent: running the chunks again, or in parts, gives
  // the same results).
  at::Tensor step(std::span<const SequenceChunk> chunks);
  // After a step whose chunk `chunk` (its index in that step) had keep_hidden: the
  // log-probabilities of `targets` at its positions first, first + 1, ... over the first
  // `vocab` logits, `bias` added, and the `top` most likely tokens (ForwardStep::score: the LM
  // head in slices of ForwardStep::kScoreRows positions).
  PositionScores score(std::size_t chunk, std::int64_t first, std::span<const int> targets, int vocab,
                       std::span<const std::pair<int, float>> bias, int top);
  // Copies the first `tokens` positions of slot `from` into slot `to` (a prompt shared by n
  // sequences).
  void copy_prefix(int from, int to, int tokens);

  const GPT2Model& model() const { return *model_; }
  int slots() const { return options_.slots; }
  int max_tokens() const;
  int max_step_tokens() const { return options_.max_step_tokens; }
  // False when the generic path runs (any device, or RunnerOptions::generic on the CPU).
  bool packed() const { return step_->packed(); }
  std::size_t kv_cache_bytes() const;

 private:
  std::shared_ptr<const GPT2Model> model_;
  RunnerOptions options_;
  KVCache cache_;
  std::unique_ptr<ForwardStep> step_;  // declared after cache_: destroyed (and synchronised) first
};

}  // namespace writeup::model

#pragma once
// Runs the Scheduler's step plans on a model: the forward pass (ModelRunner), a request's
// logit_bias added to its logits rows, sampling (one generate::Sampler per sequence, in
// parallel), each token's log-probability and its top alternatives, and the prompt logprobs
// of the chunks that kept their hidden states (ModelRunner::score), handed to the scheduler
// once with the prompt's last chunk. The worker's thread only.
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "writeup/engine/scheduler.hpp"
#include "writeup/generate/generation.hpp"

namespace at {
class Tensor;
}
namespace writeup::metrics {
class Counter;
class Histogram;
}  // namespace writeup::metrics
namespace writeup::model {
class GPT2Model;
class ModelRunner;
}  // namespace writeup::model
namespace writeup::text {
class BpeTokenizer;
}
namespace writeup::generate {
class Sampler;
}

namespace writeup::engine {

struct ExecutorHooks {
  metrics::Counter* tokens_total = nullptr;           // optional
  metrics::Counter* oom_total = nullptr;              // optional
  metrics::Histogram* first_token_seconds = nullptr;  // optional
  metrics::Histogram* token_seconds = nullptr;        // optional
  std::function<void(long step, const std::vector<model::SequenceChunk>& chunks)> before_forward;
};

// The token ids sampling draws from: the tokenizer's. A model with fewer rows than the
// tokenizer has ids cannot serve it (std::invalid_argument naming both sizes); a padded one
// (e.g. 50304 rows for 50257 ids) is served with the padding logits never sampled.
int sampled_vocab(const model::GPT2Model& model, const text::BpeTokenizer& tokenizer);

// Bytes of KV cache one slot takes (keys and values of every layer for a whole context).
std::size_t kv_slot_bytes(const model::GPT2Model& model);

class StepExecutor {
 public:
  using Clock = std::chrono::steady_clock;

  // A runner of `slots` KV-cache slots whose steps carry up to slots + prefill_chunk tokens.
  StepExecutor(std::shared_ptr<const model::GPT2Model> model, int slots, int prefill_chunk, int vocab,
               ExecutorHooks hooks);
  ~StepExecutor();

  // The samplers of a new request. Throws std::invalid_argument when its sampling parameters
  // are out of range.
  void add(RequestId id, const generate::GenerationRequest& request, Clock::time_point submitted);
  void remove(RequestId id);

  // Does the plan's prefix copies, runs its rows and feeds the sampled tokens to `scheduler`
  // (complete). Out of memory: the rows run again in the halves the scheduler cuts; an error
  // confined to some rows (a bad row, a sampler that throws) fails their request only.
  // Throws only what is_device_failure() calls a device failure, or on a bug.
  void execute(Scheduler& scheduler, const StepPlan& plan);
  // A one-token forward pass in `slot`, for a worker whose device failed. Throws what the
  // forward pass throws.
  void probe(int slot);

  std::size_t kv_cache_bytes() const;

 private:
  struct Entry;
  void run(Scheduler& scheduler, std::vector<PlannedRow> rows);
  void score_prompts(Scheduler& scheduler, const std::vector<PlannedRow>& rows);
  void sample(Scheduler& scheduler, const std::vector<PlannedRow>& rows, const at::Tensor& logits);

  std::shared_ptr<const model::GPT2Model> model_;
  std::unique_ptr<model::ModelRunner> runner_;
  int vocab_ = 0;
  ExecutorHooks hooks_;
  std::unordered_map<RequestId, std::unique_ptr<Entry>> entries_;
  long steps_ = 0;
};

}  // namespace writeup::engine

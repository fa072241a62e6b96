#pragma once
#include <functional>
#include <list>
#include <memory>
#include <vector>

#include "writeup/engine/job.hpp"
#include "writeup/model/gpt2_model.hpp"

namespace writeup::metrics {
class Counter;
class Histogram;
}  // namespace writeup::metrics
namespace writeup::text {
class BpeTokenizer;
}

namespace writeup::engine {

struct BatcherOptions {
  int slots = 10;                  // sequences decoded together (KV-cache slots)
  // KV-cache memory for this batcher; 0 = auto (a quarter of the memory available at load on
  // CPU; on CUDA the configured slots). Every slot holds the model's whole context and the
  // cache is allocated at load, so admission by free slots keeps memory within the budget.
  std::size_t kv_budget_bytes = 0;
  int min_slots = 1;               // fewest slots that serve every allowed request (its max n)
  int prefill_chunk = 128;         // prompt tokens prefilled per step (over one or more waiting
                                   // prompts), so running streams keep flowing
  metrics::Counter* tokens_total = nullptr;           // optional
  metrics::Counter* oom_total = nullptr;              // optional
  metrics::Histogram* first_token_seconds = nullptr;  // optional
  metrics::Histogram* token_seconds = nullptr;        // optional
  // Test hook, called before every forward pass (including the retries of a split batch) with
  // the step number and the chunks; it may throw c10::OutOfMemoryError to simulate an OOM.
  std::function<void(long step, const std::vector<model::SequenceChunk>& chunks)> before_forward;
};

// Continuous batching over a fixed set of KV-cache slots: every step decodes one token for
// every running sequence of every admitted job, plus prefill chunks of waiting prompts up to
// `prefill_chunk` tokens in all, in one forward pass; finished, cancelled and timed-out sequences leave at once and
// their slots serve the next job. With the model's batch-invariant kernels a sequence's
// tokens do not depend on what else shares the batch. Runs on one thread (the worker's).
class Batcher {
 public:
  Batcher(std::shared_ptr<const model::GPT2Model> model, std::shared_ptr<const text::BpeTokenizer> tokenizer,
          BatcherOptions options);
  ~Batcher();

  // The slots `options` asks for, capped by its KV-cache budget. Throws std::invalid_argument
  // naming the sizes when the budget holds fewer than `options.min_slots` sequences.
  static int slots_within_budget(const model::GPT2Model& model, const BatcherOptions& options);
  std::size_t kv_cache_bytes() const { return cache_.bytes(); }
  // The token ids sampling draws from: the tokenizer's. A model with fewer rows than the
  // tokenizer has ids cannot serve it (std::invalid_argument naming both sizes); a padded one
  // (e.g. 50304 rows for 50257 ids) is served with the padding logits never sampled.
  static int sampled_vocab(const model::GPT2Model& model, const text::BpeTokenizer& tokenizer);

  int free_slots() const { return static_cast<int>(free_.size()); }
  int slots() const { return options_.slots; }
  int running_sequences() const { return running_; }
  bool idle() const { return jobs_.empty(); }

  // Takes a job whose n fits in the free slots (check free_slots() first). A job that can
  // never run (too many sequences, too long) fails at once with JobError::invalid.
  void admit(std::shared_ptr<Job> job);
  // One forward pass and its sampling; returns false when there was nothing to do. What one
  // request raises (a bad row, a sampler error, a callback that throws) fails that request's
  // job only; an out-of-memory error splits the batch. Throws only what is_device_failure()
  // calls a device failure, or on a bug outside the forward pass: the caller fails every job.
  bool step();
  // A one-token forward pass in a free slot (none free: does nothing), for a worker whose
  // device failed to find out whether it works again. Throws what the forward pass throws.
  void probe();
  // Ends every job: on_error(reason) for each.
  void fail_all(JobError reason, const std::string& message);

 private:
  struct Sequence;
  struct Active;
  using Row = std::pair<Active*, int>;  // (job, sequence index or -1 for its prefill chunk)

  void expire();  // cancelled and timed-out jobs
  void run_rows(std::vector<model::SequenceChunk>& chunks, std::vector<Row>& rows, at::Tensor& logits);
  void run_halves(std::vector<model::SequenceChunk>& chunks, std::vector<Row>& rows);
  static void fail(Active& job, JobError error, const std::string& message);  // first reason wins
  void on_logits(Active& job, int index, const float* logits);
  void finish_prefill(Active& job, const float* logits);
  void retire();
  void release(Active& job);
  void emit(Active& job, int index, int token, FinishReason finish);  // TEMPORARY (h-output shim)

  std::shared_ptr<const model::GPT2Model> model_;
  std::shared_ptr<const text::BpeTokenizer> tokenizer_;
  BatcherOptions options_;
  int sample_vocab_ = 0;
  model::KVCache cache_;
  std::vector<int> free_;
  std::list<std::unique_ptr<Active>> jobs_;
  int running_ = 0;
  long steps_ = 0;
};

}  // namespace writeup::engine

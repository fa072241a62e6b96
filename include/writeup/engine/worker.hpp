#pragma once
// No ATen here: the service includes this header.
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "writeup/engine/job.hpp"
#include "writeup/engine/scheduler.hpp"
#include "writeup/model/load_options.hpp"
#include "writeup/model/sequence_chunk.hpp"

namespace writeup::metrics {
class Counter;
class Histogram;
}  // namespace writeup::metrics
namespace writeup::model {
class GPT2Model;
struct DeviceMemory;  // model/device_memory.hpp
}  // namespace writeup::model
namespace writeup::text {
class BpeTokenizer;
}

namespace writeup::engine {

struct WorkerOptions {
  std::string model_name;   // for logs and metrics
  std::string path;         // model directory, loaded on the worker's thread (unless `weights`)
  model::LoadOptions load;  // device and dtype
  // When set, called on the worker's thread instead of loading `path`: the weights shared by
  // every worker of a model on one device. May throw (the load fails with its message).
  std::function<std::shared_ptr<const model::GPT2Model>()> weights;
  int max_queue = 64;           // waiting jobs beyond which submit() refuses
  SchedulerOptions scheduler;   // slots, KV budget, prefill chunk (its max_queue is max_queue above)
  metrics::Counter* tokens_total = nullptr;           // optional
  metrics::Counter* oom_total = nullptr;              // optional
  metrics::Histogram* first_token_seconds = nullptr;  // optional
  metrics::Histogram* token_seconds = nullptr;        // optional
  // Test hook, called before every forward pass (including the retries of a split batch and
  // the probes) with the step number and the chunks; it may throw c10::OutOfMemoryError to
  // simulate an OOM, or any other error.
  std::function<void(long step, const std::vector<model::SequenceChunk>& chunks)> before_forward;
  // After a device failure, how often the idle worker runs a one-token probe to find out
  // whether the device works again (a step that succeeds also restores readiness).
  std::chrono::milliseconds probe_interval{1000};
};

// One thread that runs one model (shared weights, its own KV cache): it takes jobs into its
// Scheduler and executes the scheduler's step plans (forward, sampling, log-probabilities),
// delivering each step's outputs to the jobs' sinks. A job starts as soon as slots for its n
// sequences are free, without waiting for the others to finish.
class Worker {
 public:
  Worker(WorkerOptions options, std::shared_ptr<const text::BpeTokenizer> tokenizer);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Queues a job (its sink gets every output, or one error); false when the queue is full or
  // the worker is stopping (nothing is delivered then).
  bool submit(std::shared_ptr<Job> job);
  // Fails waiting and running jobs with ErrorKind::shutdown and joins the thread.
  void stop();
  bool stopping() const;  // stop() was called: submit() refuses everything

  bool loaded() const { return loaded_.load(); }
  bool load_ended() const { return load_ended_.load(); }  // loaded, or failed with load_error()
  int slots() const { return slots_.load(); }               // KV-cache slots (0 before loading)
  double kv_cache_bytes() const { return kv_cache_bytes_.load(); }
  // Loaded, and the device did not fail since the last step or probe that succeeded. Errors
  // of one request (bad input, out of memory, a throwing sink) fail that request only.
  bool ready() const { return loaded_.load() && !device_error_.load(); }
  const std::string& load_error() const { return load_error_; }  // valid once load_ended()
  double load_seconds() const { return load_seconds_.load(); }
  std::size_t queue_depth() const;  // submitted, not yet admitted
  int running_sequences() const { return running_.load(); }
  // The model once loaded (nullptr before); for fingerprints and metadata.
  std::shared_ptr<const model::GPT2Model> model() const;
  std::string fingerprint() const;  // of the weights file ("" before loaded)
  // The device allocator's view of memory (zeros on CPU). Include writeup/model/device.hpp.
  model::DeviceMemory device_memory() const;

 private:
  struct Shared;  // the inbox, shared with the jobs' wakers
  class Loop;     // the worker thread's state: scheduler, runner, samplers

  void load();
  void run();

  WorkerOptions options_;
  std::shared_ptr<const text::BpeTokenizer> tokenizer_;
  std::shared_ptr<Shared> shared_;
  std::atomic<bool> loaded_{false};
  std::atomic<bool> load_ended_{false};
  std::atomic<int> slots_{0};
  std::atomic<double> kv_cache_bytes_{0};
  std::atomic<bool> device_error_{false};
  std::atomic<int> running_{0};
  std::atomic<double> load_seconds_{0};
  std::string load_error_;
  std::shared_ptr<const model::GPT2Model> model_;  // guarded by shared_->mutex
  std::thread thread_;
};

}  // namespace writeup::engine

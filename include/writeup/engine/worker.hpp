#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "writeup/engine/batcher.hpp"
#include "writeup/engine/job.hpp"
#include "writeup/model/device.hpp"
#include "writeup/model/gpt2_model.hpp"

namespace writeup::text {
class BpeTokenizer;
}

namespace writeup::engine {

struct WorkerOptions {
  std::string model_name;                // for logs and metrics
  std::string path;                      // model directory, loaded on the worker's thread
  model::LoadOptions load;               // device and dtype
  int max_queue = 64;                    // waiting jobs beyond which submit() refuses
  BatcherOptions batch;                  // slots, prefill chunk, metrics, test hook
  // After a device failure, how often the idle worker runs a one-token probe to find out
  // whether the device works again (a step that succeeds also restores readiness).
  std::chrono::milliseconds probe_interval{1000};
};

// One thread that owns one copy of the model and its KV cache, takes jobs from a bounded FIFO
// queue and runs them with continuous batching (see Batcher): a job starts as soon as slots
// for its n sequences are free, without waiting for the others to finish.
class Worker {
 public:
  Worker(WorkerOptions options, std::shared_ptr<const text::BpeTokenizer> tokenizer);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Queues a job; false when the queue is full or the worker is stopping.
  bool submit(std::shared_ptr<Job> job);
  // Fails queued jobs with JobError::shutdown, cancels the running one and joins the thread.
  void stop();
  bool stopping() const;  // stop() was called: submit() refuses everything

  bool loaded() const { return loaded_.load(); }
  bool load_ended() const { return load_ended_.load(); }  // loaded, or failed with load_error()
  int slots() const { return slots_.load(); }               // KV-cache slots (0 before loading)
  double kv_cache_bytes() const { return kv_cache_bytes_.load(); }
  // Loaded, and the device did not fail since the last step or probe that succeeded. Errors
  // of one request (bad input, out of memory, a throwing callback) fail that request only.
  bool ready() const { return loaded_.load() && !device_error_.load(); }
  const std::string& load_error() const { return load_error_; }  // valid once load_ended()
  double load_seconds() const { return load_seconds_.load(); }
  std::size_t queue_depth() const;
  int running_sequences() const { return running_.load(); }
  // The model once loaded (nullptr before); for fingerprints and metadata.
  std::shared_ptr<const model::GPT2Model> model() const;
  // The device allocator's view of memory (zeros on CPU).
  model::DeviceMemory device_memory() const;

 private:
  void loop();
  void load();
  void probe(Batcher& batcher);
  void on_step_error(Batcher& batcher, const std::exception& e);
  void fail_job(Job& job, JobError error, const std::string& message);

  WorkerOptions options_;
  std::shared_ptr<const text::BpeTokenizer> tokenizer_;
  std::shared_ptr<const model::GPT2Model> model_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::atomic<bool> loaded_{false};
  std::atomic<bool> load_ended_{false};
  std::atomic<int> slots_{0};
  std::atomic<double> kv_cache_bytes_{0};
  std::atomic<bool> device_error_{false};
  long failed_probes_ = 0;  // since the device failed (worker thread only)
  std::atomic<int> running_{0};
  std::atomic<double> load_seconds_{0};
  std::string load_error_;
  std::thread thread_;
};

}  // namespace writeup::engine

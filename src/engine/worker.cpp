#include "writeup/engine/worker.hpp"

#include <c10/util/Exception.h>

#include <cstdlib>

#include "writeup/engine/device_failure.hpp"
#include "writeup/model/device.hpp"

#include "writeup/metrics/registry.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::engine {

Worker::Worker(WorkerOptions options, std::shared_ptr<const text::BpeTokenizer> tokenizer)
    : options_(std::move(options)), tokenizer_(std::move(tokenizer)) {
  thread_ = std::thread([this] { loop(); });
}

Worker::~Worker() { stop(); }

bool Worker::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || static_cast<int>(queue_.size()) >= options_.max_queue) return false;
    queue_.push_back(std::move(job));
  }
  wake_.notify_one();
  return true;
}

void Worker::stop() {
  std::deque<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  wake_.notify_all();
  for (auto& job : dropped) fail_job(*job, JobError::shutdown, "the server is stopping");
  if (thread_.joinable()) thread_.join();
}

bool Worker::stopping() const {
  std::lock_guard lock(mutex_);
  return stopping_;
}

std::size_t Worker::queue_depth() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

model::DeviceMemory Worker::device_memory() const {
  const auto m = model();
  return m ? model::device_memory(m->device()) : model::DeviceMemory{};
}

std::shared_ptr<const model::GPT2Model> Worker::model() const {
  std::lock_guard lock(mutex_);
  return model_;
}

void Worker::load() {
  const auto t0 = Job::Clock::now();
  try {
    if (const char* fraction = std::getenv("WRITEUP_CUDA_MEMORY_FRACTION")) {
      // For the GPU check: a small allocator cap provokes a real out-of-memory error.
      model::set_device_memory_fraction(c10::Device(options_.load.device), std::stod(fraction));
      log::warn("model " + options_.model_name + ": device memory capped at " + fraction + " by WRITEUP_CUDA_MEMORY_FRACTION");
    }
    auto m = model::GPT2Model::load(options_.path, options_.load);
    std::lock_guard lock(mutex_);
    model_ = std::move(m);
  } catch (const std::exception& e) {
    load_error_ = describe(e);
    log::error("model " + options_.model_name + " failed to load: " + load_error_);
  }
  load_seconds_ = std::chrono::duration<double>(Job::Clock::now() - t0).count();
  if (model_) {
    log::info("model " + options_.model_name + " loaded from " + options_.path + " in " +
              std::to_string(load_seconds_.load()) + " s");
  }
}

void Worker::fail_job(Job& job, JobError error, const std::string& message) {
  try {
    if (job.sink) {  // TEMPORARY (h-output shim, dropped with the new worker): the JobSink path
      job.sink->on_error(error, message);
    } else if (job.callbacks.on_error) {
      job.callbacks.on_error(error, message);
    }
  } catch (const std::exception& e) {
    log::error("model " + options_.model_name + ": a job's error callback threw: " + e.what());
  }
}

void Worker::probe(Batcher& batcher) {
  try {
    batcher.probe();
    device_error_ = false;
    failed_probes_ = 0;
    log::warn("model " + options_.model_name + ": the device works again: the worker is ready");
  } catch (const std::exception& e) {
    // Logged on the 1st, 2nd, 4th, 8th... failure: a device that stays broken does not flood the log.
    ++failed_probes_;
    if ((failed_probes_ & (failed_probes_ - 1)) == 0) {
      log::error("model " + options_.model_name + ": the device still fails (" + std::to_string(failed_probes_) +
                 " probe(s)): " + describe(e));
    }
  }
}

void Worker::on_step_error(Batcher& batcher, const std::exception& e) {
  if (is_device_failure(e)) {
    // The device is broken, not a request: out of rotation (/ready) until a step or a probe
    // succeeds again.
    device_error_ = true;
    log::error("model " + options_.model_name + ": device error: " + describe(e));
    batcher.fail_all(JobError::internal, "the model's device failed");
  } else {
    // Not a device failure, and not confined to one request by the batcher (a bug outside the
    // forward pass): end what runs, keep serving.
    log::error("model " + options_.model_name + ": a step failed: " + describe(e));
    batcher.fail_all(JobError::internal, "the model failed on this request");
  }
}

void Worker::loop() {
  load();
  std::unique_ptr<Batcher> batcher;
  if (model_) {
    try {
      options_.batch.slots = Batcher::slots_within_budget(*model_, options_.batch);
      batcher = std::make_unique<Batcher>(model_, tokenizer_, options_.batch);
      slots_ = batcher->slots();
      if (model_->config().vocab_size > tokenizer_->vocab_size()) {
        log::info("model " + options_.model_name + ": vocabulary padded to " +
                  std::to_string(model_->config().vocab_size) + " rows; only the tokenizer's " +
                  std::to_string(tokenizer_->vocab_size()) + " ids are sampled");
      }
      kv_cache_bytes_ = static_cast<double>(batcher->kv_cache_bytes());
      log::info("model " + options_.model_name + ": " + std::to_string(slots_.load()) + " KV-cache slots, " +
                std::to_string(batcher->kv_cache_bytes() >> 20) + " MiB");
      loaded_ = true;  // weights and KV cache in place: ready to serve
    } catch (const std::exception& e) {
      load_error_ = describe(e);
      log::error("model " + options_.model_name + ": " + load_error_);
    }
  }
  load_ended_ = true;
  for (;;) {
    std::vector<std::shared_ptr<Job>> admitted;
    {
      std::unique_lock lock(mutex_);
      const auto has_work = [&] { return stopping_ || !queue_.empty() || (batcher && !batcher->idle()); };
      if (batcher && device_error_) {
        // Nothing may come to run a step: find out on our own when the device works again.
        if (!wake_.wait_for(lock, options_.probe_interval, has_work)) {
          lock.unlock();
          probe(*batcher);
          continue;
        }
      } else {
        wake_.wait(lock, has_work);
      }
      if (stopping_) break;
      // FIFO: the head waits for enough free slots, and nothing overtakes it.
      int free = batcher ? batcher->free_slots() : 0;
      while (!queue_.empty()) {
        const int n = queue_.front()->request.n;
        if (batcher && n <= batcher->slots() && n > free) break;
        free -= n;
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    for (auto& job : admitted) {
      if (!batcher) {
        fail_job(*job, JobError::internal, "model " + options_.model_name + " is not loaded: " + load_error_);
        continue;
      }
      try {
        batcher->admit(job);
      } catch (const std::exception& e) {  // admit fails bad requests itself; this is a bug
        log::error("model " + options_.model_name + ": admitting a job failed: " + describe(e));
        fail_job(*job, JobError::internal, "the request could not be started");
      }
    }
    if (!batcher) continue;
    try {
      if (batcher->step()) device_error_ = false;
    } catch (const std::exception& e) {
      on_step_error(*batcher, e);
    } catch (...) {
      log::error("model " + options_.model_name + ": a step threw something that is not an exception");
      batcher->fail_all(JobError::internal, "the model failed on this request");
    }
    running_ = batcher->running_sequences();
  }
  if (batcher) batcher->fail_all(JobError::shutdown, "the server is stopping");
  running_ = 0;
}

}  // namespace writeup::engine

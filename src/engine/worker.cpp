#include "writeup/engine/worker.hpp"

#include <c10/util/Exception.h>

#include <cstdlib>

#include "writeup/model/device.hpp"

#include "writeup/metrics/registry.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::engine {

const char* to_string(JobError e) {
  switch (e) {
    case JobError::out_of_memory: return "out_of_memory";
    case JobError::invalid: return "invalid_request";
    case JobError::timeout: return "timeout";
    case JobError::shutdown: return "shutdown";
    case JobError::internal: return "internal_error";
  }
  return "internal_error";
}

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
  for (auto& job : dropped) {
    if (job->callbacks.on_error) job->callbacks.on_error(JobError::shutdown, "the server is stopping");
  }
  if (thread_.joinable()) thread_.join();
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
    load_error_ = e.what();
    log::error("model " + options_.model_name + " failed to load: " + load_error_);
  }
  load_seconds_ = std::chrono::duration<double>(Job::Clock::now() - t0).count();
  if (model_) {
    log::info("model " + options_.model_name + " loaded from " + options_.path + " in " +
              std::to_string(load_seconds_.load()) + " s");
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
      kv_cache_bytes_ = static_cast<double>(batcher->kv_cache_bytes());
      log::info("model " + options_.model_name + ": " + std::to_string(slots_.load()) + " KV-cache slots, " +
                std::to_string(batcher->kv_cache_bytes() >> 20) + " MiB");
      loaded_ = true;  // weights and KV cache in place: ready to serve
    } catch (const std::exception& e) {
      load_error_ = e.what();
      log::error("model " + options_.model_name + ": " + load_error_);
    }
  }
  load_ended_ = true;
  for (;;) {
    std::vector<std::shared_ptr<Job>> admitted;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || (batcher && !batcher->idle()); });
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
        if (job->callbacks.on_error) {
          job->callbacks.on_error(JobError::internal, "model " + options_.model_name + " is not loaded: " + load_error_);
        }
        continue;
      }
      batcher->admit(std::move(job));
    }
    if (!batcher) continue;
    try {
      batcher->step();
      device_error_ = false;
    } catch (const c10::Error& e) {
      device_error_ = true;
      log::error("model " + options_.model_name + ": device error: " + e.what_without_backtrace());
      batcher->fail_all(JobError::internal, "the model failed on this request");
    } catch (const std::exception& e) {
      log::error("model " + options_.model_name + ": " + e.what());
      batcher->fail_all(JobError::internal, "the model failed on this request");
    }
    running_ = batcher->running_sequences();
  }
  if (batcher) batcher->fail_all(JobError::shutdown, "the server is stopping");
  running_ = 0;
}

}  // namespace writeup::engine

#include "writeup/engine/worker.hpp"

#include <c10/util/Exception.h>

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
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    dropped.swap(queue_);
    if (current_) current_->cancel();
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

std::shared_ptr<const model::GPT2Model> Worker::model() const {
  std::lock_guard lock(mutex_);
  return model_;
}

void Worker::loop() {
  const auto t0 = Job::Clock::now();
  try {
    auto m = model::GPT2Model::load(options_.path, options_.load);
    std::lock_guard lock(mutex_);
    model_ = std::move(m);
  } catch (const std::exception& e) {
    load_error_ = e.what();
    log::error("model " + options_.model_name + " failed to load: " + load_error_);
  }
  load_seconds_ = std::chrono::duration<double>(Job::Clock::now() - t0).count();
  if (model_) {
    loaded_ = true;
    log::info("model " + options_.model_name + " loaded from " + options_.path + " in " +
              std::to_string(load_seconds_.load()) + " s");
  }
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      current_ = job;
    }
    run(*job);
    std::lock_guard lock(mutex_);
    current_.reset();
  }
}

void Worker::run(Job& job) {
  auto& cb = job.callbacks;
  const auto fail = [&](JobError e, const std::string& message) {
    if (cb.on_error) cb.on_error(e, message);
  };
  if (!model_) return fail(JobError::internal, "model " + options_.model_name + " is not loaded: " + load_error_);
  bool timed_out = false;
  const int n = job.request.n;
  std::vector<Job::Clock::time_point> last(static_cast<std::size_t>(n), job.submitted);
  bool first = true;
  running_ = n;
  try {
    auto results = generate::generate(
        *model_, *tokenizer_, job.request,
        [&](int index, int token, const std::string& text) {
          const auto now = Job::Clock::now();
          auto& prev = last[static_cast<std::size_t>(index)];
          const double dt = std::chrono::duration<double>(now - prev).count();
          if (first && options_.first_token_seconds) options_.first_token_seconds->observe(dt);
          if (!first && options_.token_seconds && prev != job.submitted) options_.token_seconds->observe(dt);
          first = false;
          prev = now;
          if (options_.tokens_total) options_.tokens_total->inc();
          if (cb.on_token) cb.on_token(index, token, text);
        },
        [&] {
          if (job.cancelled()) return true;
          timed_out = Job::Clock::now() > job.deadline;
          return timed_out;
        });
    running_ = 0;
    device_error_ = false;
    if (timed_out) return fail(JobError::timeout, "the request took longer than its timeout");
    if (cb.on_done) cb.on_done(std::move(results));
  } catch (const c10::OutOfMemoryError& e) {
    running_ = 0;
    if (options_.oom_total) options_.oom_total->inc();
    log::warn("model " + options_.model_name + ": out of memory: " + e.what_without_backtrace());
    fail(JobError::out_of_memory, "the device ran out of memory for this request");
  } catch (const std::invalid_argument& e) {
    running_ = 0;
    fail(JobError::invalid, e.what());
  } catch (const c10::Error& e) {
    running_ = 0;
    device_error_ = true;
    log::error("model " + options_.model_name + ": device error: " + e.what_without_backtrace());
    fail(JobError::internal, "the model failed on this request");
  } catch (const std::exception& e) {
    running_ = 0;
    log::error("model " + options_.model_name + ": " + e.what());
    fail(JobError::internal, "the model failed on this request");
  }
}

}  // namespace writeup::engine

#include "writeup/engine/run_job.hpp"

#include <condition_variable>
#include <mutex>

#include "writeup/engine/worker.hpp"

namespace writeup::engine {

namespace {

// Passes everything on to the job's own sink and tells the waiting thread when the job ends.
class EndSignal final : public JobSink {
 public:
  EndSignal(std::shared_ptr<JobSink> inner, int sequences) : inner_(std::move(inner)), left_(sequences) {}

  void on_outputs(std::span<const TokenOutput> outputs) override {
    if (inner_) inner_->on_outputs(outputs);
    int ended = 0;
    for (const auto& o : outputs) ended += o.finish != FinishReason::none ? 1 : 0;
    if (ended) count(ended);
  }
  void on_prompt_logprobs(std::vector<TokenOutput> prompt) override {
    if (inner_) inner_->on_prompt_logprobs(std::move(prompt));
  }
  void on_error(ErrorKind kind, const std::string& message) override {
    if (inner_) inner_->on_error(kind, message);
    count(left_);
  }
  void wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return done_; });
  }

 private:
  void count(int ended) {
    std::lock_guard lock(mutex_);
    left_ -= ended;
    if (left_ <= 0) done_ = true;
    cv_.notify_all();
  }
  std::shared_ptr<JobSink> inner_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int left_;
  bool done_ = false;
};

}  // namespace

bool run_job(Worker& worker, std::shared_ptr<Job> job) {
  auto signal = std::make_shared<EndSignal>(job->sink, job->request.n);
  job->sink = signal;
  if (!worker.submit(std::move(job))) return false;
  signal->wait();
  return true;
}

}  // namespace writeup::engine

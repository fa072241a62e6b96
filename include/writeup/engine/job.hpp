#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "writeup/engine/output.hpp"
#include "writeup/generate/generation.hpp"

namespace writeup::engine {

// Where a job's outputs go: the request's output processor. Both calls run on the engine's
// thread and must not block: queue the outputs, hand the work to another thread, return.
class JobSink {
 public:
  virtual ~JobSink() = default;
  // One step's outputs of this job: each sequence that got a token or ended, in index order.
  // Every sequence ends with exactly one output whose `finish` is not none; the job ends when
  // all n did.
  virtual void on_outputs(std::span<const TokenOutput> outputs) = 0;
  // The job failed: nothing more comes (called at most once, instead of the remaining ends).
  virtual void on_error(ErrorKind kind, const std::string& message) = 0;
  // Only when request.prompt_logprobs: prompt tokens 1..T-1 (index 0, `token` the prompt's
  // token, its `logprob` given the tokens before it, `n_top` = request.logprobs alternatives;
  // `finish` none), in order, once, before the job's first on_outputs.
  virtual void on_prompt_logprobs(std::vector<TokenOutput> prompt) { (void)prompt; }
};

// One request's n sequences, queued to a worker.
class Job {
 public:
  using Clock = std::chrono::steady_clock;

  Job() = default;
  Job(generate::GenerationRequest request, std::shared_ptr<JobSink> sink)
      : request(std::move(request)), sink(std::move(sink)) {}

  generate::GenerationRequest request;
  std::shared_ptr<JobSink> sink;
  Clock::time_point submitted = Clock::now();
  Clock::time_point deadline = Clock::time_point::max();

  // Any thread. The engine ends every unfinished sequence as cancelled at its next step; a job
  // still waiting leaves the queue then, without running.
  void cancel() {
    cancelled_.store(true, std::memory_order_relaxed);
    wake();
  }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }
  // Any thread: the output processor found a stop string in sequence `index` (0..63). The
  // engine ends it with FinishReason::stop at its next step.
  void stop(int index) {
    if (index >= 0 && index < 64) stops_.fetch_or(std::uint64_t{1} << index, std::memory_order_relaxed);
    wake();
  }
  bool stopped(int index) const {
    return index >= 0 && index < 64 && (stops_.load(std::memory_order_relaxed) >> index) & 1u;
  }
  std::uint64_t stops() const { return stops_.load(std::memory_order_relaxed); }

  // Set by the worker before the job is queued (no other thread sees the job yet): wakes the
  // worker's loop when cancel() or stop() is called.
  void set_waker(std::function<void()> waker) { waker_ = std::move(waker); }

 private:
  void wake() const {
    if (waker_) waker_();
  }
  std::atomic<bool> cancelled_{false};
  std::atomic<std::uint64_t> stops_{0};
  std::function<void()> waker_;
};

}  // namespace writeup::engine

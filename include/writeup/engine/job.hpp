#pragma once
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "writeup/generate/generation.hpp"

namespace writeup::engine {

enum class JobError {
  out_of_memory,  // the device ran out of memory for this job
  invalid,        // the request cannot run on this model (e.g. too long)
  timeout,        // request_timeout_s passed before it finished
  shutdown,       // the server is stopping
  internal,       // a bug: never expected
};
const char* to_string(JobError e);

// What a job reports. Every callback runs on the worker's thread and must not block: a
// session posts the event to its own strand and returns.
struct JobCallbacks {
  std::function<void(int index, int token, const std::string& text)> on_token;
  std::function<void(std::vector<generate::GeneratedSequence>)> on_done;
  std::function<void(JobError, const std::string& message)> on_error;
};

// One request's n sequences, queued to a worker. Exactly one of on_done / on_error is called,
// once (a cancelled job ends with on_done and finish_reason "cancelled").
struct Job {
  using Clock = std::chrono::steady_clock;

  generate::GenerationRequest request;
  JobCallbacks callbacks;
  Clock::time_point submitted = Clock::now();
  Clock::time_point deadline = Clock::time_point::max();

  void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
  bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> cancelled_{false};
};

}  // namespace writeup::engine

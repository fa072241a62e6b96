#pragma once
// The cache's view of whether Redis is worth calling: a circuit breaker. Closed, calls go to
// Redis; `failures_to_open` consecutive failures (the cache counts timeouts and lost
// connections) or one failed connection attempt open it. Open, callers fail fast (serve from memory) and a
// single background probe runs at next_probe(), the wait doubling from backoff_initial up to
// backoff_max while probes fail; a probe that answers closes it. Starts open with a probe due
// at once, so that Redis counts as down until it has answered. Not thread-safe.
#include <chrono>

namespace writeup::cache {

struct CircuitBreakerOptions {
  int failures_to_open = 3;                        // consecutive failed calls that open it (>= 1)
  std::chrono::milliseconds backoff_initial{100};  // wait before the first probe after opening
  std::chrono::milliseconds backoff_max{5000};     // the doubling wait stops growing here
};

class CircuitBreaker {
 public:
  using Clock = std::chrono::steady_clock;

  explicit CircuitBreaker(CircuitBreakerOptions options, Clock::time_point now = Clock::now());

  bool closed() const { return closed_; }
  // A call answered: the failure count starts again.
  void succeeded();
  // A call failed. Returns true when this failure opened the breaker.
  bool failed(Clock::time_point now = Clock::now());
  // Opens at once whatever the count (nothing to talk to). Returns true if it was closed.
  bool trip(Clock::time_point now = Clock::now());
  // Open: when the next probe is due.
  Clock::time_point next_probe() const { return next_probe_; }
  // The probe answered: closed, count and backoff reset.
  void probe_succeeded();
  // The probe failed: the next one waits twice as long (up to backoff_max).
  void probe_failed(Clock::time_point now = Clock::now());

  int consecutive_failures() const { return failures_; }
  // The wait before the next probe if the current one fails (or after the next opening).
  std::chrono::milliseconds backoff() const { return backoff_; }

 private:
  void open(Clock::time_point now);

  CircuitBreakerOptions options_;
  bool closed_ = false;
  int failures_ = 0;
  std::chrono::milliseconds backoff_;
  Clock::time_point next_probe_;
};

}  // namespace writeup::cache

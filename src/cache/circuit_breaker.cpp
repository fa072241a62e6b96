#include "writeup/cache/circuit_breaker.hpp"

#include <algorithm>

namespace writeup::cache {

CircuitBreaker::CircuitBreaker(CircuitBreakerOptions options, Clock::time_point now)
    : options_(options), backoff_(options.backoff_initial), next_probe_(now) {
  options_.failures_to_open = std::max(options_.failures_to_open, 1);
  options_.backoff_initial = std::max(options_.backoff_initial, std::chrono::milliseconds(1));
  options_.backoff_max = std::max(options_.backoff_max, options_.backoff_initial);
  backoff_ = options_.backoff_initial;
}

void CircuitBreaker::succeeded() { failures_ = 0; }

bool CircuitBreaker::failed(Clock::time_point now) {
  ++failures_;
  if (!closed_ || failures_ < options_.failures_to_open) return false;
  open(now);
  return true;
}

bool CircuitBreaker::trip(Clock::time_point now) {
  ++failures_;
  if (!closed_) return false;
  open(now);
  return true;
}

void CircuitBreaker::open(Clock::time_point now) {
  closed_ = false;
  backoff_ = options_.backoff_initial;
  next_probe_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, options_.backoff_max);
}

void CircuitBreaker::probe_succeeded() {
  closed_ = true;
  failures_ = 0;
  backoff_ = options_.backoff_initial;
}

void CircuitBreaker::probe_failed(Clock::time_point now) {
  next_probe_ = now + backoff_;
  backoff_ = std::min(backoff_ * 2, options_.backoff_max);
}

}  // namespace writeup::cache

#include "writeup/cache/circuit_breaker.hpp"

#include <gtest/gtest.h>

using namespace writeup::cache;
using std::chrono::milliseconds;
using Clock = CircuitBreaker::Clock;

namespace {
CircuitBreakerOptions three() { return {3, milliseconds(100), milliseconds(400)}; }
}  // namespace

TEST(CircuitBreaker, StartsOpenWithAProbeDueAtOnce) {
  const auto t0 = Clock::now();
  CircuitBreaker b(three(), t0);
  EXPECT_FALSE(b.closed());
  EXPECT_EQ(b.next_probe(), t0);
  b.probe_succeeded();
  EXPECT_TRUE(b.closed());
  EXPECT_EQ(b.consecutive_failures(), 0);
}

TEST(CircuitBreaker, OpensAfterNConsecutiveFailuresOnly) {
  const auto t0 = Clock::now();
  CircuitBreaker b(three(), t0);
  b.probe_succeeded();
  EXPECT_FALSE(b.failed(t0));
  EXPECT_FALSE(b.failed(t0));
  b.succeeded();  // an answer in between starts the count again
  EXPECT_EQ(b.consecutive_failures(), 0);
  EXPECT_FALSE(b.failed(t0));
  EXPECT_FALSE(b.failed(t0));
  EXPECT_TRUE(b.closed());
  EXPECT_TRUE(b.failed(t0));  // the third in a row
  EXPECT_FALSE(b.closed());
  EXPECT_EQ(b.next_probe(), t0 + milliseconds(100));
  EXPECT_FALSE(b.failed(t0));  // already open: not "opened" again
}

TEST(CircuitBreaker, TripOpensAtOnce) {
  const auto t0 = Clock::now();
  CircuitBreaker b(three(), t0);
  b.probe_succeeded();
  EXPECT_TRUE(b.trip(t0));
  EXPECT_FALSE(b.closed());
  EXPECT_FALSE(b.trip(t0));
}

TEST(CircuitBreaker, ProbeBackoffDoublesUpToTheMaximumAndResetsOnSuccess) {
  const auto t0 = Clock::now();
  CircuitBreaker b(three(), t0);
  b.probe_succeeded();
  b.trip(t0);
  EXPECT_EQ(b.next_probe(), t0 + milliseconds(100));
  b.probe_failed(t0);
  EXPECT_EQ(b.next_probe(), t0 + milliseconds(200));
  b.probe_failed(t0);
  EXPECT_EQ(b.next_probe(), t0 + milliseconds(400));
  b.probe_failed(t0);
  EXPECT_EQ(b.next_probe(), t0 + milliseconds(400));  // capped
  b.probe_succeeded();
  EXPECT_TRUE(b.closed());
  b.trip(t0);
  EXPECT_EQ(b.next_probe(), t0 + milliseconds(100));  // a new outage starts from the beginning
}

TEST(CircuitBreaker, NonsenseOptionsAreClamped) {
  const auto t0 = Clock::now();
  CircuitBreaker b({0, milliseconds(0), milliseconds(0)}, t0);
  b.probe_succeeded();
  EXPECT_TRUE(b.failed(t0));  // at least one failure opens it
  EXPECT_GT(b.next_probe(), t0);
}

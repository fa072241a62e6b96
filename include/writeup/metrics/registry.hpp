#pragma once
// Prometheus metrics: counters, gauges and histograms in a registry that renders the text
// exposition format 0.0.4 for GET /metrics. Values are lock-free atomics; only creating a
// series and rendering take the registry's mutex.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace writeup::metrics {

// Label name -> value, in the order they are printed.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing value (requests served, tokens generated).
class Counter {
 public:
  // Throws std::invalid_argument when v is negative or NaN.
  void inc(double v = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (running sequences, memory allocated).
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void inc(double v = 1);
  void dec(double v = 1) { inc(-v); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into buckets by upper bound (le), plus their sum and count.
class Histogram {
 public:
  // `bounds`: strictly increasing finite upper bounds; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  std::uint64_t count() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts, one per bound and a last one for +Inf (equal to the total count).
  std::vector<std::uint64_t> cumulative_counts() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0};
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Returns the series for (name, labels), creating the family on first use. The same name must
  // always be used with the same type, help and (for histograms) buckets, else
  // std::invalid_argument. Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
  // [a-zA-Z_][a-zA-Z0-9_]* (not starting with __); counter names must end in _total. Label sets
  // that differ only in order name the same series. Returned references stay valid for the
  // registry's lifetime. Thread-safe.
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help,
                       std::vector<double> buckets, const Labels& labels = {});
  // Gauges whose value is computed at scrape time (e.g. queue depth). Registering the same
  // (name, labels) again replaces the function. `fn` runs outside the registry's lock; a
  // series whose fn throws is left out of that scrape.
  void gauge_callback(const std::string& name, const std::string& help, const Labels& labels,
                      std::function<double()> fn);

  // Prometheus text format 0.0.4: families sorted by name, series sorted by labels.
  std::string exposition() const;

 private:
  struct Family;
  Family& family(const std::string& name, const std::string& help, int type,
                 const std::vector<double>* buckets);

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Family>> families_;
};

// Latency histogram bounds in seconds: 0.005 .. 60, roughly exponential (14 buckets).
std::vector<double> latency_buckets();

// Formats a sample value: integers without exponent ("3"), others shortest round-trip
// ("0.25"), and "+Inf", "-Inf", "NaN".
std::string format_value(double v);

}  // namespace writeup::metrics

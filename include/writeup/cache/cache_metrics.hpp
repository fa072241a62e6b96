#pragma once
// The cache's series in /metrics (names and help texts in cache.hpp). Without a registry every
// update is a no-op. Updates are lock-free and may come from any thread.
namespace writeup::metrics {
class Counter;
class Gauge;
class Registry;
}  // namespace writeup::metrics

namespace writeup::cache {

struct CacheMetrics {
  // Registers the series (the gauge starts at 0: Redis down until a probe answers).
  explicit CacheMetrics(metrics::Registry* registry);

  static void inc(metrics::Counter* c);
  void set_redis_up(bool up) const;

  metrics::Counter* hits_memory = nullptr;
  metrics::Counter* hits_redis = nullptr;
  metrics::Counter* misses_memory = nullptr;
  metrics::Counter* misses_redis = nullptr;
  metrics::Counter* errors_connect = nullptr;
  metrics::Counter* errors_command = nullptr;
  metrics::Counter* errors_corrupt = nullptr;
  metrics::Counter* joins_remote = nullptr;
  metrics::Gauge* redis_up = nullptr;
};

}  // namespace writeup::cache

#include "writeup/cache/cache_metrics.hpp"

#include "writeup/cache/cache.hpp"
#include "writeup/metrics/registry.hpp"

namespace writeup::cache {

CacheMetrics::CacheMetrics(metrics::Registry* registry) {
  if (registry == nullptr) return;
  auto counter = [&](const char* name, const char* help, metrics::Labels labels) {
    return &registry->counter(name, help, labels);
  };
  hits_memory = counter(kHitsMetric, kHitsHelp, {{"backend", "memory"}});
  hits_redis = counter(kHitsMetric, kHitsHelp, {{"backend", "redis"}});
  misses_memory = counter(kMissesMetric, kMissesHelp, {{"backend", "memory"}});
  misses_redis = counter(kMissesMetric, kMissesHelp, {{"backend", "redis"}});
  auto error = [&](const char* kind) {
    return counter(kErrorsMetric, kErrorsHelp, {{"backend", "redis"}, {"kind", kind}});
  };
  errors_connect = error("connect");
  errors_command = error("command");
  errors_corrupt = error("corrupt");
  joins_remote = counter(kJoinsMetric, kJoinsHelp, {{"scope", "remote"}});
  redis_up = &registry->gauge(kRedisUpMetric, kRedisUpHelp);
  redis_up->set(0);
}

void CacheMetrics::inc(metrics::Counter* c) {
  if (c != nullptr) c->inc();
}

void CacheMetrics::set_redis_up(bool up) const {
  if (redis_up != nullptr) redis_up->set(up ? 1 : 0);
}

}  // namespace writeup::cache

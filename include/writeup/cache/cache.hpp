#pragma once
// The response cache the service uses: an in-memory LRU in front of an optional Redis, plus a
// cross-instance generation lock in Redis so that identical requests on different instances
// generate once. Never blocks the caller: a memory hit is answered on the caller's thread at
// once; everything else goes to one worker thread that owns all Redis I/O. Redis down at start,
// lost, or frozen mid-run is not an error for callers: a circuit breaker marks it down after a
// few failed calls, the cache then serves from memory without touching Redis, counts errors,
// and a background probe (PING) brings Redis back.
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace writeup::metrics {
class Registry;
}

namespace writeup::cache {

struct CacheOptions {
  std::string redis_url;                             // "" = in-memory only; else redis://... URL
  std::chrono::seconds ttl{259200};                  // entry lifetime, memory and Redis (3 days)
  std::size_t memory_entries = 10000;                // in-memory LRU entries (0 = no memory tier)
  std::size_t memory_bytes = 256u << 20;             // in-memory LRU bound on key+value bytes
  std::chrono::milliseconds connect_timeout{500};    // Redis TCP connect + AUTH/SELECT limit
  std::chrono::milliseconds command_timeout{500};    // per Redis command
  std::chrono::milliseconds lock_ttl{30000};         // cross-instance generation lock lifetime
  std::chrono::milliseconds poll_interval{25};       // how often a waiting claim looks for the
                                                     // lock holder's result
  std::chrono::milliseconds reconnect_initial{100};  // first probe delay after Redis went down
  std::chrono::milliseconds reconnect_max{5000};     // the doubling delay stops growing here
  int breaker_failures = 3;                          // consecutive timed-out or lost Redis calls
                                                     // that mark it down (a refused connection:
                                                     // at once; error replies do not count)
  std::chrono::milliseconds probe_timeout{200};      // connect + PING limit of a probe while down
  std::size_t max_claims = 1024;                     // claims queued or waiting at once (>= 1)
  std::chrono::milliseconds lock_max_hold{150000};   // a held lock is renewed (every lock_ttl/3)
                                                     // until stored/released, at most this long
  // Tests only: runs on the worker before each claim, store and release with its key; what it
  // throws must end as that request's miss and leave the worker running.
  std::function<void(const std::string& key)> fault_injection;
};

struct Claim {
  enum Kind { hit, generate };
  Kind kind = generate;
  // hit: the stored response. generate: empty.
  std::string value;
  // hit: where it was found, "memory" or "redis". generate: the deepest backend that answered
  // the lookup ("redis", or "memory" when Redis is not configured, down or failed).
  std::string backend;
  // generate: the cross-instance lock token to hand to store() or release(); empty when no
  // lock is held (no Redis, Redis failed, or the cache is shutting down). hit: empty.
  std::string lock_token;
  // hit: true when the claim waited for another instance's generation and got its result.
  bool joined = false;
};

// Metric names and help texts, for code that registers the same families (the help text of a
// family must be the same everywhere).
inline constexpr const char* kHitsMetric = "writeup_cache_hits_total";
inline constexpr const char* kHitsHelp = "Cache lookups answered from a stored response.";
inline constexpr const char* kMissesMetric = "writeup_cache_misses_total";
inline constexpr const char* kMissesHelp =
    "Cache lookups that found nothing, by the deepest backend consulted.";
inline constexpr const char* kErrorsMetric = "writeup_cache_errors_total";
inline constexpr const char* kErrorsHelp = "Cache backend failures (connect, command, corrupt).";
inline constexpr const char* kJoinsMetric = "writeup_cache_joins_total";
inline constexpr const char* kJoinsHelp =
    "Requests that waited for an identical running generation and got its result.";
inline constexpr const char* kRedisUpMetric = "writeup_cache_redis_up";
inline constexpr const char* kRedisUpHelp = "1 while the cache's Redis connection is up.";

class Cache {
 public:
  // Starts the worker thread and, with a redis_url, connects in the background (Redis down at
  // start is logged once; the cache then works from memory). Throws std::invalid_argument for a
  // bad redis_url. `registry` (nullable) receives the metrics above and must outlive the cache.
  Cache(CacheOptions options, metrics::Registry* registry);
  // Stops the worker thread after running what was posted before: stores and releases are still
  // sent (best effort), and every claim not yet answered -- queued or waiting for another
  // instance -- is answered with `generate` and no lock token, so no caller waits forever.
  // Must not be called from a callback.
  ~Cache();
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // Looks `key` up: memory first, on the caller's thread (a hit calls `done` before claim()
  // returns, never waiting behind Redis calls); then, on the worker, Redis (a Redis hit fills
  // memory for `ttl`). On a miss, takes the cross-instance lock (SET <key>:lock token NX PX
  // lock_ttl), renews it while held (see lock_max_hold) and answers `generate` with its token.
  // If another instance holds it, polls every poll_interval for that instance's result until
  // max_wait; takes the lock and answers `generate` if the lock disappears without a result
  // (the holder released it or died), or takes it over regardless when max_wait passes
  // (max_wait <= 0: at once). Without Redis (none configured, or down) a miss is simply
  // `generate` with no token. Returns false, calling nothing, when max_claims claims are
  // already queued or waiting (the caller answers "queue full"). Otherwise `done` runs exactly
  // once, on the worker thread (or the caller's, for a memory hit); an exception it throws is
  // logged and dropped, and what the worker raises while serving the claim answers `generate`.
  bool claim(std::string key, std::chrono::milliseconds max_wait,
             std::function<void(Claim)> done);
  // Stores a completed response under `key` (memory, and Redis with the ttl) and releases the
  // lock `lock_token` (if not empty; its renewal stops). Asynchronous; failures are counted
  // and logged.
  void store(std::string key, std::string value, std::string lock_token);
  // Releases the lock without storing (cancelled, failed or out-of-memory generation).
  void release(std::string key, std::string lock_token);

  // Claims accepted and not yet answered (queued for the worker or waiting on another instance).
  std::size_t pending_claims() const;
  // Locks this instance holds and renews.
  std::size_t held_locks() const;

  bool redis_configured() const;
  // True while Redis is up: the circuit breaker is closed (a probe answered, and fewer than
  // breaker_failures calls failed in a row since).
  bool redis_connected() const;
  const CacheOptions& options() const;
  // Blocks until everything posted before it has run (claims still waiting on another
  // instance excepted). For tests and orderly shutdown; throws std::logic_error on the worker.
  void flush();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace writeup::cache

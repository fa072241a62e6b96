#include "writeup/cache/cache.hpp"

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdio>
#include <future>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>

#include "writeup/cache/memory_cache.hpp"
#include "writeup/cache/redis_client.hpp"
#include "writeup/metrics/registry.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::cache {
namespace asio = boost::asio;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

// A Redis value is "writeup_cache:1\n<key>\n<body length>\n<body>": binary-safe, and a value
// that is not ours (foreign, truncated, or written under another key) is recognised.
constexpr std::string_view kEnvelopeMagic = "writeup_cache:1\n";

std::string wrap(const std::string& key, const std::string& body) {
  std::string out(kEnvelopeMagic);
  out += key;
  out += '\n';
  out += std::to_string(body.size());
  out += '\n';
  out += body;
  return out;
}

std::optional<std::string> unwrap(const std::string& key, std::string_view v) {
  if (v.substr(0, kEnvelopeMagic.size()) != kEnvelopeMagic) return std::nullopt;
  v.remove_prefix(kEnvelopeMagic.size());
  if (v.substr(0, key.size()) != key || v.size() <= key.size() || v[key.size()] != '\n') {
    return std::nullopt;
  }
  v.remove_prefix(key.size() + 1);
  const auto eol = v.find('\n');
  if (eol == std::string_view::npos || eol == 0 || eol > 19) return std::nullopt;
  std::size_t length = 0;
  for (char c : v.substr(0, eol)) {
    if (c < '0' || c > '9') return std::nullopt;
    length = length * 10 + static_cast<std::size_t>(c - '0');
  }
  v.remove_prefix(eol + 1);
  if (v.size() != length) return std::nullopt;
  return std::string(v);
}

std::string lock_key(const std::string& key) { return key + ":lock"; }

}  // namespace

struct Cache::Impl {
  // A claim that waits for another instance's generation.
  struct Waiter {
    Waiter(asio::io_context& io, std::string k, Clock::time_point d, std::function<void(Claim)> f)
        : key(std::move(k)), deadline(d), done(std::move(f)), timer(io) {}
    std::string key;
    Clock::time_point deadline;
    std::function<void(Claim)> done;
    asio::steady_timer timer;
    bool finished = false;
  };

  CacheOptions options;
  asio::io_context io;  // before everything holding timers or handlers, destroyed after them
  MemoryCache memory;
  std::unique_ptr<RedisClient> redis;  // null without redis_url; used on the worker only
  std::atomic<bool> up{false};
  std::atomic<bool> stopping{false};
  bool outage_logged = false;
  bool reconnect_pending = false;
  std::map<std::uint64_t, std::shared_ptr<Waiter>> waiters;
  std::uint64_t next_waiter = 0;
  std::mt19937_64 rng{std::random_device{}()};

  metrics::Counter* hits_memory = nullptr;
  metrics::Counter* hits_redis = nullptr;
  metrics::Counter* misses_memory = nullptr;
  metrics::Counter* misses_redis = nullptr;
  metrics::Counter* errors_connect = nullptr;
  metrics::Counter* errors_command = nullptr;
  metrics::Counter* errors_corrupt = nullptr;
  metrics::Counter* joins_remote = nullptr;
  metrics::Gauge* redis_up = nullptr;

  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  asio::steady_timer reconnect_timer{io};
  std::thread thread;  // last: started once everything above exists

  Impl(CacheOptions o, metrics::Registry* registry)
      : options(std::move(o)), memory(options.memory_entries, options.memory_bytes) {
    if (!options.redis_url.empty()) {
      RedisClientOptions ro;
      ro.connect_timeout = options.connect_timeout;
      ro.command_timeout = options.command_timeout;
      ro.backoff_initial = options.reconnect_initial;
      ro.backoff_max = options.reconnect_max;
      redis = std::make_unique<RedisClient>(RedisUrl::parse(options.redis_url), ro);
    }
    if (registry != nullptr) {
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
    if (redis) asio::post(io, [this] { initial_connect(); });
    thread = std::thread([this] { run(); });
  }

  void run() {
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {
        log::error(std::string("cache: worker: ") + e.what());
      }
    }
  }

  static void inc(metrics::Counter* c) {
    if (c != nullptr) c->inc();
  }

  static void finish(const std::function<void(Claim)>& done, Claim claim) {
    try {
      done(std::move(claim));
    } catch (const std::exception& e) {
      log::error(std::string("cache: a claim callback threw: ") + e.what());
    } catch (...) {
      log::error("cache: a claim callback threw a non-exception");
    }
  }

  static Claim generate(const char* backend, std::string token = {}) {
    return Claim{Claim::generate, {}, backend, std::move(token), false};
  }

  std::string new_token() {
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                  static_cast<unsigned long long>(rng()));
    return buf;
  }

  // --- connection state ---

  void mark_up() {
    if (up.exchange(true)) return;
    if (redis_up != nullptr) redis_up->set(1);
    log::info("cache: redis " + redis->url().redacted() + " connected");
    outage_logged = false;
  }

  // Counts a Redis failure; on losing the connection logs once and schedules reconnection.
  void on_error(const CacheError& e) {
    inc(e.kind() == CacheError::Kind::connect ? errors_connect : errors_command);
    if (redis->connected()) {  // an error reply: the connection is fine
      log::warn(std::string("cache: ") + e.what());
      return;
    }
    up = false;
    if (redis_up != nullptr) redis_up->set(0);
    if (!outage_logged) {
      outage_logged = true;
      log::warn(std::string("cache: ") + e.what() +
                "; serving from memory and reconnecting with backoff");
    } else {
      log::debug(std::string("cache: ") + e.what());
    }
    schedule_reconnect();
  }

  void initial_connect() {
    try {
      redis->connect();
      mark_up();
    } catch (const CacheError& e) {
      on_error(e);
    }
  }

  void schedule_reconnect() {
    if (reconnect_pending || stopping) return;
    reconnect_pending = true;
    reconnect_timer.expires_at(redis->next_attempt());
    reconnect_timer.async_wait([this](const boost::system::error_code& ec) {
      reconnect_pending = false;
      if (ec || stopping || redis->connected()) return;
      if (!redis->ready()) return schedule_reconnect();
      initial_connect();
    });
  }

  // Whether operations use Redis: only while connected. Operations never connect themselves;
  // the reconnect timer does, once per backoff period, so that a dead Redis costs claims
  // nothing (though a connection attempt to an unreachable host holds the worker for up to
  // connect_timeout).
  bool redis_usable() const { return redis && !stopping && redis->connected(); }

  // GET + envelope check: the body, or nullopt on a miss or a corrupt value (counted, logged).
  std::optional<std::string> redis_lookup(const std::string& key) {
    std::optional<std::string> raw = redis->get(key);
    mark_up();
    if (!raw) return std::nullopt;
    std::optional<std::string> body = unwrap(key, *raw);
    if (!body) {
      inc(errors_corrupt);
      log::warn("cache: ignoring a corrupt or foreign value (" + std::to_string(raw->size()) +
                " bytes) under " + key + "; the next store overwrites it");
    }
    return body;
  }

  // --- operations (worker thread) ---

  void do_claim(const std::string& key, milliseconds max_wait, std::function<void(Claim)> done) {
    if (stopping) return finish(done, generate("memory"));
    if (std::optional<std::string> v = memory.get(key)) {
      inc(hits_memory);
      return finish(done, Claim{Claim::hit, std::move(*v), "memory", {}, false});
    }
    if (!redis_usable()) {
      inc(misses_memory);
      return finish(done, generate("memory"));
    }
    try {
      if (std::optional<std::string> v = redis_lookup(key)) return redis_hit(key, *v, false, done);
      std::string token = new_token();
      if (redis->set_nx(lock_key(key), token, options.lock_ttl)) {
        inc(misses_redis);
        return finish(done, generate("redis", std::move(token)));
      }
    } catch (const CacheError& e) {
      on_error(e);
      inc(misses_memory);
      return finish(done, generate("memory"));
    }
    auto w = std::make_shared<Waiter>(io, key, Clock::now() + max_wait, std::move(done));
    const std::uint64_t id = next_waiter++;
    waiters.emplace(id, w);
    if (max_wait <= milliseconds::zero()) return poll(id, w);  // takes the lock over at once
    arm(id, w);
  }

  void redis_hit(const std::string& key, std::string value, bool joined,
                 const std::function<void(Claim)>& done) {
    inc(hits_redis);
    if (joined) inc(joins_remote);
    memory.put(key, value, options.ttl);
    finish(done, Claim{Claim::hit, std::move(value), "redis", {}, joined});
  }

  // One look for the lock holder's result; answers, or re-arms the waiter's timer.
  void poll(std::uint64_t id, const std::shared_ptr<Waiter>& w) {
    if (w->finished) return;
    auto answer = [&](auto&& fn) {
      w->finished = true;
      waiters.erase(id);
      fn();
    };
    if (stopping) return answer([&] { finish(w->done, generate("memory")); });
    if (std::optional<std::string> v = memory.get(w->key)) {
      inc(hits_memory);
      return answer([&] { finish(w->done, Claim{Claim::hit, std::move(*v), "memory", {}, true}); });
    }
    if (!redis_usable()) {  // lost meanwhile: generate without a lock
      inc(misses_memory);
      return answer([&] { finish(w->done, generate("memory")); });
    }
    try {
      if (std::optional<std::string> v = redis_lookup(w->key)) {
        return answer([&] { redis_hit(w->key, *v, true, w->done); });
      }
      const std::string lock = lock_key(w->key);
      std::string token = new_token();
      bool took = redis->set_nx(lock, token, options.lock_ttl);  // the holder gave up or died
      if (took) {
        // The holder may have stored and released between the GET and the SET.
        if (std::optional<std::string> v = redis_lookup(w->key)) {
          redis->compare_and_delete(lock, token);
          return answer([&] { redis_hit(w->key, *v, true, w->done); });
        }
      } else if (Clock::now() >= w->deadline) {
        redis->set(lock, token, options.lock_ttl);  // waited long enough: take it over
        took = true;
      }
      if (took) {
        inc(misses_redis);
        return answer([&] { finish(w->done, generate("redis", std::move(token))); });
      }
    } catch (const CacheError& e) {
      on_error(e);
      inc(misses_memory);
      return answer([&] { finish(w->done, generate("memory")); });
    }
    arm(id, w);
  }

  // Schedules the waiter's next poll: after poll_interval, or at its deadline if sooner.
  void arm(std::uint64_t id, const std::shared_ptr<Waiter>& w) {
    const auto left = w->deadline - Clock::now();
    w->timer.expires_after(std::max<Clock::duration>(
        std::min<Clock::duration>(options.poll_interval, left), Clock::duration::zero()));
    w->timer.async_wait([this, id, w](const boost::system::error_code&) { poll(id, w); });
  }

  void do_store(const std::string& key, const std::string& value, const std::string& token) {
    memory.put(key, value, options.ttl);
    if (!redis_usable()) return;
    try {
      redis->set(key, wrap(key, value), options.ttl);
      mark_up();
      if (!token.empty()) redis->compare_and_delete(lock_key(key), token);
    } catch (const CacheError& e) {
      on_error(e);
    }
  }

  void do_release(const std::string& key, const std::string& token) {
    if (token.empty() || !redis_usable()) return;
    try {
      redis->compare_and_delete(lock_key(key), token);
      mark_up();
    } catch (const CacheError& e) {
      on_error(e);
    }
  }

  void shutdown() {
    reconnect_timer.cancel();
    auto pending = std::move(waiters);
    waiters.clear();
    for (auto& [id, w] : pending) {
      w->timer.cancel();
      if (w->finished) continue;
      w->finished = true;
      finish(w->done, generate("memory"));
    }
  }
};

Cache::Cache(CacheOptions options, metrics::Registry* registry)
    : impl_(std::make_unique<Impl>(std::move(options), registry)) {}

Cache::~Cache() {
  impl_->stopping = true;
  asio::post(impl_->io, [impl = impl_.get()] { impl->shutdown(); });
  impl_->work.reset();
  impl_->thread.join();
}

void Cache::claim(std::string key, milliseconds max_wait, std::function<void(Claim)> done) {
  asio::post(impl_->io, [impl = impl_.get(), key = std::move(key), max_wait,
                         done = std::move(done)]() mutable {
    impl->do_claim(key, max_wait, std::move(done));
  });
}

void Cache::store(std::string key, std::string value, std::string lock_token) {
  asio::post(impl_->io, [impl = impl_.get(), key = std::move(key), value = std::move(value),
                         token = std::move(lock_token)] { impl->do_store(key, value, token); });
}

void Cache::release(std::string key, std::string lock_token) {
  asio::post(impl_->io, [impl = impl_.get(), key = std::move(key), token = std::move(lock_token)] {
    impl->do_release(key, token);
  });
}

bool Cache::redis_configured() const { return impl_->redis != nullptr; }
bool Cache::redis_connected() const { return impl_->up; }
const CacheOptions& Cache::options() const { return impl_->options; }

void Cache::flush() {
  if (std::this_thread::get_id() == impl_->thread.get_id()) {
    throw std::logic_error("Cache::flush called on the cache's worker thread");
  }
  std::promise<void> done;
  asio::post(impl_->io, [&done] { done.set_value(); });
  done.get_future().wait();
}

}  // namespace writeup::cache

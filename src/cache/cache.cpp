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
#include <utility>

#include "writeup/cache/cache_envelope.hpp"
#include "writeup/cache/cache_metrics.hpp"
#include "writeup/cache/circuit_breaker.hpp"
#include "writeup/cache/lock_keeper.hpp"
#include "writeup/cache/memory_cache.hpp"
#include "writeup/cache/redis_client.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::cache {
namespace asio = boost::asio;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

std::string lock_key(const std::string& key) { return key + ":lock"; }

void call(const std::function<void(Claim)>& done, Claim claim) {
  try {
    done(std::move(claim));
  } catch (const std::exception& e) {
    log::error(std::string("cache: a claim callback threw: ") + e.what());
  } catch (...) {
    log::error("cache: a claim callback threw a non-exception");
  }
}

// One accepted claim's callback: answered at most once, counted as pending until then.
class Answer {
 public:
  Answer(std::function<void(Claim)> done, std::atomic<std::size_t>& pending)
      : done_(std::move(done)), pending_(pending) {}
  Answer(const Answer&) = delete;
  Answer& operator=(const Answer&) = delete;
  bool answered() const { return answered_; }
  void operator()(Claim claim) {
    if (answered_) return;
    answered_ = true;
    --pending_;
    call(done_, std::move(claim));
  }

 private:
  std::function<void(Claim)> done_;
  std::atomic<std::size_t>& pending_;
  bool answered_ = false;
};
using AnswerPtr = std::shared_ptr<Answer>;

Claim generate(const char* backend, std::string token = {}) {
  return Claim{Claim::generate, {}, backend, std::move(token), false};
}

}  // namespace

struct Cache::Impl {
  // A claim that waits for another instance's generation.
  struct Waiter {
    Waiter(asio::io_context& io, std::string k, Clock::time_point d, AnswerPtr a)
        : key(std::move(k)), deadline(d), answer(std::move(a)), timer(io) {}
    std::string key;
    Clock::time_point deadline;
    AnswerPtr answer;
    asio::steady_timer timer;
  };

  CacheOptions options;
  asio::io_context io;  // before everything holding timers or handlers, destroyed after them
  MemoryCache memory;
  std::unique_ptr<RedisClient> redis;  // null without redis_url; used on the worker only
  CircuitBreaker breaker;              // worker only; `up` mirrors closed() for other threads
  std::atomic<bool> up{false};
  std::atomic<bool> stopping{false};
  std::atomic<std::size_t> pending{0};  // accepted claims not yet answered
  bool outage_logged = false;
  bool probe_pending = false;
  std::map<std::uint64_t, std::shared_ptr<Waiter>> waiters;
  std::uint64_t next_waiter = 0;
  std::mt19937_64 rng{std::random_device{}()};

  CacheMetrics m;

  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  asio::steady_timer probe_timer{io};
  LockKeeper locks{io, options.lock_ttl / 3, options.lock_max_hold,
                   [this](const std::string& key, const std::string& token) {
                     return renew(key, token);
                   }};
  std::thread thread;  // last: started once everything above exists

  Impl(CacheOptions o, metrics::Registry* registry)
      : options(std::move(o)),
        memory(options.memory_entries, options.memory_bytes),
        breaker({options.breaker_failures, options.reconnect_initial, options.reconnect_max}),
        m(registry) {
    options.max_claims = std::max<std::size_t>(options.max_claims, 1);
    if (!options.redis_url.empty()) {
      RedisClientOptions ro;
      ro.connect_timeout = options.connect_timeout;
      ro.command_timeout = options.command_timeout;
      ro.backoff_initial = milliseconds(0);  // the breaker paces reconnection, not the client
      ro.backoff_max = milliseconds(0);
      redis = std::make_unique<RedisClient>(RedisUrl::parse(options.redis_url), ro);
    }
    // The breaker starts open: the first probe runs before any operation posted after this.
    if (redis) asio::post(io, [this] { probe(); });
    thread = std::thread([this] { run(); });
  }

  void run() {
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {
        log::error(std::string("cache: worker: ") + e.what());
      } catch (...) {
        log::error("cache: worker: a non-exception was thrown");
      }
    }
  }

  static void inc(metrics::Counter* c) { CacheMetrics::inc(c); }

  // Runs one request's operation on the worker: the test fault first, then `op`. What either
  // raises is logged and stays with this request.
  template <class Op>
  bool guarded(const char* what, const std::string& key, Op&& op) {
    try {
      if (options.fault_injection) options.fault_injection(key);
      op();
      return true;
    } catch (const std::exception& e) {
      log::error(std::string("cache: ") + what + " " + key + " failed: " + e.what());
    } catch (...) {
      log::error(std::string("cache: ") + what + " " + key + " failed: a non-exception");
    }
    return false;
  }

  std::string new_token() {
    char buf[33];
    std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                  static_cast<unsigned long long>(rng()));
    return buf;
  }

  // --- Redis health: the circuit breaker and its probe ---

  // Whether operations use Redis: only while the breaker is closed. Operations never probe;
  // while Redis is down they cost nothing but a memory lookup.
  bool redis_usable() const { return redis && !stopping && breaker.closed(); }

  void mark_up() {
    if (up.exchange(true)) return;
    m.set_redis_up(true);
    log::info("cache: redis " + redis->url().redacted() + " up");
    outage_logged = false;
  }

  // Counts a failed Redis call. An error reply (the connection is fine, and it came at once)
  // is only logged; a transport failure (timeout, lost connection) counts towards the breaker,
  // which opens after breaker_failures in a row, or at once when connecting failed.
  void on_error(const CacheError& e) {
    const bool connect = e.kind() == CacheError::Kind::connect;
    inc(connect ? m.errors_connect : m.errors_command);
    if (redis->connected()) {
      log::warn(std::string("cache: ") + e.what());
      return;
    }
    const bool opened = connect ? breaker.trip() : breaker.failed();
    if (!opened) {
      log::warn(std::string("cache: ") + e.what() + " (" +
                std::to_string(breaker.consecutive_failures()) + " failed in a row)");
      return;
    }
    up = false;
    m.set_redis_up(false);
    redis->disconnect();
    if (!outage_logged) {
      outage_logged = true;
      log::warn(std::string("cache: ") + e.what() +
                "; redis marked down, serving from memory and probing in the background");
    }
    schedule_probe();
  }

  void schedule_probe() {
    if (probe_pending || stopping || breaker.closed()) return;
    probe_pending = true;
    probe_timer.expires_at(breaker.next_probe());
    probe_timer.async_wait([this](const boost::system::error_code& ec) {
      probe_pending = false;
      if (ec || stopping || breaker.closed()) return;
      probe();
    });
  }

  void probe() {
    std::string why;
    try {
      if (redis->probe(options.probe_timeout)) {
        breaker.probe_succeeded();
        return mark_up();
      }
      why = "PING did not answer PONG";
    } catch (const CacheError& e) {
      inc(e.kind() == CacheError::Kind::connect ? m.errors_connect : m.errors_command);
      why = e.what();
    } catch (const std::exception& e) {
      why = e.what();
    }
    redis->disconnect();
    breaker.probe_failed();
    if (!outage_logged) {
      outage_logged = true;
      log::warn("cache: " + why + "; serving from memory and probing in the background");
    } else {
      log::debug("cache: probe: " + why);
    }
    schedule_probe();
  }

  // GET + envelope check: the body, or nullopt on a miss or a corrupt value (counted, logged).
  std::optional<std::string> redis_lookup(const std::string& key) {
    std::optional<std::string> raw = redis->get(key);
    breaker.succeeded();
    if (!raw) return std::nullopt;
    std::optional<std::string> body = unwrap_value(key, *raw);
    if (!body) {
      inc(m.errors_corrupt);
      log::warn("cache: ignoring a corrupt or foreign value (" + std::to_string(raw->size()) +
                " bytes) under " + key + "; the next store overwrites it");
    }
    return body;
  }

  // One renewal of a held lock (LockKeeper calls it every lock_ttl/3 on the worker).
  LockKeeper::Renewal renew(const std::string& key, const std::string& token) {
    if (!redis_usable()) return LockKeeper::Renewal::unknown;
    try {
      const bool renewed = redis->compare_and_pexpire(lock_key(key), token, options.lock_ttl);
      breaker.succeeded();
      return renewed ? LockKeeper::Renewal::renewed : LockKeeper::Renewal::lost;
    } catch (const CacheError& e) {
      on_error(e);
      return LockKeeper::Renewal::unknown;
    }
  }

  // --- operations (worker thread) ---

  void do_claim(const std::string& key, milliseconds max_wait, const AnswerPtr& answer) {
    if (stopping) return (*answer)(generate("memory"));
    if (std::optional<std::string> v = memory.get(key)) {
      inc(m.hits_memory);
      return (*answer)(Claim{Claim::hit, std::move(*v), "memory", {}, false});
    }
    if (!redis_usable()) {
      inc(m.misses_memory);
      return (*answer)(generate("memory"));
    }
    try {
      if (std::optional<std::string> v = redis_lookup(key)) {
        return redis_hit(key, *v, false, *answer);
      }
      std::string token = new_token();
      const bool took = redis->set_nx(lock_key(key), token, options.lock_ttl);
      breaker.succeeded();
      if (took) {
        locks.hold(key, token);
        inc(m.misses_redis);
        return (*answer)(generate("redis", std::move(token)));
      }
    } catch (const CacheError& e) {
      on_error(e);
      inc(m.misses_memory);
      return (*answer)(generate("memory"));
    }
    auto w = std::make_shared<Waiter>(io, key, Clock::now() + max_wait, answer);
    const std::uint64_t id = next_waiter++;
    waiters.emplace(id, w);
    if (max_wait <= milliseconds::zero()) return poll(id, w);  // takes the lock over at once
    arm(id, w);
  }

  void redis_hit(const std::string& key, std::string value, bool joined, Answer& answer) {
    inc(m.hits_redis);
    if (joined) inc(m.joins_remote);
    memory.put(key, value, options.ttl);
    answer(Claim{Claim::hit, std::move(value), "redis", {}, joined});
  }

  // One look for the lock holder's result; answers, or re-arms the waiter's timer.
  void poll(std::uint64_t id, const std::shared_ptr<Waiter>& w) {
    if (w->answer->answered()) {
      waiters.erase(id);
      return;
    }
    const bool ok = guarded("claim", w->key, [&] { poll_once(id, w); });
    if (!ok || w->answer->answered()) {
      waiters.erase(id);
      (*w->answer)(generate("memory"));  // no-op when answered
    }
  }

  void poll_once(std::uint64_t id, const std::shared_ptr<Waiter>& w) {
    Answer& answer = *w->answer;
    if (stopping) return answer(generate("memory"));
    if (std::optional<std::string> v = memory.get(w->key)) {
      inc(m.hits_memory);
      return answer(Claim{Claim::hit, std::move(*v), "memory", {}, true});
    }
    if (!redis_usable()) {  // lost meanwhile: generate without a lock
      inc(m.misses_memory);
      return answer(generate("memory"));
    }
    try {
      if (std::optional<std::string> v = redis_lookup(w->key)) {
        return redis_hit(w->key, *v, true, answer);
      }
      const std::string lock = lock_key(w->key);
      std::string token = new_token();
      bool took = redis->set_nx(lock, token, options.lock_ttl);  // the holder gave up or died
      if (took) {
        // The holder may have stored and released between the GET and the SET.
        if (std::optional<std::string> v = redis_lookup(w->key)) {
          redis->compare_and_delete(lock, token);
          return redis_hit(w->key, *v, true, answer);
        }
      } else if (Clock::now() >= w->deadline) {
        redis->set(lock, token, options.lock_ttl);  // waited long enough: take it over
        took = true;
      }
      breaker.succeeded();
      if (took) {
        locks.hold(w->key, token);
        inc(m.misses_redis);
        return answer(generate("redis", std::move(token)));
      }
    } catch (const CacheError& e) {
      on_error(e);
      inc(m.misses_memory);
      return answer(generate("memory"));
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
    locks.drop(key, token);
    memory.put(key, value, options.ttl);
    if (!redis_usable()) return;
    try {
      redis->set(key, wrap_value(key, value), options.ttl);
      breaker.succeeded();
      if (!token.empty()) redis->compare_and_delete(lock_key(key), token);
    } catch (const CacheError& e) {
      on_error(e);
    }
  }

  void do_release(const std::string& key, const std::string& token) {
    locks.drop(key, token);
    if (token.empty() || !redis_usable()) return;
    try {
      redis->compare_and_delete(lock_key(key), token);
      breaker.succeeded();
    } catch (const CacheError& e) {
      on_error(e);
    }
  }

  void shutdown() {
    probe_timer.cancel();
    locks.stop();
    auto left = std::move(waiters);
    waiters.clear();
    for (auto& [id, w] : left) {
      w->timer.cancel();
      (*w->answer)(generate("memory"));  // no-op when answered
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

bool Cache::claim(std::string key, milliseconds max_wait, std::function<void(Claim)> done) {
  Impl& impl = *impl_;
  if (!impl.stopping) {  // a memory hit never waits behind the worker's Redis calls
    if (std::optional<std::string> v = impl.memory.get(key)) {
      Impl::inc(impl.m.hits_memory);
      call(done, Claim{Claim::hit, std::move(*v), "memory", {}, false});
      return true;
    }
  }
  if (impl.pending.fetch_add(1) >= impl.options.max_claims) {
    --impl.pending;
    return false;
  }
  auto answer = std::make_shared<Answer>(std::move(done), impl.pending);
  asio::post(impl.io, [impl = &impl, key = std::move(key), max_wait, answer] {
    if (!impl->guarded("claim", key, [&] { impl->do_claim(key, max_wait, answer); })) {
      (*answer)(generate("memory"));  // what it raised: a plain miss (no-op when answered)
    }
  });
  return true;
}

void Cache::store(std::string key, std::string value, std::string lock_token) {
  asio::post(impl_->io, [impl = impl_.get(), key = std::move(key), value = std::move(value),
                         token = std::move(lock_token)] {
    impl->guarded("store", key, [&] { impl->do_store(key, value, token); });
  });
}

void Cache::release(std::string key, std::string lock_token) {
  asio::post(impl_->io, [impl = impl_.get(), key = std::move(key), token = std::move(lock_token)] {
    impl->guarded("release", key, [&] { impl->do_release(key, token); });
  });
}

std::size_t Cache::pending_claims() const { return impl_->pending; }
std::size_t Cache::held_locks() const { return impl_->locks.size(); }
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

#include "writeup/cache/cache.hpp"

#include <gtest/gtest.h>

#include <future>
#include <memory>
#include <stdexcept>
#include <thread>

#include "redis_server.hpp"
#include "writeup/cache/redis_client.hpp"
#include "writeup/metrics/registry.hpp"

using namespace writeup::cache;
using std::chrono::milliseconds;
using writeup::metrics::Registry;
using writeup::test::RedisServer;
using Clock = std::chrono::steady_clock;

namespace {

CacheOptions options(const std::string& url) {
  CacheOptions o;
  o.redis_url = url;
  o.connect_timeout = milliseconds(300);
  o.command_timeout = milliseconds(300);
  o.reconnect_initial = milliseconds(20);
  o.reconnect_max = milliseconds(100);
  o.poll_interval = milliseconds(10);
  return o;
}

std::future<Claim> claim_async(Cache& cache, const std::string& key,
                               milliseconds max_wait = milliseconds(2000)) {
  auto promise = std::make_shared<std::promise<Claim>>();
  cache.claim(key, max_wait, [promise](Claim c) { promise->set_value(std::move(c)); });
  return promise->get_future();
}

Claim claim(Cache& cache, const std::string& key, milliseconds max_wait = milliseconds(2000)) {
  std::future<Claim> f = claim_async(cache, key, max_wait);
  if (f.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    throw std::runtime_error("claim did not answer within 5 s");
  }
  return f.get();
}

double hits(Registry& r, const char* backend) {
  return r.counter(kHitsMetric, kHitsHelp, {{"backend", backend}}).value();
}
double misses(Registry& r, const char* backend) {
  return r.counter(kMissesMetric, kMissesHelp, {{"backend", backend}}).value();
}
double errors(Registry& r, const char* kind) {
  return r.counter(kErrorsMetric, kErrorsHelp, {{"backend", "redis"}, {"kind", kind}}).value();
}
double joins(Registry& r) {
  return r.counter(kJoinsMetric, kJoinsHelp, {{"scope", "remote"}}).value();
}
double redis_up(Registry& r) { return r.gauge(kRedisUpMetric, kRedisUpHelp).value(); }

RedisClient raw(const RedisServer& server) { return RedisClient(RedisUrl::parse(server.url())); }

}  // namespace

TEST(Cache, MemoryOnlyWithoutRedis) {
  Registry r;
  Cache cache(options(""), &r);
  EXPECT_FALSE(cache.redis_configured());
  EXPECT_FALSE(cache.redis_connected());
  std::thread::id callback_thread;
  std::promise<Claim> p;
  cache.claim("k", milliseconds(100), [&](Claim c) {
    callback_thread = std::this_thread::get_id();
    p.set_value(std::move(c));
  });
  const Claim first = p.get_future().get();
  EXPECT_NE(callback_thread, std::this_thread::get_id());  // runs on the worker
  EXPECT_EQ(first.kind, Claim::generate);
  EXPECT_EQ(first.backend, "memory");
  EXPECT_EQ(first.lock_token, "");
  cache.store("k", "response", "");
  const Claim second = claim(cache, "k");
  EXPECT_EQ(second.kind, Claim::hit);
  EXPECT_EQ(second.value, "response");
  EXPECT_EQ(second.backend, "memory");
  EXPECT_EQ(hits(r, "memory"), 1);
  EXPECT_EQ(misses(r, "memory"), 1);
  EXPECT_EQ(redis_up(r), 0);

  CacheOptions off = options("");
  off.memory_entries = 0;
  Cache none(off, nullptr);
  none.store("k", "response", "");
  EXPECT_EQ(claim(none, "k").kind, Claim::generate);
}

TEST(Cache, BadRedisUrlThrows) {
  EXPECT_THROW(Cache(options("http://localhost"), nullptr), std::invalid_argument);
}

TEST(Cache, StoresInRedisWithTtlAndRedisHitFillsMemory) {
  RedisServer server;
  Registry r;
  Cache a(options(server.url()), &r);
  const Claim c = claim(a, "writeup:v1:t:1");
  EXPECT_EQ(c.kind, Claim::generate);
  EXPECT_EQ(c.backend, "redis");
  EXPECT_FALSE(c.lock_token.empty());
  EXPECT_EQ(misses(r, "redis"), 1);
  EXPECT_TRUE(a.redis_connected());
  EXPECT_EQ(redis_up(r), 1);
  RedisClient client = raw(server);
  EXPECT_EQ(client.get("writeup:v1:t:1:lock"), c.lock_token);

  a.store("writeup:v1:t:1", "the body", c.lock_token);
  a.flush();
  EXPECT_FALSE(client.exists("writeup:v1:t:1:lock"));  // released
  const long long left = client.pttl("writeup:v1:t:1");
  EXPECT_GT(left, 0);
  EXPECT_LE(left, 259200LL * 1000);
  EXPECT_NE(client.get("writeup:v1:t:1")->find("the body"), std::string::npos);

  Registry rb;
  Cache b(options(server.url()), &rb);
  const Claim from_redis = claim(b, "writeup:v1:t:1");
  EXPECT_EQ(from_redis.kind, Claim::hit);
  EXPECT_EQ(from_redis.backend, "redis");
  EXPECT_EQ(from_redis.value, "the body");
  EXPECT_FALSE(from_redis.joined);
  const Claim from_memory = claim(b, "writeup:v1:t:1");
  EXPECT_EQ(from_memory.backend, "memory");
  EXPECT_EQ(from_memory.value, "the body");
  EXPECT_EQ(hits(rb, "redis"), 1);
  EXPECT_EQ(hits(rb, "memory"), 1);
  EXPECT_EQ(joins(rb), 0);
}

TEST(Cache, OneSecondTtlReallyExpires) {
  RedisServer server;
  CacheOptions o = options(server.url());
  o.ttl = std::chrono::seconds(1);
  Cache cache(o, nullptr);
  cache.store("k", "v", "");
  cache.flush();
  RedisClient client = raw(server);
  const long long left = client.pttl("k");
  EXPECT_GT(left, 0);
  EXPECT_LE(left, 1000);
  std::this_thread::sleep_for(milliseconds(1100));
  EXPECT_FALSE(client.exists("k"));
  EXPECT_EQ(claim(cache, "k").kind, Claim::generate);  // gone from memory too
}

TEST(Cache, SecondInstanceWaitsAndJoinsTheFirstsResult) {
  RedisServer server;
  Cache a(options(server.url()), nullptr);
  Registry rb;
  Cache b(options(server.url()), &rb);
  const Claim first = claim(a, "k");
  ASSERT_EQ(first.kind, Claim::generate);
  std::future<Claim> waiting = claim_async(b, "k");
  EXPECT_EQ(waiting.wait_for(milliseconds(100)), std::future_status::timeout);
  a.store("k", "generated once", first.lock_token);
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  const Claim joined = waiting.get();
  EXPECT_EQ(joined.kind, Claim::hit);
  EXPECT_EQ(joined.backend, "redis");
  EXPECT_EQ(joined.value, "generated once");
  EXPECT_TRUE(joined.joined);
  EXPECT_EQ(joins(rb), 1);
  EXPECT_EQ(hits(rb, "redis"), 1);
  EXPECT_EQ(misses(rb, "redis") + misses(rb, "memory"), 0);
}

TEST(Cache, ReleaseWithoutStoringLetsTheWaiterGenerate) {
  RedisServer server;
  Cache a(options(server.url()), nullptr);
  Registry rb;
  Cache b(options(server.url()), &rb);
  const Claim first = claim(a, "k");
  std::future<Claim> waiting = claim_async(b, "k");
  EXPECT_EQ(waiting.wait_for(milliseconds(100)), std::future_status::timeout);
  a.release("k", "not the token");  // a wrong token releases nothing
  EXPECT_EQ(waiting.wait_for(milliseconds(100)), std::future_status::timeout);
  a.release("k", first.lock_token);
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(2)), std::future_status::ready);
  const Claim second = waiting.get();
  EXPECT_EQ(second.kind, Claim::generate);
  EXPECT_EQ(second.backend, "redis");
  EXPECT_FALSE(second.lock_token.empty());
  EXPECT_NE(second.lock_token, first.lock_token);
  EXPECT_EQ(raw(server).get("k:lock"), second.lock_token);
  EXPECT_EQ(misses(rb, "redis"), 1);
  EXPECT_EQ(joins(rb), 0);
}

TEST(Cache, WinnerDiesAndItsLockExpires) {
  RedisServer server;
  CacheOptions short_lock = options(server.url());
  short_lock.lock_ttl = milliseconds(300);
  auto a = std::make_unique<Cache>(short_lock, nullptr);
  Cache b(options(server.url()), nullptr);
  const Claim first = claim(*a, "k");
  ASSERT_EQ(first.kind, Claim::generate);
  a.reset();  // a dies: it never stores nor releases, and no longer renews its lock
  const auto t0 = Clock::now();
  const Claim second = claim(b, "k", milliseconds(2000));
  const auto waited = Clock::now() - t0;
  EXPECT_EQ(second.kind, Claim::generate);
  EXPECT_FALSE(second.lock_token.empty());
  EXPECT_GE(waited, milliseconds(200));
  EXPECT_LT(waited, milliseconds(1500));  // well before max_wait
  EXPECT_EQ(raw(server).get("k:lock"), second.lock_token);
}

TEST(Cache, MaxWaitTakesTheLockOver) {
  RedisServer server;
  Cache a(options(server.url()), nullptr);
  Cache b(options(server.url()), nullptr);
  const Claim first = claim(a, "k");
  const auto t0 = Clock::now();
  const Claim second = claim(b, "k", milliseconds(200));
  EXPECT_GE(Clock::now() - t0, milliseconds(200));
  EXPECT_EQ(second.kind, Claim::generate);
  RedisClient client = raw(server);
  EXPECT_EQ(client.get("k:lock"), second.lock_token);
  a.store("k", "late", first.lock_token);  // the old holder's release leaves b's lock alone
  a.flush();
  EXPECT_EQ(client.get("k:lock"), second.lock_token);
  EXPECT_EQ(claim(b, "k").value, "late");
}

TEST(Cache, RedisLostMidRunThenBack) {
  RedisServer server;
  Registry r;
  Cache cache(options(server.url()), &r);
  const Claim c1 = claim(cache, "k1");
  cache.store("k1", "v1", c1.lock_token);
  cache.flush();
  ASSERT_TRUE(cache.redis_connected());

  server.kill();
  EXPECT_EQ(claim(cache, "k1").value, "v1");  // from memory, Redis untouched
  // The lost connection fails a command; the reconnection is refused: down after two claims.
  int tries = 0;
  Claim c2;
  while (cache.redis_connected() && tries < 2) {
    c2 = claim(cache, "k2");
    ++tries;
    EXPECT_EQ(c2.kind, Claim::generate);
    EXPECT_EQ(c2.backend, "memory");
    EXPECT_EQ(c2.lock_token, "");
  }
  EXPECT_GE(errors(r, "command") + errors(r, "connect"), 1);
  EXPECT_FALSE(cache.redis_connected());
  EXPECT_EQ(redis_up(r), 0);
  cache.store("k2", "v2", "");
  cache.release("k2", "");
  const Claim again = claim(cache, "k2");
  EXPECT_EQ(again.kind, Claim::hit);
  EXPECT_EQ(again.value, "v2");

  server.start();
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  while (!cache.redis_connected() && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_TRUE(cache.redis_connected());  // reconnected in the background
  EXPECT_EQ(redis_up(r), 1);
  cache.store("k3", "v3", "");
  cache.flush();
  CacheOptions no_memory = options(server.url());
  no_memory.memory_entries = 0;
  Cache fresh(no_memory, nullptr);
  const Claim c3 = claim(fresh, "k3");
  EXPECT_EQ(c3.kind, Claim::hit);
  EXPECT_EQ(c3.backend, "redis");
  EXPECT_EQ(c3.value, "v3");
}

TEST(Cache, RedisAbsentAtStartServesFromMemory) {
  Registry r;
  Cache cache(options("redis://127.0.0.1:" + std::to_string(writeup::test::free_port())), &r);
  EXPECT_TRUE(cache.redis_configured());
  const Claim c = claim(cache, "k");
  EXPECT_EQ(c.kind, Claim::generate);
  EXPECT_EQ(c.backend, "memory");
  EXPECT_EQ(c.lock_token, "");
  cache.store("k", "v", c.lock_token);
  EXPECT_EQ(claim(cache, "k").value, "v");
  EXPECT_FALSE(cache.redis_connected());
  EXPECT_GE(errors(r, "connect"), 1);
  EXPECT_EQ(redis_up(r), 0);
}

TEST(Cache, CorruptValueIsAMissAndIsOverwritten) {
  RedisServer server;
  RedisClient client = raw(server);
  client.set("k", "garbage \xff\x00", milliseconds(60000));
  client.set("other", "writeup_cache:1\nk\n1\nx", milliseconds(60000));        // another key's
  client.set("short", "writeup_cache:1\nshort\n5\nabc", milliseconds(60000));  // truncated
  CacheOptions o = options(server.url());
  o.memory_entries = 0;
  Registry r;
  Cache cache(o, &r);
  const Claim c = claim(cache, "k");
  EXPECT_EQ(c.kind, Claim::generate);
  EXPECT_EQ(c.backend, "redis");
  EXPECT_EQ(errors(r, "corrupt"), 1);
  EXPECT_EQ(claim(cache, "other").kind, Claim::generate);
  EXPECT_EQ(claim(cache, "short").kind, Claim::generate);
  EXPECT_EQ(errors(r, "corrupt"), 3);
  EXPECT_EQ(misses(r, "redis"), 3);
  cache.store("k", "good", c.lock_token);
  const Claim after = claim(cache, "k");
  EXPECT_EQ(after.kind, Claim::hit);
  EXPECT_EQ(after.value, "good");
  EXPECT_EQ(errors(r, "command") + errors(r, "connect"), 0);
}

TEST(Cache, DestructorAnswersWaitingClaims) {
  RedisServer server;
  Cache a(options(server.url()), nullptr);
  const Claim first = claim(a, "k");
  ASSERT_EQ(first.kind, Claim::generate);
  std::future<Claim> waiting;
  {
    Cache b(options(server.url()), nullptr);
    waiting = claim_async(b, "k", milliseconds(10000));
    EXPECT_EQ(waiting.wait_for(milliseconds(50)), std::future_status::timeout);
  }
  ASSERT_EQ(waiting.wait_for(milliseconds(0)), std::future_status::ready);
  const Claim answered = waiting.get();
  EXPECT_EQ(answered.kind, Claim::generate);
  EXPECT_EQ(answered.lock_token, "");
}

// --- hardening: a frozen Redis, lock renewal, the claim bound, faults on the worker ---

namespace {

// Polls `ready` every 10 ms for at most `limit`; true once it held.
template <class F>
bool eventually(F ready, milliseconds limit = milliseconds(5000)) {
  const auto deadline = Clock::now() + limit;
  while (!ready()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

CacheOptions breaker_options(const std::string& url) {
  CacheOptions o = options(url);
  o.breaker_failures = 3;
  o.probe_timeout = milliseconds(100);
  return o;
}

}  // namespace

TEST(Cache, FrozenRedisIsMarkedDownAfterNFailuresAndProbedBack) {
  RedisServer server;
  Registry r;
  CacheOptions o = breaker_options(server.url());
  o.reconnect_initial = milliseconds(500);  // few probes (each holds the worker up to 100 ms)
  o.reconnect_max = milliseconds(500);
  Cache cache(o, &r);
  const Claim c = claim(cache, "hot");
  ASSERT_EQ(c.backend, "redis");
  cache.store("hot", "hot value", c.lock_token);
  cache.flush();
  ASSERT_TRUE(cache.redis_connected());

  server.stop();
  // Each claim waits out one command timeout until the third in a row opens the breaker.
  int claims = 0;
  while (cache.redis_connected() && claims < 10) {
    const Claim m = claim(cache, "cold" + std::to_string(claims++));
    EXPECT_EQ(m.kind, Claim::generate);
    EXPECT_EQ(m.lock_token, "");
  }
  EXPECT_EQ(claims, 3);
  EXPECT_FALSE(cache.redis_connected());
  EXPECT_EQ(redis_up(r), 0);
  EXPECT_GE(errors(r, "command"), 3);

  // Down: claims fail fast instead of waiting out the timeout (20 x 300 ms if they did not).
  const auto t0 = Clock::now();
  for (int i = 0; i < 20; ++i) {
    const Claim m = claim(cache, "down" + std::to_string(i));
    EXPECT_EQ(m.kind, Claim::generate);
    EXPECT_EQ(m.backend, "memory");
  }
  EXPECT_LT(Clock::now() - t0, milliseconds(3000));

  // A memory hit is answered on the caller's thread before claim() returns, even while the
  // worker is stuck in a Redis call.
  std::thread::id answered_on;
  Claim hit;
  ASSERT_TRUE(cache.claim("hot", milliseconds(100), [&](Claim h) {
    answered_on = std::this_thread::get_id();
    hit = std::move(h);
  }));
  EXPECT_EQ(answered_on, std::this_thread::get_id());
  EXPECT_EQ(hit.kind, Claim::hit);
  EXPECT_EQ(hit.value, "hot value");

  server.resume();
  ASSERT_TRUE(eventually([&] { return cache.redis_connected(); }));  // the probe brought it back
  EXPECT_EQ(redis_up(r), 1);
  const Claim back = claim(cache, "after");
  EXPECT_EQ(back.backend, "redis");
  EXPECT_FALSE(back.lock_token.empty());
}

TEST(Cache, MemoryHitDoesNotWaitBehindARedisCall) {
  RedisServer server;
  CacheOptions o = breaker_options(server.url());
  o.command_timeout = milliseconds(1000);
  Cache cache(o, nullptr);
  cache.store("hot", "hot value", "");
  cache.flush();
  server.stop();
  std::future<Claim> stuck = claim_async(cache, "cold");  // the worker waits on a frozen Redis
  bool answered = false;
  ASSERT_TRUE(cache.claim("hot", milliseconds(100), [&](Claim h) {
    answered = h.kind == Claim::hit && h.value == "hot value";
  }));
  EXPECT_TRUE(answered);  // already, while "cold" still waits on Redis
  EXPECT_EQ(stuck.wait_for(milliseconds(0)), std::future_status::timeout);
  server.resume();
  EXPECT_EQ(stuck.wait_for(std::chrono::seconds(5)), std::future_status::ready);
}

TEST(Cache, HeldLockOutlivesItsTtlAndRenewalStopsOnStoreAndRelease) {
  RedisServer server;
  CacheOptions o = options(server.url());
  o.lock_ttl = milliseconds(300);  // renewed every 100 ms
  Cache a(o, nullptr);
  const Claim first = claim(a, "long");
  const Claim second = claim(a, "cancelled");
  ASSERT_FALSE(first.lock_token.empty());
  ASSERT_FALSE(second.lock_token.empty());
  EXPECT_EQ(a.held_locks(), 2u);
  std::this_thread::sleep_for(milliseconds(1000));  // more than three times the lock's TTL
  RedisClient client = raw(server);
  EXPECT_EQ(client.get("long:lock"), first.lock_token);
  EXPECT_EQ(client.get("cancelled:lock"), second.lock_token);
  const long long left = client.pttl("long:lock");
  EXPECT_GT(left, 0);
  EXPECT_LE(left, 300);

  a.store("long", "done", first.lock_token);
  a.release("cancelled", second.lock_token);
  a.flush();
  EXPECT_EQ(a.held_locks(), 0u);
  EXPECT_FALSE(client.exists("long:lock"));
  EXPECT_FALSE(client.exists("cancelled:lock"));

  // A lock taken over by another instance is not renewed (nor deleted) by its old holder.
  const Claim third = claim(a, "stolen");
  ASSERT_FALSE(third.lock_token.empty());
  client.set("stolen:lock", "someone else", milliseconds(60000));
  EXPECT_TRUE(eventually([&] { return a.held_locks() == 0; }, milliseconds(2000)));
  EXPECT_EQ(client.get("stolen:lock"), "someone else");
  EXPECT_GT(client.pttl("stolen:lock"), 1000);
}

TEST(Cache, LockRenewalEndsAfterLockMaxHold) {
  RedisServer server;
  CacheOptions o = options(server.url());
  o.lock_ttl = milliseconds(200);
  o.lock_max_hold = milliseconds(400);  // a holder that never stores nor releases
  Cache a(o, nullptr);
  ASSERT_FALSE(claim(a, "forgotten").lock_token.empty());
  RedisClient client = raw(server);
  EXPECT_TRUE(eventually([&] { return a.held_locks() == 0; }, milliseconds(3000)));
  EXPECT_TRUE(eventually([&] { return !client.exists("forgotten:lock"); }, milliseconds(3000)));
}

TEST(Cache, SecondInstanceDoesNotTakeOverDuringALongGeneration) {
  RedisServer server;
  CacheOptions o = options(server.url());
  o.lock_ttl = milliseconds(300);
  Cache a(o, nullptr);
  Registry rb;
  Cache b(o, &rb);
  const Claim first = claim(a, "slow");
  ASSERT_EQ(first.kind, Claim::generate);
  std::future<Claim> waiting = claim_async(b, "slow", milliseconds(10000));
  // Four lock lifetimes: without renewal b would have taken the lock and generated too.
  EXPECT_EQ(waiting.wait_for(milliseconds(1200)), std::future_status::timeout);
  EXPECT_EQ(raw(server).get("slow:lock"), first.lock_token);
  a.store("slow", "generated once", first.lock_token);
  ASSERT_EQ(waiting.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  const Claim joined = waiting.get();
  EXPECT_EQ(joined.kind, Claim::hit);
  EXPECT_EQ(joined.value, "generated once");
  EXPECT_TRUE(joined.joined);
  EXPECT_EQ(misses(rb, "redis"), 0);
}

TEST(Cache, ClaimQueueIsBoundedWhileRedisIsSlow) {
  RedisServer server;
  CacheOptions o = breaker_options(server.url());
  o.max_claims = 4;
  Cache cache(o, nullptr);
  cache.store("hot", "hot value", "");
  cache.flush();
  server.stop();  // the first claim holds the worker for a command timeout
  std::vector<std::future<Claim>> accepted;
  int refused = 0;
  std::size_t most_pending = 0;
  for (int i = 0; i < 200; ++i) {
    auto promise = std::make_shared<std::promise<Claim>>();
    if (cache.claim("flood" + std::to_string(i), milliseconds(1000),
                    [promise](Claim c) { promise->set_value(std::move(c)); })) {
      accepted.push_back(promise->get_future());
    } else {
      ++refused;
    }
    most_pending = std::max(most_pending, cache.pending_claims());
  }
  EXPECT_LE(most_pending, 4u);
  EXPECT_GE(accepted.size(), 4u);
  EXPECT_GT(refused, 150);
  // A memory hit is never refused: it does not queue.
  bool hit = false;
  EXPECT_TRUE(cache.claim("hot", milliseconds(100), [&](Claim c) { hit = c.kind == Claim::hit; }));
  EXPECT_TRUE(hit);
  server.resume();
  for (auto& f : accepted) {  // every accepted claim is answered
    ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_EQ(f.get().kind, Claim::generate);
  }
  EXPECT_EQ(cache.pending_claims(), 0u);
  EXPECT_TRUE(cache.claim("later", milliseconds(100), [](Claim) {}));
}

TEST(Cache, WorkerSurvivesWhatARequestRaises) {
  CacheOptions o = options("");
  o.fault_injection = [](const std::string& key) {
    if (key == "throws") throw std::runtime_error("injected");
    if (key == "throws-int") throw 42;
  };
  Registry r;
  Cache cache(o, &r);
  const Claim a = claim(cache, "throws");
  EXPECT_EQ(a.kind, Claim::generate);
  EXPECT_EQ(a.lock_token, "");
  EXPECT_EQ(claim(cache, "throws-int").kind, Claim::generate);
  cache.store("throws", "v", "");
  cache.release("throws-int", "t");
  cache.flush();
  EXPECT_EQ(cache.pending_claims(), 0u);
  // The worker still serves everyone else.
  EXPECT_EQ(claim(cache, "fine").kind, Claim::generate);
  cache.store("fine", "ok", "");
  cache.flush();
  const Claim again = claim(cache, "fine");
  EXPECT_EQ(again.kind, Claim::hit);
  EXPECT_EQ(again.value, "ok");
  // A callback that throws is logged; the worker goes on.
  cache.claim("other", milliseconds(100), [](Claim) { throw std::runtime_error("callback"); });
  cache.claim("other2", milliseconds(100), [](Claim) { throw 7; });
  EXPECT_EQ(claim(cache, "fine").value, "ok");
}

TEST(Cache, ErrorRepliesDoNotMarkRedisDown) {
  // Every write is refused with "-OOM ...", at once, on a healthy connection.
  RedisServer server({"--maxmemory", "1", "--maxmemory-policy", "noeviction"});
  Registry r;
  Cache cache(breaker_options(server.url()), &r);
  for (int i = 0; i < 6; ++i) {
    const Claim c = claim(cache, "refused" + std::to_string(i));
    EXPECT_EQ(c.kind, Claim::generate);
    EXPECT_EQ(c.lock_token, "");  // the lock could not be taken
  }
  EXPECT_GE(errors(r, "command"), 6);
  EXPECT_TRUE(cache.redis_connected());
  EXPECT_EQ(redis_up(r), 1);
}

// The service's request preparation at the edge of the context, and the server context's
// explicit shutdown: the context -> service -> cache -> flight -> session -> context cycle is
// broken and the context really destroyed.
#include "writeup/server/server_context.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <utility>
#include <thread>

#include "redis_server.hpp"
#include "test_support.hpp"
#include "writeup/cache/redis_client.hpp"
#include "writeup/engine/worker.hpp"

namespace t = writeup::test;
using writeup::api::ApiError;
using writeup::api::WriteupRequest;
using writeup::server::ServerConfig;
using writeup::server::ServerContext;
using writeup::service::StreamEvents;

namespace {

ServerConfig tiny_config(const std::string& redis = "") {
  ServerConfig c;
  writeup::server::ModelConfig m;
  m.name = "tiny-gpt2";
  m.path = t::model_dir("tiny-gpt2").string();
  m.packed_cache = "off";  // "auto" would write a .writeup-cache/ folder into tests/data
  m.max_batch = 4;
  c.models.push_back(m);
  c.limits.max_batch_size = 4;
  c.cache.redis = redis;
  c.cache.memory_entries = 100;
  c.server.io_threads = 1;
  return c;
}

template <class F>
bool eventually(F done, int max_ms = 20000) {
  for (int i = 0; i < max_ms && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return done();
}

WriteupRequest writeup_request(std::string prompt, int length) {
  WriteupRequest r;
  r.prompt = std::move(prompt);
  r.length = length;
  r.batch_size = 2;
  return r;
}

bool redis_up(const ServerContext& ctx) {
  return ctx.metrics.exposition().find("writeup_cache_redis_up 1") != std::string::npos;
}

}  // namespace

// Regression (issue 11, defect 2): a length at or beyond the context made the truncation room
// negative and erase() ran past the end of the prompt (heap corruption).
TEST(CompletionService, ALengthTheContextCannotHoldIsA400NamingLengthAndTheContext) {
  auto ctx = std::make_shared<ServerContext>(tiny_config());
  for (const int length : {100, 64}) {
    try {
      (void)ctx->service.prepare(writeup_request("Hello", length));
      ADD_FAILURE() << "length " << length << " was accepted";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_EQ(e.param(), "length");
      const std::string m = e.what();
      EXPECT_NE(m.find("length (" + std::to_string(length) + ")"), std::string::npos) << m;
      EXPECT_NE(m.find("context is 64 tokens"), std::string::npos) << m;
      EXPECT_NE(m.find("at most 63"), std::string::npos) << m;
    }
  }
  // The largest length that fits keeps one prompt token: the most recent one.
  std::string doc;
  for (int i = 0; i < 40; ++i) doc += " word" + std::to_string(i);
  const auto p = ctx->service.prepare(writeup_request(doc, 63));
  EXPECT_EQ(p.prompt_tokens, 1);
  EXPECT_EQ(p.request.prompt.size(), 1u);
  EXPECT_GT(p.truncated_tokens, 0);
  EXPECT_EQ(p.request.params.max_tokens, 63);
  const auto q = ctx->service.prepare(writeup_request("Hello", 63));
  EXPECT_EQ(q.truncated_tokens, 0);
}

// A claim waiting for another instance's generation holds the flight, whose subscriber (a
// session) holds the context: nothing else frees it. shutdown() answers the claim (the
// subscriber hears "shutting down"), and dropping the last reference destroys the context.
TEST(ServerContext, ShutdownBreaksTheOwnershipCycleAndTheContextIsDestroyed) {
  t::RedisServer redis;
  auto ctx = std::make_shared<ServerContext>(tiny_config(redis.url()));
  ASSERT_TRUE(eventually([&] { return ctx->models.ready() && redis_up(*ctx); }));
  const auto prepared = ctx->service.prepare(writeup_request("Hello", 10));
  ASSERT_FALSE(prepared.cache_key.empty());
  // Another instance is generating this response: our claim waits for it.
  writeup::cache::RedisClient raw(writeup::cache::RedisUrl::parse(redis.url()));
  raw.set(prepared.cache_key + ":lock", "another-instance", std::chrono::minutes(5));

  auto error = std::make_shared<std::promise<std::string>>();
  StreamEvents events;  // like a session's: holds the context
  events.on_text = [ctx](const std::vector<writeup::service::TextDelta>&) {};
  events.on_done = [ctx, error](const auto&) { error->set_value("done"); };
  events.on_error = [ctx, error](const writeup::service::ServiceError& e) { error->set_value(e.error.code()); };
  auto subscription = ctx->service.start(prepared, std::move(events));
  std::weak_ptr<ServerContext> weak = ctx;
  EXPECT_GT(weak.use_count(), 1);  // the cycle: the waiting claim's subscriber holds it

  ctx->shutdown();
  auto result = error->get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  EXPECT_EQ(result.get(), "shutting_down");
  ctx.reset();
  EXPECT_TRUE(weak.expired());  // ~ServerContext ran
  subscription->cancel();       // harmless after the end
}

// Regression: destroying the context without shutdown() ran the cache's destructor after the
// service's flight map was gone; the waiting claim's callback then used it (use after
// destroy, seen under ASan). The destructor now shuts down first, in order.
TEST(ServerContext, DestroyingTheContextWithAClaimWaitingIsOrderly) {
  t::RedisServer redis;
  auto ctx = std::make_shared<ServerContext>(tiny_config(redis.url()));
  ASSERT_TRUE(eventually([&] { return ctx->models.ready() && redis_up(*ctx); }));
  const auto prepared = ctx->service.prepare(writeup_request("Hello", 12));
  writeup::cache::RedisClient raw(writeup::cache::RedisUrl::parse(redis.url()));
  raw.set(prepared.cache_key + ":lock", "another-instance", std::chrono::minutes(5));
  auto error = std::make_shared<std::promise<std::string>>();
  StreamEvents events;
  events.on_done = [error](const auto&) { error->set_value("done"); };
  events.on_error = [error](const writeup::service::ServiceError& e) { error->set_value(e.error.code()); };
  auto subscription = ctx->service.start(prepared, std::move(events));
  ctx.reset();  // no explicit shutdown(): the destructor does it
  auto result = error->get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(result.get(), "shutting_down");
}

TEST(ServerContext, TheServiceIsConfiguredByItsOwnOptions) {
  auto c = tiny_config("redis://127.0.0.1:1");
  c.limits.request_timeout_s = 7;
  c.limits.max_queue = 3;
  c.defaults.seed = 9;
  c.cache.ttl_s = 11;
  c.cache.memory_entries = 12;
  c.stream.every_words = 13;
  bool ran = false;
  const auto o = ServerContext::service_options(c, [&](std::function<void()> task) {
    ran = true;
    task();
  });
  EXPECT_EQ(o.request_timeout_s, 7);
  EXPECT_EQ(o.max_queue, 3);
  EXPECT_EQ(o.default_seed, 9u);
  EXPECT_EQ(o.cache_redis, "redis://127.0.0.1:1");
  EXPECT_EQ(o.cache_ttl_s, 11);
  EXPECT_EQ(o.cache_memory_entries, 12);
  EXPECT_EQ(o.stream_every_words, 13);
  ASSERT_TRUE(o.output_executor);
  o.output_executor([] {});
  EXPECT_TRUE(ran);
}

// A generation's results are built on the output pool, neither on the caller's thread nor
// (with a stop string) past the stop: the whole path from the engine's typed outputs.
TEST(ServerContext, AGenerationIsProcessedOffTheEngineThread) {
  auto ctx = std::make_shared<ServerContext>(tiny_config());
  ASSERT_TRUE(eventually([&] { return ctx->models.ready(); }));
  auto prepared = ctx->service.prepare(writeup_request("Hello", 20));
  auto done = std::make_shared<std::promise<std::vector<writeup::generate::GeneratedSequence>>>();
  auto thread = std::make_shared<std::thread::id>();
  StreamEvents events;
  events.on_done = [done, thread](const std::vector<writeup::generate::GeneratedSequence>& r) {
    *thread = std::this_thread::get_id();
    done->set_value(r);
  };
  events.on_error = [done](const writeup::service::ServiceError& e) {
    done->set_exception(std::make_exception_ptr(e.error));
  };
  auto subscription = ctx->service.start(prepared, std::move(events));
  auto result = done->get_future();
  ASSERT_EQ(result.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  const auto r = result.get();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].finish_reason, "length");
  EXPECT_EQ(r[0].tokens.size(), 20u);
  EXPECT_EQ(r[0].text.empty(), false);

  // The engine's thread: where a job's sink is called. The results above were not built there.
  struct ThreadSink final : writeup::engine::JobSink {
    std::promise<std::thread::id> engine_thread;
    bool seen = false;
    void on_outputs(std::span<const writeup::engine::TokenOutput>) override {
      if (!std::exchange(seen, true)) engine_thread.set_value(std::this_thread::get_id());
    }
    void on_error(writeup::engine::ErrorKind, const std::string&) override {}
  };
  auto sink = std::make_shared<ThreadSink>();
  auto probe = std::make_shared<writeup::engine::Job>(prepared.request, sink);
  auto* engine_thread = &sink->engine_thread;
  ASSERT_EQ(ctx->models.default_model().workers.size(), 1u);
  ASSERT_TRUE(ctx->models.default_model().workers[0]->submit(probe));
  auto engine_id = engine_thread->get_future();
  ASSERT_EQ(engine_id.wait_for(std::chrono::seconds(20)), std::future_status::ready);
  EXPECT_NE(*thread, engine_id.get());
  EXPECT_NE(*thread, std::this_thread::get_id());
  ctx->shutdown();
}

#pragma once
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "writeup/metrics/registry.hpp"
#include "writeup/server/config.hpp"
#include "writeup/service/completion_service.hpp"
#include "writeup/service/model_registry.hpp"

namespace writeup::server {

// What every connection shares: configuration, models, the completion service, metrics.
//
// Ownership: sessions hold the context; the context holds the service, whose cache thread and
// workers hold flights, whose subscribers hold sessions. That cycle only breaks when the
// workers and the cache thread have stopped, so shutdown is explicit: shutdown() stops
// everything that runs on its own thread, in order, and the destructor (which calls it too)
// then only frees memory.
struct ServerContext {
  explicit ServerContext(ServerConfig cfg);
  // Calls shutdown(), then logs "server context destroyed" (the e2e tests look for it). The
  // last reference must not be dropped on a worker, cache or CPU-pool thread (shutdown() joins
  // those): main keeps one until after it called shutdown() itself.
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // After the listener stopped and the I/O threads returned: marks the server stopping, stops
  // the workers (queued jobs fail with "shutdown", running ones end), joins the output pool
  // (the output processors' last drains run: their stores reach the cache), stops the cache
  // thread (waiting claims answered), joins the CPU pool. Events it causes are posted to the
  // sessions' strands and dropped with the io_context. Idempotent; not from an I/O thread
  // that still serves (it blocks on joins).
  void shutdown();

  // The completion service's options, from a ServerConfig; output processing runs on `output`.
  static service::ServiceOptions service_options(const ServerConfig& config, service::Executor output);

  ServerConfig config;
  metrics::Registry metrics;
  service::ModelRegistry models;
  service::CompletionService service;
  std::atomic<int> connections{0};
  std::atomic<bool> stopping{false};

  // Counts one finished HTTP request or WebSocket message by route and status.
  void count_request(const std::string& route, int status);

  // Open connections register how to close them, for a graceful shutdown.
  std::uint64_t add_closer(std::function<void()> close);
  void remove_closer(std::uint64_t id);
  void close_all();  // calls every registered closer (each posts to its own strand)

  // Per-request CPU work that must not run on an I/O thread (tokenizing a prompt, building a
  // request): runs `work()` on the CPU pool, then `done(result, error)` on `executor` (a
  // connection's strand) with either the result or the exception it threw. At most
  // `limits.max_queue` such tasks wait at once: beyond that it returns false at once and runs
  // nothing (the caller answers 429). `done` must not throw.
  template <class Executor, class Work, class Done>
  bool offload(const Executor& executor, Work work, Done done) {
    if (pending_offloads_.fetch_add(1) >= offload_limit()) {
      --pending_offloads_;
      return false;
    }
    boost::asio::post(cpu_pool_, [this, executor, work = std::move(work), done = std::move(done)]() mutable {
      using Result = decltype(work());
      std::optional<Result> result;
      std::exception_ptr error;
      try {
        result.emplace(work());
      } catch (...) {
        error = std::current_exception();
      }
      --pending_offloads_;
      boost::asio::post(executor, [done = std::move(done), result = std::move(result), error]() mutable {
        done(std::move(result), error);
      });
    });
    return true;
  }
  // Joins the CPU pool (pending tasks still run; their completions go to their executors).
  void stop_cpu_pool();

 private:
  int offload_limit() const;
  boost::asio::thread_pool cpu_pool_;
  // The output processors' drains: detokenising, stop strings, response bodies. Joined after
  // the workers stopped (no new drain) and before the cache stops (drains store responses).
  boost::asio::thread_pool output_pool_;
  std::atomic<int> pending_offloads_{0};

  std::once_flag shutdown_once_;
  std::mutex closers_mutex_;
  std::map<std::uint64_t, std::function<void()>> closers_;
  std::uint64_t next_closer_ = 0;
};

}  // namespace writeup::server

#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "writeup/metrics/registry.hpp"
#include "writeup/server/config.hpp"
#include "writeup/service/completion_service.hpp"
#include "writeup/service/model_registry.hpp"

namespace writeup::server {

// What every connection shares: configuration, models, the completion service, metrics.
struct ServerContext {
  explicit ServerContext(ServerConfig cfg);

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

 private:
  std::mutex closers_mutex_;
  std::map<std::uint64_t, std::function<void()>> closers_;
  std::uint64_t next_closer_ = 0;
};

}  // namespace writeup::server

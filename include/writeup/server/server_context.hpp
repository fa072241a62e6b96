#pragma once
#include <atomic>
#include <memory>

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
};

}  // namespace writeup::server

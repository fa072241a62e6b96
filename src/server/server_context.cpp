#include "writeup/server/server_context.hpp"

#include <algorithm>

#include "writeup/util/logging.hpp"

namespace writeup::server {

ServerContext::ServerContext(ServerConfig cfg)
    : config(std::move(cfg)),
      models(config, metrics),
      service(config, models, metrics),
      cpu_pool_(static_cast<std::size_t>(std::max(1, config.server.io_threads))) {
  metrics.gauge_callback("writeup_connections", "Open client connections", {},
                         [this] { return static_cast<double>(connections.load()); });
  metrics.gauge_callback("writeup_ready", "1 when every model is loaded and healthy", {},
                         [this] { return models.ready() ? 1.0 : 0.0; });
}

ServerContext::~ServerContext() {
  shutdown();
  log::info("server context destroyed");
}

void ServerContext::shutdown() {
  std::call_once(shutdown_once_, [this] {
    stopping = true;
    models.stop();        // engine threads joined: no job callback runs after this
    service.stop_cache();  // cache thread joined: no claim callback runs after this
    stop_cpu_pool();       // tokenizing tasks finished; their completions are on the strands
  });
}

int ServerContext::offload_limit() const { return std::max(1, config.limits.max_queue); }

void ServerContext::stop_cpu_pool() { cpu_pool_.join(); }

void ServerContext::count_request(const std::string& route, int status) {
  metrics.counter("writeup_requests_total", "Requests by route and status",
                  {{"route", route}, {"status", std::to_string(status)}})
      .inc();
}

std::uint64_t ServerContext::add_closer(std::function<void()> close) {
  std::lock_guard lock(closers_mutex_);
  closers_.emplace(++next_closer_, std::move(close));
  return next_closer_;
}

void ServerContext::remove_closer(std::uint64_t id) {
  std::lock_guard lock(closers_mutex_);
  closers_.erase(id);
}

void ServerContext::close_all() {
  std::vector<std::function<void()>> all;
  {
    std::lock_guard lock(closers_mutex_);
    for (auto& [id, fn] : closers_) all.push_back(fn);
  }
  for (auto& fn : all) fn();
}

}  // namespace writeup::server

#include "writeup/server/server_context.hpp"

#include <algorithm>

#include "writeup/util/logging.hpp"

namespace writeup::server {

ServerContext::ServerContext(ServerConfig cfg)
    : config(std::move(cfg)),
      models(config, metrics),
      // The executor is called only once a job runs, after output_pool_ exists; the pool is
      // joined in shutdown(), before the service (declared earlier) is destroyed.
      service(service_options(config, [this](std::function<void()> task) { boost::asio::post(output_pool_, std::move(task)); }),
              models, metrics),
      cpu_pool_(static_cast<std::size_t>(std::max(1, config.server.io_threads))),
      output_pool_(static_cast<std::size_t>(std::max(1, config.server.io_threads))) {
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
    models.stop();        // engine threads joined: no job output comes after this
    output_pool_.join();   // the last drains ran: their stores are queued to the cache
    service.stop_cache();  // cache thread joined: no claim callback runs after this
    stop_cpu_pool();       // tokenizing tasks finished; their completions are on the strands
  });
}

service::ServiceOptions ServerContext::service_options(const ServerConfig& config, service::Executor output) {
  service::ServiceOptions o;
  o.request_timeout_s = config.limits.request_timeout_s;
  o.max_queue = config.limits.max_queue;
  o.default_seed = config.defaults.seed;
  o.cache_redis = config.cache.redis;
  o.cache_ttl_s = config.cache.ttl_s;
  o.cache_memory_entries = config.cache.memory_entries;
  o.stream_every_words = config.stream.every_words;
  o.output_executor = std::move(output);
  return o;
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

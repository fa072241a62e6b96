#include "writeup/server/server_context.hpp"

namespace writeup::server {

ServerContext::ServerContext(ServerConfig cfg)
    : config(std::move(cfg)), models(config, metrics), service(config, models) {
  metrics.gauge_callback("writeup_connections", "Open client connections", {},
                         [this] { return static_cast<double>(connections.load()); });
  metrics.gauge_callback("writeup_ready", "1 when every model is loaded and healthy", {},
                         [this] { return models.ready() ? 1.0 : 0.0; });
}

void ServerContext::count_request(const std::string& route, int status) {
  metrics.counter("writeup_requests_total", "Requests by route and status",
                  {{"route", route}, {"status", std::to_string(status)}})
      .inc();
}

}  // namespace writeup::server

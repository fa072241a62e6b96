#include "writeup/server/listener.hpp"

#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>

#include "writeup/server/http_session.hpp"
#include "writeup/server/pending_heads.hpp"
#include "writeup/server/request_log.hpp"
#include "writeup/server/server_context.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::server {
namespace net = boost::asio;
using tcp = net::ip::tcp;

Listener::Listener(net::io_context& ioc, const tcp::endpoint& endpoint, std::shared_ptr<ServerContext> ctx)
    : ioc_(ioc),
      acceptor_(net::make_strand(ioc)),
      ctx_(std::move(ctx)),
      heads_(std::make_shared<PendingHeads>()),
      backoff_(acceptor_.get_executor()) {
  set_request_log_json(ctx_->config.log_format == "json");
  boost::beast::error_code ec;
  const auto where = endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + where + ": " + ec.message());
}

unsigned short Listener::port() const { return acceptor_.local_endpoint().port(); }

void Listener::run() { do_accept(); }

void Listener::stop() {
  net::post(acceptor_.get_executor(), [self = shared_from_this()] {
    boost::beast::error_code ec;
    self->acceptor_.close(ec);
    self->backoff_.cancel();
  });
}

void Listener::do_accept() {
  acceptor_.async_accept(net::make_strand(ioc_),
                         boost::beast::bind_front_handler(&Listener::on_accept, shared_from_this()));
}

void Listener::on_accept(boost::beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted) return;
  if (ec) {
    // Typically out of descriptors: free one held by a waiting client and retry shortly
    // instead of spinning on the error.
    log::warn("accept: " + ec.message());
    heads_->evict_oldest();
    backoff_.expires_after(std::chrono::milliseconds(50));
    backoff_.async_wait([self = shared_from_this()](boost::beast::error_code wait_ec) {
      try {
        if (!wait_ec && self->acceptor_.is_open()) self->do_accept();
      } catch (const std::exception& e) {
        log::error(std::string("accept: ") + e.what());
      }
    });
    return;
  }
  try {
    admit(std::move(socket));
  } catch (const std::exception& e) {
    log::error(std::string("accept: ") + e.what());  // that connection is dropped, the listener goes on
  } catch (...) {
    log::error("accept: unknown exception");
  }
  if (acceptor_.is_open()) do_accept();
}

void Listener::admit(tcp::socket socket) {
  if (ctx_->connections.load() >= ctx_->config.limits.max_connections) {
    if (!heads_->evict_oldest()) return refuse(std::move(socket));
    ctx_->metrics.counter("writeup_connections_shed_total",
                          "Connections closed while waiting for a request head, to admit a new one")
        .inc();
  }
  std::make_shared<HttpSession>(std::move(socket), ctx_, heads_)->run();
}

void Listener::refuse(tcp::socket socket) {
  ctx_->count_request("other", 503);
  static const std::string body = R"({"error":{"message":"too many connections","type":"server_error","param":null,"code":"too_many_connections"}})";
  auto msg = std::make_shared<std::string>("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                           "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
                                           std::to_string(body.size()) + "\r\n\r\n" + body);
  auto sock = std::make_shared<tcp::socket>(std::move(socket));
  net::async_write(*sock, net::buffer(*msg), [sock, msg](boost::beast::error_code, std::size_t) {
    boost::beast::error_code ignored;
    sock->shutdown(tcp::socket::shutdown_both, ignored);
    sock->close(ignored);
  });
}

}  // namespace writeup::server

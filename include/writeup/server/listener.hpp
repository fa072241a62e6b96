#pragma once
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>

#include <memory>

namespace writeup::server {

struct ServerContext;
class PendingHeads;

// Accepts connections and hands each to an HttpSession on its own strand. At
// limits.max_connections the connection that has waited longest for a request head is shed to
// admit the new one (slow or idle clients cannot hold every slot); when none waits, the new
// connection gets a 503 and is closed. Accept errors (out of descriptors) back off briefly.
class Listener : public std::enable_shared_from_this<Listener> {
 public:
  // Binds and listens; throws std::runtime_error naming the address on failure.
  Listener(boost::asio::io_context& ioc, const boost::asio::ip::tcp::endpoint& endpoint,
           std::shared_ptr<ServerContext> ctx);
  void run();
  void stop();
  unsigned short port() const;

 private:
  void do_accept();
  void on_accept(boost::beast::error_code ec, boost::asio::ip::tcp::socket socket);
  void admit(boost::asio::ip::tcp::socket socket);
  void refuse(boost::asio::ip::tcp::socket socket);

  boost::asio::io_context& ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<ServerContext> ctx_;
  std::shared_ptr<PendingHeads> heads_;
  boost::asio::steady_timer backoff_;
};

}  // namespace writeup::server

#pragma once
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <deque>
#include <memory>
#include <optional>

#include "writeup/service/flight.hpp"
#include "writeup/server/router.hpp"

namespace writeup::server {

namespace beast = boost::beast;

// One HTTP connection: reads requests, answers them (async ones from the engine through the
// connection's strand), upgrades the writeup WebSocket path. One write in flight at a time.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket&& socket, std::shared_ptr<ServerContext> ctx);
  ~HttpSession();
  void run();

 private:
  void do_read();
  void on_read(beast::error_code ec, std::size_t bytes);
  void handle(Request req);
  void start_completions(const Request& req, const Route& route);
  void start_generate(const Request& req, const Route& route);
  void upgrade(Request req);

  // Where an asynchronous answer goes: the request's HTTP version, keep-alive and route.
  struct ReplyTo {
    unsigned version = 11;
    bool keep_alive = true;
    std::string route;
    Request request() const {
      Request r{http::verb::post, "/", version};
      r.keep_alive(keep_alive);
      return r;
    }
  };
  // Called from a worker thread: answers on the connection's strand.
  void reply_later(const ReplyTo& to, int status, std::string body);
  void reply_later(const ReplyTo& to, const api::ApiError& error);

  void send(Response res, const std::string& route);
  void on_write(bool close, beast::error_code ec, std::size_t bytes);
  // Server-sent events: a chunked response whose chunks are written one at a time.
  void start_stream(const Request& req);
  void stream_chunk(std::string data, bool last);
  void do_stream_write();
  // While a non-streaming answer is computed nothing is read: watch the socket so that a
  // client that hangs up cancels its generation.
  void watch_disconnect();
  void do_close();
  void fail(beast::error_code ec, const char* what);

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<ServerContext> ctx_;
  std::shared_ptr<void> in_flight_;  // the response being written
  std::shared_ptr<service::Subscription> job_;  // the generation this request waits on
  std::deque<std::string> stream_queue_;
  bool stream_writing_ = false;
  bool stream_done_ = false;
  bool stream_keep_alive_ = false;
  bool busy_ = false;  // a request is being answered
  std::uint64_t closer_id_ = 0;
};

}  // namespace writeup::server

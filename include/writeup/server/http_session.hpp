#pragma once
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <deque>
#include <exception>
#include <memory>
#include <optional>

#include "writeup/server/reply_events.hpp"
#include "writeup/server/request_log.hpp"
#include "writeup/server/router.hpp"

namespace writeup::server {

namespace beast = boost::beast;
class PendingHeads;

// One HTTP connection: reads requests, answers them (async ones from the engine through the
// connection's strand), upgrades the writeup WebSocket path. One write in flight at a time.
//
// Reading has deadlines: an idle connection waits idle_timeout_s for a first byte, the whole
// head must then arrive within header_timeout_s (or idle_timeout_s when shorter), and the body
// within header_timeout_s plus its announced size (else max_body_bytes) at min_body_bytes_per_s. While it waits for a head the connection is listed in
// PendingHeads, so that a full server can shed it. Request parsing and tokenizing run on the
// CPU pool (ServerContext::offload), never on an I/O thread. Every completion handler catches
// what one request can raise and turns it into that request's 500 (or closes this connection).
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  static constexpr std::chrono::seconds kWriteTimeout{30};  // for any one write

  HttpSession(boost::asio::ip::tcp::socket&& socket, std::shared_ptr<ServerContext> ctx,
              std::shared_ptr<PendingHeads> heads);
  ~HttpSession();
  void run();

 private:
  // Where an asynchronous answer goes: the request's HTTP version, keep-alive and route.
  struct ReplyTo {
    unsigned version = 11;
    bool keep_alive = true;
    std::string route;
    // Turns the sink of a route built over another (chat over completions) into its own.
    std::function<ReplySink(ReplySink)> adapt;
    Request request() const {
      Request r{http::verb::post, "/", version};
      r.keep_alive(keep_alive);
      return r;
    }
  };

  void do_read();
  void on_first_bytes(beast::error_code ec, std::size_t bytes);
  void read_header();
  void on_header(beast::error_code ec, std::size_t bytes);
  void read_body();
  void on_read(beast::error_code ec, std::size_t bytes);
  void read_failed(beast::error_code ec);
  void stop_waiting_for_head();
  void handle(Request req);
  // Runs handle_immediate() for a CPU-heavy route on the CPU pool.
  void start_cpu_route(std::shared_ptr<const Request> req, const Route& route);
  void start_completions(std::shared_ptr<const Request> req, const Route& route);
  void start_generate(std::shared_ptr<const Request> req, const Route& route);
  // POST /v1/chat/completions: the messages become a completions request (chat_route.hpp).
  void start_chat(std::shared_ptr<const Request> req, const Route& route);
  // Runs `work` (parse + tokenize) on the CPU pool, then `run(*this, result)` on the strand;
  // what either throws becomes this request's error answer. A full pool: 429.
  template <class Work, class Run>
  void prepare_then(const char* what, const ReplyTo& reply, Work work, Run run);
  void run_completions(const ReplyTo& reply, api::CompletionRequest request, std::vector<service::Prepared> prepared);
  void run_generate(const ReplyTo& reply, api::WriteupRequest request, service::Prepared prepared);
  void upgrade(Request req);
  // The error response for what a request raised (ApiError as is, the rest 500).
  void send_error(const ReplyTo& to, std::exception_ptr error);

  // Where the events of this request's generation deliver its answer. It holds the session
  // weakly: the generation never keeps a connection alive; the disconnect watch does, while
  // the answer is awaited (an event for a session that is gone is dropped).
  ReplySink sink(const ReplyTo& reply);
  // Called from a worker thread: answers on the connection's strand.
  void reply_later(const ReplyTo& to, int status, std::string body);
  void reply_later(const ReplyTo& to, const api::ApiError& error);

  void send(Response res, const std::string& route);
  // Every answer's X-Request-Id, and the CORS headers for an allowed Origin.
  void stamp(http::fields& res) const;
  // The current request's log line (once), with its HTTP status.
  void log_answer(int status);
  void on_write(bool close, beast::error_code ec, std::size_t bytes);
  // Server-sent events: a chunked response whose chunks are written one at a time; to an
  // HTTP/1.0 client the events go out as they are and the end of the stream closes.
  void start_stream(const ReplyTo& to);
  void stream_chunk(std::string data, bool last);
  void do_stream_write();
  // While an answer is computed (or streamed) nothing is read: watch the socket so that a
  // client that hangs up cancels its generation. The pending watch is what keeps the session
  // alive meanwhile; when bytes of a next (pipelined) request are readable it looks again
  // every kWatchInterval instead of waiting on a socket that stays readable.
  void watch_disconnect();
  void do_close();
  void fail(beast::error_code ec, const char* what);
  // Runs `fn`; what it throws is logged and ends this request (500, or the connection).
  template <class Fn>
  void guarded(const char* where, Fn&& fn) noexcept;
  void on_exception(const char* where, const char* what) noexcept;

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<ServerContext> ctx_;
  std::shared_ptr<PendingHeads> heads_;
  std::uint64_t head_ticket_ = 0;  // listed in heads_ while waiting for a request head
  std::shared_ptr<void> in_flight_;  // the response being written
  std::shared_ptr<service::Subscription> job_;  // the generation this request waits on
  boost::asio::steady_timer watch_timer_;       // the disconnect watch's next look (pipelined bytes)
  std::deque<std::string> stream_queue_;
  bool stream_writing_ = false;
  bool stream_done_ = false;
  bool stream_keep_alive_ = false;
  bool stream_chunked_ = true;
  bool busy_ = false;       // a request is being answered
  bool responded_ = false;  // its response has started going out
  bool streaming_ = false;  // it answers with server-sent events (once admitted)
  bool head_request_ = false;  // HEAD: the answer carries headers only
  std::uint64_t closer_id_ = 0;
  bool counted_ = true;  // in ctx_->connections (until a WebSocket session takes the count over)
  // The current request: its log record (id, route, timings, what the service did) and the
  // origin its answer allows (CORS; "" = none).
  std::shared_ptr<RequestRecord> record_;
  std::string cors_origin_;
};

template <class Fn>
void HttpSession::guarded(const char* where, Fn&& fn) noexcept {
  try {
    fn();
  } catch (const std::exception& e) {
    on_exception(where, e.what());
  } catch (...) {
    on_exception(where, "unknown exception");
  }
}

}  // namespace writeup::server

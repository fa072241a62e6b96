#pragma once
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "writeup/api/writeup_protocol.hpp"
#include "writeup/service/completion_service.hpp"
#include "writeup/service/flight.hpp"
#include "writeup/server/router.hpp"

namespace writeup::server {

namespace beast = boost::beast;
namespace websocket = beast::websocket;

// The writeup editor's WebSocket: new_request starts (and supersedes) a generation whose
// suggestions stream back as updated_response frames every few words, then completed_response;
// cancel_request stops it.
//
// Bounded per connection: the prompt is tokenized on the CPU pool, never on an I/O thread;
// outbound frames wait in a queue capped in bytes (limits.max_ws_queued_bytes; a newer
// updated_response of the same generation replaces one still waiting), and a reader too slow
// for that cap has its generation cancelled and the session closed (1008) with a logged reason;
// a connection that receives nothing, not even a pong to the server's keep-alive pings, for
// limits.idle_timeout_s is closed. Every completion handler turns what one message raises into
// that message's error frame (or closes this session): nothing escapes to io_context::run().
class WebSocketSession : public std::enable_shared_from_this<WebSocketSession> {
 public:
  // The TCP stream under the WebSocket: bytes the HTTP parser read past the upgrade request
  // (a client's first frame in the same packet) are read from its buffer first.
  using Stream = beast::buffered_read_stream<beast::tcp_stream, beast::flat_buffer>;

  // `authorized`: the upgrade carried a valid API key (or none is configured); otherwise each
  // new_request must carry one in its api_key field. `buffered`: the HTTP session's read
  // buffer, holding whatever followed the upgrade request.
  WebSocketSession(boost::asio::ip::tcp::socket&& socket, std::shared_ptr<ServerContext> ctx, bool authorized,
                   beast::flat_buffer buffered);
  ~WebSocketSession();
  void run(Request upgrade);

 private:
  struct Running;  // the current request's state, from tokenizing to its last frame
  struct Outbound {
    std::string text;
    std::uint64_t generation = 0;  // of an updated_response that a newer one may replace; 0 = keep
  };

  void on_accept(beast::error_code ec);
  void do_read();
  void on_read(beast::error_code ec, std::size_t bytes);
  void handle_message(const std::string& text);
  void start(const api::WriteupRequest& request);
  void on_prepared(std::uint64_t generation, std::optional<service::Prepared> prepared, std::exception_ptr error);
  void cancel_current(bool report);
  void on_text(std::uint64_t generation, const std::vector<service::TextDelta>& deltas);
  void on_done(std::uint64_t generation, const std::vector<generate::GeneratedSequence>& results);
  void on_error(std::uint64_t generation, const service::ServiceError& error);
  // Ends the current request with an error frame (counted with the error's status); the
  // writeup protocol's out-of-memory frame when the engine ran out of memory.
  void finish_with_error(const api::ApiError& error, bool out_of_memory = false);
  // Runs `body` for the current generation; what it throws ends that request with an error frame.
  template <class Body>
  void for_generation(std::uint64_t generation, const char* what, Body&& body);
  // Runs `body`; what it throws closes this session (logged), never the process.
  template <class Body>
  void guarded(const char* what, Body&& body) noexcept;

  void send_frame(const std::string& type, nlohmann::json extras = nlohmann::json::object());
  void send(const nlohmann::json& frame, std::uint64_t replaceable_generation = 0);
  void do_write();
  void on_write(beast::error_code ec, std::size_t bytes);
  void overflow(std::size_t frame_bytes);
  void fail(beast::error_code ec, const char* what);
  void close(websocket::close_code code, const std::string& reason);
  void abort_connection();

  websocket::stream<Stream> ws_;
  beast::flat_buffer buffer_;
  std::shared_ptr<ServerContext> ctx_;
  std::deque<Outbound> queue_;     // front() is being written while writing_
  std::size_t queued_bytes_ = 0;   // of every frame in queue_
  bool writing_ = false;
  bool closing_ = false;
  boost::asio::steady_timer close_deadline_;  // a close the peer does not complete ends the TCP connection
  std::uint64_t generation_ = 0;   // frames and results of superseded requests are dropped
  std::shared_ptr<Running> current_;
  std::uint64_t closer_id_ = 0;
  bool authorized_ = true;
  int handshake_status_ = 0;  // of the answer to a handshake Beast refused
};

}  // namespace writeup::server

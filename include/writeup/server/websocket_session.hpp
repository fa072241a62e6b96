#pragma once
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "writeup/api/writeup_protocol.hpp"
#include "writeup/service/flight.hpp"
#include "writeup/server/router.hpp"

namespace writeup::server {

namespace beast = boost::beast;
namespace websocket = beast::websocket;

// The writeup editor's WebSocket: new_request starts (and supersedes) a generation whose
// suggestions stream back as updated_response frames every few words, then completed_response;
// cancel_request stops it. Frames are queued with one write in flight; a reader too slow to
// keep up past the queue limit is disconnected with a logged reason.
class WebSocketSession : public std::enable_shared_from_this<WebSocketSession> {
 public:
  static constexpr std::size_t kMaxQueuedFrames = 256;

  // `authorized`: the upgrade carried a valid API key (or none is configured); otherwise each
  // new_request must carry one in its api_key field.
  WebSocketSession(boost::asio::ip::tcp::socket&& socket, std::shared_ptr<ServerContext> ctx, bool authorized);
  ~WebSocketSession();
  void run(Request upgrade);

 private:
  struct Running;  // the current generation's state

  void on_accept(beast::error_code ec);
  void do_read();
  void on_read(beast::error_code ec, std::size_t bytes);
  void handle_message(const std::string& text);
  void start(const api::WriteupRequest& request);
  void cancel_current(bool report);
  void on_text(std::uint64_t generation, int index, const std::string& delta, int tokens);
  void on_done(std::uint64_t generation, const std::vector<generate::GeneratedSequence>& results);
  void on_error(std::uint64_t generation, const api::ApiError& error);
  void send_frame(const std::string& type, nlohmann::json extras = nlohmann::json::object());
  void send(std::string text);
  void do_write();
  void fail(beast::error_code ec, const char* what);
  void close(websocket::close_code code, const std::string& reason);

  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
  std::shared_ptr<ServerContext> ctx_;
  std::deque<std::string> queue_;
  bool writing_ = false;
  bool closing_ = false;
  std::uint64_t generation_ = 0;  // frames of superseded generations are dropped
  std::shared_ptr<Running> current_;
  std::uint64_t closer_id_ = 0;
  bool authorized_ = true;
};

}  // namespace writeup::server

// HttpSession::upgrade(): the hand-over of a connection to the writeup WebSocket session
// (API key, Origin, refusals answered as JSON, the read buffer and the connection count move).
#include "writeup/server/http_session.hpp"

#include <boost/beast/websocket.hpp>

#include <algorithm>

#include "writeup/api/wire_json.hpp"
#include "writeup/server/cors.hpp"
#include "writeup/server/server_context.hpp"
#include "writeup/server/websocket_session.hpp"

namespace writeup::server {

void HttpSession::upgrade(Request req) {
  // A refused upgrade is answered here and the connection closed after it. The JSON goes
  // through wire_dump: the query string and headers quoted in it need not be UTF-8.
  const auto refuse = [&](const api::ApiError& e) {
    req.keep_alive(false);
    send(json_response(req, e.status(), api::wire_dump(e.to_json())), "/ws/async/writeup");
  };
  bool authorized = true;
  try {
    if (!boost::beast::websocket::is_upgrade(req)) {
      throw api::ApiError(400, "websocket_required", "this path speaks WebSocket only");
    }
    // Browsers cannot set headers on a WebSocket: without a key in the header or query string
    // the upgrade goes ahead and every new_request must carry an api_key field instead.
    try {
      check_api_key(req, *ctx_);
    } catch (const api::ApiError& e) {
      if (e.code() != "missing_api_key") throw;
      authorized = false;
    }
    const auto& origins = ctx_->config.server.allowed_origins;
    const auto origin = std::string(req[http::field::origin]);
    // Empty: any Origin; else the listed ones ("*": any).
    if (!origins.empty() && !origin.empty() && allowed_origin(origins, origin).empty()) {
      throw api::ApiError(403, "origin_not_allowed", "origin " + origin + " is not allowed");
    }
  } catch (const api::ApiError& e) {
    return refuse(e);
  } catch (const std::exception& e) {
    return refuse(api::ApiError(500, "internal_error", std::string("upgrade failed: ") + e.what()));
  }
  if (record_) req.set("X-Request-Id", record_->id);  // the (sane) id the 101 carries
  record_.reset();  // each WebSocket request gets its own log line
  stream_.expires_never();
  // The connection is counted once: the WebSocket session takes over this session's count (the
  // 101 can reach the client before this object is gone, and its next connection must not find
  // the slot still taken).
  --ctx_->connections;
  counted_ = false;
  // The read buffer goes along: it holds any frame the client sent right behind its request.
  std::make_shared<WebSocketSession>(stream_.release_socket(), ctx_, authorized, std::move(buffer_))
      ->run(std::move(req));
}

}  // namespace writeup::server

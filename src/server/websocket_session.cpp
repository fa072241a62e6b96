#include "writeup/server/websocket_session.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <chrono>

#include "writeup/api/wire_json.hpp"
#include "writeup/server/request_log.hpp"
#include "writeup/server/server_context.hpp"
#include "writeup/util/logging.hpp"

// websocket::stream shuts its next layer down through teardown()/async_teardown() found by
// argument-dependent lookup. Beast's buffered_read_stream has none of its own: tearing it down
// is tearing down the TCP stream under it.
namespace boost::beast {

inline void teardown(role_type role, buffered_read_stream<tcp_stream, flat_buffer>& stream, error_code& ec) {
  teardown(role, stream.next_layer(), ec);
}

template <class TeardownHandler>
void async_teardown(role_type role, buffered_read_stream<tcp_stream, flat_buffer>& stream,
                    TeardownHandler&& handler) {
  async_teardown(role, stream.next_layer(), std::forward<TeardownHandler>(handler));
}

}  // namespace boost::beast

namespace writeup::server {
namespace net = boost::asio;

namespace {

constexpr const char* kRoute = "/ws/async/writeup";
// How long a close we started may wait for the peer (a reader that stopped reading never
// takes the close frame) before the TCP connection is dropped.
constexpr auto kCloseGrace = std::chrono::seconds(10);
constexpr auto kHandshakeTimeout = std::chrono::seconds(30);
constexpr double kLongestIdleS = 365.0 * 24 * 3600;  // any longer is "never" (and fits a duration)

}  // namespace

struct WebSocketSession::Running {
  api::WriteupRequest request;
  std::string model_name;
  std::uint64_t seed = 0;
  std::string cache_key;           // "" = not cached
  std::shared_ptr<const service::RequestTrace> trace;  // its cache outcome; null while tokenizing
  std::shared_ptr<service::Subscription> job;  // null while the prompt is being tokenized
  std::vector<std::string> texts;  // each suggestion's text so far
  std::vector<int> tokens;
  RequestLogLine log{kRoute};  // its request log line, written when it ends (request_log.hpp)
};

WebSocketSession::WebSocketSession(net::ip::tcp::socket&& socket, std::shared_ptr<ServerContext> ctx, bool authorized,
                                   beast::flat_buffer buffered)
    : ws_(std::move(socket)),
      ctx_(std::move(ctx)),
      close_deadline_(ws_.get_executor()),
      authorized_(authorized) {
  ++ctx_->connections;
  ws_.next_layer().buffer() = std::move(buffered);
}

WebSocketSession::~WebSocketSession() {
  if (closer_id_) ctx_->remove_closer(closer_id_);
  --ctx_->connections;
  if (current_ && current_->job) current_->job->cancel();
}

template <class Body>
void WebSocketSession::guarded(const char* what, Body&& body) noexcept {
  try {
    body();
  } catch (const std::exception& e) {
    log::error(std::string("websocket ") + what + ": " + e.what() + "; closing the connection");
    abort_connection();
  } catch (...) {
    log::error(std::string("websocket ") + what + ": unknown exception; closing the connection");
    abort_connection();
  }
}

template <class Body>
void WebSocketSession::for_generation(std::uint64_t generation, const char* what, Body&& body) {
  guarded(what, [&] {
    if (generation != generation_ || !current_) return;  // superseded or cancelled
    const auto run = current_;  // alive even if the body ends the request
    try {
      body(*run);
    } catch (const api::ApiError& e) {
      finish_with_error(e);
    } catch (const std::exception& e) {
      log::error(std::string("websocket ") + what + ": " + e.what());
      finish_with_error(api::ApiError(500, "internal_error", std::string(what) + " failed: " + e.what()));
    }
  });
}

void WebSocketSession::run(Request upgrade) {
  websocket::stream_base::timeout timeout;
  timeout.handshake_timeout = kHandshakeTimeout;
  timeout.idle_timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(std::min(ctx_->config.limits.idle_timeout_s, kLongestIdleS)));
  timeout.keep_alive_pings = true;  // a peer that answers pings is not idle
  ws_.set_option(timeout);
  // Beast answers a malformed handshake itself (400, or 426 for a version it does not speak):
  // in the server's JSON error shape, and counted.
  // X-Request-Id: the id the HTTP session gave the upgrade request (http_upgrade.cpp).
  ws_.set_option(websocket::stream_base::decorator([this, id = std::string(upgrade["X-Request-Id"])](websocket::response_type& res) {
    res.set(http::field::server, "writeup");
    if (!id.empty()) res.set("X-Request-Id", id);
    if (res.result() == http::status::switching_protocols) return;
    handshake_status_ = res.result_int();
    const api::ApiError e(handshake_status_, handshake_status_ == 426 ? "upgrade_required" : "bad_websocket_handshake",
                          res.body());
    res.set(http::field::content_type, "application/json");
    res.body() = api::wire_dump(e.to_json());
    res.prepare_payload();
    // Counted now, before the answer is written: a client that reads it and then asks for the
    // metrics must find it counted (counting in on_accept, after the write, raced with that).
    ctx_->count_request(kRoute, handshake_status_);
  }));
  ws_.read_message_max(ctx_->config.limits.max_ws_message_bytes);
  auto req = std::make_shared<Request>(std::move(upgrade));
  net::dispatch(ws_.get_executor(), [self = shared_from_this(), req] {
    self->guarded("accept", [&] {
      self->ws_.async_accept(*req, [self, req](beast::error_code ec) { self->on_accept(ec); });
    });
  });
}

void WebSocketSession::on_accept(beast::error_code ec) {
  if (ec) return fail(ec, "accept");  // a refused handshake was counted by the decorator
  guarded("accept", [&] {
    ctx_->count_request(kRoute, 101);
    std::weak_ptr<WebSocketSession> weak = shared_from_this();
    closer_id_ = ctx_->add_closer([weak] {
      if (auto self = weak.lock()) {
        net::post(self->ws_.get_executor(), [self] {
          self->guarded("shutdown", [&] { self->close(websocket::close_code::going_away, "server shutting down"); });
        });
      }
    });
    do_read();
  });
}

void WebSocketSession::do_read() {
  ws_.async_read(buffer_, beast::bind_front_handler(&WebSocketSession::on_read, shared_from_this()));
}

void WebSocketSession::on_read(beast::error_code ec, std::size_t) {
  guarded("read", [&] {
    if (ec) {
      cancel_current(false);  // a closed connection cancels its work
      if (ec == websocket::error::message_too_big) {
        log::info("websocket: closing, message over " + std::to_string(ctx_->config.limits.max_ws_message_bytes) +
                  " bytes");
      }
      return fail(ec, "read");
    }
    std::string text = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    if (closing_) return;  // the session is closing: nothing more is answered
    if (!ws_.got_text()) {
      const api::ApiError e(400, "binary_frame", "only text frames (JSON) are accepted");
      ctx_->count_request(kRoute, e.status());
      api::WriteupRequest none;
      none.batch_size = 1;
      send(api::make_error_frame(none, e));
    } else {
      handle_message(text);
    }
    do_read();
  });
}

void WebSocketSession::handle_message(const std::string& text) {
  api::WriteupRequest partial;
  try {
    const auto m = api::parse_client_message(
        text, {ctx_->config.limits.max_batch_size, ctx_->config.limits.max_length}, &partial);
    if (m.type == api::ClientMessage::Type::cancel_request) return cancel_current(true);
    if (!authorized_) {
      const auto& keys = ctx_->config.server.api_keys;
      if (std::find(keys.begin(), keys.end(), m.api_key) == keys.end()) {
        throw api::ApiError(401, m.api_key.empty() ? "missing_api_key" : "invalid_api_key",
                            "an API key is required (api_key field, query parameter or Bearer header)", "api_key");
      }
    }
    start(m.request);
  } catch (const api::ApiError& e) {
    ctx_->count_request(kRoute, e.status());
    RequestLogLine(kRoute).fail(e.code());  // its log line, now
    send(api::make_error_frame(partial, e));
  } catch (const std::exception& e) {
    log::error(std::string("websocket message: ") + e.what());
    const api::ApiError internal(500, "internal_error", std::string("the message could not be handled: ") + e.what());
    ctx_->count_request(kRoute, internal.status());
    send(api::make_error_frame(partial, internal));
  }
}

// A new request supersedes the previous one at once; its prompt is tokenized on the CPU pool
// and the generation starts back on this strand (unless yet another request came meanwhile).
void WebSocketSession::start(const api::WriteupRequest& request) {
  cancel_current(false);
  auto run = std::make_shared<Running>();
  run->request = request;
  run->model_name = request.model_name.empty() ? ctx_->config.defaults.model : request.model_name;
  run->seed = request.seed.value_or(ctx_->config.defaults.seed);
  run->texts.assign(static_cast<std::size_t>(request.batch_size), "");
  run->tokens.assign(run->texts.size(), 0);
  const std::uint64_t gen = ++generation_;
  current_ = run;
  auto* service = &ctx_->service;
  const bool queued = ctx_->offload(
      ws_.get_executor(), [service, request] { return service->prepare(request); },
      [self = shared_from_this(), gen](std::optional<service::Prepared> prepared, std::exception_ptr error) {
        self->on_prepared(gen, std::move(prepared), error);
      });
  if (!queued) {
    finish_with_error(api::ApiError(429, "queue_full", "the server is busy: too many requests are waiting; retry shortly"));
  }
}

void WebSocketSession::on_prepared(std::uint64_t gen, std::optional<service::Prepared> prepared,
                                   std::exception_ptr error) {
  for_generation(gen, "prepare", [&](Running& run) {
    if (error) std::rethrow_exception(error);
    if (closing_) return;
    // Frames name the model as the request did (an alias stays the alias the editor sent: it
    // asked for that name); a request without model_name gets the canonical default.
    if (run.request.model_name.empty()) run.model_name = prepared->model->config.name;
    run.seed = prepared->request.params.seed;
    run.cache_key = prepared->cache_key;
    run.trace = prepared->trace;
    // The flight holds these: they hold this session weakly (an event for a gone session is
    // dropped) and only post to its strand.
    std::weak_ptr<WebSocketSession> weak = shared_from_this();
    service::StreamEvents events;
    events.on_text = [weak, gen](const std::vector<service::TextDelta>& deltas) {
      if (auto self = weak.lock()) net::post(self->ws_.get_executor(), [self, gen, deltas] { self->on_text(gen, deltas); });
    };
    events.on_done = [weak, gen](const std::vector<generate::GeneratedSequence>& results) {
      if (auto self = weak.lock()) net::post(self->ws_.get_executor(), [self, gen, results] { self->on_done(gen, results); });
    };
    events.on_error = [weak, gen](const service::ServiceError& e) {
      if (auto self = weak.lock()) net::post(self->ws_.get_executor(), [self, gen, e] { self->on_error(gen, e); });
    };
    note_prepared(*run.log.record(), *prepared);
    run.job = ctx_->service.start(std::move(*prepared), RequestRecord::observe(events, run.log.record()));
  });
}

void WebSocketSession::cancel_current(bool report) {
  if (!current_) return;
  if (current_->job) current_->job->cancel();
  current_->log.fail("cancelled");
  if (report) {
    ctx_->count_request(kRoute, 200);  // answered: a completed_response marked cancelled
    send_frame("completed_response", {{"cancelled", true}});
  }
  current_.reset();
  ++generation_;
}

void WebSocketSession::finish_with_error(const api::ApiError& error, bool out_of_memory) {
  if (!current_) return;
  const auto run = current_;
  if (run->job) run->job->cancel();
  run->log.fail(error.code());
  current_.reset();
  ++generation_;
  ctx_->count_request(kRoute, error.status());
  const auto& r = run->request;
  send(out_of_memory ? api::make_oom_frame(r) : api::make_error_frame(r, error));
}

// One release of the output processor: it already applied the every_words rule, so each
// release is one updated_response.
void WebSocketSession::on_text(std::uint64_t gen, const std::vector<service::TextDelta>& deltas) {
  for_generation(gen, "stream", [&](Running& run) {
    for (const auto& d : deltas) {
      const auto i = static_cast<std::size_t>(d.index);
      if (i >= run.texts.size()) continue;
      run.texts[i] += d.text;
      run.tokens[i] = d.tokens;
    }
    run.log.record()->mark_output();
    send_frame("updated_response");
  });
}

void WebSocketSession::on_done(std::uint64_t gen, const std::vector<generate::GeneratedSequence>& results) {
  for_generation(gen, "done", [&](Running& run) {
    for (std::size_t i = 0; i < results.size() && i < run.texts.size(); ++i) {
      run.texts[i] = results[i].text;
      run.tokens[i] = static_cast<int>(results[i].tokens.size());
    }
    ctx_->count_request(kRoute, 200);
    send_frame("completed_response");
    current_.reset();
  });
}

void WebSocketSession::on_error(std::uint64_t gen, const service::ServiceError& error) {
  for_generation(gen, "error", [&](Running&) { finish_with_error(error.error, error.out_of_memory()); });
}

void WebSocketSession::send_frame(const std::string& type, nlohmann::json extras) {
  const auto& run = *current_;
  std::vector<std::string> texts;
  int completed = 0;
  for (std::size_t i = 0; i < run.texts.size(); ++i) {
    texts.push_back(api::clean_suggestion(run.texts[i]));
    completed += run.tokens[i];
  }
  extras["model_name"] = run.model_name;
  extras["cache_key"] = run.cache_key.empty() ? nlohmann::json(nullptr) : nlohmann::json(run.cache_key);
  extras["cache"] = service::to_string(run.trace ? run.trace->cache.load() : service::CacheOutcome::off);
  extras["request_id"] = api::request_id_json(run.request);
  extras["length"] = run.request.length;
  extras["completed"] = completed;
  extras["seed"] = run.seed;
  // Each updated_response carries every suggestion whole: one still waiting is superseded.
  send(api::make_frame(type, run.request.prompt, texts, extras), type == "updated_response" ? generation_ : 0);
}

void WebSocketSession::send(const nlohmann::json& frame, std::uint64_t replaceable_generation) {
  if (closing_) return;
  std::string text = api::wire_dump(frame);
  if (replaceable_generation != 0 && queue_.size() > (writing_ ? 1u : 0u) &&
      queue_.back().generation == replaceable_generation) {
    auto& waiting = queue_.back();
    queued_bytes_ = queued_bytes_ - waiting.text.size() + text.size();
    waiting.text = std::move(text);
    return;
  }
  // The cap counts what waits, the frame in flight included; a lone frame always goes.
  if (!queue_.empty() && queued_bytes_ + text.size() > ctx_->config.limits.max_ws_queued_bytes) {
    return overflow(text.size());
  }
  queued_bytes_ += text.size();
  queue_.push_back({std::move(text), replaceable_generation});
  do_write();
}

void WebSocketSession::overflow(std::size_t frame_bytes) {
  log::warn("websocket: closing a connection whose reader is too slow: " + std::to_string(queued_bytes_) +
            " bytes queued, a " + std::to_string(frame_bytes) + "-byte frame would pass limits.max_ws_queued_bytes (" +
            std::to_string(ctx_->config.limits.max_ws_queued_bytes) + ")");
  close(websocket::close_code::policy_error, "outbound queue full: the client does not read its messages");
}

void WebSocketSession::do_write() {
  if (writing_ || queue_.empty() || closing_) return;
  writing_ = true;
  ws_.text(true);
  ws_.async_write(net::buffer(queue_.front().text),
                  beast::bind_front_handler(&WebSocketSession::on_write, shared_from_this()));
}

void WebSocketSession::on_write(beast::error_code ec, std::size_t) {
  guarded("write", [&] {
    writing_ = false;
    if (!queue_.empty()) {
      queued_bytes_ -= queue_.front().text.size();
      queue_.pop_front();
    }
    if (ec) {
      cancel_current(false);
      return fail(ec, "write");
    }
    do_write();
  });
}

void WebSocketSession::close(websocket::close_code code, const std::string& reason) {
  if (closing_) return;
  closing_ = true;
  cancel_current(false);
  // Frames not yet started are dropped (their memory with them); one in flight must finish
  // before the close frame can go.
  while (queue_.size() > (writing_ ? 1u : 0u)) {
    queued_bytes_ -= queue_.back().text.size();
    queue_.pop_back();
  }
  ws_.async_close(websocket::close_reason(code, reason), [self = shared_from_this()](beast::error_code ec) {
    self->close_deadline_.cancel();
    if (ec) self->fail(ec, "close");
  });
  close_deadline_.expires_after(kCloseGrace);
  close_deadline_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec) return;  // cancelled: the close completed
    log::info("websocket: the peer did not complete the close in time; dropping the connection");
    self->abort_connection();
  });
}

void WebSocketSession::abort_connection() {
  closing_ = true;
  if (current_ && current_->job) current_->job->cancel();
  current_.reset();
  ++generation_;
  beast::error_code ec;
  beast::get_lowest_layer(ws_).socket().close(ec);
}

void WebSocketSession::fail(beast::error_code ec, const char* what) {
  if (ec == net::error::operation_aborted || ec == websocket::error::closed || ec == beast::error::timeout ||
      ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe) {
    return;
  }
  log::debug(std::string("websocket ") + what + ": " + ec.message());
}

}  // namespace writeup::server

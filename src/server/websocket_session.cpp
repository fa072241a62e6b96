#include "writeup/server/websocket_session.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>

#include "writeup/server/server_context.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::server {
namespace net = boost::asio;

struct WebSocketSession::Running {
  api::WriteupRequest request;
  std::string model_name;
  std::uint64_t seed = 0;
  std::string cache_key;           // "" = not cached
  std::shared_ptr<service::Subscription> job;
  std::vector<std::string> texts;  // each suggestion's text so far
  std::vector<int> words_sent;     // words of each suggestion in the last frame
  std::vector<int> tokens;
};

WebSocketSession::WebSocketSession(net::ip::tcp::socket&& socket, std::shared_ptr<ServerContext> ctx,
                                   bool authorized)
    : ws_(std::move(socket)), ctx_(std::move(ctx)), authorized_(authorized) {
  ++ctx_->connections;
}

WebSocketSession::~WebSocketSession() {
  if (closer_id_) ctx_->remove_closer(closer_id_);
  --ctx_->connections;
  if (current_ && current_->job) current_->job->cancel();
}

void WebSocketSession::run(Request upgrade) {
  ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws_.set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(http::field::server, "writeup"); }));
  ws_.read_message_max(ctx_->config.limits.max_ws_message_bytes);
  auto req = std::make_shared<Request>(std::move(upgrade));
  net::dispatch(ws_.get_executor(), [self = shared_from_this(), req] {
    self->ws_.async_accept(*req, [self, req](beast::error_code ec) { self->on_accept(ec); });
  });
}

void WebSocketSession::on_accept(beast::error_code ec) {
  if (ec) return fail(ec, "accept");
  ctx_->count_request("/ws/async/writeup", 101);
  std::weak_ptr<WebSocketSession> weak = shared_from_this();
  closer_id_ = ctx_->add_closer([weak] {
    if (auto self = weak.lock()) {
      net::post(self->ws_.get_executor(), [self] { self->close(websocket::close_code::going_away, "server shutting down"); });
    }
  });
  do_read();
}

void WebSocketSession::do_read() {
  ws_.async_read(buffer_, beast::bind_front_handler(&WebSocketSession::on_read, shared_from_this()));
}

void WebSocketSession::on_read(beast::error_code ec, std::size_t) {
  if (ec) {
    cancel_current(false);  // a closed connection cancels its work
    if (ec == websocket::error::message_too_big) {
      log::info("websocket: closing, message over " + std::to_string(ctx_->config.limits.max_ws_message_bytes) + " bytes");
    }
    return fail(ec, "read");
  }
  std::string text = beast::buffers_to_string(buffer_.data());
  buffer_.consume(buffer_.size());
  if (!ws_.got_text()) {
    send(api::make_error_frame("", 1, api::ApiError(400, "binary_frame", "only text frames (JSON) are accepted")).dump());
  } else {
    handle_message(text);
  }
  do_read();
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
    ctx_->count_request("/ws/async/writeup", e.status());
    send(api::make_error_frame(partial.prompt, partial.batch_size, e).dump());
  }
}

void WebSocketSession::start(const api::WriteupRequest& request) {
  cancel_current(false);  // a new request supersedes the previous one
  auto prepared = ctx_->service.prepare(request);
  auto run = std::make_shared<Running>();
  run->request = request;
  run->model_name = prepared.model->config.name;
  run->seed = prepared.request.params.seed;
  run->cache_key = prepared.cache_key;
  run->texts.assign(static_cast<std::size_t>(request.batch_size), "");
  run->words_sent.assign(run->texts.size(), 0);
  run->tokens.assign(run->texts.size(), 0);
  const std::uint64_t gen = ++generation_;
  auto self = shared_from_this();
  service::StreamEvents events;
  events.on_text = [self, gen](int index, const std::string& delta, int tokens) {
    net::post(self->ws_.get_executor(), [=] { self->on_text(gen, index, delta, tokens); });
  };
  events.on_done = [self, gen](const std::vector<generate::GeneratedSequence>& results) {
    net::post(self->ws_.get_executor(), [=] { self->on_done(gen, results); });
  };
  events.on_error = [self, gen](const api::ApiError& e) {
    net::post(self->ws_.get_executor(), [=] { self->on_error(gen, e); });
  };
  current_ = run;
  run->job = ctx_->service.start(std::move(prepared), events);
  ctx_->count_request("/ws/async/writeup", 200);
}

void WebSocketSession::cancel_current(bool report) {
  if (!current_) return;
  if (current_->job) current_->job->cancel();
  if (report) send_frame("completed_response", {{"cancelled", true}});
  current_.reset();
  ++generation_;
}

void WebSocketSession::on_text(std::uint64_t gen, int index, const std::string& delta, int tokens) {
  if (gen != generation_ || !current_) return;
  auto& run = *current_;
  const auto i = static_cast<std::size_t>(index);
  run.texts[i] += delta;
  run.tokens[i] = tokens;
  const int words = api::count_words(run.texts[i]);
  if (words - run.words_sent[i] >= ctx_->config.stream.every_words) {
    for (std::size_t k = 0; k < run.texts.size(); ++k) run.words_sent[k] = api::count_words(run.texts[k]);
    send_frame("updated_response");
  }
}

void WebSocketSession::on_done(std::uint64_t gen, const std::vector<generate::GeneratedSequence>& results) {
  if (gen != generation_ || !current_) return;
  for (std::size_t i = 0; i < results.size() && i < current_->texts.size(); ++i) {
    current_->texts[i] = results[i].text;
    current_->tokens[i] = static_cast<int>(results[i].tokens.size());
  }
  send_frame("completed_response");
  current_.reset();
}

void WebSocketSession::on_error(std::uint64_t gen, const api::ApiError& error) {
  if (gen != generation_ || !current_) return;
  const auto& r = current_->request;
  if (error.code() == "out_of_memory") {
    send(api::make_oom_frame(r.prompt, r.batch_size).dump());
  } else {
    send(api::make_error_frame(r.prompt, r.batch_size, error).dump());
  }
  current_.reset();
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
  extras["length"] = run.request.length;
  extras["completed"] = completed;
  extras["seed"] = run.seed;
  send(api::make_frame(type, run.request.prompt, texts, extras).dump());
}

void WebSocketSession::send(std::string text) {
  if (closing_) return;
  if (queue_.size() >= kMaxQueuedFrames) {
    log::warn("websocket: closing a connection whose reader is too slow (" + std::to_string(queue_.size()) +
              " frames queued)");
    closing_ = true;
    if (current_ && current_->job) current_->job->cancel();
    beast::get_lowest_layer(ws_).socket().close();
    return;
  }
  queue_.push_back(std::move(text));
  do_write();
}

void WebSocketSession::do_write() {
  if (writing_ || queue_.empty()) return;
  writing_ = true;
  ws_.text(true);
  ws_.async_write(net::buffer(queue_.front()), [self = shared_from_this()](beast::error_code ec, std::size_t) {
    self->writing_ = false;
    self->queue_.pop_front();
    if (ec) return self->fail(ec, "write");
    self->do_write();
  });
}

void WebSocketSession::close(websocket::close_code code, const std::string& reason) {
  if (closing_) return;
  closing_ = true;
  cancel_current(false);
  ws_.async_close(websocket::close_reason(code, reason), [self = shared_from_this()](beast::error_code) {});
}

void WebSocketSession::fail(beast::error_code ec, const char* what) {
  if (ec == net::error::operation_aborted || ec == websocket::error::closed || ec == beast::error::timeout ||
      ec == net::error::eof || ec == net::error::connection_reset) {
    return;
  }
  log::debug(std::string("websocket ") + what + ": " + ec.message());
}

}  // namespace writeup::server

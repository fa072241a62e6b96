#include "writeup/server/http_session.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/websocket.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <sstream>

#include "writeup/api/fields.hpp"
#include "writeup/api/wire_json.hpp"
#include "writeup/server/server_context.hpp"
#include "writeup/server/websocket_session.hpp"
#include "writeup/util/hash.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::server {
namespace net = boost::asio;

namespace {

constexpr std::size_t kHeaderLimit = 16 * 1024;

std::string completion_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return "cmpl-" + to_hex64(rng()) + to_hex64(rng()).substr(0, 8);
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string sse_chunk(const std::string& event) {
  const std::string data = "data: " + event + "\n\n";
  std::ostringstream os;
  os << std::hex << data.size() << "\r\n" << data << "\r\n";
  return os.str();
}

nlohmann::json request_body(const Request& req) {
  const auto type = req[http::field::content_type];
  if (type.substr(0, 33) == "application/x-www-form-urlencoded") return api::parse_form_urlencoded(req.body());
  return api::parse_json_object(req.body());
}

}  // namespace

HttpSession::HttpSession(net::ip::tcp::socket&& socket, std::shared_ptr<ServerContext> ctx)
    : stream_(std::move(socket)), ctx_(std::move(ctx)) {
  ++ctx_->connections;
}

HttpSession::~HttpSession() {
  if (closer_id_) ctx_->remove_closer(closer_id_);
  --ctx_->connections;
  if (job_) job_->cancel();
}

void HttpSession::run() {
  std::weak_ptr<HttpSession> weak = shared_from_this();
  closer_id_ = ctx_->add_closer([weak] {
    if (auto self = weak.lock()) {
      net::post(self->stream_.get_executor(), [self] {
        if (!self->busy_) self->stream_.cancel();  // idle keep-alive: end the pending read
      });
    }
  });
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_read(); });
}

void HttpSession::do_read() {
  busy_ = false;
  if (ctx_->stopping) return do_close();
  parser_.emplace();
  parser_->body_limit(ctx_->config.limits.max_body_bytes);
  parser_->header_limit(kHeaderLimit);
  stream_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(ctx_->config.limits.idle_timeout_s)));
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
}

void HttpSession::on_read(beast::error_code ec, std::size_t) {
  if (ec == http::error::end_of_stream) return do_close();
  if (ec == http::error::body_limit || ec == http::error::header_limit) {
    const bool body = ec == http::error::body_limit;
    Request req{http::verb::unknown, "/", 11};
    req.keep_alive(false);
    return send(error_response(req, api::ApiError(body ? 413 : 431, body ? "body_too_large" : "headers_too_large",
                                                   body ? "request body exceeds " +
                                                              std::to_string(ctx_->config.limits.max_body_bytes) + " bytes"
                                                        : "request headers are too large")),
                "other");
  }
  if (ec == beast::error::timeout) return do_close();
  if (ec) {
    if (ec.category() == beast::error_code(http::error::bad_target).category()) {
      Request req{http::verb::unknown, "/", 11};
      req.keep_alive(false);
      return send(error_response(req, api::ApiError(400, "bad_request", "malformed HTTP request: " + ec.message())),
                  "other");
    }
    return fail(ec, "read");
  }
  handle(parser_->release());
}

void HttpSession::handle(Request req) {
  busy_ = true;
  const Route route = classify(req, *ctx_);
  try {
    if (route.kind == RouteKind::websocket) return upgrade(std::move(req));
    if (route.kind == RouteKind::immediate) return send(handle_immediate(req, *ctx_), route.name);
    check_api_key(req, *ctx_);
    if (ctx_->stopping) throw api::ApiError(503, "shutting_down", "the server is stopping");
    if (route.kind == RouteKind::completions) return start_completions(req, route);
    return start_generate(req, route);
  } catch (const api::ApiError& e) {
    send(error_response(req, e), route.name);
  } catch (const std::exception& e) {
    send(error_response(req, api::ApiError(500, "internal_error", e.what())), route.name);
  }
}

void HttpSession::start_completions(const Request& req, const Route& route) {
  const auto body = api::parse_json_object(req.body());
  const auto request = api::parse_completion_request(
      body, {ctx_->config.limits.max_batch_size, ctx_->config.limits.max_length});
  auto prepared = ctx_->service.prepare(request);
  const std::string id = completion_id(), model = prepared.model->config.name;
  const std::int64_t created = unix_now();
  const int prompt_tokens = prepared.prompt_tokens;
  auto self = shared_from_this();
  const auto on_strand = [self](auto fn) { net::post(self->stream_.get_executor(), std::move(fn)); };
  service::StreamEvents events;
  if (request.stream) {
    // Bytes of each choice streamed so far: a response from the cache streams no deltas, so
    // its text goes out whole before the final chunks. Both callbacks run on the flight's
    // thread in order.
    auto streamed = std::make_shared<std::vector<std::size_t>>(static_cast<std::size_t>(request.n), 0);
    events.on_text = [=](int index, const std::string& delta, int) {
      (*streamed)[static_cast<std::size_t>(index)] += delta.size();
      on_strand([=] { self->stream_chunk(api::make_completion_chunk(id, created, model, index, delta, std::nullopt).dump(), false); });
    };
    events.on_done = [=](const std::vector<generate::GeneratedSequence>& results) {
      std::vector<std::string> finals;
      for (std::size_t i = 0; i < results.size(); ++i) {
        const auto sent = std::min((*streamed)[i], results[i].text.size());
        if (sent < results[i].text.size()) {
          finals.push_back(api::make_completion_chunk(id, created, model, static_cast<int>(i),
                                                      results[i].text.substr(sent), std::nullopt).dump());
        }
      }
      for (std::size_t i = 0; i < results.size(); ++i) {
        finals.push_back(api::make_completion_chunk(id, created, model, static_cast<int>(i), "", results[i].finish_reason).dump());
      }
      on_strand([=] {
        for (const auto& f : finals) self->stream_chunk(f, false);
        self->stream_chunk("[DONE]", true);
      });
    };
    events.on_error = [=](const api::ApiError& e) {
      const auto j = e.to_json().dump();
      on_strand([=] {
        self->stream_chunk(j, false);
        self->stream_chunk("[DONE]", true);
      });
    };
    job_ = ctx_->service.start(std::move(prepared), events);
    return start_stream(req);
  }
  const auto reply = ReplyTo{req.version(), req.keep_alive(), route.name};
  events.on_done = [=](const std::vector<generate::GeneratedSequence>& results) {
    self->reply_later(reply, 200, api::make_completion(id, created, model, request, results, prompt_tokens).dump());
  };
  events.on_error = [=](const api::ApiError& e) { self->reply_later(reply, e); };
  job_ = ctx_->service.start(std::move(prepared), events);
  watch_disconnect();
}

void HttpSession::reply_later(const ReplyTo& to, int status, std::string body) {
  net::post(stream_.get_executor(), [self = shared_from_this(), to, status, body = std::move(body)] {
    self->job_.reset();
    self->send(json_response(to.request(), status, body), to.route);
  });
}

void HttpSession::reply_later(const ReplyTo& to, const api::ApiError& error) {
  net::post(stream_.get_executor(), [self = shared_from_this(), to, error] {
    self->job_.reset();
    self->send(error_response(to.request(), error), to.route);
  });
}

void HttpSession::start_generate(const Request& req, const Route& route) {
  auto fields = request_body(req);
  if (!route.path_model.empty()) fields["model_name"] = route.path_model;
  const auto request = api::parse_writeup_fields(fields, {ctx_->config.limits.max_batch_size, ctx_->config.limits.max_length});
  auto prepared = ctx_->service.prepare(request);
  const auto model = prepared.model->config.name;
  const auto seed = prepared.request.params.seed;
  const auto key = prepared.cache_key.empty() ? nlohmann::json(nullptr) : nlohmann::json(prepared.cache_key);
  auto self = shared_from_this();
  const auto reply = ReplyTo{req.version(), req.keep_alive(), route.name};
  service::StreamEvents events;
  events.on_done = [=](const std::vector<generate::GeneratedSequence>& results) {
    std::vector<std::string> texts;
    int completed = 0;
    for (const auto& r : results) {
      texts.push_back(api::clean_suggestion(r.text));
      completed += static_cast<int>(r.tokens.size());
    }
    self->reply_later(reply, 200,
                      api::make_frame("completed_response", request.prompt, texts,
                                      {{"model_name", model}, {"cache_key", key}, {"length", request.length},
                                       {"completed", completed}, {"seed", seed}})
                          .dump());
  };
  events.on_error = [=](const api::ApiError& e) { self->reply_later(reply, e); };
  job_ = ctx_->service.start(std::move(prepared), events);
  watch_disconnect();
}

void HttpSession::watch_disconnect() {
  stream_.socket().async_wait(net::ip::tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
    if (ec || !self->job_) return;
    char byte;
    const auto n = ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      self->job_->cancel();  // the client hung up: stop generating for it
    }
  });
}

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
    if (!origins.empty() && !origin.empty() && std::find(origins.begin(), origins.end(), origin) == origins.end()) {
      throw api::ApiError(403, "origin_not_allowed", "origin " + origin + " is not allowed");
    }
  } catch (const api::ApiError& e) {
    return refuse(e);
  } catch (const std::exception& e) {
    return refuse(api::ApiError(500, "internal_error", std::string("upgrade failed: ") + e.what()));
  }
  stream_.expires_never();
  // The read buffer goes along: it holds any frame the client sent right behind its request.
  std::make_shared<WebSocketSession>(stream_.release_socket(), ctx_, authorized, std::move(buffer_))
      ->run(std::move(req));
}

void HttpSession::send(Response res, const std::string& route) {
  ctx_->count_request(route, res.result_int());
  const bool close = res.need_eof();
  auto sp = std::make_shared<Response>(std::move(res));
  in_flight_ = sp;
  stream_.expires_after(std::chrono::seconds(30));
  http::async_write(stream_, *sp, beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), close));
}

void HttpSession::on_write(bool close, beast::error_code ec, std::size_t) {
  in_flight_.reset();
  if (ec) return fail(ec, "write");
  if (close) return do_close();
  do_read();
}

void HttpSession::start_stream(const Request& req) {
  ctx_->count_request("/v1/completions", 200);
  http::response<http::empty_body> res{http::status::ok, req.version()};
  res.set(http::field::server, "writeup");
  res.set(http::field::content_type, "text/event-stream; charset=utf-8");
  res.set(http::field::cache_control, "no-cache");
  res.chunked(true);
  res.keep_alive(req.keep_alive());
  stream_keep_alive_ = req.keep_alive();
  stream_done_ = false;
  std::ostringstream os;
  os << res.base();
  stream_queue_.push_front(os.str());
  do_stream_write();
}

void HttpSession::stream_chunk(std::string data, bool last) {
  if (stream_done_) return;
  stream_queue_.push_back(sse_chunk(data));
  if (last) {
    stream_queue_.push_back("0\r\n\r\n");
    stream_done_ = true;
    job_.reset();
  }
  do_stream_write();
}

void HttpSession::do_stream_write() {
  if (stream_writing_ || stream_queue_.empty()) return;
  stream_writing_ = true;
  stream_.expires_after(std::chrono::seconds(30));
  net::async_write(stream_, net::buffer(stream_queue_.front()),
                   [self = shared_from_this()](beast::error_code ec, std::size_t) {
                     self->stream_writing_ = false;
                     self->stream_queue_.pop_front();
                     if (ec) {
                       if (self->job_) self->job_->cancel();  // the client went away
                       return self->fail(ec, "stream write");
                     }
                     if (!self->stream_queue_.empty()) return self->do_stream_write();
                     if (self->stream_done_) {
                       if (self->stream_keep_alive_) return self->do_read();
                       return self->do_close();
                     }
                   });
}

void HttpSession::do_close() {
  beast::error_code ec;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
}

void HttpSession::fail(beast::error_code ec, const char* what) {
  if (job_) job_->cancel();
  if (ec == net::error::operation_aborted || ec == beast::error::timeout || ec == net::error::eof ||
      ec == net::error::connection_reset || ec == net::error::broken_pipe) {
    return;
  }
  log::debug(std::string("http ") + what + ": " + ec.message());
}

}  // namespace writeup::server

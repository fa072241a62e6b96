#include "writeup/server/http_session.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/websocket.hpp>


#include <algorithm>

#include "writeup/api/fields.hpp"
#include "writeup/api/request_body.hpp"
#include "writeup/api/wire_json.hpp"
#include "writeup/server/chat_reply.hpp"
#include "writeup/server/chat_route.hpp"
#include "writeup/server/completion_reply.hpp"
#include "writeup/server/cors.hpp"
#include "writeup/server/pending_heads.hpp"
#include "writeup/server/reply_events.hpp"
#include "writeup/server/server_context.hpp"
#include "writeup/server/websocket_session.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::server {
namespace net = boost::asio;

namespace {

constexpr std::size_t kHeaderLimit = 16 * 1024;
constexpr std::size_t kFirstRead = 4096;

std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

const api::ApiError& queue_full() {
  static const api::ApiError e(429, "queue_full", "the server is busy: too many requests are waiting; retry shortly");
  return e;
}

// A parsed OpenAI request and its tokenized form, built on the CPU pool.
struct PreparedCompletion {
  api::CompletionRequest request;
  std::vector<service::Prepared> prepared;  // one per prompt
};
struct PreparedGenerate {
  api::WriteupRequest request;
  service::Prepared prepared;
};

}  // namespace

HttpSession::HttpSession(net::ip::tcp::socket&& socket, std::shared_ptr<ServerContext> ctx,
                         std::shared_ptr<PendingHeads> heads)
    : stream_(std::move(socket)), ctx_(std::move(ctx)), heads_(std::move(heads)), watch_timer_(stream_.get_executor()) {
  ++ctx_->connections;
}

HttpSession::~HttpSession() {
  if (heads_) heads_->remove(head_ticket_);
  if (closer_id_) ctx_->remove_closer(closer_id_);
  if (counted_) --ctx_->connections;
  if (job_) job_->cancel();
  if (record_ && !record_->logged && busy_) {
    // The client left before its answer went out.
    try {
      std::lock_guard lock(record_->mutex);
      if (record_->finish.empty()) record_->finish = "client_closed";
    } catch (...) {
    }
    log_request(*record_);
  }
}

void HttpSession::on_exception(const char* where, const char* what) noexcept {
  try {
    log::error(std::string("http ") + where + ": " + what);
    if (job_) job_->cancel();
    job_.reset();
    if (busy_ && !responded_) {
      Request req{http::verb::unknown, "/", 11};
      req.keep_alive(false);
      return send(error_response(req, api::ApiError(500, "internal_error", "internal error")), "other");
    }
  } catch (...) {
  }
  beast::error_code ec;
  stream_.socket().close(ec);
}

void HttpSession::run() {
  std::weak_ptr<HttpSession> weak = shared_from_this();
  closer_id_ = ctx_->add_closer([weak] {
    if (auto self = weak.lock()) {
      net::post(self->stream_.get_executor(), [self] {
        self->guarded("close", [&] {
          if (!self->busy_) self->stream_.cancel();  // idle keep-alive: end the pending read
        });
      });
    }
  });
  net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->guarded("start", [&] { self->do_read(); }); });
}

void HttpSession::do_read() {
  busy_ = false;
  responded_ = false;
  streaming_ = false;
  head_request_ = false;
  if (ctx_->stopping) return do_close();
  parser_.emplace();
  parser_->body_limit(ctx_->config.limits.max_body_bytes);
  parser_->header_limit(kHeaderLimit);
  std::weak_ptr<HttpSession> weak = shared_from_this();
  head_ticket_ = heads_->add([weak] {
    if (auto self = weak.lock()) {
      net::post(self->stream_.get_executor(), [self] {
        if (!self->head_ticket_) return;  // its head arrived meanwhile
        self->head_ticket_ = 0;
        beast::error_code ec;
        self->stream_.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
        self->stream_.socket().close(ec);
      });
    }
  });
  if (buffer_.size() > 0) return read_header();  // a pipelined request has begun
  // Idle until the first byte; the head's deadline starts then.
  stream_.expires_after(seconds(ctx_->config.limits.idle_timeout_s));
  stream_.async_read_some(buffer_.prepare(kFirstRead),
                          beast::bind_front_handler(&HttpSession::on_first_bytes, shared_from_this()));
}

void HttpSession::on_first_bytes(beast::error_code ec, std::size_t bytes) {
  guarded("read", [&] {
    buffer_.commit(bytes);
    if (ec) {
      stop_waiting_for_head();
      if (ec == net::error::eof) return do_close();
      return fail(ec, "read");
    }
    read_header();
  });
}

void HttpSession::read_header() {
  // No read waits longer than the idle timeout either.
  const auto& limits = ctx_->config.limits;
  stream_.expires_after(seconds(std::min(limits.header_timeout_s, limits.idle_timeout_s)));
  http::async_read_header(stream_, buffer_, *parser_,
                          beast::bind_front_handler(&HttpSession::on_header, shared_from_this()));
}

void HttpSession::stop_waiting_for_head() {
  heads_->remove(head_ticket_);
  head_ticket_ = 0;
}

void HttpSession::on_header(beast::error_code ec, std::size_t) {
  guarded("read", [&] {
    stop_waiting_for_head();
    if (ec) return read_failed(ec);
    if (parser_->is_done()) return handle(parser_->release());
    const auto& head = parser_->get();
    if (head.version() >= 11 && beast::iequals(head[http::field::expect], "100-continue")) {
      // The client waits for this before it sends the body.
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      stream_.expires_after(kWriteTimeout);
      return net::async_write(stream_, net::buffer(kContinue), [self = shared_from_this()](beast::error_code ec, std::size_t) {
        self->guarded("write", [&] {
          if (ec) return self->fail(ec, "write");
          self->read_body();
        });
      });
    }
    read_body();
  });
}

void HttpSession::read_body() {
  // A body must keep up a minimum rate: its deadline grows with the bytes it announces.
  const auto& limits = ctx_->config.limits;
  const auto expected = parser_->content_length().value_or(limits.max_body_bytes);
  stream_.expires_after(seconds(limits.header_timeout_s + static_cast<double>(expected) / limits.min_body_bytes_per_s));
  http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
}

void HttpSession::on_read(beast::error_code ec, std::size_t) {
  guarded("read", [&] {
    if (ec) return read_failed(ec);
    handle(parser_->release());
  });
}

void HttpSession::read_failed(beast::error_code ec) {
  if (ec == http::error::end_of_stream) return do_close();
  if (ec == beast::error::timeout) return fail(ec, "read");
  Request req{http::verb::unknown, "/", 11};
  req.keep_alive(false);
  busy_ = true;
  // An unreadable request: the id and origin of whatever head was read.
  const auto& head = parser_->get();
  record_ = std::make_shared<RequestRecord>();
  record_->id = request_id_for(header_view(head["X-Request-Id"]));
  record_->route = "other";
  cors_origin_ = allowed_origin(ctx_->config.server.allowed_origins, header_view(head[http::field::origin]));
  if (ec == http::error::body_limit || ec == http::error::header_limit) {
    const bool body = ec == http::error::body_limit;
    return send(error_response(req, api::ApiError(body ? 413 : 431, body ? "body_too_large" : "headers_too_large",
                                                   body ? "request body exceeds " +
                                                              std::to_string(ctx_->config.limits.max_body_bytes) + " bytes"
                                                        : "request headers are too large")),
                "other");
  }
  if (ec.category() == beast::error_code(http::error::bad_target).category()) {
    return send(error_response(req, api::ApiError(400, "bad_request", "malformed HTTP request: " + ec.message())), "other");
  }
  fail(ec, "read");
}

void HttpSession::handle(Request req) {
  busy_ = true;
  head_request_ = req.method() == http::verb::head;
  const Route route = classify(req, *ctx_);
  const ReplyTo reply{req.version(), req.keep_alive(), route.name, {}};
  record_ = std::make_shared<RequestRecord>();
  record_->id = request_id_for(header_view(req["X-Request-Id"]));
  record_->route = route.name;
  cors_origin_ = allowed_origin(ctx_->config.server.allowed_origins, header_view(req[http::field::origin]));
  try {
    if (route.kind == RouteKind::websocket) return upgrade(std::move(req));
    if (route.kind == RouteKind::immediate) return send(handle_immediate(req, *ctx_), route.name);
    auto shared = std::make_shared<const Request>(std::move(req));
    if (route.kind == RouteKind::cpu) return start_cpu_route(std::move(shared), route);
    check_api_key(*shared, *ctx_);
    if (ctx_->stopping) throw api::ApiError(503, "shutting_down", "the server is stopping");
    if (route.kind == RouteKind::completions) return start_completions(std::move(shared), route);
    if (route.kind == RouteKind::chat) return start_chat(std::move(shared), route);
    start_generate(std::move(shared), route);
  } catch (...) {
    send_error(reply, std::current_exception());
  }
}

void HttpSession::send_error(const ReplyTo& to, std::exception_ptr error) {
  job_.reset();
  try {
    std::rethrow_exception(error);
  } catch (const api::ApiError& e) {
    send(error_response(to.request(), e), to.route);
  } catch (const std::exception& e) {
    log::error(std::string("http ") + to.route + ": " + e.what());
    send(error_response(to.request(), api::ApiError(500, "internal_error", e.what())), to.route);
  } catch (...) {
    send(error_response(to.request(), api::ApiError(500, "internal_error", "unexpected error")), to.route);
  }
}

void HttpSession::start_cpu_route(std::shared_ptr<const Request> req, const Route& route) {
  auto ctx = ctx_;
  const ReplyTo reply{req->version(), req->keep_alive(), route.name, {}};
  const bool queued = ctx_->offload(
      stream_.get_executor(), [ctx, req] { return handle_immediate(*req, *ctx); },
      [self = shared_from_this(), reply](std::optional<Response> res, std::exception_ptr error) {
        self->guarded("cpu route", [&] {
          if (error || !res) return self->send_error(reply, error);
          self->send(std::move(*res), reply.route);
        });
      });
  if (!queued) throw queue_full();
}

template <class Work, class Run>
void HttpSession::prepare_then(const char* what, const ReplyTo& reply, Work work, Run run) {
  const auto done = [self = shared_from_this(), reply, what, run](auto prepared, std::exception_ptr error) {
    self->guarded(what, [&] {
      try {
        if (error) std::rethrow_exception(error);
        if (!prepared) throw std::logic_error(std::string(what) + ": no result");
        run(*self, std::move(*prepared));
      } catch (...) {
        self->send_error(reply, std::current_exception());
      }
    });
  };
  if (!ctx_->offload(stream_.get_executor(), std::move(work), done)) throw queue_full();
}

void HttpSession::start_completions(std::shared_ptr<const Request> req, const Route& route) {
  auto ctx = ctx_;
  const api::CompletionLimits limits{ctx_->config.limits.max_batch_size, ctx_->config.limits.max_length};
  const ReplyTo reply{req->version(), req->keep_alive(), route.name, {}};
  const auto work = [ctx, req, limits] {
    const auto body = request_fields(*req);
    auto request = api::parse_completion_request(body, limits);
    auto prepared = ctx->service.prepare_all(request);
    return PreparedCompletion{std::move(request), std::move(prepared)};
  };
  prepare_then("completions", reply, work, [reply](HttpSession& self, PreparedCompletion p) {
    self.run_completions(reply, std::move(p.request), std::move(p.prepared));
  });
}

void HttpSession::start_chat(std::shared_ptr<const Request> req, const Route& route) {
  auto ctx = ctx_;
  const api::CompletionLimits limits{ctx_->config.limits.max_batch_size, ctx_->config.limits.max_length};
  const ReplyTo reply{req->version(), req->keep_alive(), route.name, chat_reply_sink};
  const auto work = [ctx, req, limits] { return prepare_chat(*req, *ctx, limits); };
  prepare_then("chat", reply, work, [reply](HttpSession& self, PreparedChat p) {
    std::vector<service::Prepared> one;
    one.push_back(std::move(p.prepared));
    self.run_completions(reply, std::move(p.request), std::move(one));
  });
}

// Every prompt is admitted or none: one refused now cancels those already started and answers
// 429; one refused later (a cache miss finding the queue full) does the same through the reply,
// which starts a stream only once all were admitted.
void HttpSession::run_completions(const ReplyTo& reply, api::CompletionRequest request,
                                  std::vector<service::Prepared> prepared) {
  streaming_ = request.stream;
  for (const auto& p : prepared) note_prepared(*record_, p);
  auto out = std::make_shared<CompletionReply>(std::move(request), prepared, sink(reply));
  std::vector<std::shared_ptr<service::Subscription>> parts;
  try {
    for (std::size_t i = 0; i < prepared.size(); ++i) {
      auto events = RequestRecord::observe(out->events(static_cast<int>(i)), record_);
      parts.push_back(ctx_->service.start(std::move(prepared[i]), std::move(events)));
    }
  } catch (...) {
    out->abandon();
    for (const auto& s : parts) s->cancel();
    throw;
  }
  job_ = parts.size() == 1 ? parts.front() : std::make_shared<service::Subscription>(std::move(parts));
  out->set_subscription(job_);
  watch_disconnect();
}

void HttpSession::start_generate(std::shared_ptr<const Request> req, const Route& route) {
  auto ctx = ctx_;
  const api::WriteupLimits limits{ctx_->config.limits.max_batch_size, ctx_->config.limits.max_length};
  const ReplyTo reply{req->version(), req->keep_alive(), route.name, {}};
  const auto work = [ctx, req, limits, path_model = route.path_model] {
    auto fields = request_fields(*req);
    if (!path_model.empty()) fields["model_name"] = path_model;
    auto request = api::parse_writeup_fields(fields, limits);
    auto prepared = ctx->service.prepare(request);
    return PreparedGenerate{std::move(request), std::move(prepared)};
  };
  prepare_then("generate", reply, work, [reply](HttpSession& self, PreparedGenerate p) {
    self.run_generate(reply, std::move(p.request), std::move(p.prepared));
  });
}

void HttpSession::run_generate(const ReplyTo& reply, api::WriteupRequest request, service::Prepared prepared) {
  note_prepared(*record_, prepared);
  auto events = RequestRecord::observe(generate_events(request, prepared, sink(reply)), record_);
  job_ = ctx_->service.start(std::move(prepared), std::move(events));
  watch_disconnect();
}

void HttpSession::stamp(http::fields& res) const {
  if (record_) res.set("X-Request-Id", record_->id);
  add_cors_headers(res, cors_origin_);
}

void HttpSession::log_answer(int status) {
  if (!record_ || record_->logged) return;
  record_->status = status;
  log_request(*record_);
}

void HttpSession::send(Response res, const std::string& route) {
  ctx_->count_request(route, res.result_int());
  stamp(res);
  log_answer(res.result_int());
  if (head_request_) {
    // HEAD: the GET answer's headers, Content-Length included, and no body.
    const auto length = res.body().size();
    res.body().clear();
    res.content_length(length);
  }
  responded_ = true;
  const bool close = res.need_eof();
  auto sp = std::make_shared<Response>(std::move(res));
  in_flight_ = sp;
  stream_.expires_after(kWriteTimeout);
  http::async_write(stream_, *sp, beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), close));
}

void HttpSession::on_write(bool close, beast::error_code ec, std::size_t) {
  guarded("write", [&] {
    in_flight_.reset();
    if (ec) return fail(ec, "write");
    if (close) return do_close();
    do_read();
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

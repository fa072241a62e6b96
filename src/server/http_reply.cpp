// How an answer computed elsewhere reaches an HttpSession's connection: the sink its
// generation's events hold (weakly), the disconnect watch that keeps the session while it
// waits, and server-sent events written one chunk at a time.
#include "writeup/server/http_session.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <sstream>

#include "writeup/server/server_context.hpp"

namespace writeup::server {
namespace net = boost::asio;

namespace {

constexpr auto kWatchInterval = std::chrono::milliseconds(200);

}  // namespace

ReplySink HttpSession::sink(const ReplyTo& reply) {
  ReplySink sink;
  const std::weak_ptr<HttpSession> weak = shared_from_this();
  sink.reply = [weak, reply](int status, std::string body) {
    if (auto self = weak.lock()) self->reply_later(reply, status, std::move(body));
  };
  sink.error = [weak, reply](const api::ApiError& e) {
    if (auto self = weak.lock()) self->reply_later(reply, e);
  };
  sink.events = [weak, reply](std::vector<std::string> data, bool last) {
    auto self = weak.lock();
    if (!self) return;
    net::post(self->stream_.get_executor(), [self, reply, data = std::move(data), last]() mutable {
      self->guarded("stream", [&] {
        if (!self->responded_) self->start_stream(reply);
        for (auto& d : data) self->stream_chunk(std::move(d), false);
        if (last) self->stream_chunk("[DONE]", true);
      });
    });
  };
  sink.open = [weak, reply] {
    auto self = weak.lock();
    if (!self) return;
    net::post(self->stream_.get_executor(), [self, reply] {
      self->guarded("stream", [&] {
        if (!self->responded_) self->start_stream(reply);
      });
    });
  };
  return reply.adapt ? reply.adapt(std::move(sink)) : sink;
}

void HttpSession::reply_later(const ReplyTo& to, int status, std::string body) {
  net::post(stream_.get_executor(), [self = shared_from_this(), to, status, body = std::move(body)] {
    self->guarded("reply", [&] {
      self->job_.reset();
      self->send(json_response(to.request(), status, body), to.route);
    });
  });
}

void HttpSession::reply_later(const ReplyTo& to, const api::ApiError& error) {
  net::post(stream_.get_executor(), [self = shared_from_this(), to, error] {
    self->guarded("reply", [&] {
      // A stream that began ends with the error as its last event; before that (not admitted
      // yet) the error is the answer, with its own status (429 and Retry-After).
      if (self->streaming_ && self->responded_) {
        self->stream_chunk(error.to_wire(), false);
        return self->stream_chunk("[DONE]", true);
      }
      self->job_.reset();
      self->send(error_response(to.request(), error), to.route);
    });
  });
}

void HttpSession::watch_disconnect() {
  stream_.socket().async_wait(net::ip::tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
    self->guarded("watch", [&] {
      if (ec || !self->job_) return;
      char byte;
      const auto n = ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        self->job_->cancel();  // the client hung up: stop generating for it; the session goes
        return;
      }
      // Readable bytes of a next request (or a spurious wake-up): look again later.
      self->watch_timer_.expires_after(kWatchInterval);
      self->watch_timer_.async_wait([self](beast::error_code timer_ec) {
        if (!timer_ec) self->watch_disconnect();
      });
    });
  });
}

void HttpSession::start_stream(const ReplyTo& to) {
  ctx_->count_request(to.route, 200);
  responded_ = true;
  http::response<http::empty_body> res{http::status::ok, to.version};
  res.set(http::field::server, "writeup");
  res.set(http::field::content_type, "text/event-stream; charset=utf-8");
  res.set(http::field::cache_control, "no-cache");
  stamp(res);  // X-Request-Id and CORS (the http helper's hook)
  // HTTP/1.0 has no chunked encoding: the events go out as they are, and closing the
  // connection ends the stream.
  stream_chunked_ = to.version >= 11;
  stream_keep_alive_ = stream_chunked_ && to.keep_alive;
  res.chunked(stream_chunked_);
  res.keep_alive(stream_keep_alive_);
  stream_done_ = false;
  std::ostringstream os;
  os << res.base();
  stream_queue_.push_front(os.str());
  do_stream_write();
  // Between chunks nothing else is pending: the watch keeps the session. A completions stream
  // (streaming_) has watched since it was started, while it waited for admission.
  if (!streaming_) watch_disconnect();
}

void HttpSession::stream_chunk(std::string data, bool last) {
  if (stream_done_) return;
  if (record_) record_->mark_output();
  std::string event = "data: " + data + "\n\n";
  if (stream_chunked_) {
    std::ostringstream os;
    os << std::hex << event.size() << "\r\n" << event << "\r\n";
    event = os.str();
  }
  stream_queue_.push_back(std::move(event));
  if (last) {
    if (stream_chunked_) stream_queue_.push_back("0\r\n\r\n");
    stream_done_ = true;
    job_.reset();
    log_answer(200);
  }
  do_stream_write();
}

void HttpSession::do_stream_write() {
  if (stream_writing_ || stream_queue_.empty()) return;
  stream_writing_ = true;
  stream_.expires_after(kWriteTimeout);
  net::async_write(stream_, net::buffer(stream_queue_.front()), [self = shared_from_this()](beast::error_code ec, std::size_t) {
    self->guarded("stream write", [&] {
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
  });
}

}  // namespace writeup::server

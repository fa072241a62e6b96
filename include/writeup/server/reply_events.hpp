#pragma once
// How a generation's outcome becomes the wire bytes of an HTTP answer: the ReplySink every
// answer goes through, and the StreamEvents of one POST /v1/generate request (POST
// /v1/completions and /v1/chat/completions answer through server/completion_reply).
// The events run on the output processor's executor (or the cache's thread for a stored
// response), never on the engine's: they build the bytes there (through api::wire_dump, so they
// never throw on the text) and hand them to a ReplySink, which takes them to the connection's
// strand. (The HTTP session's sink holds it strongly: while a generation runs, that reference
// is what keeps the session alive.)
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "writeup/api/api_error.hpp"
#include "writeup/api/openai_completions.hpp"
#include "writeup/api/writeup_protocol.hpp"
#include "writeup/service/completion_service.hpp"
#include "writeup/service/flight.hpp"

namespace writeup::server {

struct ReplySink {
  std::function<void(int status, std::string body)> reply;  // one JSON answer
  std::function<void(const api::ApiError& error)> error;     // an error answer
  // Server-sent events: each string is one event's data (JSON); `last` ends the stream with
  // "[DONE]".
  std::function<void(std::vector<std::string> data, bool last)> events;
  // Server-sent events: the request was admitted, start the stream (status line) now. The first
  // `events` starts it too; an `error` before it is a plain error answer (its own status).
  std::function<void()> open;
};

// A fresh completion id ("cmpl-..."), and the time for `created`.
std::string completion_id();
std::int64_t unix_now();

service::StreamEvents generate_events(const api::WriteupRequest& request, const service::Prepared& prepared,
                                      ReplySink sink);

}  // namespace writeup::server

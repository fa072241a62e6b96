#pragma once
// One log line per request (HTTP route or WebSocket new_request), at info (debug for /health,
// /ready and /metrics, so probes do not flood the log):
//   text: request id=... route=/v1/completions protocol=http model=gpt2 prompt_tokens=5
//         generated_tokens=16 cache=miss status=200 finish=length queue_ms=12.3 total_ms=45.6
//   json: {"event":"request","id":...,"route":...,"protocol":...,"model":...,"prompt_tokens":...,
//          "generated_tokens":...,"cache":...,"status":...,"finish":...,"queue_ms":...,"total_ms":...}
// (a field not known for a request is left out of the text line and null in JSON). queue_ms is the
// time from the request's arrival (its whole head and body read) until its first output (first
// streamed token or frame, or the answer); total_ms until its answer was handed to the socket.
// Writing never throws and never blocks on a slow sink (util/logging's request logger).
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "writeup/service/completion_service.hpp"
#include "writeup/service/flight.hpp"
#include "writeup/service/request_trace.hpp"

namespace writeup::server {

struct RequestRecord {
  using Clock = std::chrono::steady_clock;
  std::string id;
  std::string route;
  std::string protocol = "http";  // "http" or "ws"
  std::string model;
  int prompt_tokens = -1;         // -1: unknown (not tokenized)
  int generated_tokens = -1;
  // The cache outcome of each of its generations (one per prompt of a prompt array); empty: none
  // started.
  std::vector<std::shared_ptr<service::RequestTrace>> traces;
  int status = 0;                 // HTTP status (0 on WebSocket)
  std::string finish;             // finish reasons ("length", "stop,length"), or an error code
  Clock::time_point arrived = Clock::now();
  std::optional<Clock::time_point> first_output;
  bool logged = false;
  // Guards generated_tokens and finish while the events of several prompts' generations (on the
  // output pool's threads) add to them.
  std::mutex mutex;

  void mark_output() {
    if (!first_output) first_output = Clock::now();
  }
  // Wraps `events` so that their results (generated tokens, finish reasons, error code) are
  // recorded here before the events deliver them. The record must outlive nothing: it is shared.
  static service::StreamEvents observe(service::StreamEvents events, std::shared_ptr<RequestRecord> record);
};

// Model, prompt tokens and the cache outcome's trace of a prepared request (of one prompt: the
// prompt tokens of several add up).
void note_prepared(RequestRecord& record, const service::Prepared& prepared);

// The process's log format (ServerConfig::log_format == "json"; set by the Listener).
void set_request_log_json(bool json) noexcept;

// Writes `record`'s line once (later calls do nothing). Never throws.
void log_request(RequestRecord& record) noexcept;

// A request whose line is written when this ends (a WebSocket new_request: its state holds one).
class RequestLogLine {
 public:
  explicit RequestLogLine(std::string route, std::string protocol = "ws");
  ~RequestLogLine();  // logs; a request nothing ended (superseded, or the client left): "cancelled"
  RequestLogLine(const RequestLogLine&) = delete;
  RequestLogLine& operator=(const RequestLogLine&) = delete;

  const std::shared_ptr<RequestRecord>& record() const { return record_; }
  // Its finish when nothing set one yet (an error's code).
  void fail(const std::string& code);

 private:
  std::shared_ptr<RequestRecord> record_;
};

// The line itself (for tests).
std::string format_request_line(const RequestRecord& record, bool json, RequestRecord::Clock::time_point now);

}  // namespace writeup::server

// writeup-bench wire: N WebSocket sessions speaking the writeup editor's protocol to a running
// server, each sending its requests back to back (the next new_request once the previous
// completed_response arrived). Reports completed requests/s, generated tokens/s, the latency
// between consecutive frames of a request (the first measured from the send), and errors.
#include "bench_wire.hpp"
#include "stats.hpp"

#include <utility>  // boost 1.74 awaitable.hpp uses std::exchange without it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace writeup::tools {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using net::awaitable;
using net::use_awaitable;
using Clock = std::chrono::steady_clock;

struct WireOptions {
  std::string host = "127.0.0.1";  // server address
  std::string port = "8080";       // server port
  int sessions = 8;                // concurrent WebSocket sessions
  int requests = 4;                // new_requests per session, back to back
  int batch_size = 7;              // suggestions per request
  int length = 40;                 // new tokens per suggestion
  std::string model;               // model_name ("" = the server's default)
};

struct WireStats {
  long completed = 0;            // completed_response frames
  long tokens = 0;               // sum of their `completed` token counts
  long errors = 0;               // error / oom frames and failed connections
  std::vector<double> gaps_ms;   // frame-to-frame latency within a request
  std::string first_error;       // for the report
};

std::string request_json(const WireOptions& o, int session, int request, int run) {
  nlohmann::json j = {{"message_type", "new_request"},
                      {"prompt", "Session " + std::to_string(session) + " wrote a story about the sea"},
                      {"temperature", 0.7}, {"top_k", 10}, {"top_p", 0},
                      {"length", o.length}, {"batch_size", o.batch_size},
                      // A distinct seed per request: a response cache must not answer these.
                      {"seed", (run * 100000 + session) * 1000 + request}};
  if (!o.model.empty()) j["model_name"] = o.model;
  return j.dump();
}

// Reads frames until the request's last one; returns false on an error or oom frame.
awaitable<bool> await_completion(websocket::stream<beast::tcp_stream>& ws, WireStats& st, Clock::time_point sent) {
  auto last = sent;
  for (;;) {
    beast::flat_buffer buf;
    co_await ws.async_read(buf, use_awaitable);
    const auto now = Clock::now();
    st.gaps_ms.push_back(std::chrono::duration<double, std::milli>(now - last).count());
    last = now;
    const auto m = nlohmann::json::parse(beast::buffers_to_string(buf.data())).at("message");
    const auto type = m.at("message_type").get<std::string>();
    if (type == "updated_response") continue;
    if (type == "completed_response") {
      ++st.completed;
      st.tokens += m.value("completed", 0L);
      co_return true;
    }
    if (st.first_error.empty()) st.first_error = type + ": " + m.value("text_0", std::string());
    co_return false;
  }
}

awaitable<void> run_session(const WireOptions& o, WireStats& st, int session, int run) {
  auto ex = co_await net::this_coro::executor;
  net::ip::tcp::resolver resolver(ex);
  websocket::stream<beast::tcp_stream> ws(ex);
  const auto endpoints = co_await resolver.async_resolve(o.host, o.port, use_awaitable);
  co_await beast::get_lowest_layer(ws).async_connect(endpoints, use_awaitable);
  beast::get_lowest_layer(ws).expires_never();
  ws.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
  const std::string path = "/ws/async/writeup/text_generation/session/bench-" + std::to_string(run) + "-" +
                           std::to_string(session) + "/";
  co_await ws.async_handshake(o.host + ":" + o.port, path, use_awaitable);
  for (int r = 0; r < o.requests; ++r) {
    const auto sent = Clock::now();
    co_await ws.async_write(net::buffer(request_json(o, session, r, run)), use_awaitable);
    if (!co_await await_completion(ws, st, sent)) ++st.errors;
  }
  co_await ws.async_close(websocket::close_code::normal, use_awaitable);
}

struct RunResult {
  double requests_per_s, tokens_per_s, gap_p50_ms, gap_p99_ms;
  long errors;
  std::string first_error;
};

RunResult run_once(const WireOptions& o, int run) {
  net::io_context ioc(1);
  WireStats st;
  for (int s = 0; s < o.sessions; ++s) {
    net::co_spawn(ioc, run_session(o, st, s, run), [&st](std::exception_ptr e) {
      if (!e) return;
      ++st.errors;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        if (st.first_error.empty()) st.first_error = ex.what();
      }
    });
  }
  const auto t0 = Clock::now();
  ioc.run();
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  return {st.completed / wall, st.tokens / wall, percentile(st.gaps_ms, 0.5), percentile(st.gaps_ms, 0.99),
          st.errors, st.first_error};
}

}  // namespace

int bench_wire(const CliArgs& args) {
  WireOptions o;
  const std::string url = args.get("url", "ws://127.0.0.1:8080");
  if (url.rfind("ws://", 0) != 0) throw std::invalid_argument("--url must be ws://HOST:PORT");
  const auto hostport = url.substr(5, url.find('/', 5) == std::string::npos ? std::string::npos : url.find('/', 5) - 5);
  const auto colon = hostport.rfind(':');
  o.host = hostport.substr(0, colon);
  o.port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
  o.sessions = args.get_int("sessions", o.sessions);
  o.requests = args.get_int("requests", o.requests);
  o.batch_size = args.get_int("batch-size", o.batch_size);
  o.length = args.get_int("length", o.length);
  o.model = args.get("model-name", "");
  const int runs = args.get_int("runs", 3);
  std::vector<double> rps, tps, p50, p99;
  long errors = 0;
  std::string first_error;
  for (int r = 0; r < runs; ++r) {
    const auto res = run_once(o, r);
    rps.push_back(res.requests_per_s);
    tps.push_back(res.tokens_per_s);
    p50.push_back(res.gap_p50_ms);
    p99.push_back(res.gap_p99_ms);
    errors += res.errors;
    if (first_error.empty()) first_error = res.first_error;
  }
  std::printf("%-9s %10s %12s %14s %14s %7s\n", "sessions", "req/s", "tokens/s", "update_p50_ms", "update_p99_ms",
              "errors");
  std::printf("%-9d %10.2f %12.1f %14.1f %14.1f %7ld\n", o.sessions, median(rps), median(tps), median(p50),
              median(p99), errors);
  std::printf("{\"bench\":\"wire\",\"url\":\"%s\",\"sessions\":%d,\"requests_per_session\":%d,\"batch_size\":%d,"
              "\"length\":%d,\"requests_per_s\":%.3f,\"tokens_per_s\":%.1f,\"update_p50_ms\":%.1f,"
              "\"update_p99_ms\":%.1f,\"errors\":%ld,\"runs\":%d}\n",
              url.c_str(), o.sessions, o.requests, o.batch_size, o.length, median(rps), median(tps), median(p50),
              median(p99), errors, runs);
  if (!first_error.empty()) std::fprintf(stderr, "writeup-bench wire: first error: %s\n", first_error.c_str());
  return errors == 0 ? 0 : 1;
}

}  // namespace writeup::tools

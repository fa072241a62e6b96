// Fuzz target: the raw HTTP request path, without sockets. The bytes go through Beast's
// request parser (the limits HttpSession sets), then what HttpSession::handle does with a
// request: server::classify, handle_immediate for the immediate routes, and for the others
// the API-key check, the body parsers and the request preparation (tokenizing) they run, or
// the WebSocket upgrade checks (API key, Origin). Errors become error_response(); the
// response is serialized and must parse back.
//
// The first input byte picks the configuration: bit 0 set = API keys and allowed origins
// configured and a static directory served; clear = an open server.
//
// Properties: nothing escapes but what the session catches, no answer is a 500 (every bad
// input is a 4xx), and every response is a well-formed HTTP message.
//
// WRITEUP_FUZZ_HTTP_KNOWN=1 (for long runs while known defects are open) counts escaping
// exceptions and 500s on stderr instead of stopping, so that the run goes on looking for
// memory errors and crashes of other kinds.
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

#include "fuzz_support.hpp"
#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"
#include "writeup/api/openai_completions.hpp"
#include "writeup/api/wire_json.hpp"
#include "writeup/api/writeup_protocol.hpp"
#include "writeup/server/router.hpp"
#include "writeup/server/server_context.hpp"
#include "writeup/util/logging.hpp"

using namespace writeup;
using namespace writeup::server;

namespace {

constexpr std::size_t kHeaderLimit = 16 * 1024;  // as HttpSession
constexpr const char* kApiKey = "fuzz-key";
constexpr const char* kOrigin = "http://allowed.example";

std::string static_dir() {
  const auto dir = std::filesystem::temp_directory_path() / "writeup-http-fuzz-static";
  std::filesystem::create_directories(dir / "sub");
  std::filesystem::create_directories(dir / "assets");
  std::ofstream(dir / "index.html") << "<!doctype html><title>writeup</title>";
  std::ofstream(dir / "sub" / "app.js") << "console.log(1);";
  std::ofstream(dir / "assets" / "index-B4x_9kQz.js") << "console.log(2);";  // a hashed asset
  return dir.string();
}

ServerContext* make_context(bool locked) {
  ServerConfig cfg;
  ModelConfig m;
  m.name = "tiny-gpt2";
  m.path = fuzz::test_data("tiny-gpt2");
  m.packed_cache = "off";  // never write a packed-weights cache beside the fixture
  m.max_batch = 2;
  m.kv_cache_mb = 8;
  cfg.models.push_back(m);
  cfg.server.io_threads = 1;
  cfg.log_level = "off";
  if (locked) {
    cfg.server.api_keys = {kApiKey};
    cfg.server.allowed_origins = {kOrigin};
    cfg.server.static_dir = static_dir();
  }
  cfg.validate();
  auto* ctx = new ServerContext(cfg);  // lives as long as the process
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!ctx->models.ready()) {
    if (std::chrono::steady_clock::now() > deadline) fuzz::finding("the tiny model did not load in 60 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return ctx;
}

ServerContext& context(bool locked) {
  static const bool quiet = [] {
    log::set_level(log::parse_level("off"));
    return true;
  }();
  (void)quiet;
  static ServerContext* open = make_context(false);
  static ServerContext* closed = make_context(true);
  return locked ? *closed : *open;
}

nlohmann::json request_body(const Request& req) {  // as HttpSession's
  const auto type = req[http::field::content_type];
  if (type.substr(0, 33) == "application/x-www-form-urlencoded") return api::parse_form_urlencoded(req.body());
  return api::parse_json_object(req.body());
}

// The session's answer to a request that parsed, or nullopt when it would go on
// asynchronously (a generation started, a WebSocket session run).
std::optional<Response> handle(const Request& req, ServerContext& ctx) {
  const Route route = classify(req, ctx);
  try {
    if (route.kind == RouteKind::websocket) {
      if (!boost::beast::websocket::is_upgrade(req)) {
        throw api::ApiError(400, "websocket_required", "this path speaks WebSocket only");
      }
      try {
        check_api_key(req, ctx);
      } catch (const api::ApiError& e) {
        if (e.code() != "missing_api_key") throw;
      }
      const auto& origins = ctx.config.server.allowed_origins;
      const auto origin = std::string(req[http::field::origin]);
      if (!origins.empty() && !origin.empty() && std::find(origins.begin(), origins.end(), origin) == origins.end()) {
        throw api::ApiError(403, "origin_not_allowed", "origin " + origin + " is not allowed");
      }
      return std::nullopt;
    }
    if (route.kind == RouteKind::immediate) return handle_immediate(req, ctx);
    check_api_key(req, ctx);
    if (route.kind == RouteKind::completions) {
      const auto body = api::parse_json_object(req.body());
      const auto request = api::parse_completion_request(
          body, {ctx.config.limits.max_batch_size, ctx.config.limits.max_length});
      const auto prepared = ctx.service.prepare(request);
      (void)api::wire_dump(api::make_completion_chunk("cmpl-fuzz", 0, prepared.model->config.name, 0, request.prompt,
                                                      std::nullopt));
      return std::nullopt;
    }
    auto fields = request_body(req);
    if (!route.path_model.empty()) fields["model_name"] = route.path_model;
    const auto request =
        api::parse_writeup_fields(fields, {ctx.config.limits.max_batch_size, ctx.config.limits.max_length});
    const auto prepared = ctx.service.prepare(request);
    (void)api::wire_dump(api::make_frame("completed_response", request.prompt, {request.prompt},
                                         {{"model_name", prepared.model->config.name}}));
    return std::nullopt;
  } catch (const api::ApiError& e) {
    return error_response(req, e);
  } catch (const std::exception& e) {
    return error_response(req, api::ApiError(500, "internal_error", e.what()));
  }
}

bool tolerate_known() {
  static const bool known = [] {
    const char* v = std::getenv("WRITEUP_FUZZ_HTTP_KNOWN");
    return v != nullptr && std::string_view(v) == "1";
  }();
  return known;
}

// Prints the first input of each kind (the message up to any byte offset or value, digits dropped).
void known_defect(const std::string& what) {
  if (!tolerate_known()) fuzz::finding(what);
  static std::set<std::string> kinds;
  std::string kind;
  for (const char c : what.substr(0, std::min(what.find(" at index"), what.find("; last byte")))) {
    if (c < '0' || c > '9') kind += c;
  }
  if (kinds.insert(kind).second) std::fprintf(stderr, "KNOWN DEFECT (new kind %zu): %s\n", kinds.size(), what.c_str());
}

void check_response(Response& res, ServerContext& ctx, const std::string& route) {
  ctx.count_request(route, res.result_int());
  if (res.result_int() == 500) return known_defect("500 answer: " + res.body());
  std::ostringstream wire;
  wire << res;  // Beast's serializer
  const std::string bytes = wire.str();
  http::response_parser<http::string_body> parser;
  parser.eager(true);
  parser.skip(false);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(bytes), ec);
  if (ec && ec != http::error::need_more) fuzz::finding("response does not parse back: " + ec.message());
}

}  // namespace

// Both contexts load the model before the first input, outside libFuzzer's per-input timeout.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)context(false);
  (void)context(true);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  auto& ctx = context((data[0] & 1) != 0);
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);

  http::request_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(ctx.config.limits.max_body_bytes);
  parser.eager(true);
  boost::beast::error_code ec;
  while (!bytes.empty() && !parser.is_done()) {
    const auto used = parser.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
    bytes.remove_prefix(used);
    if (ec || used == 0) break;
  }
  if (ec == http::error::need_more || (!ec && !parser.is_done())) return 0;  // the session would read on
  if (ec) {
    // HttpSession::on_read: 413/431 for the limits, 400 for a malformed request, else close.
    Request req{http::verb::unknown, "/", 11};
    req.keep_alive(false);
    std::optional<api::ApiError> error;
    if (ec == http::error::body_limit) error.emplace(413, "body_too_large", "request body too large");
    else if (ec == http::error::header_limit) error.emplace(431, "headers_too_large", "request headers are too large");
    else if (ec.category() == boost::beast::error_code(http::error::bad_target).category())
      error.emplace(400, "bad_request", "malformed HTTP request: " + ec.message());
    if (error) {
      auto res = error_response(req, *error);
      check_response(res, ctx, "other");
    }
    return 0;
  }
  const Request req = parser.release();
  if (!tolerate_known()) {
    const auto route = classify(req, ctx);
    if (auto res = handle(req, ctx)) check_response(*res, ctx, route.name);
    return 0;
  }
  try {
    const auto route = classify(req, ctx);
    if (auto res = handle(req, ctx)) check_response(*res, ctx, route.name);
  } catch (const std::exception& e) {
    known_defect(std::string("exception escaped the session: ") + e.what());
  }
  return 0;
}

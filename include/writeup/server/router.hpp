#pragma once
#include <boost/beast/http.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "writeup/api/api_error.hpp"

namespace writeup::server {

struct ServerContext;

namespace http = boost::beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

enum class RouteKind {
  immediate,    // answered by handle_immediate()
  cpu,          // answered by handle_immediate() on the CPU pool: POST /v1/tokenize, /v1/detokenize
  completions,  // POST /v1/completions (async, maybe SSE)
  chat,         // POST /v1/chat/completions (async, maybe SSE; completions underneath)
  generate,     // POST /v1/generate or POST /{model_name} (async, writeup fields)
  websocket,    // the writeup WebSocket path (upgrade)
};

struct Route {
  RouteKind kind = RouteKind::immediate;
  std::string name;        // for metrics: "/v1/completions", "/{model_name}", "other", ...
  std::string path_model;  // POST /{model_name}: that name
};

Route classify(const Request& req, const ServerContext& ctx);

// Throws api::ApiError 401 when API keys are configured and the request has none of them
// (Bearer header, or api_key in the query string).
void check_api_key(const Request& req, const ServerContext& ctx);

Response json_response(const Request& req, int status, const std::string& body);
// OPTIONS: 204 with Allow for a known path; a browser's pre-flight from an allowed origin also
// gets the Access-Control-* headers (see cors.hpp), one from any other origin none. No API key.
Response options_response(const Request& req, const ServerContext& ctx);
// The request's body by the one body rule (api/request_body.hpp).
nlohmann::json request_fields(const Request& req);
Response error_response(const Request& req, const api::ApiError& error);

// Every route that answers without the engine: health, ready, metrics, models, tokenize,
// detokenize, static files, and 404/405 for the rest. Never throws (what a request raises
// becomes its error response). Tokenize and detokenize cost CPU in proportion to the body:
// call it for RouteKind::cpu off the I/O threads.
Response handle_immediate(const Request& req, ServerContext& ctx);

}  // namespace writeup::server

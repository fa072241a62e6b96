#pragma once
// Cross-origin requests (CORS) and request ids for HTTP answers.
//
// server.allowed_origins decides which web pages may call the API from a browser:
//   - empty (the default): no page on another origin may (no Access-Control-* headers are ever
//     sent, so browsers refuse cross-origin calls; same-origin pages and non-browser clients
//     are unaffected). WebSocket upgrades from any Origin stay allowed, as before.
//   - a list of origins ("https://app.example.com"): a request whose Origin is in it gets
//     Access-Control-Allow-Origin with that origin (and Vary: Origin); others get no CORS headers.
//   - "*" in the list: every origin is allowed (the request's Origin is echoed back).
#include <boost/beast/http.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace writeup::server {

namespace http = boost::beast::http;

// A header value as a std::string_view.
inline std::string_view header_view(boost::beast::string_view s) { return {s.data(), s.size()}; }

// The origin to echo in Access-Control-Allow-Origin, or "" when `origin` is absent or not allowed.
std::string allowed_origin(const std::vector<std::string>& allowed, std::string_view origin);

// A browser's pre-flight: OPTIONS with Origin and Access-Control-Request-Method.
bool is_preflight(const http::request_header<>& req);

// The headers of a pre-flight's 204 for an allowed origin: Allow-Origin, -Allow-Methods (`methods`),
// -Allow-Headers (what Access-Control-Request-Headers asked for when every name in it is a sane
// header name, else a fixed list), -Max-Age, Vary.
void add_preflight_headers(http::fields& res, const http::request_header<>& req, const std::string& origin,
                           const std::string& methods);

// On an actual answer for an allowed origin: Access-Control-Allow-Origin, -Expose-Headers
// (X-Request-Id, Retry-After), Vary: Origin. Nothing when `origin` is "".
void add_cors_headers(http::fields& res, const std::string& origin);

// The client's X-Request-Id when it is sane (1-128 characters of letters, digits and - _ . : / + = @),
// else a fresh random id (32 hex digits).
std::string request_id_for(std::string_view client_id);
std::string new_request_id();

}  // namespace writeup::server

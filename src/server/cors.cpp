#include "writeup/server/cors.hpp"

#include <algorithm>
#include <random>

#include "writeup/util/hash.hpp"

namespace writeup::server {
namespace {

// RFC 9110 token characters.
bool is_tchar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

constexpr const char* kDefaultAllowHeaders = "Authorization, Content-Type, X-Request-Id";

// The requested header names, normalized ("a, b"), when every one is a token of at most 64
// characters and there are at most 32 of them; else "".
std::string sane_header_list(std::string_view list) {
  if (list.size() > 2048) return {};
  std::string out;
  int count = 0;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    auto comma = list.find(',', pos);
    if (comma == std::string_view::npos) comma = list.size();
    auto name = list.substr(pos, comma - pos);
    pos = comma + 1;
    while (!name.empty() && (name.front() == ' ' || name.front() == '\t')) name.remove_prefix(1);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);
    if (name.empty()) continue;
    if (name.size() > 64 || ++count > 32 || !std::all_of(name.begin(), name.end(), is_tchar)) return {};
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

}  // namespace

std::string allowed_origin(const std::vector<std::string>& allowed, std::string_view origin) {
  if (origin.empty() || allowed.empty() || origin.size() > 512) return {};
  // An Origin header is a serialized origin: visible ASCII without spaces.
  if (!std::all_of(origin.begin(), origin.end(), [](char c) { return c > ' ' && c < 0x7f; })) return {};
  for (const auto& a : allowed) {
    if (a == "*" || a == origin) return std::string(origin);
  }
  return {};
}

bool is_preflight(const http::request_header<>& req) {
  return req.method() == http::verb::options && req.find(http::field::origin) != req.end() &&
         req.find(http::field::access_control_request_method) != req.end();
}

void add_preflight_headers(http::fields& res, const http::request_header<>& req, const std::string& origin,
                           const std::string& methods) {
  if (origin.empty()) return;
  res.set(http::field::access_control_allow_origin, origin);
  res.set(http::field::access_control_allow_methods, methods.empty() ? "GET, POST, OPTIONS" : methods);
  auto asked = sane_header_list(header_view(req[http::field::access_control_request_headers]));
  res.set(http::field::access_control_allow_headers, asked.empty() ? std::string(kDefaultAllowHeaders) : asked);
  res.set(http::field::access_control_max_age, "600");
  res.set(http::field::vary, "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
}

void add_cors_headers(http::fields& res, const std::string& origin) {
  if (origin.empty()) return;
  res.set(http::field::access_control_allow_origin, origin);
  res.set(http::field::access_control_expose_headers, "X-Request-Id, Retry-After");
  res.set(http::field::vary, "Origin");
}

std::string new_request_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return to_hex64(rng()) + to_hex64(rng());
}

std::string request_id_for(std::string_view client_id) {
  const bool sane = !client_id.empty() && client_id.size() <= 128 &&
                    std::all_of(client_id.begin(), client_id.end(), [](char c) {
                      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                             std::string_view("-_.:/+=@").find(c) != std::string_view::npos;
                    });
  return sane ? std::string(client_id) : new_request_id();
}

}  // namespace writeup::server

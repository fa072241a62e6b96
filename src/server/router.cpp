#include "writeup/server/router.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <string_view>

#include "writeup/api/fields.hpp"
#include "writeup/api/request_body.hpp"
#include "writeup/api/wire_json.hpp"
#include "writeup/server/cors.hpp"
#include "writeup/server/server_context.hpp"
#include "writeup/server/static_files.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace writeup::server {
namespace {

std::string path_of(const Request& req) {
  const std::string target(req.target());
  return target.substr(0, target.find('?'));
}

std::string query_param(const Request& req, const std::string& name) {
  const std::string target(req.target());
  const auto q = target.find('?');
  if (q == std::string::npos) return {};
  nlohmann::json fields;
  try {
    fields = api::parse_form_urlencoded(std::string_view(target).substr(q + 1));
  } catch (const api::ApiError& e) {
    throw api::ApiError(400, "invalid_query", std::string("query string: ") + e.what(), e.param());
  }
  return fields.contains(name) ? fields[name].get<std::string>() : std::string();
}

// /ws/async/writeup/text_generation/session/{1-128 of [A-Za-z0-9_-]}, trailing slash optional.
bool is_ws_path(std::string_view path) {
  constexpr std::string_view prefix = "/ws/async/writeup/text_generation/session/";
  if (path.substr(0, prefix.size()) != prefix) return false;
  auto id = path.substr(prefix.size());
  if (!id.empty() && id.back() == '/') id.remove_suffix(1);
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// When the model's weights were written (Unix seconds; 0 when unknown): OpenAI's `created`.
std::int64_t created_of(const service::ModelEntry& m) {
  std::error_code ec;
  const auto t = std::filesystem::last_write_time(std::filesystem::path(m.config.path) / "model.safetensors", ec);
  if (ec) return 0;
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::file_clock::to_sys(t).time_since_epoch()).count();
}

nlohmann::json model_json(const service::ModelEntry& m) {
  nlohmann::json j = {{"id", m.config.name},
                      {"object", "model"},
                      {"created", created_of(m)},
                      {"owned_by", "writeup"},
                      {"ready", m.ready()},
                      {"context_length", m.n_positions},
                      {"fingerprint", m.fingerprint()},
                      {"aliases", m.config.aliases}};
  if (!m.config.notice.empty()) j["notice"] = m.config.notice;
  return j;
}

nlohmann::json models_json(const ServerContext& ctx) {
  nlohmann::json data = nlohmann::json::array();
  for (const auto& m : ctx.models.models()) data.push_back(model_json(*m));
  return {{"object", "list"}, {"data", data}};
}

constexpr std::string_view kModelPrefix = "/v1/models/";

// GET /v1/models/{id}
Response model_response(const Request& req, const ServerContext& ctx, const std::string& path) {
  const auto id = path.substr(kModelPrefix.size());
  const auto* m = ctx.models.find(id);
  if (!m) throw api::ApiError(404, "model_not_found", "model '" + id + "' does not exist", "model");
  return json_response(req, 200, api::wire_dump(model_json(*m)));
}

// The methods a known path answers (for 405's Allow header); "" for an unknown path.
std::string allowed_methods(const std::string& path) {
  for (const char* p : {"/health", "/ready", "/metrics", "/v1/models"}) {
    if (path == p) return "GET, HEAD";
  }
  if (path.rfind(kModelPrefix, 0) == 0) return "GET, HEAD";
  for (const char* p : {"/v1/tokenize", "/v1/detokenize", "/v1/completions", "/v1/chat/completions", "/v1/generate"}) {
    if (path == p) return "POST";
  }
  return "";
}

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != std::tolower(static_cast<unsigned char>(prefix[i]))) return false;
  }
  return true;
}

const service::ModelEntry& model_for(const nlohmann::json& body, const ServerContext& ctx) {
  api::Fields f(body);
  const auto name = f.string("model").value_or("");
  if (name.empty()) return ctx.models.default_model();
  if (const auto* m = ctx.models.find(name)) return *m;
  throw api::ApiError(404, "model_not_found", "model '" + name + "' does not exist", "model");
}

Response tokenize(const Request& req, const ServerContext& ctx) {
  const auto body = request_fields(req);
  api::Fields f(body);
  f.reject_unknown({"model", "prompt", "text"});
  const auto& m = model_for(body, ctx);
  const auto text = f.has("prompt") ? f.string("prompt") : f.string("text");
  if (!text) throw api::ApiError::bad_request("prompt is required", "prompt");
  const auto ids = m.tokenizer->encode(*text);
  return json_response(req, 200, api::wire_dump(nlohmann::json{{"model", m.config.name}, {"tokens", ids}, {"count", ids.size()}}));
}

Response detokenize(const Request& req, const ServerContext& ctx) {
  auto body = request_fields(req);
  // A form's tokens may also be a comma-separated list ("1,2,3").
  if (body.contains("tokens") && body["tokens"].is_string()) {
    nlohmann::json ids = nlohmann::json::array();
    const auto s = body["tokens"].get<std::string>();
    std::size_t pos = 0;
    while (pos <= s.size() && !s.empty()) {
      auto comma = s.find(',', pos);
      if (comma == std::string::npos) comma = s.size();
      auto item = s.substr(pos, comma - pos);
      item.erase(0, item.find_first_not_of(' '));
      item.erase(item.find_last_not_of(' ') + 1);
      ids.push_back(item);
      pos = comma + 1;
    }
    for (auto& id : ids) {
      const auto v = api::Fields(nlohmann::json{{"tokens", id}}).integer("tokens", 0, INT32_MAX);
      id = *v;
    }
    body["tokens"] = ids;
  }
  api::Fields f(body);
  f.reject_unknown({"model", "tokens"});
  const auto& m = model_for(body, ctx);
  if (!f.has("tokens") || !body["tokens"].is_array()) {
    throw api::ApiError::bad_request("tokens must be an array of token ids", "tokens");
  }
  std::vector<int> ids;
  for (const auto& t : body["tokens"]) {
    if (!t.is_number_integer() || t.get<long long>() < 0 || t.get<long long>() >= m.tokenizer->vocab_size()) {
      throw api::ApiError::bad_request("tokens must be integers in 0.." + std::to_string(m.tokenizer->vocab_size() - 1),
                                       "tokens");
    }
    ids.push_back(t.get<int>());
  }
  // decode() may end inside a character: the wire form replaces what is not UTF-8.
  return json_response(req, 200, api::wire_dump(nlohmann::json{{"model", m.config.name}, {"text", m.tokenizer->decode(ids)}}));
}

bool needs_key(const std::string& path) {
  return path != "/health" && path != "/ready" && path != "/metrics";
}

// Paths the API owns: never answered from static_dir, whatever files it holds.
bool is_api_path(const std::string& path) {
  return path == "/health" || path == "/ready" || path == "/metrics" || path == "/v1" || path.rfind("/v1/", 0) == 0 ||
         path.rfind("/ws/", 0) == 0;
}

}  // namespace

nlohmann::json request_fields(const Request& req) {
  const auto type = req[http::field::content_type];
  return api::parse_request_body(std::string_view(type.data(), type.size()), req.body()).fields;
}

Response options_response(const Request& req, const ServerContext& ctx) {
  const auto path = path_of(req);
  auto methods = allowed_methods(path);
  if (methods.empty() && is_ws_path(path)) methods = "GET";
  if (methods.empty() && path.size() > 1 && path.find('/', 1) == std::string::npos && ctx.models.find(path.substr(1))) {
    methods = "POST";
  }
  if (methods.empty() && !ctx.config.server.static_dir.empty()) methods = "GET, HEAD";
  methods += methods.empty() ? "OPTIONS" : ", OPTIONS";
  Response res{http::status::no_content, req.version()};
  res.set(http::field::server, "writeup");
  res.set(http::field::allow, methods);
  if (is_preflight(req)) {
    const auto origin = allowed_origin(ctx.config.server.allowed_origins, header_view(req[http::field::origin]));
    add_preflight_headers(res, req, origin, methods);
  }
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

Route classify(const Request& req, const ServerContext& ctx) {
  const auto path = path_of(req);
  if (req.method() == http::verb::options) return {RouteKind::immediate, "OPTIONS", {}};
  if (is_ws_path(path)) return {RouteKind::websocket, "/ws/async/writeup", {}};
  if (req.method() == http::verb::post) {
    if (path == "/v1/completions") return {RouteKind::completions, path, {}};
    if (path == "/v1/chat/completions") return {RouteKind::chat, path, {}};
    if (path == "/v1/generate") return {RouteKind::generate, path, {}};
    if (path == "/v1/tokenize" || path == "/v1/detokenize") return {RouteKind::cpu, path, {}};
    if (path.size() > 1 && path.find('/', 1) == std::string::npos && ctx.models.find(path.substr(1))) {
      return {RouteKind::generate, "/{model_name}", path.substr(1)};
    }
  }
  static const char* known[] = {"/health", "/ready", "/metrics", "/v1/models", "/v1/tokenize", "/v1/detokenize"};
  for (const char* k : known) {
    if (path == k) return {RouteKind::immediate, path, {}};
  }
  if (path.rfind(kModelPrefix, 0) == 0) return {RouteKind::immediate, "/v1/models/{id}", {}};
  return {RouteKind::immediate, "other", {}};
}

void check_api_key(const Request& req, const ServerContext& ctx) {
  const auto& keys = ctx.config.server.api_keys;
  if (keys.empty() || !needs_key(path_of(req)) || req.method() == http::verb::options) return;
  std::string given;
  const auto auth = req[http::field::authorization];
  if (iequals_prefix(std::string_view(auth.data(), auth.size()), "bearer ")) given = std::string(auth.substr(7));  // the scheme is case-insensitive
  if (given.empty()) given = query_param(req, "api_key");
  if (given.empty()) throw api::ApiError(401, "missing_api_key", "an API key is required (Authorization: Bearer KEY)");
  if (std::find(keys.begin(), keys.end(), given) == keys.end()) {
    throw api::ApiError(401, "invalid_api_key", "the API key is not valid");
  }
}

Response json_response(const Request& req, int status, const std::string& body) {
  Response res{static_cast<http::status>(status), req.version()};
  res.set(http::field::server, "writeup");
  res.set(http::field::content_type, "application/json");
  res.keep_alive(req.keep_alive());
  res.body() = body;
  res.prepare_payload();
  return res;
}

Response error_response(const Request& req, const api::ApiError& error) {
  auto res = json_response(req, error.status(), error.to_wire());
  if (error.status() == 429) res.set(http::field::retry_after, "1");
  if (error.status() == 401) res.set(http::field::www_authenticate, "Bearer");
  if (error.status() == 405) {
    if (const auto allow = allowed_methods(path_of(req)); !allow.empty()) res.set(http::field::allow, allow);
  }
  return res;
}

Response handle_immediate(const Request& req, ServerContext& ctx) {
  const auto path = path_of(req);
  try {
    if (req.method() == http::verb::options) return options_response(req, ctx);
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
    // The page and its assets are public (a browser cannot send a key to load them); the page
    // then sends the key with its API requests.
    if (get && !ctx.config.server.static_dir.empty() && !is_api_path(path)) {
      if (auto res = static_response(req, path, ctx.config.server.static_dir)) return std::move(*res);
    }
    check_api_key(req, ctx);
    const bool post = req.method() == http::verb::post;
    if (path == "/health" && get) return json_response(req, 200, R"({"status":"ok"})");
    if (path == "/ready" && get) {
      const bool ready = ctx.models.ready() && !ctx.stopping;
      return json_response(req, ready ? 200 : 503, ready ? R"({"status":"ready"})" : R"({"status":"not_ready"})");
    }
    if (path == "/metrics" && get) {
      auto res = json_response(req, 200, ctx.metrics.exposition());
      res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      return res;
    }
    if (path == "/v1/models" && get) return json_response(req, 200, api::wire_dump(models_json(ctx)));
    if (path.rfind(kModelPrefix, 0) == 0 && path.size() > kModelPrefix.size()) {
      if (get) return model_response(req, ctx, path);
      throw api::ApiError(405, "method_not_allowed", std::string(req.method_string()) + " is not allowed on " + path);
    }
    if (path == "/v1/tokenize" && post) return tokenize(req, ctx);
    if (path == "/v1/detokenize" && post) return detokenize(req, ctx);
    for (const char* p : {"/health", "/ready", "/metrics", "/v1/models", "/v1/tokenize", "/v1/detokenize",
                          "/v1/completions", "/v1/chat/completions", "/v1/generate"}) {
      if (path == p) throw api::ApiError(405, "method_not_allowed", std::string(req.method_string()) + " is not allowed on " + path);
    }
    throw api::ApiError(404, "not_found", "no such route: " + std::string(req.method_string()) + " " + path);
  } catch (const api::ApiError& e) {
    return error_response(req, e);
  } catch (const std::invalid_argument& e) {
    return error_response(req, api::ApiError::bad_request(e.what()));
  } catch (const std::exception& e) {
    return error_response(req, api::ApiError(500, "internal_error", e.what()));
  } catch (...) {
    return error_response(req, api::ApiError(500, "internal_error", "unexpected error"));
  }
}

}  // namespace writeup::server

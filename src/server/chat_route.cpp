#include "writeup/server/chat_route.hpp"

#include <optional>
#include <stdexcept>

#include "writeup/api/openai_chat.hpp"
#include "writeup/server/server_context.hpp"

namespace writeup::server {
namespace {

const service::ModelEntry& chat_model(const nlohmann::json& body, const ServerContext& ctx) {
  const auto it = body.find("model");
  if (it == body.end() || it->is_null()) return ctx.models.default_model();
  if (!it->is_string()) throw api::ApiError::bad_request("model must be a string", "model");
  const auto name = it->get<std::string>();
  if (name.empty()) return ctx.models.default_model();
  if (const auto* m = ctx.models.find(name)) return *m;
  throw api::ApiError(404, "model_not_found", "model '" + name + "' does not exist", "model");
}

}  // namespace

PreparedChat prepare_chat(const Request& req, const ServerContext& ctx, const api::CompletionLimits& limits) {
  const auto body = request_fields(req);
  const auto& model = chat_model(body, ctx);
  std::optional<api::ChatTemplate> tmpl;
  try {
    tmpl.emplace(model.config.chat_template);
  } catch (const std::invalid_argument& e) {
    throw api::ApiError(500, "bad_chat_template", "model '" + model.config.name + "': " + e.what());
  }
  auto request = api::parse_completion_request(api::chat_to_completion_body(body, *tmpl), limits);
  auto prepared = ctx.service.prepare(request);
  return PreparedChat{std::move(request), std::move(prepared)};
}

}  // namespace writeup::server

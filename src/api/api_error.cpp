#include "writeup/api/api_error.hpp"

#include "writeup/api/wire_json.hpp"

namespace writeup::api {

ApiError::ApiError(int status, std::string code, std::string message, std::string param)
    : std::runtime_error(std::move(message)),
      status_(status),
      code_(std::move(code)),
      param_(std::move(param)) {}

std::string ApiError::type() const {
  if (status_ == 401) return "authentication_error";
  if (status_ == 404) return code_ == "model_not_found" ? "invalid_request_error" : "not_found_error";  // as OpenAI
  if (status_ == 429) return "rate_limit_error";
  if (status_ >= 500) return "server_error";
  return "invalid_request_error";
}

nlohmann::json ApiError::to_json() const {
  return {{"error",
           {{"message", what()},
            {"type", type()},
            {"param", param_.empty() ? nlohmann::json(nullptr) : nlohmann::json(param_)},
            {"code", code_}}}};
}

std::string ApiError::to_wire() const noexcept {
  try {
    return wire_dump(to_json());
  } catch (...) {  // building the object ran out of memory
    return wire_dump(nullptr);
  }
}

}  // namespace writeup::api

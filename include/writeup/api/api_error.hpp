#pragma once
#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

namespace writeup::api {

// An error a client gets back: HTTP status, OpenAI-style type and code, and the offending
// field (empty when none). Rendered as {"error":{"message","type","param","code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string code, std::string message, std::string param = {});

  int status() const { return status_; }
  const std::string& code() const { return code_; }
  const std::string& param() const { return param_; }
  // "invalid_request_error" (4xx), "authentication_error" (401), "server_error" (5xx)...
  std::string type() const;
  nlohmann::json to_json() const;
  // to_json() as wire bytes (invalid UTF-8 in the message or param replaced). Never throws.
  std::string to_wire() const noexcept;

  static ApiError bad_request(std::string message, std::string param = {}) {
    return ApiError(400, "invalid_value", std::move(message), std::move(param));
  }

 private:
  int status_;
  std::string code_;
  std::string param_;
};

}  // namespace writeup::api

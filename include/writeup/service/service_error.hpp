#pragma once
// A failed generation as the sessions get it: the client's answer (status, code, message) and,
// when the engine failed it, the engine's typed reason. Sessions choose by `kind` (the writeup
// protocol answers an out-of-memory with its own frame), never by comparing codes.
#include <optional>

#include "writeup/api/api_error.hpp"
#include "writeup/engine/output.hpp"

namespace writeup::service {

struct ServiceError {
  api::ApiError error;
  std::optional<engine::ErrorKind> kind;  // nullopt: the service's own (queue full, ...)

  explicit ServiceError(api::ApiError e, std::optional<engine::ErrorKind> k = std::nullopt)
      : error(std::move(e)), kind(k) {}
  bool out_of_memory() const { return kind == engine::ErrorKind::out_of_memory; }
};

// The client's answer to an engine failure: 503 out_of_memory/timeout/shutting_down, 400
// invalid_request, 500 internal_error.
ServiceError engine_error(engine::ErrorKind kind, const std::string& message);

}  // namespace writeup::service

#include "writeup/service/service_error.hpp"

namespace writeup::service {

ServiceError engine_error(engine::ErrorKind kind, const std::string& message) {
  switch (kind) {
    case engine::ErrorKind::out_of_memory: return ServiceError(api::ApiError(503, "out_of_memory", message), kind);
    case engine::ErrorKind::invalid: return ServiceError(api::ApiError(400, "invalid_request", message), kind);
    case engine::ErrorKind::timeout: return ServiceError(api::ApiError(503, "timeout", message), kind);
    case engine::ErrorKind::shutdown: return ServiceError(api::ApiError(503, "shutting_down", message), kind);
    case engine::ErrorKind::unavailable: return ServiceError(api::ApiError(503, "model_unavailable", message), kind);
    case engine::ErrorKind::internal: break;
  }
  return ServiceError(api::ApiError(500, "internal_error", message), engine::ErrorKind::internal);
}

}  // namespace writeup::service

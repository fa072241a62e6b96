#include "writeup/engine/output.hpp"

namespace writeup::engine {

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::none: return "none";
    case FinishReason::length: return "length";
    case FinishReason::stop: return "stop";
    case FinishReason::eos: return "eos";
    case FinishReason::cancelled: return "cancelled";
    case FinishReason::error: return "error";
  }
  return "error";
}

const char* to_string(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::out_of_memory: return "out_of_memory";
    case ErrorKind::invalid: return "invalid_request";
    case ErrorKind::timeout: return "timeout";
    case ErrorKind::shutdown: return "shutting_down";
    case ErrorKind::unavailable: return "model_unavailable";
    case ErrorKind::internal: return "internal_error";
  }
  return "internal_error";
}

}  // namespace writeup::engine

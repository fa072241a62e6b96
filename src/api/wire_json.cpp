#include "writeup/api/wire_json.hpp"

namespace writeup::api {

std::string wire_dump(const nlohmann::json& value) noexcept {
  try {
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (...) {
    try {
      return R"({"error":{"message":"the response could not be encoded","type":"server_error","param":null,"code":"internal_error"}})";
    } catch (...) {
      return {};
    }
  }
}

}  // namespace writeup::api

#pragma once
// The one way any JSON value becomes bytes on the wire. nlohmann's plain dump() throws on a
// string holding invalid UTF-8 (a client's bytes echoed in an error message, a form key, a
// header); on the error path that exception would escape a completion handler. wire_dump()
// replaces invalid sequences with U+FFFD and never throws.
#include <nlohmann/json.hpp>

#include <string>

namespace writeup::api {

// Compact JSON text of `value` with invalid UTF-8 replaced by U+FFFD. Never throws: should
// even that fail (out of memory), it returns a fixed internal-error object.
std::string wire_dump(const nlohmann::json& value) noexcept;

}  // namespace writeup::api

// Fuzz target: application/x-www-form-urlencoded bodies and query strings
// (api::parse_form_urlencoded), then the writeup fields read from them as POST /v1/generate
// does. Property: only api::ApiError escapes, and everything produced (the parsed object, the
// request, the error) renders through api::wire_dump.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_support.hpp"
#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"
#include "writeup/api/wire_json.hpp"
#include "writeup/api/writeup_protocol.hpp"

using namespace writeup;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  nlohmann::json fields;
  try {
    fields = api::parse_form_urlencoded(body);
  } catch (const api::ApiError& e) {
    (void)api::wire_dump(e.to_json());
    return 0;
  }
  if (!fields.is_object()) fuzz::finding("parse_form_urlencoded returned a non-object");
  for (const auto& [key, value] : fields.items()) {
    if (!value.is_string()) fuzz::finding("form field '" + key + "' is not a string");
  }
  (void)api::wire_dump(fields);
  api::WriteupRequest partial;
  try {
    const auto request = api::parse_writeup_fields(fields, {10, 256}, &partial);
    (void)api::wire_dump(api::make_frame("completed_response", request.prompt,
                                         std::vector<std::string>(static_cast<std::size_t>(request.batch_size)),
                                         {{"model_name", request.model_name}, {"length", request.length}}));
  } catch (const api::ApiError& e) {
    (void)api::wire_dump(api::make_error_frame(partial, e));
  }
  return 0;
}

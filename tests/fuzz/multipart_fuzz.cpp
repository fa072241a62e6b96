// Fuzz target: request bodies through the one body rule (api::parse_request_body), mostly
// multipart/form-data. The input's first line is the Content-Type, the rest the body (seeds in
// corpus/multipart/). Then the fields are read as /v1/chat/completions and /v1/completions
// would. Property: only api::ApiError escapes; a parsed body is an object whose multipart and
// form values are strings (or the JSON of a structured field), and everything renders through
// api::wire_dump.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_support.hpp"
#include "writeup/api/api_error.hpp"
#include "writeup/api/openai_chat.hpp"
#include "writeup/api/openai_completions.hpp"
#include "writeup/api/request_body.hpp"
#include "writeup/api/wire_json.hpp"

using namespace writeup;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto eol = input.find('\n');
  const auto type = input.substr(0, eol == std::string_view::npos ? input.size() : eol);
  const auto body = eol == std::string_view::npos ? std::string_view() : input.substr(eol + 1);
  api::RequestBody parsed;
  try {
    parsed = api::parse_request_body(type, body);
  } catch (const api::ApiError& e) {
    if (e.status() != 400 && e.status() != 415) fuzz::finding("body error status " + std::to_string(e.status()));
    (void)api::wire_dump(e.to_json());
    return 0;
  }
  if (!parsed.fields.is_object()) fuzz::finding("parse_request_body returned a non-object");
  if (parsed.kind != api::BodyKind::json) {
    for (const auto& [key, value] : parsed.fields.items()) {
      const bool structured = key == "stop" || key == "messages" || key == "tokens" || key == "logit_bias" ||
                              key == "stream_options";
      if (!value.is_string() && !structured) fuzz::finding("form field '" + key + "' is not a string");
    }
  }
  (void)api::wire_dump(parsed.fields);
  try {
    const auto completion = api::chat_to_completion_body(parsed.fields, api::ChatTemplate(""));
    (void)api::parse_completion_request(completion, {10, 256});
  } catch (const api::ApiError& e) {
    (void)api::wire_dump(e.to_json());
  }
  try {
    (void)api::parse_completion_request(parsed.fields, {10, 256});
  } catch (const api::ApiError& e) {
    (void)api::wire_dump(e.to_json());
  }
  return 0;
}

#pragma once
// The one rule for HTTP request bodies, used by every route that takes fields
// (/v1/completions, /v1/chat/completions, /v1/generate, /{model_name}, /v1/tokenize,
// /v1/detokenize):
//   - application/json (or any type ending in +json): a JSON object;
//   - no Content-Type: JSON when the body starts like JSON ('{' or '[' after whitespace),
//     else a form when it holds a '=', else JSON (whose error then names the problem);
//   - application/x-www-form-urlencoded: a form, except a body that starts with '{' is JSON
//     (what `curl -d '{...}'` sends: curl labels every -d body a form);
//   - multipart/form-data; boundary=...: its text fields (a file part, a non-text part or a
//     malformed body is a 400 naming what is wrong);
//   - any other type: 415 naming it; a charset other than UTF-8 (or US-ASCII): 415.
// Form values are strings; the fields that routes read as arrays or objects (stop, messages,
// tokens, logit_bias, stream_options) are parsed as JSON when a form value holds a JSON array or
// object. Every error is an api::ApiError.
#include <nlohmann/json.hpp>

#include <string_view>

namespace writeup::api {

enum class BodyKind { json, form, multipart };

struct RequestBody {
  nlohmann::json fields;  // always an object
  BodyKind kind = BodyKind::json;
};

RequestBody parse_request_body(std::string_view content_type, std::string_view body);

// multipart/form-data (RFC 7578) with the given boundary: text fields only, as an object of
// strings (a repeated name: the last value). Throws ApiError 400 naming the problem.
nlohmann::json parse_multipart_form(std::string_view boundary, std::string_view body);

// The boundary parameter of a multipart Content-Type ("" when absent).
std::string multipart_boundary(std::string_view content_type);

}  // namespace writeup::api

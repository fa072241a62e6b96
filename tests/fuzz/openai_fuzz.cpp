// Fuzz target: the body of POST /v1/completions (api::parse_json_object, then
// api::parse_completion_request). Property: only api::ApiError (4xx) escapes; the request is in
// its documented ranges; a chunk of it and any error render through api::wire_dump.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"
#include "writeup/api/openai_completions.hpp"
#include "writeup/api/wire_json.hpp"

using namespace writeup;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const api::CompletionLimits limits{10, 256};
  try {
    const auto json = api::parse_json_object(body);
    if (!json.is_object()) fuzz::finding("parse_json_object returned a non-object");
    const auto r = api::parse_completion_request(json, limits);
    if (r.n < 1 || r.n > limits.max_batch_size) fuzz::finding("n out of range");
    if (r.max_tokens < 1 || r.max_tokens > limits.max_length) fuzz::finding("max_tokens out of range");
    if (r.stop.size() > 4) fuzz::finding("more than 4 stop strings");
    (void)api::to_sampling_params(r, r.seed.value_or(42));
    generate::GeneratedSequence seq{{}, r.prompt, "length"};
    (void)api::wire_dump(api::make_completion("cmpl-fuzz", 0, r.model, r,
                                              std::vector<generate::GeneratedSequence>(static_cast<std::size_t>(r.n), seq), 1));
    (void)api::wire_dump(api::make_completion_chunk("cmpl-fuzz", 0, r.model, 0, r.prompt, std::string("stop")));
  } catch (const api::ApiError& e) {
    if (e.status() < 400 || e.status() >= 500) fuzz::finding("completion request error with status " + std::to_string(e.status()));
    (void)api::wire_dump(e.to_json());
  }
  return 0;
}

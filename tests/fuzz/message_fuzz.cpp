// Fuzz target: one WebSocket text frame of the writeup editor's protocol
// (api::parse_client_message). Property: only api::ApiError escapes; the parsed request is in
// its documented ranges; the frame or error frame the session would send renders through
// api::wire_dump.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "writeup/api/api_error.hpp"
#include "writeup/api/wire_json.hpp"
#include "writeup/api/writeup_protocol.hpp"

using namespace writeup;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const api::WriteupLimits limits{10, 256};
  api::WriteupRequest partial;
  try {
    const auto m = api::parse_client_message(text, limits, &partial);
    if (m.type == api::ClientMessage::Type::cancel_request) return 0;
    const auto& r = m.request;
    if (r.batch_size < 1 || r.batch_size > limits.max_batch_size) fuzz::finding("batch_size out of range");
    if (r.length < 1 || r.length > limits.max_length) fuzz::finding("length out of range");
    if (r.top_k < 0 || r.top_k > 40) fuzz::finding("top_k out of range");
    if (!(r.temperature >= 0.1f && r.temperature <= 1.0f)) fuzz::finding("temperature out of range");
    if (!(r.top_p >= 0.0f && r.top_p <= 1.0f)) fuzz::finding("top_p out of range");
    (void)api::to_sampling_params(r, r.seed.value_or(42));
    const std::vector<std::string> texts(static_cast<std::size_t>(r.batch_size), r.prompt);
    (void)api::wire_dump(api::make_frame("updated_response", r.prompt, texts, {{"model_name", r.model_name}}));
    if (!r.request_id.empty() && !api::valid_request_id(r.request_id)) fuzz::finding("request_id accepted but not valid");
    (void)api::wire_dump(api::make_oom_frame(r));
  } catch (const api::ApiError& e) {
    if (e.status() < 400 || e.status() >= 500) fuzz::finding("client message error with status " + std::to_string(e.status()));
    (void)api::wire_dump(api::make_error_frame(partial, e));
  }
  return 0;
}

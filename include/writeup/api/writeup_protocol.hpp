#pragma once
// The writeup.ai editor's WebSocket protocol (and the same fields over HTTP).
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "writeup/api/api_error.hpp"
#include "writeup/generate/sampling_params.hpp"

namespace writeup::api {

struct WriteupRequest {
  std::string prompt;                // as received (echoed in every frame)
  float temperature = 0.7f;          // 0.1 .. 1
  int top_k = 10;                    // 0 .. 40, 0 = off
  float top_p = 0.0f;                // 0 .. 1, 0 = off
  int length = 40;                   // new tokens, 1 .. 256
  int batch_size = 5;                // suggestions, 1 .. 10
  std::string model_name;            // "" = the configured default
  std::optional<std::uint64_t> seed; // else the configured default seed
  std::string request_id;            // the client's id for this request, echoed in every frame
                                     // answering it; "" = none (echoed as null)
};

struct WriteupLimits {
  int max_batch_size = 10;  // config limits.max_batch_size (never above 10)
  int max_length = 256;     // config limits.max_length (never above 256)
};

struct ClientMessage {
  enum class Type { new_request, cancel_request } type = Type::new_request;
  WriteupRequest request;  // for new_request
  std::string api_key;     // the optional api_key field (for browsers, which cannot set headers)
};

// Parses one client text frame. Throws ApiError (param = the field) on bad input; the
// request's prompt and batch_size are filled as far as they could be read, for the error frame.
ClientMessage parse_client_message(std::string_view text, const WriteupLimits& limits,
                                   WriteupRequest* partial = nullptr);
// The writeup fields of an object (WebSocket frame, JSON or form body).
WriteupRequest parse_writeup_fields(const nlohmann::json& object, const WriteupLimits& limits,
                                    WriteupRequest* partial = nullptr);

generate::SamplingParams to_sampling_params(const WriteupRequest& request, std::uint64_t seed);

// A suggestion as the editor shows it: cut at <|endoftext|>, trimmed of surrounding space.
std::string clean_suggestion(std::string_view text);
// Whitespace-separated words in `text` (the streaming cadence counts these).
int count_words(std::string_view text);

// {"message": {"message_type": type, "prompt": ..., "text_0".."text_{n-1}": ..., extras...}}
nlohmann::json make_frame(std::string_view type, const std::string& prompt,
                          const std::vector<std::string>& texts, const nlohmann::json& extras);
// Whether `id` may be a request_id: 1-64 characters from A-Z a-z 0-9 _ . : -
bool valid_request_id(std::string_view id);
// The request_id a frame echoes: the string, or null when the request had none.
nlohmann::json request_id_json(const WriteupRequest& request);
// An "error" frame answering `echo` (its prompt, batch_size text_ fields and request_id): text_0
// holds a short notice, "error" holds {code, message, field}.
nlohmann::json make_error_frame(const WriteupRequest& echo, const ApiError& error);
// An "oom_response" frame answering `echo`: text_0 holds a notice.
nlohmann::json make_oom_frame(const WriteupRequest& echo);

}  // namespace writeup::api

#include "writeup/api/writeup_protocol.hpp"

#include <algorithm>

#include "writeup/api/fields.hpp"

namespace writeup::api {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// What an error frame echoes, read without judging the rest of the message: the prompt when it is
// a string, request_id when it is a valid one, batch_size when it is a valid one (else the
// default). Never throws.
void read_echo(const nlohmann::json& object, const WriteupLimits& limits, WriteupRequest& r) {
  const auto prompt = object.find("prompt");
  if (prompt != object.end() && prompt->is_string()) r.prompt = prompt->get<std::string>();
  const auto id = object.find("request_id");
  if (id != object.end() && id->is_string() && valid_request_id(id->get_ref<const std::string&>())) {
    r.request_id = id->get<std::string>();
  }
  try {
    if (auto v = Fields(object).integer("batch_size", 1, std::min(10, limits.max_batch_size))) {
      r.batch_size = static_cast<int>(*v);
    }
  } catch (const ApiError&) {
    // an invalid batch_size is the message's error; the frame keeps the default count
  }
}

}  // namespace

bool valid_request_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == ':' || c == '-';
  });
}

nlohmann::json request_id_json(const WriteupRequest& request) {
  return request.request_id.empty() ? nlohmann::json(nullptr) : nlohmann::json(request.request_id);
}

WriteupRequest parse_writeup_fields(const nlohmann::json& object, const WriteupLimits& limits,
                                    WriteupRequest* partial) {
  Fields f(object);
  WriteupRequest r;
  const auto keep = [&] {
    if (partial) *partial = r;
  };
  read_echo(object, limits, r);
  keep();
  if (const auto id = object.find("request_id"); id != object.end() && !id->is_null() && r.request_id.empty()) {
    throw ApiError::bad_request("request_id must be a string of 1-64 characters from A-Z a-z 0-9 _ . : -",
                                "request_id");
  }
  if (auto v = f.integer("batch_size", 1, std::min(10, limits.max_batch_size))) r.batch_size = static_cast<int>(*v);
  keep();
  if (!f.has("prompt")) throw ApiError::bad_request("prompt is required", "prompt");
  f.string("prompt");  // type check
  if (std::all_of(r.prompt.begin(), r.prompt.end(), is_space)) {
    throw ApiError::bad_request("prompt must not be blank", "prompt");
  }
  if (auto v = f.number("temperature", 0.1, 1.0)) r.temperature = static_cast<float>(*v);
  if (auto v = f.integer("top_k", 0, 40)) r.top_k = static_cast<int>(*v);
  if (auto v = f.number("top_p", 0.0, 1.0)) r.top_p = static_cast<float>(*v);
  if (auto v = f.integer("length", 1, std::min(256, limits.max_length))) r.length = static_cast<int>(*v);
  if (auto v = f.string("model_name")) r.model_name = *v;
  r.seed = f.seed("seed");
  keep();
  return r;
}

ClientMessage parse_client_message(std::string_view text, const WriteupLimits& limits,
                                   WriteupRequest* partial) {
  const auto j = parse_json_lenient(text);  // the editor may cut a surrogate pair in two
  if (j.is_discarded()) throw ApiError(400, "invalid_json", "message is not valid JSON");
  if (!j.is_object()) throw ApiError(400, "invalid_json", "message must be a JSON object");
  if (partial) {
    *partial = WriteupRequest{};
    read_echo(j, limits, *partial);  // an error about any field (message_type too) echoes these
  }
  ClientMessage m;
  const auto type = j.find("message_type");
  if (type == j.end() || !type->is_string()) {
    throw ApiError::bad_request("message_type must be \"new_request\" or \"cancel_request\"", "message_type");
  }
  if (*type == "cancel_request") {
    m.type = ClientMessage::Type::cancel_request;
    return m;
  }
  if (*type != "new_request") {
    throw ApiError::bad_request("unknown message_type " + type->dump() +
                                    " (expected \"new_request\" or \"cancel_request\")",
                                "message_type");
  }
  m.request = parse_writeup_fields(j, limits, partial);
  if (auto key = j.find("api_key"); key != j.end() && key->is_string()) m.api_key = key->get<std::string>();
  return m;
}

generate::SamplingParams to_sampling_params(const WriteupRequest& r, std::uint64_t seed) {
  generate::SamplingParams p;
  p.temperature = r.temperature;
  p.top_k = r.top_k;
  p.top_p = r.top_p > 0.0f ? r.top_p : 1.0f;  // the protocol's 0 means off
  p.max_tokens = r.length;
  p.seed = r.seed.value_or(seed);
  return p;
}

std::string clean_suggestion(std::string_view text) {
  const auto eot = text.find("<|endoftext|>");
  if (eot != std::string_view::npos) text = text.substr(0, eot);
  std::size_t b = 0, e = text.size();
  while (b < e && is_space(text[b])) ++b;
  while (e > b && is_space(text[e - 1])) --e;
  return std::string(text.substr(b, e - b));
}

int count_words(std::string_view text) {
  int words = 0;
  bool in_word = false;
  for (char c : text) {
    const bool space = is_space(c);
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

nlohmann::json make_frame(std::string_view type, const std::string& prompt,
                          const std::vector<std::string>& texts, const nlohmann::json& extras) {
  nlohmann::json m = nlohmann::json::object();
  m["message_type"] = type;
  m["prompt"] = prompt;
  for (std::size_t i = 0; i < texts.size(); ++i) m["text_" + std::to_string(i)] = texts[i];
  if (extras.is_object()) {
    for (const auto& [k, v] : extras.items()) m[k] = v;
  }
  return {{"message", m}};
}

nlohmann::json make_error_frame(const WriteupRequest& echo, const ApiError& error) {
  std::vector<std::string> texts(static_cast<std::size_t>(std::clamp(echo.batch_size, 1, 10)));
  texts[0] = std::string("Error: ") + error.what();
  return make_frame("error", echo.prompt, texts,
                    {{"error",
                      {{"code", error.code()},
                       {"message", error.what()},
                       {"field", error.param().empty() ? nlohmann::json(nullptr) : nlohmann::json(error.param())}}},
                     {"request_id", request_id_json(echo)}});
}

nlohmann::json make_oom_frame(const WriteupRequest& echo) {
  std::vector<std::string> texts(static_cast<std::size_t>(std::clamp(echo.batch_size, 1, 10)));
  texts[0] = "The server ran out of memory for this request. Please try again, or ask for fewer or shorter suggestions.";
  return make_frame("oom_response", echo.prompt, texts, {{"request_id", request_id_json(echo)}});
}

}  // namespace writeup::api

#include "writeup/api/openai_completions.hpp"

#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"

namespace writeup::api {

CompletionRequest parse_completion_request(const nlohmann::json& body, const CompletionLimits& limits) {
  Fields f(body);
  f.reject_unknown({"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stream",
                    "stop", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty",
                    "logprobs", "echo", "user"});
  CompletionRequest r;
  if (auto v = f.string("model")) r.model = *v;
  if (!f.has("prompt")) throw ApiError::bad_request("prompt is required", "prompt");
  const auto& prompt = body["prompt"];
  if (prompt.is_string()) {
    r.prompt = prompt.get<std::string>();
  } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) {
    r.prompt = prompt[0].get<std::string>();
  } else {
    throw ApiError::bad_request("prompt must be a string (or an array of one string)", "prompt");
  }
  if (r.prompt.empty()) throw ApiError::bad_request("prompt must not be empty", "prompt");
  if (auto v = f.integer("max_tokens", 1, limits.max_length)) r.max_tokens = static_cast<int>(*v);
  if (auto v = f.number("temperature", 0, 2)) r.temperature = static_cast<float>(*v);
  if (auto v = f.number("top_p", 0, 1)) r.top_p = static_cast<float>(*v);
  if (auto v = f.integer("top_k", 0, 50257)) r.top_k = static_cast<int>(*v);
  if (auto v = f.integer("n", 1, limits.max_batch_size)) r.n = static_cast<int>(*v);
  if (auto v = f.boolean("stream")) r.stream = *v;
  if (f.has("stop")) {
    const auto& stop = body["stop"];
    if (stop.is_string()) {
      r.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array() && stop.size() <= 4 &&
               std::all_of(stop.begin(), stop.end(), [](const auto& s) { return s.is_string(); })) {
      for (const auto& s : stop) r.stop.push_back(s.get<std::string>());
    } else {
      throw ApiError::bad_request("stop must be a string or an array of up to 4 strings", "stop");
    }
    for (const auto& s : r.stop) {
      if (s.empty()) throw ApiError::bad_request("stop strings must not be empty", "stop");
    }
  }
  r.seed = f.seed("seed");
  if (auto v = f.number("presence_penalty", -2, 2)) r.presence_penalty = static_cast<float>(*v);
  if (auto v = f.number("frequency_penalty", -2, 2)) r.frequency_penalty = static_cast<float>(*v);
  if (auto v = f.number("repetition_penalty", 0.01, 10)) r.repetition_penalty = static_cast<float>(*v);
  if (auto v = f.integer("logprobs", 0, 5); v && *v > 0) {
    throw ApiError(400, "unsupported_value", "logprobs is not supported by this server yet", "logprobs");
  }
  if (auto v = f.boolean("echo")) r.echo = *v;
  if (auto v = f.string("user")) r.user = *v;
  return r;
}

generate::SamplingParams to_sampling_params(const CompletionRequest& r, std::uint64_t seed) {
  generate::SamplingParams p;
  p.temperature = r.temperature;
  p.top_k = r.top_k;
  p.top_p = r.top_p;
  if (p.top_p <= 0.0f) {  // only the most likely token has mass "0"
    p.top_p = 1.0f;
    p.top_k = 1;
  }
  p.max_tokens = r.max_tokens;
  p.stop = r.stop;
  p.seed = r.seed.value_or(seed);
  p.presence_penalty = r.presence_penalty;
  p.frequency_penalty = r.frequency_penalty;
  p.repetition_penalty = r.repetition_penalty;
  return p;
}

nlohmann::json make_completion(const std::string& id, std::int64_t created, const std::string& model,
                               const CompletionRequest& request,
                               const std::vector<generate::GeneratedSequence>& results,
                               int prompt_tokens) {
  nlohmann::json choices = nlohmann::json::array();
  int completion_tokens = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    completion_tokens += static_cast<int>(results[i].tokens.size());
    choices.push_back({{"text", (request.echo ? request.prompt : "") + results[i].text},
                       {"index", i},
                       {"logprobs", nullptr},
                       {"finish_reason", results[i].finish_reason}});
  }
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", choices},
          {"usage",
           {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}}}};
}

nlohmann::json make_completion_chunk(const std::string& id, std::int64_t created, const std::string& model,
                                     int index, const std::string& text,
                                     const std::optional<std::string>& finish_reason) {
  return {{"id", id},
          {"object", "text_completion"},
          {"created", created},
          {"model", model},
          {"choices",
           {{{"text", text},
             {"index", index},
             {"logprobs", nullptr},
             {"finish_reason", finish_reason ? nlohmann::json(*finish_reason) : nlohmann::json(nullptr)}}}}};
}

}  // namespace writeup::api

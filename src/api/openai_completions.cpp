#include "writeup/api/openai_completions.hpp"

#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace writeup::api {

namespace {

// A list of token ids (each 0 .. 2^31-1; the vocabulary is checked by prepare_all).
bool token_list(const nlohmann::json& v, std::vector<int>& out) {
  if (!v.is_array() || v.empty()) return false;
  for (const auto& t : v) {
    if (!t.is_number_integer()) return false;
    const auto id = t.get<std::int64_t>();
    if (id < 0 || id > 0x7FFFFFFF) return false;
    out.push_back(static_cast<int>(id));
  }
  return true;
}

void parse_prompt(const nlohmann::json& prompt, CompletionRequest& r) {
  const auto bad = [] {
    return ApiError::bad_request(
        "prompt must be a string, an array of strings, an array of token ids or an array of token-id arrays "
        "(non-empty, at most " + std::to_string(kMaxPrompts) + " prompts)",
        "prompt");
  };
  if (prompt.is_string()) {
    r.prompt = prompt.get<std::string>();
    if (r.prompt.empty()) throw ApiError::bad_request("prompt must not be empty", "prompt");
    return;
  }
  if (!prompt.is_array() || prompt.empty()) throw bad();
  if (prompt[0].is_number()) {  // one prompt of token ids
    CompletionPrompt p;
    p.is_tokens = true;
    if (!token_list(prompt, p.tokens)) throw bad();
    r.prompts.push_back(std::move(p));
    return;
  }
  if (static_cast<int>(prompt.size()) > kMaxPrompts) {
    throw ApiError::bad_request("prompt: at most " + std::to_string(kMaxPrompts) + " prompts per request",
                                "prompt");
  }
  for (const auto& item : prompt) {
    CompletionPrompt p;
    if (item.is_string()) {
      p.text = item.get<std::string>();
      if (p.text.empty()) throw ApiError::bad_request("prompt must not be empty", "prompt");
    } else if (item.is_array()) {
      p.is_tokens = true;
      if (!token_list(item, p.tokens)) throw bad();
    } else {
      throw bad();
    }
    r.prompts.push_back(std::move(p));
  }
  if (r.prompts.size() == 1 && !r.prompts[0].is_tokens) {  // ["text"]: the one-string form
    r.prompt = std::move(r.prompts[0].text);
    r.prompts.clear();
  }
}

void parse_logit_bias(const nlohmann::json& bias, CompletionRequest& r) {
  if (!bias.is_object()) {
    throw ApiError::bad_request("logit_bias must be an object of token ids to numbers from -100 to 100", "logit_bias");
  }
  for (const auto& [key, value] : bias.items()) {
    const bool digits = !key.empty() && key.size() <= 9 &&
                        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits) throw ApiError::bad_request("logit_bias: '" + key + "' is not a token id", "logit_bias");
    if (!value.is_number() || value.get<double>() < -100 || value.get<double>() > 100) {
      throw ApiError::bad_request("logit_bias: the bias of token " + key + " must be a number from -100 to 100",
                                  "logit_bias");
    }
    r.logit_bias.emplace_back(std::stoi(key), static_cast<float>(value.get<double>()));
  }
  std::sort(r.logit_bias.begin(), r.logit_bias.end());
  for (std::size_t i = 1; i < r.logit_bias.size(); ++i) {
    if (r.logit_bias[i].first == r.logit_bias[i - 1].first) {  // "7" and "07"
      throw ApiError::bad_request("logit_bias: token " + std::to_string(r.logit_bias[i].first) + " is given twice",
                                  "logit_bias");
    }
  }
}

}  // namespace

std::vector<CompletionPrompt> prompt_list(const CompletionRequest& r) {
  if (!r.prompts.empty()) return r.prompts;
  return {CompletionPrompt{r.prompt, {}, false}};
}

CompletionRequest parse_completion_request(const nlohmann::json& body, const CompletionLimits& limits) {
  Fields f(body);
  f.reject_unknown({"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stream",
                    "stop", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty",
                    "logprobs", "echo", "user", "suffix", "best_of", "logit_bias", "stream_options"});
  CompletionRequest r;
  if (auto v = f.string("model")) r.model = *v;
  if (!f.has("prompt")) throw ApiError::bad_request("prompt is required", "prompt");
  parse_prompt(body["prompt"], r);
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
  if (auto v = f.integer("logprobs", 0, 5)) r.logprobs = static_cast<int>(*v);
  if (auto v = f.boolean("echo")) r.echo = *v;
  if (auto v = f.string("user")) r.user = *v;
  // suffix: GPT-2 only continues text; it cannot insert before a suffix.
  if (auto v = f.string("suffix"); v && !v->empty()) {
    throw ApiError(400, "unsupported_value", "suffix is not supported: GPT-2 cannot insert text before a suffix",
                   "suffix");
  }
  if (auto v = f.integer("best_of", 1, limits.max_batch_size)) {
    r.best_of = static_cast<int>(*v);
    if (r.best_of < r.n) {
      throw ApiError::bad_request("best_of (" + std::to_string(r.best_of) + ") must be at least n (" +
                                      std::to_string(r.n) + ")",
                                  "best_of");
    }
    if (r.stream && r.best_of > r.n) {
      throw ApiError::bad_request("best_of greater than n cannot be streamed", "best_of");
    }
  }
  if (f.has("logit_bias")) parse_logit_bias(body["logit_bias"], r);
  if (f.has("stream_options")) {
    const auto& o = body["stream_options"];
    if (!r.stream) throw ApiError::bad_request("stream_options is only allowed when stream is true", "stream_options");
    if (!o.is_object()) throw ApiError::bad_request("stream_options must be an object", "stream_options");
    for (const auto& [k, v] : o.items()) {
      if (k != "include_usage") throw ApiError::bad_request("stream_options: unknown field '" + k + "'", "stream_options");
      if (v.is_null()) continue;
      if (!v.is_boolean()) throw ApiError::bad_request("stream_options.include_usage must be a boolean", "stream_options");
      r.include_usage = v.get<bool>();
    }
  }
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
  p.logit_bias = r.logit_bias;
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

std::vector<int> best_of_order(const std::vector<generate::GeneratedSequence>& candidates, int n) {
  std::vector<std::pair<double, int>> ranked;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const auto& lps = candidates[i].logprobs;
    double mean = -std::numeric_limits<double>::infinity();
    if (!lps.empty()) {
      double sum = 0;
      for (const auto& lp : lps) sum += lp.logprob;
      mean = sum / static_cast<double>(lps.size());
    }
    ranked.emplace_back(mean, static_cast<int>(i));
  }
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<int> out;
  for (std::size_t i = 0; i < ranked.size() && static_cast<int>(out.size()) < n; ++i) out.push_back(ranked[i].second);
  return out;
}

nlohmann::json make_choice(const std::string& text, int index, nlohmann::json logprobs,
                           const std::optional<std::string>& finish_reason) {
  return {{"text", text},
          {"index", index},
          {"logprobs", std::move(logprobs)},
          {"finish_reason", finish_reason ? nlohmann::json(*finish_reason) : nlohmann::json(nullptr)}};
}

nlohmann::json make_usage(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

nlohmann::json make_completion_object(const std::string& id, std::int64_t created, const std::string& model,
                                      nlohmann::json choices, nlohmann::json usage) {
  nlohmann::json out = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model},
                        {"choices", std::move(choices)}};
  if (!usage.is_discarded()) out["usage"] = std::move(usage);
  return out;
}

}  // namespace writeup::api

#include "writeup/api/openai_chat.hpp"

#include <stdexcept>

#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"

namespace writeup::api {
namespace {

std::string rtrim_spaces(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return s;
}

std::size_t count_of(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = s.find(what); pos != std::string::npos; pos = s.find(what, pos + what.size())) ++n;
  return n;
}

std::string message_param(std::size_t i, const std::string& field) {
  return "messages[" + std::to_string(i) + "]" + (field.empty() ? "" : "." + field);
}

// A message's content: a string, or an array of text parts joined.
std::string message_content(const nlohmann::json& m, std::size_t i, const std::string& role) {
  const auto it = m.find("content");
  if (it == m.end() || it->is_null()) {
    if (role == "assistant") return {};
    throw ApiError::bad_request(message_param(i, "content") + " is required", message_param(i, "content"));
  }
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) {
    throw ApiError::bad_request(message_param(i, "content") + " must be a string or an array of text parts",
                                message_param(i, "content"));
  }
  std::string out;
  for (std::size_t j = 0; j < it->size(); ++j) {
    const auto& part = (*it)[j];
    const auto param = message_param(i, "content[" + std::to_string(j) + "]");
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      throw ApiError::bad_request(param + " must be an object {\"type\": \"text\", \"text\": ...}", param);
    }
    const auto type = part["type"].get<std::string>();
    if (type != "text") {
      throw ApiError(400, "unsupported_value", param + ".type '" + type + "' is not supported: these models read text only",
                     param + ".type");
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      throw ApiError::bad_request(param + ".text must be a string", param + ".text");
    }
    out += part["text"].get<std::string>();
  }
  return out;
}

// Legacy completions logprobs {tokens, token_logprobs, top_logprobs, text_offset} -> chat's
// {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.
nlohmann::json chat_logprobs(const nlohmann::json& legacy) {
  if (!legacy.is_object() || !legacy.contains("tokens") || !legacy["tokens"].is_array()) return nullptr;
  const auto bytes_of = [](const std::string& s) {
    nlohmann::json b = nlohmann::json::array();
    for (unsigned char c : s) b.push_back(static_cast<int>(c));
    return b;
  };
  nlohmann::json content = nlohmann::json::array();
  const auto& tokens = legacy["tokens"];
  const auto lp = legacy.value("token_logprobs", nlohmann::json::array());
  const auto top = legacy.value("top_logprobs", nlohmann::json::array());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const auto token = tokens[i].is_string() ? tokens[i].get<std::string>() : std::string();
    nlohmann::json alternatives = nlohmann::json::array();
    if (i < top.size() && top[i].is_object()) {
      for (const auto& [t, v] : top[i].items()) alternatives.push_back({{"token", t}, {"logprob", v}, {"bytes", bytes_of(t)}});
    }
    content.push_back({{"token", token},
                       {"logprob", i < lp.size() ? lp[i] : nlohmann::json(nullptr)},
                       {"bytes", bytes_of(token)},
                       {"top_logprobs", alternatives}});
  }
  return {{"content", content}};
}

std::string chat_id(const nlohmann::json& completion) {
  auto id = completion.value("id", std::string());
  if (id.rfind("cmpl-", 0) == 0) id = "chatcmpl-" + id.substr(5);
  return id;
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& text) {
  const std::string t = text.empty() ? kDefaultChatTemplate : text;
  if (count_of(t, "{role}") != 1 || count_of(t, "{content}") != 1) {
    throw std::invalid_argument("chat_template must hold {role} and {content} exactly once each");
  }
  const auto role = t.find("{role}"), content = t.find("{content}");
  if (content < role) throw std::invalid_argument("chat_template must have {role} before {content}");
  before_role_ = t.substr(0, role);
  between_ = t.substr(role + 6, content - role - 6);
  after_content_ = t.substr(content + 9);
}

std::string ChatTemplate::render(const std::string& role, const std::string& content) const {
  return before_role_ + role + between_ + content + after_content_;
}

std::string ChatTemplate::assistant_prefix() const { return rtrim_spaces(before_role_ + "assistant" + between_); }

std::string ChatTemplate::default_stop() const {
  auto stop = rtrim_spaces(after_content_ + before_role_ + "user" + between_);
  if (stop.find_first_not_of(" \t\r\n") == std::string::npos) return {};
  return stop;
}

std::string chat_prompt(const nlohmann::json& messages, const ChatTemplate& tmpl) {
  if (!messages.is_array() || messages.empty()) {
    throw ApiError::bad_request("messages must be a non-empty array of {role, content}", "messages");
  }
  std::string prompt;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object()) throw ApiError::bad_request(message_param(i, "") + " must be an object {role, content}", message_param(i, ""));
    if (!m.contains("role") || !m["role"].is_string()) {
      throw ApiError::bad_request(message_param(i, "role") + " must be a string", message_param(i, "role"));
    }
    const auto role = m["role"].get<std::string>();
    if (role != "system" && role != "developer" && role != "user" && role != "assistant") {
      throw ApiError(400, "unsupported_value",
                     message_param(i, "role") + " '" + role + "' is not supported (system, developer, user or assistant)",
                     message_param(i, "role"));
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      throw ApiError(400, "unsupported_value", "tool calls are not supported by these models", message_param(i, "tool_calls"));
    }
    prompt += tmpl.render(role, message_content(m, i, role));
  }
  return prompt + tmpl.assistant_prefix();
}

nlohmann::json chat_to_completion_body(const nlohmann::json& chat, const ChatTemplate& tmpl) {
  Fields f(chat);
  f.reject_unknown({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n",
                    "stream", "stream_options", "stop", "seed", "presence_penalty", "frequency_penalty",
                    "repetition_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "tools", "tool_choice",
                    "functions", "function_call", "parallel_tool_calls", "response_format", "store", "metadata"});
  for (const char* name : {"tools", "functions"}) {
    if (f.has(name) && !(chat[name].is_array() && chat[name].empty())) {
      throw ApiError(400, "unsupported_value", std::string(name) + " are not supported: these are base models, not chat models", name);
    }
  }
  for (const char* name : {"tool_choice", "function_call"}) {
    if (f.has(name) && chat[name] != "none") {
      throw ApiError(400, "unsupported_value", std::string(name) + " is not supported: these are base models, not chat models", name);
    }
  }
  if (f.has("response_format")) {
    const auto& rf = chat["response_format"];
    if (!rf.is_object() || rf.value("type", nlohmann::json()) != "text") {
      throw ApiError(400, "unsupported_value", "response_format must be {\"type\": \"text\"}: these models cannot follow a schema",
                     "response_format");
    }
  }
  if (!f.has("messages")) throw ApiError::bad_request("messages is required", "messages");
  nlohmann::json body = nlohmann::json::object();
  body["prompt"] = chat_prompt(chat["messages"], tmpl);
  for (const char* name : {"model", "temperature", "top_p", "top_k", "n", "stream", "stream_options", "stop", "seed",
                           "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "user"}) {
    if (f.has(name)) body[name] = chat[name];
  }
  if (f.has("max_completion_tokens")) {
    body["max_tokens"] = chat["max_completion_tokens"];
  } else if (f.has("max_tokens")) {
    body["max_tokens"] = chat["max_tokens"];
  }
  if (!f.has("stop")) {
    if (const auto stop = tmpl.default_stop(); !stop.empty()) body["stop"] = stop;
  }
  if (f.boolean("logprobs").value_or(false)) {
    body["logprobs"] = f.integer("top_logprobs", 0, 5).value_or(0);
  } else if (f.has("top_logprobs")) {
    throw ApiError::bad_request("top_logprobs needs logprobs: true", "top_logprobs");
  }
  return body;
}

nlohmann::json chat_completion_from(const nlohmann::json& completion) {
  nlohmann::json choices = nlohmann::json::array();
  for (const auto& c : completion.value("choices", nlohmann::json::array())) {
    choices.push_back({{"index", c.value("index", 0)},
                       {"message", {{"role", "assistant"}, {"content", c.value("text", std::string())}}},
                       {"logprobs", chat_logprobs(c.value("logprobs", nlohmann::json()))},
                       {"finish_reason", c.value("finish_reason", nlohmann::json())}});
  }
  nlohmann::json out = {{"id", chat_id(completion)},
                        {"object", "chat.completion"},
                        {"created", completion.value("created", std::int64_t{0})},
                        {"model", completion.value("model", std::string())},
                        {"choices", choices}};
  if (completion.contains("usage")) out["usage"] = completion["usage"];
  return out;
}

nlohmann::json chat_chunk_from(const nlohmann::json& chunk, std::vector<bool>& role_sent) {
  if (chunk.contains("error")) return chunk;
  nlohmann::json choices = nlohmann::json::array();
  for (const auto& c : chunk.value("choices", nlohmann::json::array())) {
    const int index = c.value("index", 0);
    const auto text = c.value("text", std::string());
    const auto finish = c.value("finish_reason", nlohmann::json());
    nlohmann::json delta = nlohmann::json::object();
    const auto i = static_cast<std::size_t>(index < 0 ? 0 : index);
    if (i >= role_sent.size()) role_sent.resize(i + 1, false);
    if (!role_sent[i]) {
      delta["role"] = "assistant";
      delta["content"] = text;
      role_sent[i] = true;
    } else if (!text.empty() || finish.is_null()) {
      delta["content"] = text;
    }
    choices.push_back({{"index", index},
                       {"delta", delta},
                       {"logprobs", chat_logprobs(c.value("logprobs", nlohmann::json()))},
                       {"finish_reason", finish}});
  }
  nlohmann::json out = {{"id", chat_id(chunk)},
                        {"object", "chat.completion.chunk"},
                        {"created", chunk.value("created", std::int64_t{0})},
                        {"model", chunk.value("model", std::string())},
                        {"choices", choices}};
  if (chunk.contains("usage")) out["usage"] = chunk["usage"];
  return out;
}

}  // namespace writeup::api

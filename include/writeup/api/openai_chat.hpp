#pragma once
// POST /v1/chat/completions for base (non-chat) models: the messages become one prompt through
// the model's chat template, and the request becomes a /v1/completions request (so everything
// /v1/completions does applies); the answers are turned into the chat shapes by
// server/chat_reply.
//
// A chat template (ModelConfig::chat_template) is the text of one message with the
// placeholders {role} and {content}, each exactly once, {role} first; "" means the default
// "{role}: {content}\n". The prompt is every message through the template, then the
// assistant's turn: the template up to {content} with role "assistant", trailing spaces
// removed. With the default: "system: Be brief.\nuser: Hi\nassistant:". When the client gives
// no stop, the next user turn stops the answer: the template after {content}, then the
// template up to {content} with role "user", trailing spaces removed ("\nuser:").
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace writeup::api {

inline constexpr const char* kDefaultChatTemplate = "{role}: {content}\n";

class ChatTemplate {
 public:
  // Throws std::invalid_argument naming what is wrong ("" = the default).
  explicit ChatTemplate(const std::string& text);

  std::string render(const std::string& role, const std::string& content) const;
  std::string assistant_prefix() const;  // the prompt's end
  std::string default_stop() const;      // "" when the template gives none

 private:
  std::string before_role_, between_, after_content_;
};

// The messages (`[{role, content}]`, content a string or an array of {type:"text", text} parts)
// as one prompt. Throws ApiError 400 naming the message and field.
std::string chat_prompt(const nlohmann::json& messages, const ChatTemplate& tmpl);

// The /v1/completions body for a chat request: prompt from the messages, max_completion_tokens
// or max_tokens as max_tokens, the default stop when none is given, and every other supported
// field as is. Tools, functions and a response_format other than text are a 400; so are
// unknown fields.
nlohmann::json chat_to_completion_body(const nlohmann::json& chat, const ChatTemplate& tmpl);

// The chat shapes of /v1/completions answers. `completion`: a whole text_completion answer ->
// chat.completion. `chunk`: one text_completion SSE chunk -> chat.completion.chunk; `role_sent`
// holds, per choice index, whether its first delta (which carries the role) went out.
nlohmann::json chat_completion_from(const nlohmann::json& completion);
nlohmann::json chat_chunk_from(const nlohmann::json& chunk, std::vector<bool>& role_sent);

}  // namespace writeup::api

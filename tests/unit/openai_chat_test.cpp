#include "writeup/api/openai_chat.hpp"

#include <gtest/gtest.h>

#include "writeup/api/api_error.hpp"
#include "writeup/api/openai_completions.hpp"
#include "writeup/server/config.hpp"

using namespace writeup::api;

namespace {

nlohmann::json messages() {
  return nlohmann::json::array({{{"role", "system"}, {"content", "Be brief."}},
                                {{"role", "user"}, {"content", nlohmann::json::array({{{"type", "text"}, {"text", "Hi"}},
                                                                                      {{"type", "text"}, {"text", " there"}}})}}});
}

std::string param_of(const nlohmann::json& chat) {
  try {
    chat_to_completion_body(chat, ChatTemplate(""));
    return "<ok>";
  } catch (const ApiError& e) {
    return e.param();
  }
}

}  // namespace

TEST(OpenAIChat, DefaultTemplateIsRoleColonContentLinesEndingWithTheAssistant) {
  const ChatTemplate t("");
  EXPECT_EQ(chat_prompt(messages(), t), "system: Be brief.\nuser: Hi there\nassistant:");
  EXPECT_EQ(t.default_stop(), "\nuser:");
}

TEST(OpenAIChat, CustomTemplate) {
  const ChatTemplate t("<|{role}|>\n{content}\n\n");
  EXPECT_EQ(chat_prompt(nlohmann::json::array({{{"role", "user"}, {"content", "Q"}}}), t), "<|user|>\nQ\n\n<|assistant|>\n");
  EXPECT_EQ(t.default_stop(), "\n\n<|user|>\n");
  EXPECT_THROW(ChatTemplate("{content} only"), std::invalid_argument);
  EXPECT_THROW(ChatTemplate("{content} {role}"), std::invalid_argument);
  EXPECT_THROW(ChatTemplate("{role} {role} {content}"), std::invalid_argument);
}

TEST(OpenAIChat, BecomesACompletionsRequest) {
  const nlohmann::json chat = {{"model", "m"},         {"messages", messages()}, {"max_completion_tokens", 7},
                               {"temperature", 0},     {"n", 2},                 {"seed", 5},
                               {"user", "u"},          {"stream", true},         {"response_format", {{"type", "text"}}},
                               {"tools", nlohmann::json::array()}};
  const auto body = chat_to_completion_body(chat, ChatTemplate(""));
  EXPECT_EQ(body["prompt"], "system: Be brief.\nuser: Hi there\nassistant:");
  EXPECT_EQ(body["max_tokens"], 7);
  EXPECT_EQ(body["stop"], "\nuser:");
  EXPECT_EQ(body["n"], 2);
  const auto r = parse_completion_request(body, {});
  EXPECT_EQ(r.max_tokens, 7);
  EXPECT_EQ(r.stop, std::vector<std::string>{"\nuser:"});
  EXPECT_TRUE(r.stream);
  // The client's stop wins over the default.
  auto with_stop = chat;
  with_stop["stop"] = nlohmann::json::array({"END"});
  EXPECT_EQ(chat_to_completion_body(with_stop, ChatTemplate(""))["stop"], nlohmann::json::array({"END"}));
}

TEST(OpenAIChat, RefusesWhatABaseModelCannotDo) {
  const auto with = [](const char* key, nlohmann::json value) {
    nlohmann::json chat = {{"messages", messages()}};
    chat[key] = std::move(value);
    return chat;
  };
  EXPECT_EQ(param_of(with("tools", nlohmann::json::array({{{"type", "function"}}}))), "tools");
  EXPECT_EQ(param_of(with("functions", nlohmann::json::array({{{"name", "f"}}}))), "functions");
  EXPECT_EQ(param_of(with("tool_choice", "auto")), "tool_choice");
  EXPECT_EQ(param_of(with("response_format", {{"type", "json_object"}})), "response_format");
  EXPECT_EQ(param_of(with("bogus", 1)), "bogus");
  EXPECT_EQ(param_of({{"model", "m"}}), "messages");
  EXPECT_EQ(param_of({{"messages", nlohmann::json::array()}}), "messages");
  EXPECT_EQ(param_of({{"messages", nlohmann::json::array({{{"role", "tool"}, {"content", "x"}}})}}), "messages[0].role");
  EXPECT_EQ(param_of({{"messages", nlohmann::json::array({{{"role", "user"}}})}}), "messages[0].content");
  EXPECT_EQ(param_of({{"messages", nlohmann::json::array({{{"role", "user"},
                                                           {"content", nlohmann::json::array({{{"type", "image_url"}}})}}})}}),
            "messages[0].content[0].type");
}

TEST(OpenAIChat, AnswersTakeTheChatShape) {
  const nlohmann::json completion = {
      {"id", "cmpl-abc"}, {"object", "text_completion"}, {"created", 5}, {"model", "m"},
      {"choices", {{{"text", " Hello"}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", "stop"}}}},
      {"usage", {{"prompt_tokens", 3}, {"completion_tokens", 1}, {"total_tokens", 4}}}};
  const auto chat = chat_completion_from(completion);
  EXPECT_EQ(chat["id"], "chatcmpl-abc");
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"], (nlohmann::json{{"role", "assistant"}, {"content", " Hello"}}));
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chat["usage"]["total_tokens"], 4);

  std::vector<bool> role_sent;
  const auto chunk = [](const std::string& text, nlohmann::json finish) {
    return nlohmann::json{{"id", "cmpl-abc"}, {"object", "text_completion"}, {"created", 5}, {"model", "m"},
                          {"choices", {{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}}}}};
  };
  const auto first = chat_chunk_from(chunk(" Hel", nullptr), role_sent);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (nlohmann::json{{"role", "assistant"}, {"content", " Hel"}}));
  EXPECT_EQ(chat_chunk_from(chunk("lo", nullptr), role_sent)["choices"][0]["delta"], (nlohmann::json{{"content", "lo"}}));
  const auto last = chat_chunk_from(chunk("", "length"), role_sent);
  EXPECT_EQ(last["choices"][0]["delta"], nlohmann::json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  const nlohmann::json error = {{"error", {{"code", "x"}}}};
  EXPECT_EQ(chat_chunk_from(error, role_sent), error);
}

TEST(OpenAIChat, LegacyLogprobsBecomeChatLogprobs) {
  const nlohmann::json completion = {
      {"id", "cmpl-x"},
      {"choices",
       {{{"text", "ab"},
         {"index", 0},
         {"finish_reason", "length"},
         {"logprobs",
          {{"tokens", {"a", "b"}}, {"token_logprobs", {-0.5, -1.0}}, {"top_logprobs", {{{"a", -0.5}}, {{"b", -1.0}}}}, {"text_offset", {0, 1}}}}}}}};
  const auto lp = chat_completion_from(completion)["choices"][0]["logprobs"];
  ASSERT_EQ(lp["content"].size(), 2u);
  EXPECT_EQ(lp["content"][0]["token"], "a");
  EXPECT_EQ(lp["content"][0]["logprob"], -0.5);
  EXPECT_EQ(lp["content"][0]["bytes"], nlohmann::json::array({97}));
  EXPECT_EQ(lp["content"][1]["top_logprobs"][0]["token"], "b");
}

TEST(OpenAIChat, ABadTemplateStopsTheServerAtStartNamingTheKey) {
  nlohmann::json cfg = {{"models", {{{"name", "m"}, {"path", "/x"}, {"chat_template", "{content} without a role"}}}}};
  try {
    writeup::server::ServerConfig::from_json(cfg);
    FAIL() << "accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("models[0].chat_template"), std::string::npos) << e.what();
  }
  cfg["models"][0]["chat_template"] = "[{role}] {content}\n";
  EXPECT_NO_THROW(writeup::server::ServerConfig::from_json(cfg));
}

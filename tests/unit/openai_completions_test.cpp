#include "writeup/api/openai_completions.hpp"

#include <gtest/gtest.h>

#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"

using namespace writeup::api;

namespace {
std::string param_of(const nlohmann::json& body) {
  try {
    parse_completion_request(body, {});
    return "<ok>";
  } catch (const ApiError& e) {
    return e.param();
  }
}
}  // namespace

TEST(OpenAICompletions, DefaultsFollowTheOpenAIApi) {
  const auto r = parse_completion_request({{"prompt", "hi"}}, {});
  EXPECT_EQ(r.max_tokens, 16);
  EXPECT_FLOAT_EQ(r.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.top_p, 1.0f);
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_TRUE(r.stop.empty());
}

TEST(OpenAICompletions, ParsesEveryField) {
  const auto r = parse_completion_request(
      {{"model", "m"}, {"prompt", {"one"}}, {"max_tokens", 5}, {"temperature", 0}, {"top_p", 0.5}, {"top_k", 3},
       {"n", 2}, {"stream", true}, {"stop", "\n"}, {"seed", 11}, {"presence_penalty", 0.5},
       {"frequency_penalty", -0.5}, {"repetition_penalty", 1.2}, {"echo", true}, {"user", "u"}, {"logprobs", 0}},
      {});
  EXPECT_EQ(r.model, "m");
  EXPECT_EQ(r.prompt, "one");
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(r.seed, 11u);
  EXPECT_TRUE(r.echo);
  const auto p = to_sampling_params(r, 42);
  EXPECT_TRUE(p.greedy());
  EXPECT_EQ(p.top_k, 3);
  EXPECT_FLOAT_EQ(p.repetition_penalty, 1.2f);
  EXPECT_EQ(p.seed, 11u);
}

TEST(OpenAICompletions, RejectsBadFieldsByName) {
  EXPECT_EQ(param_of({{"max_tokens", 3}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", ""}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", {"a", "b"}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"temperature", 2.5}}), "temperature");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"n", 0}}), "n");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"max_tokens", 1000}}), "max_tokens");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stop", {1}}}), "stop");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stop", ""}}), "stop");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream", "maybe"}}), "stream");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logprobs", 9}}), "logprobs");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"best_of", 2}}), "best_of");
}

TEST(OpenAICompletions, ResponseShape) {
  CompletionRequest r;
  r.prompt = "P";
  r.echo = true;
  std::vector<writeup::generate::GeneratedSequence> results(2);
  results[0].tokens = {1, 2};
  results[0].text = " a";
  results[0].finish_reason = "length";
  results[1].tokens = {3};
  results[1].text = " b";
  results[1].finish_reason = "stop";
  const auto j = make_completion("cmpl-1", 100, "m", r, results, 4);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], "P a");
  EXPECT_EQ(j["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
  const auto c = make_completion_chunk("cmpl-1", 100, "m", 1, "x", std::nullopt);
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(c["choices"][0]["index"], 1);
}

TEST(Fields, FormBodiesDecode) {
  const auto j = parse_form_urlencoded("prompt=Hello+w%C3%B6rld&length=10&empty=&flag");
  EXPECT_EQ(j["prompt"], "Hello wörld");
  EXPECT_EQ(j["length"], "10");
  EXPECT_EQ(j["empty"], "");
  EXPECT_EQ(j["flag"], "");
  EXPECT_THROW(parse_form_urlencoded("a=%zz"), ApiError);
  EXPECT_THROW(parse_form_urlencoded("a=%ff"), ApiError);  // not UTF-8
  EXPECT_THROW(parse_json_object("{\"a\":\"\xff\"}"), ApiError);
}

TEST(ApiErrors, RenderAsOpenAIErrors) {
  const auto j = ApiError(429, "queue_full", "busy").to_json();
  EXPECT_EQ(j["error"]["type"], "rate_limit_error");
  EXPECT_EQ(j["error"]["code"], "queue_full");
  EXPECT_TRUE(j["error"]["param"].is_null());
}

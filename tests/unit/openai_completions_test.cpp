#include "writeup/api/openai_completions.hpp"

#include <gtest/gtest.h>

#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"
#include "writeup/api/openai_completions_logprobs.hpp"

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
  EXPECT_EQ(param_of({{"prompt", {"a", ""}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", nlohmann::json::array()}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"temperature", 2.5}}), "temperature");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"n", 0}}), "n");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"max_tokens", 1000}}), "max_tokens");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stop", {1}}}), "stop");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stop", ""}}), "stop");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream", "maybe"}}), "stream");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logprobs", 9}}), "logprobs");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"best_of", 0}}), "best_of");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"n", 3}, {"best_of", 2}}), "best_of");  // below n
}

// Issue 13: the standard fields at their defaults are accepted, the rest implemented.
TEST(OpenAICompletions, StandardFieldsAtTheirDefaultsAreAccepted) {
  const auto r = parse_completion_request({{"prompt", "x"}, {"suffix", nullptr}, {"best_of", 1}, {"logit_bias", nullptr},
                                           {"stream_options", nullptr}, {"logprobs", nullptr}},
                                          {});
  EXPECT_EQ(r.candidates(), 1);
  EXPECT_FALSE(r.logprobs.has_value());
  EXPECT_EQ(param_of({{"prompt", "x"}, {"suffix", ""}}), "<ok>");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logit_bias", nlohmann::json::object()}}), "<ok>");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"n", 2}, {"best_of", 2}, {"stream", true}}), "<ok>");
}

TEST(OpenAICompletions, SuffixOtherThanEmptyIsRefused) {
  EXPECT_EQ(param_of({{"prompt", "x"}, {"suffix", "end"}}), "suffix");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"suffix", 3}}), "suffix");
}

TEST(OpenAICompletions, BestOfRunsMoreCandidatesButNotWhenStreaming) {
  const auto r = parse_completion_request({{"prompt", "x"}, {"n", 2}, {"best_of", 4}}, {});
  EXPECT_EQ(r.candidates(), 4);
  EXPECT_TRUE(r.ranks_best_of());
  EXPECT_EQ(param_of({{"prompt", "x"}, {"best_of", 3}, {"stream", true}}), "best_of");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"best_of", 11}}), "best_of");  // above max_batch_size
}

TEST(OpenAICompletions, BestOfOrdersByMeanTokenLogprob) {
  std::vector<writeup::generate::GeneratedSequence> c(4);
  c[0].logprobs = {{1, -2.0f, {}}, {2, -2.0f, {}}};  // mean -2
  c[1].logprobs = {{1, -0.5f, {}}, {2, -1.5f, {}}};  // mean -1
  c[2].logprobs = {};                                // none: last
  c[3].logprobs = {{1, -0.1f, {}}};                  // mean -0.1
  EXPECT_EQ(best_of_order(c, 2), (std::vector<int>{3, 1}));
  EXPECT_EQ(best_of_order(c, 4), (std::vector<int>{3, 1, 0, 2}));
}

TEST(OpenAICompletions, LogitBiasIsSortedAndChecked) {
  const auto r = parse_completion_request({{"prompt", "x"}, {"logit_bias", {{"50256", -100}, {"13", 5.5}}}}, {});
  ASSERT_EQ(r.logit_bias.size(), 2u);
  EXPECT_EQ(r.logit_bias[0].first, 13);
  EXPECT_FLOAT_EQ(r.logit_bias[0].second, 5.5f);
  EXPECT_EQ(r.logit_bias[1].first, 50256);
  EXPECT_EQ(to_sampling_params(r, 1).logit_bias, r.logit_bias);
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logit_bias", {{"abc", 1}}}}), "logit_bias");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logit_bias", {{"-1", 1}}}}), "logit_bias");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logit_bias", {{"5", 101}}}}), "logit_bias");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logit_bias", {{"5", "1"}}}}), "logit_bias");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logit_bias", {{"7", 1}, {"07", 2}}}}), "logit_bias");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logit_bias", {1, 2}}}), "logit_bias");
}

TEST(OpenAICompletions, StreamOptionsOnlyWithStream) {
  const auto r = parse_completion_request(
      {{"prompt", "x"}, {"stream", true}, {"stream_options", {{"include_usage", true}}}}, {});
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream_options", {{"include_usage", true}}}}), "stream_options");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream", true}, {"stream_options", {{"include_usage", 1}}}}),
            "stream_options");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream", true}, {"stream_options", {{"other", true}}}}), "stream_options");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"stream", true}, {"stream_options", "yes"}}), "stream_options");
}

TEST(OpenAICompletions, LogprobsFromZeroToFive) {
  EXPECT_EQ(parse_completion_request({{"prompt", "x"}, {"logprobs", 0}}, {}).logprobs, 0);
  EXPECT_EQ(parse_completion_request({{"prompt", "x"}, {"logprobs", 5}}, {}).logprobs, 5);
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logprobs", 6}}), "logprobs");
  EXPECT_EQ(param_of({{"prompt", "x"}, {"logprobs", -1}}), "logprobs");
}

TEST(OpenAICompletions, AllFourPromptForms) {
  auto r = parse_completion_request({{"prompt", "one"}}, {});
  EXPECT_EQ(r.prompt, "one");
  EXPECT_EQ(prompt_list(r).size(), 1u);

  r = parse_completion_request({{"prompt", {"a", "b", "c"}}}, {});
  ASSERT_EQ(prompt_list(r).size(), 3u);
  EXPECT_EQ(prompt_list(r)[2].text, "c");
  EXPECT_FALSE(prompt_list(r)[2].is_tokens);

  r = parse_completion_request({{"prompt", {464, 3290}}}, {});
  ASSERT_EQ(prompt_list(r).size(), 1u);
  EXPECT_TRUE(prompt_list(r)[0].is_tokens);
  EXPECT_EQ(prompt_list(r)[0].tokens, (std::vector<int>{464, 3290}));

  r = parse_completion_request({{"prompt", {{464}, {3290, 11}}}}, {});
  ASSERT_EQ(prompt_list(r).size(), 2u);
  EXPECT_EQ(prompt_list(r)[1].tokens, (std::vector<int>{3290, 11}));

  EXPECT_EQ(param_of({{"prompt", {1, "a"}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", {1, -2}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", {1.5}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", {{1}, nlohmann::json::array()}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", {"a", 1}}}), "prompt");
  EXPECT_EQ(param_of({{"prompt", {{{1}}}}}), "prompt");
}

TEST(OpenAICompletions, PromptCountIsBounded) {
  nlohmann::json many = nlohmann::json::array();
  for (int i = 0; i < kMaxPrompts; ++i) many.push_back("p");
  EXPECT_EQ(param_of({{"prompt", many}}), "<ok>");
  many.push_back("p");
  EXPECT_EQ(param_of({{"prompt", many}}), "prompt");
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

TEST(OpenAILogprobs, TokenTextKeepsJsonValid) {
  EXPECT_EQ(token_text(" hello"), " hello");
  EXPECT_EQ(token_text("\xe2\x80"), "bytes:\\xe2\\x80");  // part of a character
  EXPECT_EQ(token_text("\xe2\x80\x99"), "\xe2\x80\x99");   // a whole one
  EXPECT_EQ(count_chars("a\xe2\x80\x99" "b"), 3);
  EXPECT_EQ(count_chars("\x80\x99"), 0);  // continuation bytes: the character began before
}

TEST(OpenAILogprobs, LegacyObjectShape) {
  std::vector<LogprobEntry> e(2);
  e[0].token = "A";
  e[0].text_offset = 0;
  e[1].token = " b";
  e[1].logprob = -1.5f;
  e[1].top = std::vector<std::pair<std::string, float>>{{" b", -1.5f}, {" c", -2.0f}, {" b", -9.0f}};
  e[1].text_offset = 1;
  const auto j = make_logprobs(e);
  EXPECT_EQ(j["tokens"], (nlohmann::json{"A", " b"}));
  EXPECT_TRUE(j["token_logprobs"][0].is_null());
  EXPECT_DOUBLE_EQ(j["token_logprobs"][1].get<double>(), -1.5);
  EXPECT_TRUE(j["top_logprobs"][0].is_null());
  EXPECT_EQ(j["top_logprobs"][1].size(), 2u);
  EXPECT_DOUBLE_EQ(j["top_logprobs"][1][" b"].get<double>(), -1.5);  // the first (most likely) kept
  EXPECT_EQ(j["text_offset"], (nlohmann::json{0, 1}));
}

TEST(OpenAICompletions, ObjectsWithUsage) {
  const auto chunk = make_completion_object("id", 1, "m", nlohmann::json::array(), nullptr);
  EXPECT_TRUE(chunk.contains("usage"));
  EXPECT_TRUE(chunk["usage"].is_null());
  EXPECT_FALSE(make_completion_object("id", 1, "m", nlohmann::json::array()).contains("usage"));
  EXPECT_EQ(make_usage(3, 4)["total_tokens"], 7);
  const auto c = make_choice("t", 5, nullptr, std::string("stop"));
  EXPECT_EQ(c["index"], 5);
  EXPECT_EQ(c["finish_reason"], "stop");
}

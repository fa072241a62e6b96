// CompletionReply: when a /v1/completions answer may begin, and how prompts' choices combine.
#include "writeup/server/completion_reply.hpp"

#include <gtest/gtest.h>

#include "test_support.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace {

using writeup::api::ApiError;
using writeup::api::CompletionRequest;
using writeup::generate::GeneratedSequence;
using writeup::server::CompletionReply;
using writeup::server::ReplySink;
using writeup::service::Prepared;
using writeup::service::ServiceError;
using writeup::service::TextDelta;

struct Recorded {
  std::vector<std::pair<std::vector<std::string>, bool>> events;
  int opens = 0;
  std::vector<int> errors;
  std::vector<std::pair<int, nlohmann::json>> replies;
};

struct Fixture {
  writeup::service::ModelEntry model;
  std::vector<Prepared> prepared;
  Recorded rec;

  explicit Fixture(int prompts) {
    model.config.name = "m";
    model.tokenizer = writeup::text::BpeTokenizer::from_model_dir(writeup::test::model_dir("tiny-gpt2"));
    for (int i = 0; i < prompts; ++i) {
      Prepared p;
      p.model = &model;
      p.prompt_text = "Prompt " + std::to_string(i);
      p.request.prompt = model.tokenizer->encode(p.prompt_text);
      p.prompt_tokens = static_cast<int>(p.request.prompt.size());
      prepared.push_back(std::move(p));
    }
  }
  ReplySink sink() {
    ReplySink s;
    s.events = [this](std::vector<std::string> data, bool last) { rec.events.emplace_back(std::move(data), last); };
    s.open = [this] { ++rec.opens; };
    s.error = [this](const ApiError& e) { rec.errors.push_back(e.status()); };
    s.reply = [this](int status, std::string body) { rec.replies.emplace_back(status, nlohmann::json::parse(body)); };
    return s;
  }
  std::shared_ptr<CompletionReply> reply(CompletionRequest r) {
    return std::make_shared<CompletionReply>(std::move(r), prepared, sink());
  }
};

GeneratedSequence seq(std::vector<int> tokens, std::string text, std::vector<float> logprobs = {}) {
  GeneratedSequence s;
  s.tokens = std::move(tokens);
  s.text = std::move(text);
  s.finish_reason = "length";
  for (std::size_t i = 0; i < logprobs.size(); ++i) s.logprobs.push_back({s.tokens.at(i), logprobs[i], {}});
  return s;
}

TEST(CompletionReply, AStreamWaitsUntilEveryPromptIsAdmitted) {
  Fixture f(2);
  CompletionRequest r;
  r.stream = true;
  auto reply = f.reply(r);
  auto e0 = reply->events(0), e1 = reply->events(1);
  e0.on_admitted();
  e0.on_text({TextDelta{0, " a", 1, {}, {}}});
  EXPECT_TRUE(f.rec.events.empty());  // prompt 1 may still be refused: no status line yet
  EXPECT_EQ(f.rec.opens, 0);
  e1.on_admitted();
  ASSERT_EQ(f.rec.events.size(), 1u);  // the waiting chunk, which starts the stream
  EXPECT_EQ(nlohmann::json::parse(f.rec.events[0].first.at(0))["choices"][0]["text"], " a");
  e1.on_text({TextDelta{0, " b", 1, {}, {}}});
  ASSERT_EQ(f.rec.events.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(f.rec.events[1].first.at(0))["choices"][0]["index"], 1);  // prompt 1, n 1
  e0.on_done({seq({1}, " a")});
  EXPECT_FALSE(f.rec.events.back().second);  // prompt 1 still runs
  e1.on_done({seq({1}, " b")});
  EXPECT_TRUE(f.rec.events.back().second);
  EXPECT_TRUE(f.rec.errors.empty());
}

TEST(CompletionReply, AdmissionAloneOpensTheStream) {
  Fixture f(1);
  CompletionRequest r;
  r.stream = true;
  auto reply = f.reply(r);
  reply->events(0).on_admitted();
  EXPECT_EQ(f.rec.opens, 1);
}

TEST(CompletionReply, ARefusalBeforeAdmissionIsTheAnswerAndCancelsTheOthers) {
  Fixture f(2);
  CompletionRequest r;
  r.stream = true;
  auto reply = f.reply(r);
  auto flight = std::make_shared<writeup::service::Flight>(nullptr);
  auto e0 = reply->events(0);
  auto sub = std::make_shared<writeup::service::Subscription>(flight, flight->join(e0));
  reply->set_subscription(sub);
  e0.on_admitted();
  reply->events(1).on_error(ServiceError(ApiError(429, "queue_full", "busy")));
  EXPECT_EQ(f.rec.errors, std::vector<int>{429});
  EXPECT_TRUE(f.rec.events.empty());
  EXPECT_EQ(f.rec.opens, 0);
  EXPECT_TRUE(flight->abandoned());  // the admitted prompt was cancelled
  e0.on_done({seq({1}, " late")});
  EXPECT_TRUE(f.rec.events.empty());  // nothing more goes out
}

TEST(CompletionReply, ChoicesAreIndexedPromptTimesNPlusJWithSummedUsage) {
  Fixture f(2);
  CompletionRequest r;
  r.n = 2;
  r.echo = true;
  auto reply = f.reply(r);
  reply->events(1).on_done({seq({1, 2}, " c"), seq({3}, " d")});
  EXPECT_TRUE(f.rec.replies.empty());
  reply->events(0).on_done({seq({4}, " a"), seq({5, 6, 7}, " b")});
  ASSERT_EQ(f.rec.replies.size(), 1u);
  const auto& j = f.rec.replies[0].second;
  ASSERT_EQ(j["choices"].size(), 4u);
  EXPECT_EQ(j["choices"][0]["text"], "Prompt 0 a");
  EXPECT_EQ(j["choices"][3]["text"], "Prompt 1 d");
  EXPECT_EQ(j["choices"][3]["index"], 3);
  EXPECT_EQ(j["usage"]["completion_tokens"], 7);
  EXPECT_EQ(j["usage"]["prompt_tokens"], f.prepared[0].prompt_tokens + f.prepared[1].prompt_tokens);
}

TEST(CompletionReply, BestOfKeepsTheNBestByMeanLogprob) {
  Fixture f(1);
  CompletionRequest r;
  r.n = 1;
  r.best_of = 3;
  auto reply = f.reply(r);
  reply->events(0).on_done({seq({1, 2}, " x", {-3, -3}), seq({1, 2}, " y", {-1, -2}), seq({1}, " z", {-2})});
  ASSERT_EQ(f.rec.replies.size(), 1u);
  const auto& j = f.rec.replies[0].second;
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["text"], " y");  // mean -1.5 beats -2 and -3
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());  // not asked for
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);        // every candidate counts
}

TEST(CompletionReply, IncludeUsageAddsAFinalUsageChunk) {
  Fixture f(1);
  CompletionRequest r;
  r.stream = true;
  r.include_usage = true;
  auto reply = f.reply(r);
  reply->events(0).on_done({seq({1, 2}, " s")});  // a stored response: no text before
  ASSERT_EQ(f.rec.events.size(), 1u);
  const auto& chunks = f.rec.events[0].first;
  ASSERT_EQ(chunks.size(), 3u);  // text, finish, usage
  EXPECT_TRUE(nlohmann::json::parse(chunks[0])["usage"].is_null());
  const auto last = nlohmann::json::parse(chunks[2]);
  EXPECT_TRUE(last["choices"].empty());
  EXPECT_EQ(last["usage"]["completion_tokens"], 2);
  EXPECT_TRUE(f.rec.events[0].second);
}

}  // namespace

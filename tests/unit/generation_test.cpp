#include "writeup/generate/generation.hpp"

#include <gtest/gtest.h>

#include "test_support.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

using namespace writeup::generate;
namespace t = writeup::test;

namespace {

struct Fixture {
  std::shared_ptr<writeup::model::GPT2Model> model =
      writeup::model::GPT2Model::load(t::model_dir("tiny-gpt2"));
  std::shared_ptr<writeup::text::BpeTokenizer> tok =
      writeup::text::BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
};
Fixture& fx() {
  static Fixture f;
  return f;
}

GenerationRequest request(const std::string& prompt, int max_tokens, int n = 1, std::uint64_t seed = 42) {
  GenerationRequest r;
  r.prompt = fx().tok->encode(prompt);
  r.params.max_tokens = max_tokens;
  r.params.temperature = 0.9f;
  r.params.top_k = 40;
  r.params.seed = seed;
  r.n = n;
  return r;
}

}  // namespace

TEST(Generation, SameSeedSameTextsAndSequencesAreIndependent) {
  const auto a = generate(*fx().model, *fx().tok, request("The quick brown fox", 20, 3));
  const auto b = generate(*fx().model, *fx().tok, request("The quick brown fox", 20, 3));
  ASSERT_EQ(a.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a[i].tokens, b[i].tokens);
  EXPECT_NE(a[0].tokens, a[1].tokens);
  // Sequence 0 of n=3 is the same as the only sequence of n=1: streams are per (seed, index).
  const auto single = generate(*fx().model, *fx().tok, request("The quick brown fox", 20, 1));
  EXPECT_EQ(single[0].tokens, a[0].tokens);
  const auto other = generate(*fx().model, *fx().tok, request("The quick brown fox", 20, 1, 7));
  EXPECT_NE(other[0].tokens, a[0].tokens);
}

TEST(Generation, StopsAtLengthAndReportsIt) {
  const auto out = generate(*fx().model, *fx().tok, request("Hello", 7));
  EXPECT_EQ(out[0].tokens.size(), 7u);
  EXPECT_EQ(out[0].finish_reason, "length");
  EXPECT_EQ(out[0].text, fx().tok->decode(out[0].tokens));
}

TEST(Generation, StopStringEndsTheTextBeforeIt) {
  // Greedy continuation of "Hello" is " Ts analges analgesヴヴヴ 249 ..." (golden.json).
  auto r = request("Hello", 24);
  r.params.temperature = 0;
  r.params.stop = {"ヴ", " never appears"};
  const auto out = generate(*fx().model, *fx().tok, r);
  EXPECT_EQ(out[0].text, " Ts analges analges");
  EXPECT_EQ(out[0].finish_reason, "stop");
  EXPECT_LT(out[0].tokens.size(), 24u);
}

TEST(Generation, CallbackSeesEveryTokenAndTheTextAddsUp) {
  auto r = request("漢字", 16, 2);
  std::vector<std::string> texts(2);
  int calls = 0;
  const auto out = generate(*fx().model, *fx().tok, r, [&](int i, int, const std::string& piece) {
    ++calls;
    texts[static_cast<std::size_t>(i)] += piece;
  });
  EXPECT_EQ(calls, static_cast<int>(out[0].tokens.size() + out[1].tokens.size()));
  for (int i = 0; i < 2; ++i) EXPECT_EQ(out[i].text.rfind(texts[i], 0), 0u);
}

TEST(Generation, RejectsBadRequestsClearly) {
  auto r = request("Hello", 64);  // 1 + 64 > 64 positions
  try {
    generate(*fx().model, *fx().tok, r);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the model context of 64"), std::string::npos);
  }
  r = request("Hello", 4);
  r.prompt.clear();
  EXPECT_THROW(generate(*fx().model, *fx().tok, r), std::invalid_argument);
  r = request("Hello", 4);
  r.params.top_p = 0;
  EXPECT_THROW(generate(*fx().model, *fx().tok, r), std::invalid_argument);
}

TEST(Generation, StopCheckCancelsWithinAStep) {
  int steps = 0;
  const auto out = generate(*fx().model, *fx().tok, request("Hello there", 30, 2), {},
                            [&] { return ++steps > 5; });
  ASSERT_EQ(out.size(), 2u);
  for (const auto& s : out) {
    EXPECT_EQ(s.finish_reason, "cancelled");
    EXPECT_LE(s.tokens.size(), 6u);
  }
  const auto none = generate(*fx().model, *fx().tok, request("Hello there", 30), {}, [] { return true; });
  EXPECT_TRUE(none[0].tokens.empty());
  EXPECT_EQ(none[0].finish_reason, "cancelled");
}

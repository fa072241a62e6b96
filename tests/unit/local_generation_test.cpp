// The one-request engine the tools run (service::LocalEngine): the server's worker, scheduler,
// model runner and output processor, checked against the golden continuations of HF transformers.
#include "writeup/service/local_generation.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "test_support.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

namespace t = writeup::test;
using writeup::engine::FinishReason;
using writeup::engine::TokenOutput;
using writeup::generate::GenerationRequest;
using writeup::service::LocalEngine;
using writeup::service::LocalEngineOptions;

namespace {

LocalEngine& engine(bool packed = true) {
  static auto make = [](bool p) {
    LocalEngineOptions o;
    o.path = t::model_dir("tiny-gpt2").string();
    o.load.packed = p;
    o.slots = 4;
    return std::make_unique<LocalEngine>(o);
  };
  static auto packed_engine = make(true);
  static auto generic_engine = make(false);
  return packed ? *packed_engine : *generic_engine;
}

GenerationRequest request(const std::string& prompt, int max_tokens, int n = 1, std::uint64_t seed = 42) {
  GenerationRequest r;
  r.prompt = engine().tokenizer().encode(prompt);
  r.params.max_tokens = max_tokens;
  r.params.temperature = 0.9f;
  r.params.top_k = 40;
  r.params.seed = seed;
  r.n = n;
  return r;
}

}  // namespace

// Both runner paths (the CPU's packed kernels and the generic device path) through the whole
// engine give HF's greedy continuations token for token.
TEST(LocalGeneration, GreedyContinuationsMatchTheGoldenTokenForTokenOnBothPaths) {
  const auto cases = t::load_json(t::data_dir() / "golden.json")["cases"];
  int checked = 0;
  for (const bool packed : {true, false}) {
    for (const auto& c : cases) {
      if (!c.contains("greedy_new_ids")) continue;
      const auto want = c["greedy_new_ids"].get<std::vector<int>>();
      GenerationRequest req;
      req.prompt = c["ids"].get<std::vector<int>>();
      EXPECT_EQ(engine().tokenizer().encode(c["text"].get<std::string>()), req.prompt);
      req.params.temperature = 0;
      req.params.max_tokens = static_cast<int>(want.size());
      const auto out = engine(packed).run(req).sequences;
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(out[0].tokens, want) << (packed ? "packed" : "generic") << " / " << c["name"];
      EXPECT_EQ(out[0].text, c["greedy_new_text"].get<std::string>());
      EXPECT_EQ(out[0].finish_reason, "length");
      ++checked;
    }
  }
  EXPECT_GE(checked, 2);
}

TEST(LocalGeneration, SameSeedSameTextsAndSequencesAreIndependent) {
  const auto a = engine().run(request("The quick brown fox", 20, 3)).sequences;
  const auto b = engine().run(request("The quick brown fox", 20, 3)).sequences;
  ASSERT_EQ(a.size(), 3u);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].tokens, b[i].tokens);
  EXPECT_NE(a[0].tokens, a[1].tokens);  // each sequence has its own generator
  // Sequence 0 of n = 3 is sequence 0 of n = 1; another seed gives other tokens.
  EXPECT_EQ(engine().run(request("The quick brown fox", 20, 1)).sequences[0].tokens, a[0].tokens);
  EXPECT_NE(engine().run(request("The quick brown fox", 20, 1, 7)).sequences[0].tokens, a[0].tokens);
}

TEST(LocalGeneration, StopsAtLengthAndReportsIt) {
  const auto out = engine().run(request("Hello", 7)).sequences;
  ASSERT_EQ(out.size(), 1u);
  if (out[0].finish_reason == "length") {
    EXPECT_EQ(out[0].tokens.size(), 7u);
  }
  EXPECT_LE(out[0].tokens.size(), 7u);
}

// A stop string is applied once, by the output processor: the text ends before it and the
// engine is told to end the sequence (it does not run to max_tokens).
TEST(LocalGeneration, AStopStringEndsTheTextBeforeItAndEndsTheSequenceInTheEngine) {
  auto free_run = request("The quick brown fox", 40);
  free_run.params.temperature = 0;
  const auto full = engine().run(free_run).sequences[0];
  ASSERT_GE(full.text.size(), 8u);
  // A stop string taken from the middle of the free-running text.
  const std::string stop = full.text.substr(full.text.size() / 2, 3);
  auto r = free_run;
  r.params.stop = {stop};
  long engine_tokens = 0;
  FinishReason last = FinishReason::none;
  const auto out = engine().run(r, [&](const TokenOutput& o) {
    if (o.token >= 0) ++engine_tokens;
    if (o.finish != FinishReason::none) last = o.finish;
  }).sequences[0];
  EXPECT_EQ(out.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_EQ(out.finish_reason, "stop");
  EXPECT_EQ(last, FinishReason::stop);  // the engine ended it on the processor's word
  EXPECT_LT(engine_tokens, 40);
}

TEST(LocalGeneration, OutputsCarryEveryTokenWithItsLogprobAndTheAlternatives) {
  auto r = request("Hello there", 12, 2);
  r.logprobs = 3;
  std::vector<std::vector<TokenOutput>> seen(2);
  const auto run = engine().run(r, [&](const TokenOutput& o) { seen[static_cast<std::size_t>(o.index)].push_back(o); });
  ASSERT_EQ(run.sequences.size(), 2u);
  ASSERT_EQ(run.logprobs.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    std::vector<int> tokens;
    for (const auto& o : seen[i]) {
      if (o.token >= 0 && o.finish != FinishReason::eos) tokens.push_back(o.token);
      if (o.token < 0) continue;
      EXPECT_LE(o.logprob, 0.0f);
      ASSERT_EQ(o.n_top, 3);
      for (int k = 1; k < o.n_top; ++k) EXPECT_GE(o.top[k - 1].logprob, o.top[k].logprob);
      EXPECT_GE(o.top[0].logprob, o.logprob);  // nothing is more likely than the most likely
      bool listed = false;
      for (int k = 0; k < o.n_top; ++k) {
        if (o.top[k].token == o.token) {
          listed = true;
          EXPECT_FLOAT_EQ(o.top[k].logprob, o.logprob);
        }
      }
      if (!listed) {
        EXPECT_LE(o.logprob, o.top[o.n_top - 1].logprob);
      }
    }
    EXPECT_EQ(tokens, run.sequences[i].tokens);
    EXPECT_EQ(engine().tokenizer().decode(tokens), run.sequences[i].text);
    ASSERT_EQ(run.logprobs[i].size(), tokens.size());
    double total = 0;
    for (const auto& p : run.logprobs[i]) total += std::exp(static_cast<double>(p.logprob));
    EXPECT_GT(total, 0.0);
  }
}

TEST(LocalGeneration, RejectsRequestsThatCannotRunClearly) {
  auto r = request("Hello", 1000);  // the tiny model's context is 128
  try {
    engine().run(r);
    FAIL() << "a request past the context ran";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the model context"), std::string::npos) << e.what();
  }
  r = request("Hello", 4, 5);  // more sequences than the engine's 4 slots
  EXPECT_THROW(engine().run(r), std::invalid_argument);
}

#include "writeup/service/output_processor.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <thread>

#include "test_support.hpp"
#include "writeup/api/writeup_protocol.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/text/utf8.hpp"

namespace {

using writeup::engine::ErrorKind;
using writeup::engine::FinishReason;
using writeup::engine::TokenOutput;
using writeup::generate::GeneratedSequence;
using writeup::service::OutputOptions;
using writeup::service::OutputProcessor;
using writeup::service::TextDelta;

std::shared_ptr<const writeup::text::BpeTokenizer> tok() {
  static std::shared_ptr<const writeup::text::BpeTokenizer> tk =
      writeup::text::BpeTokenizer::from_model_dir(writeup::test::model_dir("tiny-gpt2"));
  return tk;
}

// Token ids of `text`, one character (or less) per token: every boundary is a token boundary.
std::vector<int> per_char(const std::string& text) {
  std::vector<int> ids;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = 1;
    while (i + n < text.size() && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80) ++n;
    for (int id : tok()->encode(text.substr(i, n))) ids.push_back(id);
    i += n;
  }
  return ids;
}

TokenOutput out(int index, int token, FinishReason finish = FinishReason::none) {
  TokenOutput o;
  o.index = index;
  o.token = token;
  o.finish = finish;
  return o;
}

// A processor with an inline executor (or `executor`) that records what it reports.
struct Harness {
  std::vector<std::vector<TextDelta>> releases;
  std::vector<std::vector<GeneratedSequence>> done;
  std::vector<std::pair<ErrorKind, std::string>> errors;
  std::shared_ptr<writeup::engine::Job> job = std::make_shared<writeup::engine::Job>();
  std::shared_ptr<OutputProcessor> processor;

  explicit Harness(int n, std::vector<std::string> stops = {}, int every_words = 0,
                   writeup::service::Executor executor = {}, bool logprobs = false) {
    writeup::generate::GenerationRequest r;
    r.n = n;
    r.params.stop = std::move(stops);
    writeup::service::OutputEvents e;
    e.on_text = [this](const std::vector<TextDelta>& d) { releases.push_back(d); };
    e.on_done = [this](const std::vector<GeneratedSequence>& res) { done.push_back(res); };
    e.on_error = [this](ErrorKind k, const std::string& m) { errors.emplace_back(k, m); };
    processor = std::make_shared<OutputProcessor>(tok(), r, OutputOptions{every_words, logprobs}, std::move(executor), std::move(e));
    processor->bind(job);
  }
  void send(const TokenOutput& o) { processor->on_outputs({&o, 1}); }
  // Feeds `ids` to sequence `index`, the last one ending it with `last`.
  void feed(int index, const std::vector<int>& ids, FinishReason last = FinishReason::none) {
    for (std::size_t i = 0; i < ids.size(); ++i) send(out(index, ids[i], i + 1 == ids.size() ? last : FinishReason::none));
  }
  std::string streamed(int index) const {
    std::string s;
    for (const auto& r : releases) {
      for (const auto& d : r) {
        if (d.index == index) s += d.text;
      }
    }
    return s;
  }
};

TEST(OutputProcessor, AStopStringAcrossTokensCutsTheTextAndStopsTheSequence) {
  Harness h(1, {"lo w"});
  const auto ids = per_char("Hello world");
  ASSERT_EQ(ids.size(), 11u);
  h.feed(0, std::vector<int>(ids.begin(), ids.begin() + 5));  // "Hello": "lo" may begin the stop string
  EXPECT_EQ(h.streamed(0), "Hel");
  EXPECT_FALSE(h.job->stopped(0));
  h.feed(0, std::vector<int>(ids.begin() + 5, ids.begin() + 7));  // " w": it does
  EXPECT_TRUE(h.job->stopped(0));
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].text, "Hel");
  EXPECT_EQ(h.done[0][0].finish_reason, "stop");
  EXPECT_EQ(h.done[0][0].tokens.size(), 7u);
  EXPECT_EQ(h.streamed(0), "Hel");  // never a part of the stop string
}

TEST(OutputProcessor, OutputsAfterAStopAreIgnored) {
  Harness h(2, {"!"});
  const auto a = per_char("ab!cd"), b = per_char("xyz");
  h.feed(0, std::vector<int>(a.begin(), a.begin() + 3));
  EXPECT_TRUE(h.job->stopped(0));
  EXPECT_FALSE(h.job->stopped(1));
  h.feed(0, {a[3], a[4]});                  // already in the engine's step: dropped
  h.send(out(0, -1, FinishReason::stop));   // the engine ended it
  EXPECT_TRUE(h.done.empty());              // sequence 1 still runs
  h.feed(1, b, FinishReason::length);
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].text, "ab");
  EXPECT_EQ(h.done[0][0].tokens.size(), 3u);
  EXPECT_EQ(h.done[0][1].text, "xyz");
  EXPECT_EQ(h.done[0][1].finish_reason, "length");
  EXPECT_EQ(h.streamed(0), "ab");
  h.send(out(1, b[0]));  // after the end: nothing more is reported
  EXPECT_EQ(h.done.size(), 1u);
}

TEST(OutputProcessor, TheEarliestOfSeveralStopStringsWins) {
  Harness h(1, {"cd", "bcdef"});
  h.feed(0, per_char("abcdefg"));
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].text, "ab");
}

TEST(OutputProcessor, CharactersSplitOverTokensAreNeverReleasedInPart) {
  const std::string text = "a 👍🏽 漢字 ü";
  const auto ids = tok()->encode(text);
  ASSERT_GT(ids.size(), per_char("a  漢字 ü").size() / 2);
  Harness h(1);
  h.feed(0, ids, FinishReason::length);
  int releases_with_text = 0;
  for (const auto& r : h.releases) {
    for (const auto& d : r) {
      EXPECT_FALSE(writeup::text::find_invalid_utf8(d.text)) << "a partial character was released";
      releases_with_text += d.text.empty() ? 0 : 1;
    }
  }
  EXPECT_GT(releases_with_text, 1);
  EXPECT_EQ(h.streamed(0), text);
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].text, text);
  EXPECT_EQ(h.done[0][0].tokens, ids);
}

TEST(OutputProcessor, EosIsNeitherTokenNorText) {
  Harness h(1);
  const auto ids = per_char("Hi");
  h.feed(0, ids);
  h.send(out(0, tok()->encode("!")[0], FinishReason::eos));
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].text, "Hi");
  EXPECT_EQ(h.done[0][0].tokens, ids);
  EXPECT_EQ(h.done[0][0].finish_reason, "stop");
  EXPECT_EQ(h.processor->logprobs(0).size(), 2u);
}

TEST(OutputProcessor, LogprobsAreKeptPerToken) {
  Harness h(1);
  auto o = out(0, per_char("a")[0], FinishReason::length);
  o.logprob = -0.5f;
  o.n_top = 2;
  o.top[0] = {o.token, -0.5f};
  o.top[1] = {7, -1.5f};
  h.send(o);
  ASSERT_EQ(h.processor->logprobs(0).size(), 1u);
  EXPECT_FLOAT_EQ(h.processor->logprobs(0)[0].logprob, -0.5f);
  ASSERT_EQ(h.processor->logprobs(0)[0].top.size(), 2u);
  EXPECT_EQ(h.processor->logprobs(0)[0].top[1].first, 7);
}

// Issue 13: logprobs must match the returned text.
TEST(OutputProcessor, LogprobsOfTokensCutByAStopStringAreNotListed) {
  Harness h(1, {"lo w"}, 0, {}, true);
  const auto ids = per_char("Hello world");
  h.feed(0, std::vector<int>(ids.begin(), ids.begin() + 7));  // "Hello w": cut before "lo w"
  ASSERT_EQ(h.done.size(), 1u);
  const auto& r = h.done[0][0];
  EXPECT_EQ(r.text, "Hel");
  EXPECT_EQ(r.tokens.size(), 7u);  // generated (usage)
  ASSERT_EQ(r.logprobs.size(), 3u);  // of the text
  for (int i = 0; i < 3; ++i) EXPECT_EQ(r.logprobs[static_cast<std::size_t>(i)].token, ids[static_cast<std::size_t>(i)]);
  std::size_t carried = 0;
  for (const auto& rel : h.releases) {
    for (const auto& d : rel) carried += d.logprobs.size();
  }
  EXPECT_EQ(carried, 3u);
}

TEST(OutputProcessor, EachDeltaCarriesTheTokensWhoseTextItCompletes) {
  const std::string text = "a 👍🏽 漢字 ü";
  const auto ids = tok()->encode(text);
  Harness h(1, {}, 0, {}, true);
  h.feed(0, ids, FinishReason::length);
  std::size_t carried = 0;
  for (const auto& rel : h.releases) {
    for (const auto& d : rel) {
      std::string bytes;
      for (const auto& lp : d.logprobs) bytes += tok()->token_bytes(lp.token);
      EXPECT_EQ(bytes, d.text);
      carried += d.logprobs.size();
    }
  }
  EXPECT_EQ(carried, ids.size());
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].logprobs.size(), ids.size());
}

TEST(OutputProcessor, PromptLogprobsComeWithTheFirstDeltaAndTheResults) {
  Harness h(2, {}, 0, {}, true);
  std::vector<TokenOutput> prompt(2);
  prompt[0].token = 5;
  prompt[0].logprob = -3.0f;
  prompt[1].token = 6;
  prompt[1].logprob = -1.0f;
  prompt[1].n_top = 1;
  prompt[1].top[0] = {9, -0.5f};
  h.processor->on_prompt_logprobs(prompt);
  h.feed(0, per_char("ab"), FinishReason::length);
  h.feed(1, per_char("c"), FinishReason::length);
  ASSERT_FALSE(h.releases.empty());
  ASSERT_EQ(h.releases[0][0].prompt_logprobs.size(), 2u);
  EXPECT_EQ(h.releases[0][0].prompt_logprobs[1].top, (std::vector<std::pair<int, float>>{{9, -0.5f}}));
  int with_prompt = 0;
  for (const auto& rel : h.releases) {
    for (const auto& d : rel) with_prompt += d.prompt_logprobs.empty() ? 0 : 1;
  }
  EXPECT_EQ(with_prompt, 2);  // once per sequence
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][1].prompt_logprobs.size(), 2u);
  EXPECT_FLOAT_EQ(h.done[0][1].prompt_logprobs[0].logprob, -3.0f);
}

TEST(OutputProcessor, WithoutLogprobsResultsCarryNone) {
  Harness h(1);
  h.feed(0, per_char("ab"), FinishReason::length);
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_TRUE(h.done[0][0].logprobs.empty());
}

TEST(OutputProcessor, CancelledSequencesKeepTheirText) {
  Harness h(1);
  h.feed(0, per_char("ok"));
  h.send(out(0, -1, FinishReason::cancelled));
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].text, "ok");
  EXPECT_EQ(h.done[0][0].finish_reason, "cancelled");
}

// The writeup protocol's rule: a release when some suggestion gained N words since the last
// one, carrying every suggestion's new text; the end releases the rest.
TEST(OutputProcessor, EveryWordsReleasesWhenASequenceGainedThatManyWords) {
  Harness h(2, {}, 2);
  const auto a = per_char("one two three four five"), b = per_char("x y");
  h.feed(1, b);  // "x y": 2 words: one release
  ASSERT_EQ(h.releases.size(), 1u);
  EXPECT_EQ(h.streamed(1), "x y");
  h.feed(0, std::vector<int>(a.begin(), a.begin() + 5));  // "one t": 2 words
  ASSERT_EQ(h.releases.size(), 2u);
  EXPECT_EQ(h.streamed(0), "one t");
  h.feed(0, std::vector<int>(a.begin() + 5, a.begin() + 9));  // "one two th": 3 words, 1 more
  EXPECT_EQ(h.releases.size(), 2u);
  h.feed(0, std::vector<int>(a.begin() + 9, a.end()), FinishReason::length);
  h.send(out(1, -1, FinishReason::cancelled));
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].text, "one two three four five");
  // One more release, at "one two three f" (4 words: 2 more than "one t"); the end adds none:
  // the final texts carry "our five", so every release keeps the cadence.
  ASSERT_EQ(h.releases.size(), 3u);
  EXPECT_EQ(h.streamed(0), "one two three f");
  EXPECT_EQ(h.streamed(1), "x y");
}

TEST(OutputProcessor, AnErrorEndsTheGenerationWithItsKind) {
  Harness h(1);
  h.feed(0, per_char("abc"));
  h.processor->on_error(ErrorKind::out_of_memory, "no room");
  ASSERT_EQ(h.errors.size(), 1u);
  EXPECT_EQ(h.errors[0].first, ErrorKind::out_of_memory);
  EXPECT_EQ(h.errors[0].second, "no room");
  EXPECT_TRUE(h.done.empty());
  h.send(out(0, -1, FinishReason::length));
  h.processor->on_error(ErrorKind::internal, "again");
  EXPECT_EQ(h.errors.size(), 1u);
  EXPECT_TRUE(h.done.empty());
}

// The engine thread only queues: one drain is posted at a time, and it takes everything queued.
TEST(OutputProcessor, OneDrainIsPostedAtATime) {
  std::deque<std::function<void()>> posted;
  Harness h(1, {}, 0, [&](std::function<void()> task) { posted.push_back(std::move(task)); });
  const auto ids = per_char("abcd");
  h.feed(0, {ids[0], ids[1], ids[2]});
  EXPECT_EQ(posted.size(), 1u);
  EXPECT_TRUE(h.releases.empty());  // nothing ran on the "engine" thread
  auto task = std::move(posted.front());
  posted.pop_front();
  task();
  EXPECT_EQ(h.streamed(0), "abc");
  h.send(out(0, ids[3], FinishReason::length));
  ASSERT_EQ(posted.size(), 1u);  // the drain ended: the next output posts a new one
  posted.front()();
  ASSERT_EQ(h.done.size(), 1u);
  EXPECT_EQ(h.done[0][0].text, "abcd");
}

TEST(OutputProcessor, DrainsNeverOverlapAcrossThreads) {
  std::mutex threads_mutex;
  std::vector<std::thread> threads;
  std::atomic<int> inside{0}, overlaps{0};
  writeup::service::Executor executor = [&](std::function<void()> task) {
    std::lock_guard lock(threads_mutex);
    threads.emplace_back([task = std::move(task)] { task(); });
  };
  writeup::generate::GenerationRequest r;
  r.n = 1;
  std::string streamed;
  int done = 0;
  writeup::service::OutputEvents e;
  e.on_text = [&](const std::vector<TextDelta>& ds) {
    if (inside.fetch_add(1) != 0) ++overlaps;
    for (const auto& d : ds) streamed += d.text;
    std::this_thread::yield();
    --inside;
  };
  e.on_done = [&](const std::vector<GeneratedSequence>&) { ++done; };
  auto p = std::make_shared<OutputProcessor>(tok(), r, OutputOptions{}, executor, e);
  const auto ids = per_char(std::string(400, 'a'));
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const auto o = out(0, ids[i], i + 1 == ids.size() ? FinishReason::length : FinishReason::none);
    p->on_outputs({&o, 1});
  }
  for (int round = 0; round < 1000; ++round) {  // join every drain thread (more may be started meanwhile)
    std::vector<std::thread> batch;
    {
      std::lock_guard lock(threads_mutex);
      batch.swap(threads);
    }
    if (batch.empty()) break;
    for (auto& t : batch) t.join();
  }
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(done, 1);
  EXPECT_EQ(streamed, std::string(400, 'a'));
}

}  // namespace

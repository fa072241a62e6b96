#include "writeup/text/bpe_tokenizer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>

#include "test_support.hpp"

using writeup::text::BpeTokenizer;
namespace t = writeup::test;

namespace {

std::shared_ptr<BpeTokenizer> gpt2_tokenizer() {
  static auto tok = BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  return tok;
}

std::vector<int> ids_of(const nlohmann::json& j) { return j.get<std::vector<int>>(); }

}  // namespace

TEST(BpeTokenizer, MatchesReferenceOnEveryFixtureCase) {
  const auto cases = t::load_json(t::data_dir() / "dev_tokens.json")["cases"];
  ASSERT_EQ(cases.size(), 386u);
  int failures = 0;
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    const auto got = gpt2_tokenizer()->encode(text);
    if (got != ids_of(c["ids"])) {
      ADD_FAILURE() << "ids differ for " << nlohmann::json(text).dump();
      if (++failures > 10) break;
    }
  }
}

TEST(BpeTokenizer, DecodesEveryFixtureCaseBackToItsText) {
  const auto cases = t::load_json(t::data_dir() / "dev_tokens.json")["cases"];
  for (const auto& c : cases) {
    const auto ids = ids_of(c["ids"]);
    EXPECT_EQ(gpt2_tokenizer()->decode(ids), c["text"].get<std::string>());
  }
}

TEST(BpeTokenizer, EndOfTextIsTheSpecialToken) {
  auto tok = gpt2_tokenizer();
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_EQ(tok->vocab_size(), 50257);
  const auto ids = tok->encode("a<|endoftext|>b");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], 50256);
  EXPECT_EQ(tok->encode("<|endoftext|>"), std::vector<int>{50256});
  EXPECT_EQ(tok->decode(ids), "a<|endoftext|>b");
}

TEST(BpeTokenizer, RejectsInvalidUtf8WithOffset) {
  try {
    gpt2_tokenizer()->encode("Hello \xC3(");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("offset 6"), std::string::npos) << e.what();
  }
}

TEST(BpeTokenizer, RoundTripsArbitraryBytesThroughTokens) {
  // Every byte sequence that is valid UTF-8 survives encode/decode unchanged.
  std::string all;
  for (int cp = 1; cp < 0x800; cp += 7) {
    if (cp < 0x80) all.push_back(static_cast<char>(cp));
    else {
      all.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      all.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  auto tok = gpt2_tokenizer();
  EXPECT_EQ(tok->decode(tok->encode(all)), all);
}

TEST(BpeTokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  const std::vector<int> bad{15496, 50257};
  EXPECT_THROW(gpt2_tokenizer()->decode(bad), std::out_of_range);
}

TEST(BpeTokenizer, TokenizerJsonGivesTheSameIds) {
  // Build a tokenizer.json (both merge spellings) from vocab.json + merges.txt.
  t::TempDir dir;
  const auto vocab = t::load_json(t::model_dir("tiny-gpt2") / "vocab.json");
  std::istringstream merges(t::read_file(t::model_dir("tiny-gpt2") / "merges.txt"));
  nlohmann::json m = nlohmann::json::array();
  std::string line;
  bool as_pairs = false;
  while (std::getline(merges, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.find(' ');
    if (as_pairs) m.push_back({line.substr(0, sp), line.substr(sp + 1)});
    else m.push_back(line);
    as_pairs = !as_pairs;
  }
  nlohmann::json tj = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m}}},
                       {"added_tokens", {{{"id", 50256}, {"content", "<|endoftext|>"}}}}};
  t::write_file(dir / "tokenizer.json", tj.dump());
  auto from_json = BpeTokenizer::from_model_dir(dir.path());
  const auto cases = t::load_json(t::data_dir() / "dev_tokens.json")["cases"];
  for (const auto& c : cases) {
    EXPECT_EQ(from_json->encode(c["text"].get<std::string>()), ids_of(c["ids"]));
  }
}

TEST(BpeTokenizer, MissingFilesAreNamed) {
  t::TempDir dir;
  try {
    BpeTokenizer::from_model_dir(dir.path());
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("vocab.json"), std::string::npos);
  }
  t::write_file(dir / "vocab.json", "{\"a\": 0}");
  t::write_file(dir / "merges.txt", "#version: 0.2\nthis line has three\n");
  EXPECT_THROW(BpeTokenizer::from_model_dir(dir.path()), std::runtime_error);
}

TEST(BpeTokenizer, IsSafeToUseFromManyThreads) {
  auto tok = gpt2_tokenizer();
  const std::string text = "Concurrent tokenization must agree: 日本語, emoji 👍🏽, numbers 12345.";
  const auto expected = tok->encode(text);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 200; ++k) {
        if (tok->encode(text + std::to_string(k % 7 + i)).size() < expected.size()) ++mismatches;
        if (tok->encode(text) != expected) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(BpeTokenizer, WordsTooLongToBeWorthCachingAreNotCached) {
  auto tok = BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  const std::string long_word(BpeTokenizer::CacheLimits{}.max_word_bytes + 1, 'x');
  const auto ids = tok->encode(long_word);
  EXPECT_EQ(tok->decode(ids), long_word);
  EXPECT_EQ(tok->cache_stats().entries, 0u);
  EXPECT_EQ(tok->cache_stats().bytes, 0u);
  tok->encode("hello");
  EXPECT_EQ(tok->cache_stats().entries, 1u);
  EXPECT_EQ(tok->encode(long_word), ids);  // merged again, same ids
  EXPECT_EQ(tok->cache_stats().entries, 1u);
}

TEST(BpeTokenizer, WordCacheStaysWithinItsEntryAndByteLimits) {
  auto tok = BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  const auto uncached = BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  uncached->set_cache_limits({.entries = 0, .bytes = 0, .max_word_bytes = 0});
  BpeTokenizer::CacheLimits limits{.entries = 50, .bytes = 4000, .max_word_bytes = 64};
  tok->set_cache_limits(limits);
  std::size_t most_entries = 0, most_bytes = 0;
  for (int i = 0; i < 3000; ++i) {
    // Distinct words of growing length, up to the longest cacheable one.
    std::string word = " w";
    for (int k = i; k > 0; k /= 26) word.push_back(static_cast<char>('a' + k % 26));
    word.append(static_cast<std::size_t>(i % 56), 'q');
    const auto ids = tok->encode(word);
    ASSERT_EQ(ids, uncached->encode(word)) << word;
    const auto stats = tok->cache_stats();
    most_entries = std::max(most_entries, stats.entries);
    most_bytes = std::max(most_bytes, stats.bytes);
    ASSERT_LE(stats.entries, limits.entries);
    ASSERT_LE(stats.bytes, limits.bytes);
  }
  EXPECT_GT(most_entries, 1u);  // the cache was used
  EXPECT_GT(most_bytes, limits.bytes / 2);
  EXPECT_EQ(uncached->cache_stats().entries, 0u);
}

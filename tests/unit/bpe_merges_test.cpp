// The O(n log n) BPE merge against the textbook quadratic loop, on the GPT-2 merge table and
// on random tables built to trip up a heap merge (pairs created by a merge that rank lower
// than the merge that created them, tokens that merge with themselves).
#include "writeup/text/bpe_merges.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <string>

#include "test_support.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

using writeup::text::BpeMerges;
using writeup::text::BpeTokenizer;
namespace t = writeup::test;

namespace {

// The textbook loop (OpenAI's encoder.py, and this project's tokenizer before the heap merge):
// find the lowest-ranked adjacent pair, merge it at every non-overlapping place, left to
// right; repeat until no adjacent pair has a rank.
std::vector<int> reference_merge(const BpeMerges& merges, std::vector<int> parts) {
  while (parts.size() > 1) {
    int best_rank = std::numeric_limits<int>::max();
    int left = -1, right = -1, merged = -1;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      const auto* m = merges.find(parts[i], parts[i + 1]);
      if (m != nullptr && m->rank < best_rank) {
        best_rank = m->rank;
        left = parts[i];
        right = parts[i + 1];
        merged = m->merged;
      }
    }
    if (merged < 0) break;
    std::vector<int> next;
    next.reserve(parts.size());
    for (std::size_t i = 0; i < parts.size();) {
      if (i + 1 < parts.size() && parts[i] == left && parts[i + 1] == right) {
        next.push_back(merged);
        i += 2;
      } else {
        next.push_back(parts[i]);
        i += 1;
      }
    }
    parts = std::move(next);
  }
  return parts;
}

std::vector<int> heap_merge(const BpeMerges& merges, std::vector<int> parts) {
  merges.apply(parts);
  return parts;
}

const BpeTokenizer& gpt2() {
  static auto tok = BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  return *tok;
}

std::vector<int> byte_ids(std::string_view word) {
  std::vector<int> ids;
  for (unsigned char c : word) ids.push_back(gpt2().byte_id(c));
  return ids;
}

std::string random_word(std::mt19937& rng, std::string_view alphabet, std::size_t len) {
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::string w;
  for (std::size_t i = 0; i < len; ++i) w.push_back(alphabet[pick(rng)]);
  return w;
}

}  // namespace

TEST(BpeMerges, EmptyAndSingleSymbolsAreUnchanged) {
  EXPECT_TRUE(heap_merge(gpt2().merges(), {}).empty());
  EXPECT_EQ(heap_merge(gpt2().merges(), {42}), std::vector<int>{42});
}

TEST(BpeMerges, OverlappingPairsMergeLeftToRight) {
  BpeMerges m;
  m.add(0, 0, 0, 1);  // "a a" -> "aa"
  EXPECT_EQ(heap_merge(m, {0, 0, 0}), (std::vector<int>{1, 0}));
  EXPECT_EQ(heap_merge(m, {0, 0, 0, 0}), (std::vector<int>{1, 1}));
  m.add(1, 1, 1, 2);  // "aa aa" -> "aaaa"
  EXPECT_EQ(heap_merge(m, std::vector<int>(7, 0)), (std::vector<int>{2, 1, 0}));
}

TEST(BpeMerges, APassFinishesBeforeALowerRankItCreated) {
  // (0,1) -> 2 at rank 5 and (2,0) -> 3 at rank 1: on "0 1 0 1" the textbook loop merges both
  // (0,1) first ("2 2"); merging (2,0) as soon as it appears would give "3 1".
  BpeMerges m;
  m.add(0, 1, 5, 2);
  m.add(2, 0, 1, 3);
  EXPECT_EQ(heap_merge(m, {0, 1, 0, 1}), (std::vector<int>{2, 2}));
  EXPECT_EQ(reference_merge(m, {0, 1, 0, 1}), (std::vector<int>{2, 2}));
}

TEST(BpeMerges, MatchesTheTextbookLoopOnRandomWordsWithGpt2Merges) {
  std::mt19937 rng(11);
  const std::string lower = "abcdefghijklmnopqrstuvwxyz";
  const std::string mixed = lower + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '.,-";
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  int checked = 0;
  const auto check = [&](const std::string& word) {
    const auto ids = byte_ids(word);
    ASSERT_EQ(heap_merge(gpt2().merges(), ids), reference_merge(gpt2().merges(), ids))
        << "word of " << word.size() << " bytes starting " << word.substr(0, 40);
    ++checked;
  };
  for (int i = 0; i < 2000; ++i) {
    std::uniform_int_distribution<std::size_t> len(1, 40);
    check(random_word(rng, lower, len(rng)));
    check(random_word(rng, mixed, len(rng)));
    check(random_word(rng, all_bytes, len(rng)));
    check(random_word(rng, "ab", len(rng)));
  }
  // Long runs of one letter (and of one two-letter pattern), where every pair ties.
  for (const std::size_t n : {2u, 3u, 5u, 16u, 17u, 255u, 256u, 257u, 1000u, 4099u}) {
    for (const char c : std::string("a eE0.")) check(std::string(n, c));
    std::string ab;
    while (ab.size() < n) ab += "ab";
    check(ab);
  }
  // Long random words.
  for (int i = 0; i < 6; ++i) check(random_word(rng, lower, 20000));
  check(random_word(rng, mixed, 20000));
  check(random_word(rng, all_bytes, 20000));
  EXPECT_GT(checked, 8000);
}

TEST(BpeMerges, MatchesTheTextbookLoopOnAdversarialRandomTables) {
  // Small alphabets with random ranks: merged tokens often rank lower than the merge that
  // makes them, and some merges give back their own left or right token.
  std::mt19937 rng(5);
  for (int table = 0; table < 200; ++table) {
    const int alphabet = 2 + table % 4;
    const int tokens = alphabet + 8;
    BpeMerges m;
    std::uniform_int_distribution<int> any(0, tokens - 1);
    // Ranks are distinct, as in a merges file (one rank per line).
    std::vector<int> ranks(static_cast<std::size_t>(4 + table % 20));
    for (std::size_t k = 0; k < ranks.size(); ++k) ranks[k] = static_cast<int>(k);
    std::shuffle(ranks.begin(), ranks.end(), rng);
    for (const int rank : ranks) m.add(any(rng), any(rng), rank, any(rng));
    std::uniform_int_distribution<int> letter(0, alphabet - 1), len(0, 60);
    for (int w = 0; w < 50; ++w) {
      std::vector<int> word(static_cast<std::size_t>(len(rng)));
      for (auto& s : word) s = letter(rng);
      ASSERT_EQ(heap_merge(m, word), reference_merge(m, word)) << "table " << table;
    }
  }
}

TEST(BpeMerges, EncodingALongWordMatchesTheTextbookLoop) {
  // One pre-tokenizer piece of 30 KB of letters, through encode.
  std::mt19937 rng(3);
  const auto word = random_word(rng, "abcdefghijklmnopqrstuvwxyz", 30000);
  EXPECT_EQ(gpt2().encode(word), reference_merge(gpt2().merges(), byte_ids(word)));
  const auto spaced = " " + word;
  EXPECT_EQ(gpt2().encode(spaced), reference_merge(gpt2().merges(), byte_ids(spaced)));
}

TEST(BpeMerges, AWordOf400KbEncodesAndRoundTrips) {
  // Defect 7's reproducer: a prompt that is one 400 KB word (35 s with the quadratic loop).
  std::mt19937 rng(4);
  const auto word = random_word(rng, "abcdefghijklmnopqrstuvwxyz", 400000);
  const auto ids = gpt2().encode(word);
  EXPECT_GT(ids.size(), 50000u);
  EXPECT_LT(ids.size(), word.size());
  EXPECT_EQ(gpt2().decode(ids), word);
}

#include "writeup/cache/memory_cache.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

using std::chrono::milliseconds;
using writeup::cache::MemoryCache;
using Keys = std::vector<std::string>;

namespace {
const auto kT0 = MemoryCache::Clock::time_point{} + std::chrono::hours(1);
constexpr milliseconds kLong{60000};
}  // namespace

TEST(MemoryCache, GetPutAndReplace) {
  MemoryCache c(10, 1000);
  EXPECT_FALSE(c.get("a", kT0));
  EXPECT_TRUE(c.put("a", "1", kLong, kT0));
  EXPECT_EQ(c.get("a", kT0), "1");
  EXPECT_TRUE(c.put("a", "22", kLong, kT0));
  EXPECT_EQ(c.get("a", kT0), "22");
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(c.bytes(), 3u);
  EXPECT_TRUE(c.erase("a"));
  EXPECT_FALSE(c.erase("a"));
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(MemoryCache, EvictsLeastRecentlyUsedByCount) {
  MemoryCache c(3, 1000);
  for (const char* k : {"a", "b", "c", "d"}) c.put(k, "v", kLong, kT0);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_FALSE(c.get("a", kT0));
  EXPECT_EQ(c.keys_by_recency(), (Keys{"d", "c", "b"}));
}

TEST(MemoryCache, EvictsByBytes) {
  MemoryCache c(100, 10);          // key + value bytes
  c.put("a", "1234", kLong, kT0);  // 5
  c.put("b", "1234", kLong, kT0);  // 10
  EXPECT_EQ(c.bytes(), 10u);
  c.put("c", "1", kLong, kT0);  // 12 > 10: "a" goes
  EXPECT_EQ(c.keys_by_recency(), (Keys{"c", "b"}));
  EXPECT_EQ(c.bytes(), 7u);
  c.put("d", "12345678", kLong, kT0);  // 9: both others go
  EXPECT_EQ(c.keys_by_recency(), (Keys{"d"}));
  EXPECT_EQ(c.bytes(), 9u);
}

TEST(MemoryCache, EntryLargerThanTheBoundIsNotStored) {
  MemoryCache c(100, 10);
  c.put("a", "1", kLong, kT0);
  EXPECT_FALSE(c.put("big", "12345678", kLong, kT0));  // 11 bytes
  EXPECT_FALSE(c.get("big", kT0));
  EXPECT_EQ(c.keys_by_recency(), (Keys{"a"}));  // nothing evicted for it
  // Replacing an entry by a too-large value drops the old one.
  EXPECT_FALSE(c.put("a", "12345678901", kLong, kT0));
  EXPECT_FALSE(c.get("a", kT0));
  EXPECT_EQ(c.bytes(), 0u);
}

TEST(MemoryCache, ZeroEntriesStoresNothing) {
  MemoryCache c(0, 1000);
  EXPECT_FALSE(c.put("a", "1", kLong, kT0));
  EXPECT_FALSE(c.get("a", kT0));
}

TEST(MemoryCache, TtlExpiry) {
  MemoryCache c(10, 1000);
  c.put("a", "1", milliseconds(100), kT0);
  c.put("b", "2", milliseconds(500), kT0);
  EXPECT_EQ(c.get("a", kT0 + milliseconds(99)), "1");
  EXPECT_FALSE(c.get("a", kT0 + milliseconds(100)));
  EXPECT_EQ(c.size(), 1u);  // the expired entry was removed
  EXPECT_EQ(c.get("b", kT0 + milliseconds(499)), "2");
  EXPECT_FALSE(c.get("b", kT0 + milliseconds(501)));
  EXPECT_FALSE(c.put("z", "1", milliseconds(0), kT0));
  // The real clock by default.
  c.put("r", "1", milliseconds(20));
  EXPECT_EQ(c.get("r"), "1");
  std::this_thread::sleep_for(milliseconds(30));
  EXPECT_FALSE(c.get("r"));
}

TEST(MemoryCache, GetRefreshesRecency) {
  MemoryCache c(3, 1000);
  for (const char* k : {"a", "b", "c"}) c.put(k, "v", kLong, kT0);
  EXPECT_EQ(c.keys_by_recency(), (Keys{"c", "b", "a"}));
  c.get("a", kT0);
  EXPECT_EQ(c.keys_by_recency(), (Keys{"a", "c", "b"}));
  c.put("d", "v", kLong, kT0);  // evicts "b", the least recently used now
  EXPECT_EQ(c.keys_by_recency(), (Keys{"d", "a", "c"}));
  c.put("c", "w", kLong, kT0);  // replacing also refreshes
  EXPECT_EQ(c.keys_by_recency(), (Keys{"c", "d", "a"}));
}

TEST(MemoryCache, ConcurrentUseKeepsBounds) {
  MemoryCache c(50, 2000);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&c, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string k = std::to_string((i * 7 + t) % 120);
        if (i % 3 == 0) {
          c.put(k, std::string(static_cast<std::size_t>(i % 40), 'x'), kLong);
        } else {
          c.get(k);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_LE(c.size(), 50u);
  EXPECT_LE(c.bytes(), 2000u);
  std::size_t sum = 0;
  for (const auto& k : c.keys_by_recency()) sum += k.size() + c.get(k)->size();
  EXPECT_EQ(sum, c.bytes());
}

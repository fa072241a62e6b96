// parallel_chunks (src/model/parallel_chunks.hpp): the threads' chunks cover the range exactly
// once, each within the grain, shrinking as the range runs out; small ranges and nested calls
// run inline on the calling thread.
#include "model/parallel_chunks.hpp"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace {

using writeup::model::detail::parallel_chunks;
using Chunk = std::pair<std::int64_t, std::int64_t>;

struct Threads {  // at::set_num_threads for one test, restored after it
  explicit Threads(int n) : before(at::get_num_threads()) { at::set_num_threads(n); }
  ~Threads() { at::set_num_threads(before); }
  int before;
};

// The chunks fn saw, sorted; each must run inside the pool's parallel region.
std::vector<Chunk> chunks_of(std::int64_t count, std::int64_t grain) {
  std::mutex m;
  std::vector<Chunk> out;
  parallel_chunks(count, grain, [&](std::int64_t b, std::int64_t e) {
    EXPECT_TRUE(at::in_parallel_region());  // this file is built with OpenMP (tests/CMakeLists.txt)
    std::lock_guard<std::mutex> lock(m);
    out.emplace_back(b, e);
  });
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ParallelChunks, CoverTheRangeOnceWithinTheGrainAndShrink) {
  Threads two(2);
  for (const auto& [count, grain] : std::vector<Chunk>{{3, 1}, {64, 4}, {64, 16}, {1000, 7}, {4097, 64}}) {
    const auto chunks = chunks_of(count, grain);
    ASSERT_FALSE(chunks.empty());
    std::int64_t next = 0;
    for (const auto& [b, e] : chunks) {
      EXPECT_EQ(b, next) << count << "/" << grain;  // consecutive: nothing skipped, nothing twice
      EXPECT_GE(e - b, 1);
      EXPECT_LE(e - b, grain);
      next = e;
    }
    EXPECT_EQ(next, count);
    // guided: a chunk is a share of what was left when it was claimed, so the last one is a
    // single index and none is larger than a quarter of the range (two threads)
    EXPECT_EQ(chunks.back().second - chunks.back().first, 1) << count << "/" << grain;
    for (const auto& [b, e] : chunks) EXPECT_LE(e - b, std::max<std::int64_t>(1, (count - b) / 4));
  }
}

TEST(ParallelChunks, SmallRangesOneThreadAndNestedCallsRunInline) {
  const auto caller = std::this_thread::get_id();
  const auto inline_only = [&](std::int64_t count, std::int64_t grain) {
    std::vector<Chunk> seen;
    parallel_chunks(count, grain, [&](std::int64_t b, std::int64_t e) {
      EXPECT_EQ(std::this_thread::get_id(), caller);
      seen.emplace_back(b, e);
    });
    return seen;
  };
  Threads two(2);
  EXPECT_EQ(inline_only(16, 16), (std::vector<Chunk>{{0, 16}}));  // count <= grain: not worth a fork
  EXPECT_TRUE(inline_only(0, 1).empty());
  {
    Threads one(1);
    EXPECT_EQ(inline_only(100, 1), (std::vector<Chunk>{{0, 100}}));
  }
  std::vector<std::vector<Chunk>> inner(2);
  at::parallel_for(0, 2, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      parallel_chunks(50, 1, [&](std::int64_t x, std::int64_t y) { inner[static_cast<std::size_t>(i)].emplace_back(x, y); });
    }
  });
  for (const auto& v : inner) EXPECT_EQ(v, (std::vector<Chunk>{{0, 50}}));  // inside a region: one inline call
}

}  // namespace

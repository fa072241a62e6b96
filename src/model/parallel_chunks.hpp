#pragma once
// parallel_chunks: at::parallel_for with dynamic hand-out. at::parallel_for (OpenMP) splits a
// range statically, one equal share per thread; on a VM whose vCPUs do not run at one speed
// (a neighbour's load, memory-bandwidth contention) the faster thread then spins at the join.
// Here the threads claim chunks from a shared counter until none is left, each chunk a share of
// what is left (guided): the first ones large, so there are few claims, the last ones single
// indices, so the join waits for one small chunk at most.
// Which thread runs an index never changes what it computes: results stay bitwise the same.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace writeup::model::detail {

// fn(b, e) for consecutive chunks [b, e) covering [0, count); fn must not throw. `grain`: a
// count up to it runs on the calling thread (not worth a fork), and no chunk is larger. A chunk
// is 1 / (2 x threads) of the indices not yet claimed, at least 1.
template <typename F>
void parallel_chunks(std::int64_t count, std::int64_t grain, const F& fn) {
  if (count <= 0) return;
  const std::int64_t most = at::get_num_threads();
  if (count <= grain || most <= 1 || at::in_parallel_region()) {
    fn(0, count);
    return;
  }
  const std::int64_t threads = std::min(most, count);
  std::atomic<std::int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](std::int64_t, std::int64_t) {
    std::int64_t b = next.load(std::memory_order_relaxed);
    while (b < count) {
      const std::int64_t size = std::clamp<std::int64_t>((count - b) / (2 * threads), 1, grain);
      if (!next.compare_exchange_weak(b, b + size, std::memory_order_relaxed)) continue;  // b: the new start
      fn(b, std::min(count, b + size));
      b = next.load(std::memory_order_relaxed);
    }
  });
}

}  // namespace writeup::model::detail

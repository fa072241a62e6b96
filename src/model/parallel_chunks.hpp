#pragma once
// parallel_chunks: at::parallel_for with dynamic hand-out. at::parallel_for (OpenMP) splits a
// range statically, one equal share per thread; on a VM whose vCPUs do not run at one speed
// (a neighbour's load, memory-bandwidth contention) the faster thread then spins at the join.
// Here the threads take chunks of `chunk` indices from a shared counter until none is left.
// Which thread runs an index never changes what it computes: results stay bitwise the same.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace writeup::model::detail {

// fn(b, e) for consecutive chunks [b, e) covering [0, count); fn must not throw. `grain`: a
// count up to it runs on the calling thread (not worth a fork), and no chunk is larger; chunks
// are also at most count / (8 x threads), so each thread takes several and the join waits for
// one small chunk at most.
template <typename F>
void parallel_chunks(std::int64_t count, std::int64_t grain, const F& fn) {
  if (count <= 0) return;
  const std::int64_t most = at::get_num_threads();
  if (count <= grain || most <= 1 || at::in_parallel_region()) {
    fn(0, count);
    return;
  }
  const std::int64_t chunk = std::max<std::int64_t>(1, std::min(grain, count / (8 * most)));
  const std::int64_t tasks = (count + chunk - 1) / chunk;
  const std::int64_t threads = std::min(most, tasks);
  std::atomic<std::int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](std::int64_t, std::int64_t) {
    for (std::int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < tasks;
         t = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(t * chunk, std::min(count, (t + 1) * chunk));
    }
  });
}

}  // namespace writeup::model::detail

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

// fn(b, e) for consecutive chunks [b, e) covering [0, count); fn must not throw.
template <typename F>
void parallel_chunks(std::int64_t count, std::int64_t chunk, const F& fn) {
  if (count <= 0) return;
  chunk = std::max<std::int64_t>(1, chunk);
  const std::int64_t tasks = (count + chunk - 1) / chunk;
  const std::int64_t threads = std::min<std::int64_t>(at::get_num_threads(), tasks);
  if (threads <= 1 || at::in_parallel_region()) {
    fn(0, count);
    return;
  }
  std::atomic<std::int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](std::int64_t, std::int64_t) {
    for (std::int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < tasks;
         t = next.fetch_add(1, std::memory_order_relaxed)) {
      fn(t * chunk, std::min(count, (t + 1) * chunk));
    }
  });
}

}  // namespace writeup::model::detail

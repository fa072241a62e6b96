#pragma once
// How the completion service runs: a plain struct, filled by whoever owns the service (the
// server builds it from its ServerConfig; tools and tests set what they need).
#include <cstdint>
#include <string>

#include "writeup/service/output_processor.hpp"

namespace writeup::service {

struct ServiceOptions {
  // A generation that has not finished this long after it was submitted fails (503 timeout);
  // also the longest a request waits for another instance's identical generation.
  double request_timeout_s = 120;
  // Requests that may wait for the response cache's lock at once (beyond: 429 queue_full).
  int max_queue = 64;
  // The seed of a request that names none.
  std::uint64_t default_seed = 42;
  // Response cache: Redis URL ("" = no Redis), Redis entry lifetime, in-memory LRU entries (0 =
  // none). Both off: nothing is cached.
  std::string cache_redis;
  int cache_ttl_s = 259200;
  int cache_memory_entries = 10000;
  // The writeup protocol's progress messages: one per this many new words of a suggestion.
  int stream_every_words = 5;
  // Where the output processors' drains run (never the engine's thread). Must outlive every
  // drain: its owner stops the engine workers, then joins it. Empty = inline (tests, tools).
  Executor output_executor;
};

}  // namespace writeup::service

#pragma once
// What the service did with one request, for its log line: written by CompletionService::start
// (and the cache's thread), read by the session once the answer went out.
#include <atomic>
#include <cstdint>

namespace writeup::service {

enum class CacheOutcome : std::uint8_t {
  off,   // not cacheable (no cache configured, an unseeded sampling request, logprobs, ...)
  miss,  // cacheable, generated here (and stored)
  hit,   // answered from the cache (memory or Redis)
  join,  // joined an identical generation already running in this process
};
inline const char* to_string(CacheOutcome outcome) {
  switch (outcome) {
    case CacheOutcome::miss: return "miss";
    case CacheOutcome::hit: return "hit";
    case CacheOutcome::join: return "join";
    case CacheOutcome::off: break;
  }
  return "off";
}

struct RequestTrace {
  std::atomic<CacheOutcome> cache{CacheOutcome::off};
};

}  // namespace writeup::service

#pragma once
// An in-process LRU of completed responses: string key -> string value, bounded by entry
// count and by total bytes, with a per-entry time to live. Thread-safe.
#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace writeup::cache {

class MemoryCache {
 public:
  using Clock = std::chrono::steady_clock;

  // `max_entries`: most entries held (0 = the cache stores nothing).
  // `max_bytes`: bound on the sum of key.size() + value.size() over all entries; an entry
  // larger than this on its own is not stored.
  MemoryCache(std::size_t max_entries, std::size_t max_bytes);
  MemoryCache(const MemoryCache&) = delete;
  MemoryCache& operator=(const MemoryCache&) = delete;

  // The value under `key` if present and not expired at `now`; a hit makes the entry the most
  // recently used. An expired entry is removed.
  std::optional<std::string> get(std::string_view key, Clock::time_point now = Clock::now());

  // Stores (or replaces) `key`, expiring `ttl` after `now`, as the most recently used entry,
  // then evicts least recently used entries until both bounds hold. Returns false (storing
  // nothing, and dropping any older value under `key`) when the cache is off, the entry alone
  // exceeds max_bytes or ttl <= 0.
  bool put(std::string key, std::string value, std::chrono::milliseconds ttl,
           Clock::time_point now = Clock::now());

  // Removes `key`; returns whether it was present.
  bool erase(std::string_view key);
  void clear();

  std::size_t size() const;   // entries held (expired ones not yet removed included)
  std::size_t bytes() const;  // sum of key + value sizes held
  std::size_t max_entries() const { return max_entries_; }
  std::size_t max_bytes() const { return max_bytes_; }
  // Keys from most to least recently used (for tests and debugging).
  std::vector<std::string> keys_by_recency() const;

 private:
  struct Entry {
    std::string key;
    std::string value;
    Clock::time_point expires;
  };
  using List = std::list<Entry>;

  void remove_locked(List::iterator it);

  const std::size_t max_entries_;
  const std::size_t max_bytes_;
  mutable std::mutex mutex_;
  List lru_;                                                    // front = most recently used
  std::unordered_map<std::string_view, List::iterator> index_;  // views into lru_ keys
  std::size_t bytes_ = 0;
};

}  // namespace writeup::cache

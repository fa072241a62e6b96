#include "writeup/cache/memory_cache.hpp"

#include <iterator>

namespace writeup::cache {

MemoryCache::MemoryCache(std::size_t max_entries, std::size_t max_bytes)
    : max_entries_(max_entries), max_bytes_(max_bytes) {}

void MemoryCache::remove_locked(List::iterator it) {
  bytes_ -= it->key.size() + it->value.size();
  index_.erase(std::string_view(it->key));
  lru_.erase(it);
}

std::optional<std::string> MemoryCache::get(std::string_view key, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = index_.find(key);
  if (found == index_.end()) return std::nullopt;
  const List::iterator it = found->second;
  if (now >= it->expires) {
    remove_locked(it);
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, it);  // iterators (and the index's views) stay valid
  return it->value;
}

bool MemoryCache::put(std::string key, std::string value, std::chrono::milliseconds ttl,
                      Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = index_.find(std::string_view(key));
  if (found != index_.end()) remove_locked(found->second);
  const std::size_t size = key.size() + value.size();
  if (max_entries_ == 0 || size > max_bytes_ || ttl <= std::chrono::milliseconds::zero()) {
    return false;
  }
  lru_.push_front(Entry{std::move(key), std::move(value), now + ttl});
  index_.emplace(std::string_view(lru_.front().key), lru_.begin());
  bytes_ += size;
  while (lru_.size() > max_entries_ || bytes_ > max_bytes_) remove_locked(std::prev(lru_.end()));
  return true;
}

bool MemoryCache::erase(std::string_view key) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = index_.find(key);
  if (found == index_.end()) return false;
  remove_locked(found->second);
  return true;
}

void MemoryCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  index_.clear();
  lru_.clear();
  bytes_ = 0;
}

std::size_t MemoryCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return lru_.size();
}

std::size_t MemoryCache::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bytes_;
}

std::vector<std::string> MemoryCache::keys_by_recency() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> keys;
  keys.reserve(lru_.size());
  for (const Entry& e : lru_) keys.push_back(e.key);
  return keys;
}

}  // namespace writeup::cache

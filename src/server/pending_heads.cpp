#include "writeup/server/pending_heads.hpp"

#include <utility>

namespace writeup::server {

std::uint64_t PendingHeads::add(Evict evict) {
  std::lock_guard lock(mutex_);
  waiting_.emplace(++next_, std::move(evict));
  return next_;
}

void PendingHeads::remove(std::uint64_t ticket) {
  if (ticket == 0) return;
  std::lock_guard lock(mutex_);
  waiting_.erase(ticket);
}

bool PendingHeads::evict_oldest() {
  Evict evict;
  {
    std::lock_guard lock(mutex_);
    if (waiting_.empty()) return false;
    evict = std::move(waiting_.begin()->second);
    waiting_.erase(waiting_.begin());
  }
  if (evict) evict();
  return true;
}

std::size_t PendingHeads::size() const {
  std::lock_guard lock(mutex_);
  return waiting_.size();
}

}  // namespace writeup::server

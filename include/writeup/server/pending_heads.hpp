#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

namespace writeup::server {

// Connections waiting for a request head, oldest first. When every connection slot is taken,
// the listener sheds the one that has waited longest for its head (a slowloris client or an
// idle keep-alive) so that a new client, a health check included, is still served.
class PendingHeads {
 public:
  using Evict = std::function<void()>;  // closes that connection (posts to its strand)

  // Registers a connection that starts waiting for a head; returns its ticket (never 0).
  std::uint64_t add(Evict evict);
  // The head arrived (or the connection ended): forget the ticket. 0 is ignored.
  void remove(std::uint64_t ticket);
  // Removes the oldest waiter and calls its Evict (outside the lock); false when none waits.
  bool evict_oldest();
  std::size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::uint64_t, Evict> waiting_;  // tickets increase: the first is the oldest
  std::uint64_t next_ = 0;
};

}  // namespace writeup::server

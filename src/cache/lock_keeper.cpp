#include "writeup/cache/lock_keeper.hpp"

#include <algorithm>
#include <exception>

#include "writeup/util/logging.hpp"

namespace writeup::cache {

LockKeeper::LockKeeper(boost::asio::io_context& io, std::chrono::milliseconds interval,
                       std::chrono::milliseconds max_hold, Renew renew)
    : timer_(io),
      interval_(std::max(interval, std::chrono::milliseconds(1))),
      max_hold_(max_hold),
      renew_(std::move(renew)) {}

void LockKeeper::hold(const std::string& key, const std::string& token) {
  if (stopped_ || token.empty()) return;
  held_[{key, token}] = Clock::now() + max_hold_;
  count_ = held_.size();
  arm();
}

void LockKeeper::drop(const std::string& key, const std::string& token) {
  if (token.empty()) return;
  held_.erase({key, token});
  count_ = held_.size();
}

void LockKeeper::stop() {
  stopped_ = true;
  timer_.cancel();
  held_.clear();
  count_ = 0;
}

void LockKeeper::arm() {
  if (armed_ || stopped_ || held_.empty()) return;
  armed_ = true;
  timer_.expires_after(interval_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    armed_ = false;
    if (ec || stopped_) return;
    renew_all();
    arm();
  });
}

void LockKeeper::renew_all() {
  const auto now = Clock::now();
  for (auto it = held_.begin(); it != held_.end();) {
    const std::string& key = it->first.first;
    Renewal r = Renewal::unknown;
    if (now >= it->second) {
      log::warn("cache: stopped renewing the lock on " + key + " (held past lock_max_hold)");
      r = Renewal::lost;
    } else {
      try {
        r = renew_(key, it->first.second);
      } catch (const std::exception& e) {
        log::error("cache: renewing the lock on " + key + " failed: " + e.what());
      } catch (...) {
        log::error("cache: renewing the lock on " + key + " failed: a non-exception");
      }
      if (r == Renewal::lost) log::warn("cache: lost the lock on " + key + " (expired or taken over)");
    }
    it = r == Renewal::lost ? held_.erase(it) : std::next(it);
  }
  count_ = held_.size();
}

}  // namespace writeup::cache

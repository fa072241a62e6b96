#pragma once
// The cross-instance generation locks this instance holds. A lock's TTL is short (a holder that
// dies must not block others for long) while a generation may run much longer, so every held
// lock is renewed each `interval` until it is handed back (stored or released), found lost, or
// held for `max_hold` (a holder that never hands it back). Runs on the cache's worker thread;
// size() may be read from any thread.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <utility>

namespace writeup::cache {

class LockKeeper {
 public:
  using Clock = std::chrono::steady_clock;
  // What one renewal attempt found: renewed; lost (expired, or another instance holds it now:
  // stop renewing); unknown (Redis not usable now: try again next time).
  enum class Renewal { renewed, lost, unknown };
  using Renew = std::function<Renewal(const std::string& key, const std::string& token)>;

  LockKeeper(boost::asio::io_context& io, std::chrono::milliseconds interval,
             std::chrono::milliseconds max_hold, Renew renew);
  LockKeeper(const LockKeeper&) = delete;
  LockKeeper& operator=(const LockKeeper&) = delete;

  // Starts renewing the lock on `key` held with `token`.
  void hold(const std::string& key, const std::string& token);
  // Stops renewing it (the lock was stored or released). Unknown pairs are ignored.
  void drop(const std::string& key, const std::string& token);
  // Stops everything (shutdown).
  void stop();
  std::size_t size() const { return count_; }

 private:
  void arm();
  void renew_all();

  boost::asio::steady_timer timer_;
  std::chrono::milliseconds interval_;
  std::chrono::milliseconds max_hold_;
  Renew renew_;
  std::map<std::pair<std::string, std::string>, Clock::time_point> held_;  // -> renew until
  std::atomic<std::size_t> count_{0};
  bool armed_ = false;
  bool stopped_ = false;
};

}  // namespace writeup::cache

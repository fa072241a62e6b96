#include "writeup/cache/lock_keeper.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <map>
#include <stdexcept>

using namespace writeup::cache;
using std::chrono::milliseconds;

namespace {

struct Fake {
  std::map<std::string, int> calls;
  std::map<std::string, LockKeeper::Renewal> answer;  // default: renewed
  LockKeeper::Renew fn() {
    return [this](const std::string& key, const std::string& token) {
      ++calls[key + "/" + token];
      if (key == "throws") throw std::runtime_error("injected");
      const auto it = answer.find(key);
      return it == answer.end() ? LockKeeper::Renewal::renewed : it->second;
    };
  }
};

void run_for(boost::asio::io_context& io, milliseconds d) {
  io.restart();
  io.run_for(d);
}

}  // namespace

TEST(LockKeeper, RenewsHeldLocksUntilDropped) {
  boost::asio::io_context io;
  Fake fake;
  LockKeeper keeper(io, milliseconds(10), milliseconds(60000), fake.fn());
  keeper.hold("a", "t1");
  keeper.hold("b", "t2");
  keeper.hold("c", "");  // no token: nothing to renew
  EXPECT_EQ(keeper.size(), 2u);
  run_for(io, milliseconds(100));
  EXPECT_GE(fake.calls["a/t1"], 3);
  EXPECT_GE(fake.calls["b/t2"], 3);
  EXPECT_EQ(fake.calls.count("c/"), 0u);
  keeper.drop("a", "t1");
  keeper.drop("b", "other token");  // not the holder's token: ignored
  EXPECT_EQ(keeper.size(), 1u);
  const int a_before = fake.calls["a/t1"];
  run_for(io, milliseconds(50));
  EXPECT_EQ(fake.calls["a/t1"], a_before);
  EXPECT_GT(fake.calls["b/t2"], 3);
}

TEST(LockKeeper, LostLocksAndLocksPastMaxHoldAreForgotten) {
  boost::asio::io_context io;
  Fake fake;
  fake.answer["lost"] = LockKeeper::Renewal::lost;
  fake.answer["unknown"] = LockKeeper::Renewal::unknown;
  LockKeeper keeper(io, milliseconds(10), milliseconds(60000), fake.fn());
  keeper.hold("lost", "t");
  keeper.hold("unknown", "t");  // Redis not usable: kept, tried again
  keeper.hold("throws", "t");   // what a renewal raises is logged; the lock is kept
  run_for(io, milliseconds(100));
  EXPECT_EQ(fake.calls["lost/t"], 1);
  EXPECT_GE(fake.calls["unknown/t"], 3);
  EXPECT_GE(fake.calls["throws/t"], 3);
  EXPECT_EQ(keeper.size(), 2u);

  LockKeeper short_hold(io, milliseconds(10), milliseconds(30), fake.fn());
  short_hold.hold("forgotten", "t");
  run_for(io, milliseconds(100));
  EXPECT_EQ(short_hold.size(), 0u);
  EXPECT_LE(fake.calls["forgotten/t"], 3);
  keeper.stop();
  EXPECT_EQ(keeper.size(), 0u);
}

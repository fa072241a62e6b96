#include "writeup/cache/redis_client.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

#include "redis_server.hpp"

using namespace writeup::cache;
using std::chrono::milliseconds;
using writeup::test::RedisServer;

namespace {

std::string what_of_bad_url(const std::string& url) {
  try {
    RedisUrl::parse(url);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(accepted)";
}

RedisClientOptions fast_options() {
  RedisClientOptions o;
  o.connect_timeout = milliseconds(300);
  o.command_timeout = milliseconds(300);
  o.backoff_initial = milliseconds(50);
  o.backoff_max = milliseconds(200);
  return o;
}

}  // namespace

TEST(RedisUrl, ParsesGoodUrls) {
  RedisUrl u = RedisUrl::parse("redis://cache.local");
  EXPECT_EQ(u.host, "cache.local");
  EXPECT_EQ(u.port, 6379);
  EXPECT_EQ(u.db, 0);
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.password, "");

  u = RedisUrl::parse("redis://127.0.0.1:7000/3");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 7000);
  EXPECT_EQ(u.db, 3);

  u = RedisUrl::parse("redis://:s3cret@host:1/");
  EXPECT_EQ(u.user, "");
  EXPECT_EQ(u.password, "s3cret");
  EXPECT_EQ(u.port, 1);
  EXPECT_EQ(u.db, 0);

  u = RedisUrl::parse("redis://alice:p%40ss:w/rd@host:6380/15");
  EXPECT_EQ(u.user, "alice");
  EXPECT_EQ(u.password, "p@ss:w/rd");
  EXPECT_EQ(u.host, "host");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 15);
  EXPECT_EQ(u.redacted(), "redis://alice:***@host:6380/15");

  u = RedisUrl::parse("redis://[::1]:6390/2");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 6390);
  EXPECT_EQ(u.redacted(), "redis://[::1]:6390/2");
  EXPECT_EQ(RedisUrl::parse("redis://[::1]").port, 6379);
}

TEST(RedisUrl, RejectsBadUrlsNamingTheProblem) {
  EXPECT_NE(what_of_bad_url("http://host").find("scheme"), std::string::npos);
  EXPECT_NE(what_of_bad_url("rediss://host").find("scheme"), std::string::npos);
  EXPECT_NE(what_of_bad_url("host:6379").find("scheme"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://").find("missing host"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://:6379").find("missing host"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://host:").find("empty port"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://host:0").find("bad port '0'"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://host:65536").find("bad port"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://host:63x9").find("bad port '63x9'"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://host:-1").find("bad port"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://host/x").find("bad database number 'x'"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://host/-1").find("bad database number"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://host/1?timeout=1").find("bad database number"),
            std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://secret@host").find("[user]:password"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://a:%zz@host").find("%-escape in the password"),
            std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://[::1").find("IPv6"), std::string::npos);
  EXPECT_NE(what_of_bad_url("redis://[::1]x").find("IPv6"), std::string::npos);
}

TEST(RedisClient, GetSetAndTtl) {
  RedisServer server;
  RedisClient c(RedisUrl::parse(server.url()), fast_options());
  EXPECT_FALSE(c.connected());
  EXPECT_TRUE(c.ping());
  EXPECT_TRUE(c.connected());
  EXPECT_EQ(c.get("k"), std::nullopt);
  EXPECT_FALSE(c.exists("k"));
  EXPECT_EQ(c.pttl("k"), -2);

  const std::string binary("a\0b\r\n\xff", 6);  // binary-safe keys and values
  c.set(binary, binary, milliseconds(60000));
  EXPECT_EQ(c.get(binary), binary);
  c.set("k", "v", milliseconds(60000));
  EXPECT_EQ(c.get("k"), "v");
  EXPECT_TRUE(c.exists("k"));
  const long long left = c.pttl("k");
  EXPECT_GT(left, 0);
  EXPECT_LE(left, 60000);

  c.set("short", "v", milliseconds(150));
  EXPECT_EQ(c.get("short"), "v");
  std::this_thread::sleep_for(milliseconds(250));
  EXPECT_EQ(c.get("short"), std::nullopt);
}

TEST(RedisClient, LockNxAndCompareAndDelete) {
  RedisServer server;
  RedisClient c(RedisUrl::parse(server.url()), fast_options());
  EXPECT_TRUE(c.set_nx("lock", "tokenA", milliseconds(30000)));
  EXPECT_FALSE(c.set_nx("lock", "tokenB", milliseconds(30000)));
  EXPECT_EQ(c.get("lock"), "tokenA");
  const long long left = c.pttl("lock");
  EXPECT_GT(left, 0);
  EXPECT_LE(left, 30000);

  EXPECT_FALSE(c.compare_and_delete("lock", "tokenB"));  // a wrong token does not release
  EXPECT_TRUE(c.exists("lock"));
  EXPECT_TRUE(c.compare_and_delete("lock", "tokenA"));
  EXPECT_FALSE(c.exists("lock"));
  EXPECT_FALSE(c.compare_and_delete("lock", "tokenA"));  // already gone
  EXPECT_TRUE(c.set_nx("lock", "tokenB", milliseconds(100)));
  std::this_thread::sleep_for(milliseconds(150));
  EXPECT_TRUE(c.set_nx("lock", "tokenC", milliseconds(100)));  // the old one expired
}

TEST(RedisClient, ErrorReplyKeepsTheConnection) {
  RedisServer server({"--rename-command", "PTTL", ""});
  RedisClient c(RedisUrl::parse(server.url()), fast_options());
  c.set("k", "v", milliseconds(60000));
  try {
    c.pttl("k");
    FAIL() << "PTTL should be an unknown command";
  } catch (const CacheError& e) {
    EXPECT_EQ(e.kind(), CacheError::Kind::command);
    EXPECT_NE(std::string(e.what()).find("PTTL refused"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(c.connected());
  EXPECT_EQ(c.get("k"), "v");
}

TEST(RedisClient, AuthAndSelectOnConnect) {
  RedisServer server(
      {"--requirepass", "pw", "--user", "alice", "on", ">alicepw", "~*", "&*", "+@all"});
  const std::string hostport = "127.0.0.1:" + std::to_string(server.port());
  {
    RedisClient c(RedisUrl::parse("redis://:pw@" + hostport + "/2"), fast_options());
    c.set("k", "in db 2", milliseconds(60000));
    EXPECT_EQ(c.get("k"), "in db 2");
  }
  {
    RedisClient c(RedisUrl::parse("redis://alice:alicepw@" + hostport + "/2"), fast_options());
    EXPECT_EQ(c.get("k"), "in db 2");  // the same database, another user
  }
  {
    RedisClient c(RedisUrl::parse("redis://:pw@" + hostport), fast_options());
    EXPECT_EQ(c.get("k"), std::nullopt);  // db 0
  }
  RedisClient wrong(RedisUrl::parse("redis://:nope@" + hostport), fast_options());
  try {
    wrong.get("k");
    FAIL() << "a wrong password must fail";
  } catch (const CacheError& e) {
    EXPECT_EQ(e.kind(), CacheError::Kind::connect);
    EXPECT_NE(std::string(e.what()).find("AUTH refused"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("nope"), std::string::npos) << "password leaked";
  }
  EXPECT_FALSE(wrong.connected());
  RedisClient none(RedisUrl::parse("redis://" + hostport), fast_options());
  EXPECT_THROW(none.get("k"), CacheError);  // NOAUTH
}

TEST(RedisClient, RefusedConnectionBacksOffAndFailsFast) {
  RedisClient c(RedisUrl::parse("redis://127.0.0.1:" + std::to_string(writeup::test::free_port())),
                fast_options());
  try {
    c.get("k");
    FAIL() << "nothing listens there";
  } catch (const CacheError& e) {
    EXPECT_EQ(e.kind(), CacheError::Kind::connect);
    EXPECT_NE(std::string(e.what()).find("cannot connect"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(c.connected());
  EXPECT_FALSE(c.ready());
  EXPECT_EQ(c.backoff(), milliseconds(100));  // 50 was used; the next failure waits 100
  // In backoff: fails at once, naming the wait, without trying (the backoff does not grow).
  const auto t0 = RedisClient::Clock::now();
  try {
    c.get("k");
    FAIL();
  } catch (const CacheError& e) {
    EXPECT_NE(std::string(e.what()).find("next attempt in"), std::string::npos) << e.what();
  }
  EXPECT_LT(RedisClient::Clock::now() - t0, milliseconds(20));
  EXPECT_EQ(c.backoff(), milliseconds(100));
  // Doubling up to the maximum.
  for (int i = 0; i < 4; ++i) {
    std::this_thread::sleep_for(c.next_attempt() - RedisClient::Clock::now());
    EXPECT_THROW(c.get("k"), CacheError);
  }
  EXPECT_EQ(c.backoff(), milliseconds(200));
}

TEST(RedisClient, ServerLostThenBack) {
  RedisServer server;
  RedisClient c(RedisUrl::parse(server.url()), fast_options());
  c.set("k", "v", milliseconds(60000));
  server.kill();
  try {
    c.get("k");
    FAIL() << "the server is gone";
  } catch (const CacheError& e) {
    EXPECT_EQ(e.kind(), CacheError::Kind::command) << e.what();
  }
  EXPECT_FALSE(c.connected());
  EXPECT_THROW(c.get("k"), CacheError);  // in backoff
  server.start();
  std::this_thread::sleep_for(c.next_attempt() - RedisClient::Clock::now());
  EXPECT_EQ(c.get("k"), std::nullopt);  // reconnected (no persistence: the data is gone)
  EXPECT_TRUE(c.connected());
  EXPECT_EQ(c.backoff(), milliseconds(50));  // reset by the successful connect
}

TEST(RedisClient, CommandTimeout) {
  RedisServer server;
  RedisClient c(RedisUrl::parse(server.url()), fast_options());
  EXPECT_TRUE(c.ping());
  server.stop();
  const auto t0 = RedisClient::Clock::now();
  EXPECT_THROW(c.get("k"), CacheError);
  const auto took = RedisClient::Clock::now() - t0;
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, milliseconds(1500));
  EXPECT_FALSE(c.connected());
  server.resume();
  std::this_thread::sleep_for(c.next_attempt() - RedisClient::Clock::now());
  EXPECT_TRUE(c.ping());
}

TEST(RedisClient, CompareAndPexpireRenewsOnlyTheOwnersLock) {
  RedisServer server;
  RedisClient c(RedisUrl::parse(server.url()), fast_options());
  ASSERT_TRUE(c.set_nx("lock", "mine", milliseconds(1000)));
  EXPECT_TRUE(c.compare_and_pexpire("lock", "mine", milliseconds(60000)));
  EXPECT_GT(c.pttl("lock"), 50000);
  EXPECT_FALSE(c.compare_and_pexpire("lock", "theirs", milliseconds(10)));
  EXPECT_GT(c.pttl("lock"), 50000);  // untouched
  EXPECT_FALSE(c.compare_and_pexpire("missing", "mine", milliseconds(60000)));
  EXPECT_FALSE(c.exists("missing"));
}

TEST(RedisClient, ProbeNeedsAPongAndIgnoresTheBackoff) {
  RedisServer server;
  RedisClient c(RedisUrl::parse(server.url()), fast_options());
  EXPECT_TRUE(c.probe(milliseconds(100)));
  EXPECT_TRUE(c.connected());
  server.stop();  // the kernel still accepts connections; nothing answers
  EXPECT_THROW(c.probe(milliseconds(100)), CacheError);
  EXPECT_FALSE(c.connected());
  EXPECT_FALSE(c.ready());                               // a command would wait for the backoff
  EXPECT_THROW(c.probe(milliseconds(100)), CacheError);  // a probe does not: it connects, times out
  server.resume();
  EXPECT_TRUE(c.probe(milliseconds(100)));
  EXPECT_TRUE(c.connected());
  EXPECT_TRUE(c.ready());
  c.set("k", "v", milliseconds(60000));  // the normal command timeout is back
  EXPECT_EQ(c.get("k"), "v");
}

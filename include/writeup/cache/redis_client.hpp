#pragma once
// A small synchronous Redis client over hiredis: the few commands the response cache uses,
// binary-safe, with connect and command timeouts and reconnection with exponential backoff.
// Not thread-safe: one thread at a time (writeup::cache::Cache serializes it on its worker).
#include <chrono>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

struct redisContext;  // hiredis

namespace writeup::cache {

// A failed Redis connection, command or reply. kind() tells which, for metrics.
class CacheError : public std::runtime_error {
 public:
  enum class Kind { connect, command };
  CacheError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// redis://[[user]:password@]host[:port][/db]
struct RedisUrl {
  std::string host;      // a name, an IPv4 address or a bracketed IPv6 address (brackets removed)
  int port = 6379;       // 1..65535
  std::string user;      // empty: AUTH with the password only (or no AUTH at all)
  std::string password;  // empty: no AUTH
  int db = 0;            // SELECTed on connect when not 0

  // Throws std::invalid_argument naming what is wrong (scheme, host, port, db, ...).
  static RedisUrl parse(std::string_view url);
  // "redis://host:port/db", the password replaced by "***" (for logs).
  std::string redacted() const;
};

struct RedisClientOptions {
  std::chrono::milliseconds connect_timeout{500};  // TCP connect (and AUTH/SELECT) limit
  std::chrono::milliseconds command_timeout{500};  // per command, send and reply
  std::chrono::milliseconds backoff_initial{100};  // wait after the first failure
  std::chrono::milliseconds backoff_max{5000};     // the doubling wait stops growing here
};

class RedisClient {
 public:
  using Clock = std::chrono::steady_clock;

  // Does not connect: the first command (or connect()) does.
  RedisClient(RedisUrl url, RedisClientOptions options = {});
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Connects (TCP, then AUTH and SELECT) if not connected. While in backoff after a failure it
  // throws CacheError(connect) at once without touching the network. A failure throws
  // CacheError(connect) and starts (or doubles) the backoff; success resets it.
  void connect();
  // Closes the connection (no backoff: the next command reconnects at once).
  void disconnect();
  bool connected() const { return context_ != nullptr; }
  // True when connected or when a connection attempt would be made now (backoff over).
  bool ready(Clock::time_point now = Clock::now()) const;
  // When the next connection attempt may be made (meaningful while disconnected).
  Clock::time_point next_attempt() const { return next_attempt_; }
  // The wait that the next failure will add.
  std::chrono::milliseconds backoff() const { return backoff_; }
  const RedisUrl& url() const { return url_; }

  // Every command connects first if needed (see connect()). A transport failure (timeout,
  // connection lost, protocol error) throws CacheError(command), closes the connection and
  // starts the backoff; an error reply (e.g. WRONGTYPE) throws CacheError(command) and keeps
  // the connection.

  // GET: the value, or nullopt when the key does not exist.
  std::optional<std::string> get(std::string_view key);
  // SET key value PX ttl (ttl > 0).
  void set(std::string_view key, std::string_view value, std::chrono::milliseconds ttl);
  // SET key value NX PX ttl: true when the key was set (it did not exist).
  bool set_nx(std::string_view key, std::string_view value, std::chrono::milliseconds ttl);
  // Deletes key only if it holds exactly `expected` (atomically, by a Lua script). Returns
  // whether it deleted.
  bool compare_and_delete(std::string_view key, std::string_view expected);
  bool exists(std::string_view key);
  // PTTL: milliseconds left; -1 when the key has no expiry, -2 when it does not exist.
  long long pttl(std::string_view key);
  // PEXPIRE key ttl only if it holds exactly `expected` (atomically, by a Lua script): renews a
  // lock this client still owns. Returns whether it renewed.
  bool compare_and_pexpire(std::string_view key, std::string_view expected,
                           std::chrono::milliseconds ttl);
  // PING; true on PONG.
  bool ping();
  // A health check that ignores the backoff (the caller paces it): connects if needed and
  // PINGs, the connect, AUTH/SELECT and the PING each limited to `timeout`. True on PONG. A
  // failure throws CacheError like a command (closing the connection); success resets the
  // backoff and leaves the connection open with the normal command timeout.
  bool probe(std::chrono::milliseconds timeout);

 private:
  struct Reply;
  // Connects (TCP, AUTH, SELECT) with `timeout` for each step; throws like connect().
  void open(std::chrono::milliseconds timeout);
  Reply command(std::initializer_list<std::string_view> args);
  // Closes the connection, starts or doubles the backoff and throws CacheError(kind).
  [[noreturn]] void fail(CacheError::Kind kind, const std::string& what);

  RedisUrl url_;
  RedisClientOptions options_;
  redisContext* context_ = nullptr;
  Clock::time_point next_attempt_{};
  std::chrono::milliseconds backoff_;
};

}  // namespace writeup::cache

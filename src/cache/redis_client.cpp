#include "writeup/cache/redis_client.hpp"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <charconv>
#include <memory>
#include <vector>

namespace writeup::cache {
namespace {

// Deletes a key only if it holds the caller's token, so that a lock that expired and was taken
// by another instance is never released by the old owner.
constexpr std::string_view kCompareAndDelete =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
    "else return 0 end";

// Sets a new time to live on a lock only if it still holds the caller's token: a holder renews
// its own lock, never one that expired and was taken by another instance.
constexpr std::string_view kCompareAndPexpire =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
    "else return 0 end";

timeval to_timeval(std::chrono::milliseconds ms) {
  const long long total = std::max<long long>(ms.count(), 1);
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(total / 1000);
  tv.tv_usec = static_cast<suseconds_t>((total % 1000) * 1000);
  return tv;
}

// hiredis writes with write(2): a peer that has gone away would raise SIGPIPE and kill the
// process. This blocks SIGPIPE in the calling thread around one call and swallows a SIGPIPE
// that the call raised (the write then fails with EPIPE instead).
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigset_t pending;
    sigemptyset(&pending);
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~SigpipeBlock() {
    if (!was_pending_) {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGPIPE);
      const timespec zero{0, 0};
      while (sigtimedwait(&set, nullptr, &zero) > 0) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t old_{};
  bool was_pending_ = false;
};

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

// Sends one command on `c`; nullptr on a transport failure (c->errstr says why).
ReplyPtr exec(redisContext* c, std::initializer_list<std::string_view> args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (std::string_view a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  SigpipeBlock guard;
  return ReplyPtr(static_cast<redisReply*>(
      redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data())));
}

std::string percent_decode(std::string_view s, const char* what) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    unsigned value = 0;
    if (i + 2 >= s.size()) {
      throw std::invalid_argument(std::string("redis URL: truncated %-escape in the ") + what);
    }
    const auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, value, 16);
    if (ec != std::errc() || p != s.data() + i + 3) {
      throw std::invalid_argument(std::string("redis URL: bad %-escape in the ") + what);
    }
    out += static_cast<char>(value);
    i += 2;
  }
  return out;
}

// Parses all of `s` as a decimal integer in [lo, hi]; nullopt otherwise.
std::optional<long> parse_number(std::string_view s, long lo, long hi) {
  long value = 0;
  if (s.empty() || s.front() == '+' || s.front() == '-') return std::nullopt;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || p != s.data() + s.size() || value < lo || value > hi) {
    return std::nullopt;
  }
  return value;
}

}  // namespace

RedisUrl RedisUrl::parse(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    throw std::invalid_argument("redis URL '" + std::string(url.substr(0, url.find(':'))) +
                                "...': the scheme must be redis:// (rediss:// is not supported)");
  }
  std::string_view rest = url.substr(kScheme.size());
  RedisUrl out;
  // The host, port and db cannot contain '@', so the last one ends the user info (a password
  // may then contain '@', '/' and ':').
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    const auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      throw std::invalid_argument("redis URL: the part before '@' must be [user]:password");
    }
    out.user = percent_decode(userinfo.substr(0, colon), "user name");
    out.password = percent_decode(userinfo.substr(colon + 1), "password");
    rest = rest.substr(at + 1);
  }
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    const std::string_view db = rest.substr(slash + 1);
    if (!db.empty()) {
      const auto n = parse_number(db, 0, 1 << 30);
      if (!n) {
        throw std::invalid_argument("redis URL: bad database number '" + std::string(db) +
                                    "' (a non-negative integer expected)");
      }
      out.db = static_cast<int>(*n);
    }
    rest = rest.substr(0, slash);
  }
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) {
      throw std::invalid_argument("redis URL: unterminated '[' in the IPv6 host");
    }
    out.host = std::string(rest.substr(1, close - 1));
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        throw std::invalid_argument("redis URL: unexpected '" + std::string(after) +
                                    "' after the IPv6 host");
      }
      port = after.substr(1);
      if (port.empty()) throw std::invalid_argument("redis URL: empty port after ':'");
    }
  } else {
    const auto colon = rest.find(':');
    out.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = rest.substr(colon + 1);
      if (port.empty()) throw std::invalid_argument("redis URL: empty port after ':'");
    }
  }
  if (out.host.empty()) throw std::invalid_argument("redis URL: missing host");
  if (!port.empty()) {
    const auto n = parse_number(port, 1, 65535);
    if (!n) {
      throw std::invalid_argument("redis URL: bad port '" + std::string(port) +
                                  "' (1..65535 expected)");
    }
    out.port = static_cast<int>(*n);
  }
  return out;
}

std::string RedisUrl::redacted() const {
  std::string out = "redis://";
  if (!user.empty() || !password.empty()) out += user + ":***@";
  out += host.find(':') != std::string::npos ? "[" + host + "]" : host;
  out += ":" + std::to_string(port) + "/" + std::to_string(db);
  return out;
}

struct RedisClient::Reply {
  ReplyPtr reply;
};

RedisClient::RedisClient(RedisUrl url, RedisClientOptions options)
    : url_(std::move(url)), options_(options), backoff_(options.backoff_initial) {}

RedisClient::~RedisClient() { disconnect(); }

void RedisClient::disconnect() {
  if (context_ != nullptr) {
    redisFree(context_);
    context_ = nullptr;
  }
}

bool RedisClient::ready(Clock::time_point now) const {
  return context_ != nullptr || now >= next_attempt_;
}

void RedisClient::fail(CacheError::Kind kind, const std::string& what) {
  disconnect();
  next_attempt_ = Clock::now() + backoff_;
  backoff_ = std::min(backoff_ * 2, std::max(options_.backoff_max, options_.backoff_initial));
  throw CacheError(kind, "redis " + url_.redacted() + ": " + what);
}

void RedisClient::connect() {
  if (context_ != nullptr) return;
  const auto now = Clock::now();
  if (now < next_attempt_) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(next_attempt_ - now);
    throw CacheError(CacheError::Kind::connect, "redis " + url_.redacted() +
                                                    ": not connected (next attempt in " +
                                                    std::to_string(left.count()) + " ms)");
  }
  open(options_.connect_timeout);
}

void RedisClient::open(std::chrono::milliseconds timeout) {
  context_ = redisConnectWithTimeout(url_.host.c_str(), url_.port, to_timeval(timeout));
  if (context_ == nullptr) fail(CacheError::Kind::connect, "cannot allocate a connection");
  if (context_->err != 0) {
    fail(CacheError::Kind::connect, std::string("cannot connect: ") + context_->errstr);
  }
  redisSetTimeout(context_, to_timeval(timeout));
  auto setup = [&](std::initializer_list<std::string_view> args, const char* what) {
    ReplyPtr r = exec(context_, args);
    if (!r) fail(CacheError::Kind::connect, std::string(what) + ": " + context_->errstr);
    if (r->type == REDIS_REPLY_ERROR) {
      fail(CacheError::Kind::connect,
           std::string(what) + " refused: " + std::string(r->str, r->len));
    }
  };
  if (!url_.password.empty()) {
    if (url_.user.empty()) {
      setup({"AUTH", url_.password}, "AUTH");
    } else {
      setup({"AUTH", url_.user, url_.password}, "AUTH");
    }
  }
  if (url_.db != 0) setup({"SELECT", std::to_string(url_.db)}, "SELECT");
  redisSetTimeout(context_, to_timeval(options_.command_timeout));
  backoff_ = options_.backoff_initial;
  next_attempt_ = {};
}

RedisClient::Reply RedisClient::command(std::initializer_list<std::string_view> args) {
  connect();
  ReplyPtr r = exec(context_, args);
  const std::string name(args.begin()->data(), args.begin()->size());
  if (!r) {
    fail(CacheError::Kind::command, name + " failed: " + std::string(context_->errstr));
  }
  if (r->type == REDIS_REPLY_ERROR) {
    throw CacheError(CacheError::Kind::command, "redis " + url_.redacted() + ": " + name +
                                                    " refused: " + std::string(r->str, r->len));
  }
  return Reply{std::move(r)};
}

namespace {
CacheError unexpected(const RedisUrl& url, const char* command, const redisReply* r) {
  return CacheError(CacheError::Kind::command, "redis " + url.redacted() + ": " + command +
                                                   ": unexpected reply type " +
                                                   std::to_string(r->type));
}
}  // namespace

std::optional<std::string> RedisClient::get(std::string_view key) {
  const Reply r = command({"GET", key});
  if (r.reply->type == REDIS_REPLY_NIL) return std::nullopt;
  if (r.reply->type != REDIS_REPLY_STRING) throw unexpected(url_, "GET", r.reply.get());
  return std::string(r.reply->str, r.reply->len);
}

void RedisClient::set(std::string_view key, std::string_view value, std::chrono::milliseconds ttl) {
  const std::string px = std::to_string(std::max<long long>(ttl.count(), 1));
  const Reply r = command({"SET", key, value, "PX", px});
  if (r.reply->type != REDIS_REPLY_STATUS) throw unexpected(url_, "SET", r.reply.get());
}

bool RedisClient::set_nx(std::string_view key, std::string_view value,
                         std::chrono::milliseconds ttl) {
  const std::string px = std::to_string(std::max<long long>(ttl.count(), 1));
  const Reply r = command({"SET", key, value, "NX", "PX", px});
  if (r.reply->type == REDIS_REPLY_NIL) return false;
  if (r.reply->type != REDIS_REPLY_STATUS) throw unexpected(url_, "SET NX", r.reply.get());
  return true;
}

bool RedisClient::compare_and_delete(std::string_view key, std::string_view expected) {
  const Reply r = command({"EVAL", kCompareAndDelete, "1", key, expected});
  if (r.reply->type != REDIS_REPLY_INTEGER) throw unexpected(url_, "EVAL", r.reply.get());
  return r.reply->integer == 1;
}

bool RedisClient::exists(std::string_view key) {
  const Reply r = command({"EXISTS", key});
  if (r.reply->type != REDIS_REPLY_INTEGER) throw unexpected(url_, "EXISTS", r.reply.get());
  return r.reply->integer > 0;
}

long long RedisClient::pttl(std::string_view key) {
  const Reply r = command({"PTTL", key});
  if (r.reply->type != REDIS_REPLY_INTEGER) throw unexpected(url_, "PTTL", r.reply.get());
  return r.reply->integer;
}

bool RedisClient::ping() {
  const Reply r = command({"PING"});
  return r.reply->type == REDIS_REPLY_STATUS &&
         std::string_view(r.reply->str, r.reply->len) == "PONG";
}

bool RedisClient::compare_and_pexpire(std::string_view key, std::string_view expected,
                                      std::chrono::milliseconds ttl) {
  const std::string px = std::to_string(std::max<long long>(ttl.count(), 1));
  const Reply r = command({"EVAL", kCompareAndPexpire, "1", key, expected, px});
  if (r.reply->type != REDIS_REPLY_INTEGER) throw unexpected(url_, "EVAL", r.reply.get());
  return r.reply->integer == 1;
}

bool RedisClient::probe(std::chrono::milliseconds timeout) {
  if (context_ == nullptr) open(timeout);
  redisSetTimeout(context_, to_timeval(timeout));
  ReplyPtr r = exec(context_, {"PING"});
  if (!r) fail(CacheError::Kind::command, std::string("PING failed: ") + context_->errstr);
  redisSetTimeout(context_, to_timeval(options_.command_timeout));
  const bool pong = r->type == REDIS_REPLY_STATUS && std::string_view(r->str, r->len) == "PONG";
  if (pong) {
    backoff_ = options_.backoff_initial;
    next_attempt_ = {};
  }
  return pong;
}

}  // namespace writeup::cache

#pragma once
// A real redis-server (WRITEUP_REDIS_SERVER_BIN) on a free loopback port, for the cache tests:
// no persistence, killed by the destructor, and restartable on the same port.
#include <sys/types.h>

#include <string>
#include <vector>

namespace writeup::test {

class RedisServer {
 public:
  // Picks a free port and starts the server; `extra_args` are appended (e.g. --requirepass x).
  // Throws std::runtime_error if it does not answer PING within 5 s.
  explicit RedisServer(std::vector<std::string> extra_args = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  bool running() const { return pid_ > 0; }

  void start();   // on the same port; waits until it answers PING
  void kill();    // SIGKILL and reap (no-op when not running)
  void stop();    // SIGSTOP: the process keeps its sockets but answers nothing
  void resume();  // SIGCONT

 private:
  int port_ = 0;
  pid_t pid_ = -1;
  std::vector<std::string> extra_args_;
};

// A loopback TCP port that nothing listens on (bound once, then released).
int free_port();

}  // namespace writeup::test

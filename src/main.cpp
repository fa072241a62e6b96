// writeup-server: serves GPT-2 models to the writeup editor (WebSocket), curl and OpenAI clients.
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include "writeup/server/config.hpp"
#include "writeup/server/listener.hpp"
#include "writeup/server/server_context.hpp"
#include "writeup/util/logging.hpp"
#include "writeup/util/threads.hpp"

namespace net = boost::asio;
using namespace writeup;

namespace {

// Runs on an I/O thread at SIGINT/SIGTERM. Stops accepting, fails queued and cancels running
// generations (their last frames go out), asks every session to close, and gives connections
// a moment to finish before the I/O threads stop. What runs on other threads (cache thread,
// CPU pool) is stopped by ServerContext::shutdown() once the I/O threads returned: only then
// can no session call into the service any more.
void shutdown(net::io_context& ioc, server::Listener& listener, server::ServerContext& ctx) {
  log::info("shutting down");
  ctx.stopping = true;
  listener.stop();
  ctx.models.stop();
  ctx.close_all();
  auto timer = std::make_shared<net::steady_timer>(ioc);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  // The poll holds itself only weakly: the pending wait's handler owns it, so it is freed with
  // the last handler (a strong self-capture would be a cycle that leaks at exit).
  auto poll = std::make_shared<std::function<void()>>();
  *poll = [&ioc, &ctx, timer, deadline, self = std::weak_ptr<std::function<void()>>(poll)] {
    if (ctx.connections.load() == 0 || std::chrono::steady_clock::now() > deadline) return ioc.stop();
    timer->expires_after(std::chrono::milliseconds(50));
    timer->async_wait([next = self.lock()](const boost::system::error_code&) {
      if (next) (*next)();
    });
  };
  (*poll)();
}

int run(int argc, char** argv) {
  bool help = false;
  auto config = server::parse_command_line(argc, argv, &help);
  if (help) {
    std::cout << server::command_line_usage();
    return 0;
  }
  log::set_level(log::parse_level(config.log_level));
  configure_threads(0);
  auto ctx = std::make_shared<server::ServerContext>(config);
  net::io_context ioc(config.server.io_threads);
  const auto endpoint = net::ip::tcp::endpoint(net::ip::make_address(config.server.host),
                                               static_cast<unsigned short>(config.server.port));
  auto listener = std::make_shared<server::Listener>(ioc, endpoint, ctx);
  listener->run();
  std::printf("writeup-server listening on http://%s:%u\n", config.server.host.c_str(), listener->port());
  if (!config.server.static_dir.empty()) {
    std::printf("writeup-server page at http://%s:%u/ (files from %s)\n", config.server.host.c_str(), listener->port(),
                config.server.static_dir.c_str());
  } else {
    log::info("no page at /: static_dir is off, or the editor page was not built (scripts/serve builds it with npm)");
  }
  std::fflush(stdout);
  log::info("listening on " + config.server.host + ":" + std::to_string(listener->port()) + " with " +
            std::to_string(config.models.size()) + " model(s)");
  for (const auto& m : config.models) {
    if (!m.notice.empty()) log::warn("model " + m.name + ": " + m.notice);
  }
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) shutdown(ioc, *listener, *ctx);
  });
  // What escapes a handler is a bug in one request: log it and keep the thread serving.
  const auto serve = [&ioc] {
    for (;;) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {
        log::error(std::string("I/O thread: unhandled exception: ") + e.what());
      } catch (...) {
        log::error("I/O thread: unhandled exception");
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < config.server.io_threads; ++i) threads.emplace_back(serve);
  serve();
  for (auto& t : threads) t.join();
  ctx->shutdown();  // workers, cache thread, CPU pool; the context is freed with the io_context's handlers
  log::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::cerr << "writeup-server: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "writeup-server: " << e.what() << "\n";
    return 1;
  }
}

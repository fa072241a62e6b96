#include "writeup/util/logging.hpp"

#include <spdlog/async.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <stdexcept>

namespace writeup::log {

Level parse_level(std::string_view name) {
  if (name == "trace") return Level::trace;
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warn") return Level::warn;
  if (name == "error") return Level::error;
  if (name == "off") return Level::off;
  throw std::invalid_argument("unknown log level '" + std::string(name) +
                              "' (expected trace, debug, info, warn, error or off)");
}

void set_level(Level level) {
  static constexpr spdlog::level::level_enum map[] = {
      spdlog::level::trace, spdlog::level::debug, spdlog::level::info,
      spdlog::level::warn,  spdlog::level::err,   spdlog::level::off};
  spdlog::set_level(map[static_cast<int>(level)]);
}

void debug(const std::string& message) { spdlog::debug(message); }
void info(const std::string& message) { spdlog::info(message); }
void warn(const std::string& message) { spdlog::warn(message); }
void error(const std::string& message) { spdlog::error(message); }

namespace {

std::shared_ptr<spdlog::logger> request_logger(bool raw) {
  // Made once each, on first use (after set_level: the registry gives them the global level).
  static const auto text = spdlog::create_async_nb<spdlog::sinks::stdout_sink_mt>("requests");
  static const auto json = [] {
    auto l = spdlog::create_async_nb<spdlog::sinks::stdout_sink_mt>("requests_json");
    l->set_pattern("%v");
    return l;
  }();
  return raw ? json : text;
}

}  // namespace

void request(Level level, const std::string& line, bool raw) noexcept {
  try {
    const auto logger = request_logger(raw);
    if (level == Level::debug) {
      logger->debug(line);
    } else if (level == Level::info) {
      logger->info(line);
    } else if (level == Level::warn) {
      logger->warn(line);
    } else if (level == Level::error) {
      logger->error(line);
    }
  } catch (...) {
  }
}

}  // namespace writeup::log

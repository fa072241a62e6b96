#include "writeup/util/logging.hpp"

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

}  // namespace writeup::log

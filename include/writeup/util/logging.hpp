#pragma once
// Logging facade: spdlog stays inside src/util/logging.cpp.
#include <string>
#include <string_view>

namespace writeup::log {

enum class Level { trace, debug, info, warn, error, off };

// Parses "trace|debug|info|warn|error|off"; throws std::invalid_argument otherwise.
Level parse_level(std::string_view name);
void set_level(Level level);

void debug(const std::string& message);
void info(const std::string& message);
void warn(const std::string& message);
void error(const std::string& message);

}  // namespace writeup::log

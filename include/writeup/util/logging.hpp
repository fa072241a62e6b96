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

// One request log line, on a logger of its own whose queue never blocks the caller: when its
// sink (stdout) is slow, the oldest waiting lines are dropped. `raw`: the line alone (JSON
// lines), else with the time and level prefix of every other line. Never throws.
void request(Level level, const std::string& line, bool raw) noexcept;

}  // namespace writeup::log

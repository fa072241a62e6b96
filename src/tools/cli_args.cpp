#include "cli_args.hpp"

#include <cstdint>
#include <iostream>
#include <stdexcept>

#include "writeup/util/logging.hpp"

namespace writeup::tools {

CliArgs::CliArgs(int argc, char** argv, std::set<std::string> options, std::set<std::string> flags) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument '" + arg + "'");
    std::string name = arg.substr(2), value;
    if (const auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    } else if (options.count(name)) {
      if (i + 1 >= argc) throw std::invalid_argument("--" + name + " needs a value");
      value = argv[++i];
    } else {
      value = "1";
    }
    if (!options.count(name) && !flags.count(name)) {
      throw std::invalid_argument("unknown option --" + name);
    }
    values_[name] = value;
  }
}

bool CliArgs::has(const std::string& name) const { return values_.count(name) > 0; }

std::string CliArgs::get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string CliArgs::require(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw std::invalid_argument("--" + name + " is required");
  return it->second;
}

namespace {
template <typename T, typename F>
T parse(const std::string& name, const std::string& text, F convert) {
  try {
    std::size_t used = 0;
    T v = convert(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    throw std::invalid_argument("--" + name + ": '" + text + "' is not a valid number");
  }
}
}  // namespace

int CliArgs::get_int(const std::string& name, int fallback) const {
  if (!has(name)) return fallback;
  return parse<int>(name, get(name, ""), [](const std::string& s, std::size_t* u) { return std::stoi(s, u); });
}

double CliArgs::get_double(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  return parse<double>(name, get(name, ""), [](const std::string& s, std::size_t* u) { return std::stod(s, u); });
}

std::uint64_t CliArgs::get_u64(const std::string& name, std::uint64_t fallback) const {
  if (!has(name)) return fallback;
  return parse<std::uint64_t>(name, get(name, ""),
                              [](const std::string& s, std::size_t* u) { return std::stoull(s, u); });
}

int run_tool(const char* name, const char* usage, int (*run)(int, char**), int argc, char** argv) {
  // The engine's info lines (model loaded, KV-cache slots) would mix with the tool's output.
  log::set_level(log::Level::warn);
  try {
    return run(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::cerr << name << ": " << e.what() << "\n" << usage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace writeup::tools

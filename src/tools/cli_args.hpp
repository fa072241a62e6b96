#pragma once
// Tiny "--name value" / "--flag" parser shared by the command-line tools.
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace writeup::tools {

class CliArgs {
 public:
  // `options` take a value, `flags` do not; anything else is an error naming the argument.
  CliArgs(int argc, char** argv, std::set<std::string> options, std::set<std::string> flags);

  bool has(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback) const;
  std::string require(const std::string& name) const;
  int get_int(const std::string& name, int fallback) const;
  double get_double(const std::string& name, double fallback) const;
  std::uint64_t get_u64(const std::string& name, std::uint64_t fallback) const;

 private:
  std::map<std::string, std::string> values_;
};

// Runs a tool's `run`, turning exceptions into a message and an exit status: 2 for bad
// arguments (std::invalid_argument, with the usage), 1 for anything else.
int run_tool(const char* name, const char* usage, int (*run)(int, char**), int argc, char** argv);

}  // namespace writeup::tools

#pragma once
// Tiny "--name value" / "--flag" parser shared by the command-line tools.
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

}  // namespace writeup::tools

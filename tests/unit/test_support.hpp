#pragma once
// Paths to the test data copied from the golden fixtures, and small helpers.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace writeup::test {

std::filesystem::path data_dir();                       // tests/data
std::filesystem::path model_dir(const std::string& name);  // tests/data/<name>
nlohmann::json load_json(const std::filesystem::path& path);
std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& bytes);

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Runs a shell command, returning its exit status and captured stdout (stderr to stdout
// when `merge_stderr`).
struct CommandResult {
  int status = -1;
  std::string output;
};
CommandResult run_command(const std::string& command, bool merge_stderr = true);

}  // namespace writeup::test

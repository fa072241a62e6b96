#pragma once
// Paths to the test data copied from the golden fixtures, and small helpers.
#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "writeup/engine/job.hpp"

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

// A JobSink that collects a job's outputs and lets a test wait for its end.
class CollectingSink : public writeup::engine::JobSink {
 public:
  struct Sequence {
    std::vector<int> tokens;     // generated (EOS excluded)
    std::vector<float> logprobs;  // of each token in `tokens`
    std::vector<writeup::engine::TokenOutput> outputs;  // every output, as delivered
    writeup::engine::FinishReason finish = writeup::engine::FinishReason::none;
  };
  explicit CollectingSink(int sequences);

  void on_outputs(std::span<const writeup::engine::TokenOutput> outputs) override;
  void on_error(writeup::engine::ErrorKind kind, const std::string& message) override;

  // Waits (at most `limit`) until every sequence ended or the job failed; true when it did.
  bool wait(std::chrono::milliseconds limit = std::chrono::minutes(2)) const;
  std::vector<Sequence> sequences() const;
  std::vector<std::vector<int>> tokens() const;
  std::string error() const;    // to_string(kind) of the failure, "" when none
  std::string message() const;  // the failure's message
  int calls() const;            // on_outputs + on_error calls so far
  // Called first in on_outputs (e.g. to throw, or to call Job::stop inline).
  std::function<void(std::span<const writeup::engine::TokenOutput>)> on_each;

 private:
  bool ended_locked() const;
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<Sequence> seqs_;
  std::string error_, message_;
  int calls_ = 0;
  bool failed_ = false;
};

}  // namespace writeup::test

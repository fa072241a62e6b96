#include "test_support.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace writeup::test {

std::filesystem::path data_dir() { return WRITEUP_TEST_DATA_DIR; }
std::filesystem::path model_dir(const std::string& name) { return data_dir() / name; }

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

nlohmann::json load_json(const std::filesystem::path& path) {
  return nlohmann::json::parse(read_file(path));
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() /
          ("writeup-test-" + std::to_string(rd()) + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

CommandResult run_command(const std::string& command, bool merge_stderr) {
  CommandResult r;
  FILE* pipe = ::popen((command + (merge_stderr ? " 2>&1" : "")).c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  const int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

CollectingSink::CollectingSink(int sequences) : seqs_(static_cast<std::size_t>(std::max(0, sequences))) {}

void CollectingSink::on_outputs(std::span<const writeup::engine::TokenOutput> outputs) {
  if (on_each) on_each(outputs);
  using writeup::engine::FinishReason;
  {
    std::lock_guard lock(mutex_);
    ++calls_;
    for (const auto& o : outputs) {
      if (o.index < 0 || o.index >= static_cast<int>(seqs_.size())) throw std::logic_error("output of no sequence");
      auto& s = seqs_[static_cast<std::size_t>(o.index)];
      if (s.finish != FinishReason::none) throw std::logic_error("output after the sequence's end");
      s.outputs.push_back(o);
      if (o.token >= 0 && o.finish != FinishReason::eos) {
        s.tokens.push_back(o.token);
        s.logprobs.push_back(o.logprob);
      }
      s.finish = o.finish;
    }
  }
  cv_.notify_all();
}

void CollectingSink::on_error(writeup::engine::ErrorKind kind, const std::string& message) {
  {
    std::lock_guard lock(mutex_);
    ++calls_;
    if (failed_) throw std::logic_error("on_error called twice");
    failed_ = true;
    error_ = writeup::engine::to_string(kind);
    message_ = message;
  }
  cv_.notify_all();
}

bool CollectingSink::ended_locked() const {
  if (failed_) return true;
  for (const auto& s : seqs_) {
    if (s.finish == writeup::engine::FinishReason::none) return false;
  }
  return true;
}

bool CollectingSink::wait(std::chrono::milliseconds limit) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, limit, [&] { return ended_locked(); });
}

std::vector<CollectingSink::Sequence> CollectingSink::sequences() const {
  std::lock_guard lock(mutex_);
  return seqs_;
}

std::vector<std::vector<int>> CollectingSink::tokens() const {
  std::lock_guard lock(mutex_);
  std::vector<std::vector<int>> out;
  for (const auto& s : seqs_) out.push_back(s.tokens);
  return out;
}

std::string CollectingSink::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

std::string CollectingSink::message() const {
  std::lock_guard lock(mutex_);
  return message_;
}

int CollectingSink::calls() const {
  std::lock_guard lock(mutex_);
  return calls_;
}

}  // namespace writeup::test

#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace writeup::model {

enum class DType { F32, F16, BF16 };

std::size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // "F32", "F16", "BF16"

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  // byte range relative to the start of the data section
  std::uint64_t end = 0;
  std::int64_t numel() const;
};

// A read-only safetensors file mapped into memory. The header is validated on open: length
// bound, JSON, dtype, shape x element size == byte range, ranges inside the file and not
// overlapping. Every error names the file and the tensor.
class SafetensorsFile {
 public:
  static constexpr std::uint64_t kMaxHeaderBytes = 100ull << 20;

  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::uint64_t file_size() const { return size_; }
  std::string_view header() const { return header_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  // The tensor's bytes inside the mapping (valid while this object lives).
  const std::byte* data(const TensorInfo& info) const;

  // A stable 64-bit digest that changes with the tensor values without reading them all: the
  // header and file size, then the data section whole when it is at most kDigestWholeBytes,
  // else the windows below. Reads ~1.5 MB of a 1.4 GB file.
  static constexpr std::uint64_t kDigestWindowBytes = 4096;
  static constexpr std::uint64_t kDigestWholeBytes = 1ull << 20;
  static constexpr std::size_t kDigestSpacedWindows = 64;
  static constexpr std::size_t kDigestMaxTensorWindows = 1024;
  std::uint64_t content_digest() const;
  // The [begin, end) byte ranges of the data section that content_digest() hashes, in order:
  // the first and last window, kDigestSpacedWindows evenly spaced ones, and one in the middle
  // of every tensor (of evenly chosen ones when there are more than kDigestMaxTensorWindows).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> digest_windows() const;

 private:
  SafetensorsFile() = default;
  void parse_header();

  std::filesystem::path path_;
  const std::byte* base_ = nullptr;  // the whole mapping
  std::uint64_t size_ = 0;
  std::uint64_t data_offset_ = 0;  // 8 + header length
  std::string header_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
};

// Writes a safetensors file tensor by tensor: `produce(i)` returns the bytes of tensors[i]
// (exactly numel x dtype size) so that large models never sit in memory whole.
struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
};
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const std::map<std::string, std::string>& metadata,
                       const std::function<std::string(std::size_t)>& produce);

}  // namespace writeup::model

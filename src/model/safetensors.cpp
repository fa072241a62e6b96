#include "writeup/model/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "writeup/model/errors.hpp"
#include "writeup/util/hash.hpp"

namespace writeup::model {
namespace {

DType parse_dtype(const std::string& s, const std::string& where) {
  if (s == "F32") return DType::F32;
  if (s == "F16") return DType::F16;
  if (s == "BF16") return DType::BF16;
  throw ModelError(where + ": unsupported dtype '" + s + "' (expected F32, F16 or BF16)");
}

std::uint64_t read_u64_le(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

TensorInfo parse_entry(const std::string& name, const nlohmann::json& e, const std::string& file,
                       std::uint64_t data_bytes) {
  const std::string where = file + ": tensor '" + name + "'";
  if (!e.is_object()) throw ModelError(where + ": entry is not an object");
  TensorInfo t;
  t.name = name;
  if (!e.contains("dtype") || !e["dtype"].is_string()) throw ModelError(where + ": no dtype");
  t.dtype = parse_dtype(e["dtype"].get<std::string>(), where);
  if (!e.contains("shape") || !e["shape"].is_array()) throw ModelError(where + ": no shape");
  for (const auto& d : e["shape"]) {
    if (!d.is_number_unsigned()) throw ModelError(where + ": shape has a non-integer dimension");
    t.shape.push_back(static_cast<std::int64_t>(d.get<std::uint64_t>()));
  }
  const auto& off = e.contains("data_offsets") ? e["data_offsets"] : nlohmann::json();
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned()) {
    throw ModelError(where + ": data_offsets must be two non-negative integers");
  }
  t.begin = off[0].get<std::uint64_t>();
  t.end = off[1].get<std::uint64_t>();
  if (t.end < t.begin) throw ModelError(where + ": data_offsets end before they begin");
  if (t.end > data_bytes) {
    throw ModelError(where + ": data_offsets [" + std::to_string(t.begin) + ", " +
                     std::to_string(t.end) + ") run past the end of the data (" +
                     std::to_string(data_bytes) + " bytes; truncated?)");
  }
  // numel x element size, guarding against overflow from lying headers.
  std::uint64_t bytes = dtype_size(t.dtype);
  bool too_big = false;
  if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) bytes = 0;
  for (auto d : t.shape) {
    if (bytes == 0) break;
    too_big = __builtin_mul_overflow(bytes, static_cast<std::uint64_t>(d), &bytes) ||
              bytes > data_bytes;
    if (too_big) break;
  }
  if (too_big || bytes != t.end - t.begin) {
    throw ModelError(where + ": shape and dtype need " +
                     (too_big ? std::string("more than the file holds") : std::to_string(bytes)) +
                     " bytes but data_offsets span " + std::to_string(t.end - t.begin));
  }
  return t;
}

}  // namespace

std::size_t dtype_size(DType dtype) { return dtype == DType::F32 ? 4 : 2; }

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "?";
}

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw ModelError(path.string() + ": cannot open (" + std::strerror(errno) + ")");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ModelError(path.string() + ": not a regular file");
  }
  f->size_ = static_cast<std::uint64_t>(st.st_size);
  if (f->size_ < 8) {
    ::close(fd);
    throw ModelError(path.string() + ": too short for a safetensors file (" +
                     std::to_string(f->size_) + " bytes)");
  }
  void* p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw ModelError(path.string() + ": mmap failed: " + std::strerror(errno));
  f->base_ = static_cast<const std::byte*>(p);
  f->parse_header();
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (base_) ::munmap(const_cast<std::byte*>(base_), size_);
}

void SafetensorsFile::parse_header() {
  const std::string file = path_.string();
  const std::uint64_t n = read_u64_le(base_);
  if (n > kMaxHeaderBytes) {
    throw ModelError(file + ": header length " + std::to_string(n) + " exceeds the " +
                     std::to_string(kMaxHeaderBytes) + "-byte limit (not a safetensors file?)");
  }
  if (n > size_ - 8) {
    throw ModelError(file + ": header length " + std::to_string(n) + " runs past the end of the " +
                     std::to_string(size_) + "-byte file (truncated?)");
  }
  data_offset_ = 8 + n;
  header_.assign(reinterpret_cast<const char*>(base_ + 8), n);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header_);
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(file + ": header is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw ModelError(file + ": header is not a JSON object");
  const std::uint64_t data_bytes = size_ - data_offset_;
  for (const auto& [name, entry] : j.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw ModelError(file + ": __metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) throw ModelError(file + ": __metadata__ '" + k + "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    tensors_.push_back(parse_entry(name, entry, file, data_bytes));
  }
  auto sorted = tensors_;
  std::sort(sorted.begin(), sorted.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.begin < b.begin; });
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].begin < sorted[i - 1].end) {
      throw ModelError(file + ": tensor '" + sorted[i].name + "' overlaps tensor '" +
                       sorted[i - 1].name + "'");
    }
  }
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const std::byte* SafetensorsFile::data(const TensorInfo& info) const {
  return base_ + data_offset_ + info.begin;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> SafetensorsFile::digest_windows() const {
  const std::uint64_t data_bytes = size_ - data_offset_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> windows;
  if (data_bytes <= kDigestWholeBytes) {
    if (data_bytes > 0) windows.emplace_back(0, data_bytes);
    return windows;
  }
  const std::uint64_t w = kDigestWindowBytes;  // data_bytes > w here
  windows.emplace_back(0, w);
  windows.emplace_back(data_bytes - w, data_bytes);
  for (std::size_t i = 0; i < kDigestSpacedWindows; ++i) {
    const std::uint64_t begin = (data_bytes - w) * i / (kDigestSpacedWindows - 1);
    windows.emplace_back(begin, begin + w);
  }
  // Every tensor's middle, so that a model whose training changed a single tensor (a bias, a
  // layer norm) still gets a new digest.
  const std::size_t n = tensors_.size();
  const std::size_t picked = std::min(n, kDigestMaxTensorWindows);
  for (std::size_t k = 0; k < picked; ++k) {
    const TensorInfo& t = tensors_[k * n / picked];
    const std::uint64_t bytes = t.end - t.begin;
    if (bytes == 0) continue;
    const std::uint64_t len = std::min(bytes, w);
    const std::uint64_t begin = t.begin + (bytes - len) / 2;
    windows.emplace_back(begin, begin + len);
  }
  return windows;
}

std::uint64_t SafetensorsFile::content_digest() const {
  std::uint64_t h = fnv1a64(header_);
  h = splitmix64(h ^ size_);
  const auto* data = reinterpret_cast<const char*>(base_ + data_offset_);
  // Scattered reads: without this hint every page fault of a cold file reads ahead up to the
  // device's read-ahead (8 MiB here), i.e. the whole file for a medium model (2 s instead of
  // milliseconds). The hint is advice only, so its result is ignored.
  auto* mapping = const_cast<std::byte*>(base_);
  ::madvise(mapping, size_, MADV_RANDOM);
  for (const auto& [begin, end] : digest_windows()) {
    h = fnv1a64(std::string_view(data + begin, end - begin), splitmix64(h ^ begin));
  }
  ::madvise(mapping, size_, MADV_NORMAL);
  return h;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const std::map<std::string, std::string>& metadata,
                       const std::function<std::string(std::size_t)>& produce) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  std::vector<std::uint64_t> sizes;
  for (const auto& t : tensors) {
    std::uint64_t bytes = dtype_size(t.dtype);
    for (auto d : t.shape) bytes *= static_cast<std::uint64_t>(d);
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    sizes.push_back(bytes);
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw ModelError(path.string() + ": cannot create");
  const std::uint64_t n = h.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out.write(len, 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::string bytes = produce(i);
    if (bytes.size() != sizes[i]) {
      throw ModelError(path.string() + ": tensor '" + tensors[i].name + "' produced " +
                       std::to_string(bytes.size()) + " bytes, expected " +
                       std::to_string(sizes[i]));
    }
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  if (!out.flush()) throw ModelError(path.string() + ": write failed");
}

}  // namespace writeup::model

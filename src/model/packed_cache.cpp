#include "writeup/model/packed_cache.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include "writeup/util/hash.hpp"

namespace writeup::model {
namespace {

constexpr char kMagic[8] = {'W', 'U', 'P', 'A', 'C', 'K', 'E', 'D'};
constexpr std::uint64_t kAlign = 64;
constexpr std::uint64_t kChunk = 1ull << 20;

// Native byte order (the file is a cache of this machine's packing, not an exchange format).
struct FileHeader {
  char magic[8];
  std::uint32_t layout_version, tile, int8_group, format;
  std::uint32_t entries, reserved;
  std::uint64_t file_size, data_offset, data_checksum;
  std::uint64_t header_checksum;  // over this header (with this field 0) and the entry table
  char fingerprint[128];          // NUL-padded
  char unused[64];
};
static_assert(sizeof(FileHeader) == 256);

struct FileEntry {
  std::int64_t k, n;
  std::uint64_t packed_offset, packed_bytes, scales_offset, scales_bytes, bias_offset, bias_bytes;
};
static_assert(sizeof(FileEntry) == 64);

std::uint64_t align_up(std::uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

std::size_t element_size(WeightFormat f) { return f == WeightFormat::f32 ? 4 : f == WeightFormat::bf16 ? 2 : 1; }

// The byte sizes a [K, N] layer's parts must have.
FileEntry expected_entry(std::int64_t k, std::int64_t n, WeightFormat format) {
  const auto T = static_cast<std::uint64_t>(PackedLinear::kTile);
  const auto tiles = static_cast<std::uint64_t>((n + PackedLinear::kTile - 1) / PackedLinear::kTile);
  const auto groups = static_cast<std::uint64_t>((k + PackedLinear::kInt8Group - 1) / PackedLinear::kInt8Group);
  FileEntry e{};
  e.k = k;
  e.n = n;
  e.packed_bytes = tiles * static_cast<std::uint64_t>(PackedLinear::packed_rows(format, k)) * T * element_size(format);
  e.scales_bytes = format == WeightFormat::int8 ? tiles * groups * T * sizeof(float) : 0;
  e.bias_bytes = tiles * T * sizeof(float);
  return e;
}

std::uint64_t header_checksum(FileHeader h, const FileEntry* entries) {
  h.header_checksum = 0;
  const auto first = fnv1a64(std::string_view(reinterpret_cast<const char*>(&h), sizeof h));
  return fnv1a64(std::string_view(reinterpret_cast<const char*>(entries), sizeof(FileEntry) * h.entries), first);
}

std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// One chunk: each lane's step is a bijection of the lane for a fixed word and of the word for a
// fixed lane, so any change of one word changes that lane's result.
std::uint64_t chunk_hash(const unsigned char* p, std::uint64_t bytes, std::uint64_t index) {
  constexpr std::uint64_t P1 = 0x9E3779B185EBCA87ull, P2 = 0xC2B2AE3D27D4EB4Full;
  std::uint64_t lane[8];
  for (int j = 0; j < 8; ++j) lane[j] = splitmix64(index * 8 + static_cast<std::uint64_t>(j));
  for (std::uint64_t off = 0; off < bytes; off += 64) {
    for (int j = 0; j < 8; ++j) {
      std::uint64_t w;
      std::memcpy(&w, p + off + static_cast<std::uint64_t>(j) * 8, 8);
      lane[j] = rotl((lane[j] ^ w) * P1, 31);
    }
  }
  std::uint64_t h = bytes * P2;
  for (int j = 0; j < 8; ++j) h = splitmix64(h ^ lane[j]);
  return h;
}

struct Mapping {
  void* base = MAP_FAILED;
  std::size_t size = 0;
  ~Mapping() {
    if (base != MAP_FAILED) ::munmap(base, size);
  }
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

bool write_all(int fd, const void* data, std::uint64_t bytes, std::uint64_t offset, std::string& why) {
  const auto* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const auto chunk = static_cast<std::size_t>(std::min<std::uint64_t>(bytes, 1ull << 30));
    const ssize_t n = ::pwrite(fd, p, chunk, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      why = "write failed: " + errno_text(n < 0 ? errno : ENOSPC);
      return false;
    }
    p += n;
    offset += static_cast<std::uint64_t>(n);
    bytes -= static_cast<std::uint64_t>(n);
  }
  return true;
}

bool fail(std::string* why, std::string text) {
  if (why) *why = std::move(text);
  return false;
}

// The background writers; joined by finish_writes() and, at the latest, at exit (this object is
// built on the first write, after the logger and libtorch, so it is destroyed before them).
class Writers {
 public:
  ~Writers() { finish(); }
  void start(std::function<void()> job) {
    std::lock_guard lock(mutex_);
    threads_.emplace_back(std::move(job));
  }
  void finish() {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(mutex_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

 private:
  std::mutex mutex_;
  std::vector<std::thread> threads_;
};

Writers& writers() {
  static Writers w;
  return w;
}

}  // namespace

void PackedCache::write_in_background(std::filesystem::path path, PackedCacheKey key, std::vector<PackedLinear> layers,
                                      std::function<void(bool, const std::string&)> done) {
  writers().start([path = std::move(path), key = std::move(key), layers = std::move(layers), done = std::move(done)] {
    std::vector<const PackedLinear*> pointers;
    for (const auto& l : layers) pointers.push_back(&l);
    std::string why;
    bool written = false;
    try {
      written = write(path, key, pointers, &why);
    } catch (const std::exception& e) {
      why = e.what();
    }
    if (done) done(written, why);
  });
}

void PackedCache::finish_writes() { writers().finish(); }

std::filesystem::path PackedCache::directory(const std::string& setting, const std::filesystem::path& model_dir) {
  if (setting.empty() || setting == "off") return {};
  if (setting != "auto") return setting;
  if (const char* env = std::getenv("WRITEUP_PACKED_CACHE"); env && *env) {
    return std::string(env) == "off" ? std::filesystem::path() : std::filesystem::path(env);
  }
  const auto beside = model_dir / ".writeup-cache";
  std::error_code ec;
  const bool exists = std::filesystem::is_directory(beside, ec);
  if (::access((exists ? beside : model_dir).c_str(), W_OK | X_OK) == 0) return beside;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg == '/') return std::filesystem::path(xdg) / "writeup";
  if (const char* home = std::getenv("HOME"); home && *home == '/') {
    return std::filesystem::path(home) / ".cache" / "writeup";
  }
  return {};
}

std::string PackedCache::file_name(const PackedCacheKey& key) {
  return key.fingerprint + "-" + to_string(key.format) + "-v" + std::to_string(kLayoutVersion) + "-t" +
         std::to_string(PackedLinear::kTile) + "-g" + std::to_string(PackedLinear::kInt8Group) + ".packed";
}

std::uint64_t PackedCache::checksum(const void* data, std::uint64_t bytes, bool parallel) {
  const auto* p = static_cast<const unsigned char*>(data);
  const auto chunks = static_cast<std::int64_t>((bytes + kChunk - 1) / kChunk);
  std::vector<std::uint64_t> hashes(static_cast<std::size_t>(chunks));
  auto hash = [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      const auto off = static_cast<std::uint64_t>(c) * kChunk;
      hashes[static_cast<std::size_t>(c)] = chunk_hash(p + off, std::min(kChunk, bytes - off), static_cast<std::uint64_t>(c));
    }
  };
  if (parallel) {
    at::parallel_for(0, chunks, 1, hash);
  } else {
    hash(0, chunks);
  }
  std::uint64_t h = splitmix64(bytes);
  for (const auto v : hashes) h = splitmix64(h ^ v);
  return h;
}

std::vector<PackedLinear> PackedCache::read(const std::filesystem::path& path, const PackedCacheKey& key,
                                            std::string* why) {
  std::string reason;
  auto give_up = [&](std::string text) {
    if (why) *why = std::move(text);
    return std::vector<PackedLinear>{};
  };
  Fd file{::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK)};  // O_NONBLOCK: a FIFO never blocks
  if (file.fd < 0) return give_up(errno == ENOENT ? "missing" : "cannot open: " + errno_text(errno));
  struct stat st{};
  if (::fstat(file.fd, &st) != 0) return give_up("cannot stat: " + errno_text(errno));
  if (!S_ISREG(st.st_mode)) return give_up("not a regular file");
  const auto size = static_cast<std::uint64_t>(st.st_size);
  FileHeader h{};
  if (size < sizeof h || ::pread(file.fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) {
    return give_up("truncated (" + std::to_string(size) + " bytes)");
  }
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) return give_up("not a packed-weights cache file (magic)");
  if (h.layout_version != kLayoutVersion || h.tile != PackedLinear::kTile || h.int8_group != PackedLinear::kInt8Group) {
    return give_up("layout version " + std::to_string(h.layout_version) + " (tile " + std::to_string(h.tile) +
                   ", int8 group " + std::to_string(h.int8_group) + "), expected " + std::to_string(kLayoutVersion));
  }
  if (h.file_size != size) return give_up("size " + std::to_string(size) + ", header says " + std::to_string(h.file_size));
  if (h.format != static_cast<std::uint32_t>(key.format)) return give_up("another weight format");
  h.fingerprint[sizeof h.fingerprint - 1] = '\0';
  if (key.fingerprint != h.fingerprint) return give_up(std::string("weights fingerprint ") + h.fingerprint);
  if (h.entries != key.shapes.size()) return give_up(std::to_string(h.entries) + " layers");
  const std::uint64_t table_end = sizeof h + std::uint64_t{h.entries} * sizeof(FileEntry);
  if (h.data_offset != align_up(table_end) || h.data_offset > size || (size - h.data_offset) % kAlign != 0) {
    return give_up("bad data offset");
  }
  auto map = std::make_shared<Mapping>();
  map->base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, file.fd, 0);
  if (map->base == MAP_FAILED) return give_up("cannot map: " + errno_text(errno));
  map->size = size;
  const auto* base = static_cast<const unsigned char*>(map->base);
  const auto* entries = reinterpret_cast<const FileEntry*>(base + sizeof h);
  if (header_checksum(h, entries) != h.header_checksum) return give_up("header checksum mismatch");
  auto inside = [&](std::uint64_t off, std::uint64_t bytes) {
    return off % kAlign == 0 && off >= h.data_offset && off <= size && bytes <= size - off;
  };
  for (std::size_t i = 0; i < key.shapes.size(); ++i) {
    const FileEntry& e = entries[i];
    const FileEntry want = expected_entry(key.shapes[i].first, key.shapes[i].second, key.format);
    if (e.k != want.k || e.n != want.n || e.packed_bytes != want.packed_bytes || e.scales_bytes != want.scales_bytes ||
        e.bias_bytes != want.bias_bytes || !inside(e.packed_offset, e.packed_bytes) ||
        !inside(e.scales_offset, e.scales_bytes) || !inside(e.bias_offset, e.bias_bytes)) {
      return give_up("layer " + std::to_string(i) + " does not match its shape");
    }
  }
  if (checksum(base + h.data_offset, size - h.data_offset) != h.data_checksum) return give_up("data checksum mismatch");

  const auto T = PackedLinear::kTile;
  const auto storage = key.format == WeightFormat::f32    ? at::kFloat
                       : key.format == WeightFormat::bf16 ? at::kShort
                                                          : at::kChar;
  auto view = [&](std::uint64_t off, std::vector<std::int64_t> shape, at::ScalarType type) {
    auto keep = map;  // each view holds the mapping
    return at::from_blob(const_cast<unsigned char*>(base + off), shape, [keep](void*) mutable { keep.reset(); },
                         at::TensorOptions().dtype(type));
  };
  std::vector<PackedLinear> out;
  out.reserve(key.shapes.size());
  for (std::size_t i = 0; i < key.shapes.size(); ++i) {
    const FileEntry& e = entries[i];
    const std::int64_t tiles = (e.n + T - 1) / T, groups = (e.k + PackedLinear::kInt8Group - 1) / PackedLinear::kInt8Group;
    out.push_back(PackedLinear::from_parts(
        key.format, e.k, e.n, view(e.packed_offset, {tiles, PackedLinear::packed_rows(key.format, e.k), T}, storage),
        key.format == WeightFormat::int8 ? view(e.scales_offset, {tiles, groups, T}, at::kFloat) : at::Tensor(),
        view(e.bias_offset, {tiles * T}, at::kFloat)));
  }
  return out;
}

bool PackedCache::write(const std::filesystem::path& path, const PackedCacheKey& key,
                        const std::vector<const PackedLinear*>& layers, std::string* why) {
  if (layers.size() != key.shapes.size()) return fail(why, "layer count does not match the key");
  if (key.fingerprint.size() >= sizeof(FileHeader::fingerprint)) return fail(why, "fingerprint too long");
  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.layout_version = kLayoutVersion;
  h.tile = PackedLinear::kTile;
  h.int8_group = PackedLinear::kInt8Group;
  h.format = static_cast<std::uint32_t>(key.format);
  h.entries = static_cast<std::uint32_t>(layers.size());
  std::memcpy(h.fingerprint, key.fingerprint.data(), key.fingerprint.size());
  std::vector<FileEntry> entries(layers.size());
  std::uint64_t off = align_up(sizeof h + sizeof(FileEntry) * layers.size());
  h.data_offset = off;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const PackedLinear& l = *layers[i];
    FileEntry e = expected_entry(key.shapes[i].first, key.shapes[i].second, key.format);
    if (l.format() != key.format || l.in_features() != e.k || l.out_features() != e.n ||
        l.packed().nbytes() != e.packed_bytes || l.bias().nbytes() != e.bias_bytes ||
        (l.scales().defined() ? l.scales().nbytes() : 0) != e.scales_bytes) {
      return fail(why, "layer " + std::to_string(i) + " does not match the key");
    }
    e.packed_offset = off;
    off = align_up(off + e.packed_bytes);
    e.scales_offset = off;
    off = align_up(off + e.scales_bytes);
    e.bias_offset = off;
    off = align_up(off + e.bias_bytes);
    entries[i] = e;
  }
  h.file_size = off;

  std::error_code ec;
  std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) return fail(why, "cannot create " + path.parent_path().string() + ": " + ec.message());
  static std::atomic<unsigned> counter{0};
  const auto tmp = path.string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  Fd file{::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)};
  if (file.fd < 0) return fail(why, "cannot create " + tmp + ": " + errno_text(errno));
  std::string reason;
  auto abandon = [&](std::string text) {
    ::unlink(tmp.c_str());
    return fail(why, std::move(text));
  };
  // Data first (zero padding included, so the checksum covers defined bytes), the header last.
  static const char zeros[kAlign] = {};
  std::uint64_t at = h.data_offset;
  auto put = [&](const at::Tensor& t, std::uint64_t offset) {
    if (!t.defined()) return true;
    if (at < offset && !write_all(file.fd, zeros, offset - at, at, reason)) return false;
    if (!write_all(file.fd, t.data_ptr(), t.nbytes(), offset, reason)) return false;
    at = offset + t.nbytes();
    return true;
  };
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (!put(layers[i]->packed(), entries[i].packed_offset) || !put(layers[i]->scales(), entries[i].scales_offset) ||
        !put(layers[i]->bias(), entries[i].bias_offset)) {
      return abandon(reason);
    }
  }
  if (at < h.file_size && !write_all(file.fd, zeros, h.file_size - at, at, reason)) return abandon(reason);
  {
    Mapping map;  // read the data back from the page cache for its checksum
    map.base = ::mmap(nullptr, h.file_size, PROT_READ, MAP_SHARED, file.fd, 0);
    if (map.base == MAP_FAILED) return abandon("cannot map " + tmp + ": " + errno_text(errno));
    map.size = h.file_size;
    // one thread: a background write leaves the intra-op threads to the model's first steps
    h.data_checksum = checksum(static_cast<const unsigned char*>(map.base) + h.data_offset, h.file_size - h.data_offset,
                               /*parallel=*/false);
  }
  h.header_checksum = header_checksum(h, entries.data());
  if (!write_all(file.fd, entries.data(), sizeof(FileEntry) * entries.size(), sizeof h, reason) ||
      !write_all(file.fd, &h, sizeof h, 0, reason)) {
    return abandon(reason);
  }
  if (::close(file.fd) != 0) {
    file.fd = -1;
    return abandon("write failed: " + errno_text(errno));
  }
  file.fd = -1;
  if (::rename(tmp.c_str(), path.c_str()) != 0) return abandon("cannot rename to " + path.string() + ": " + errno_text(errno));
  return true;
}

std::vector<std::filesystem::path> PackedCache::remove_stale(const std::filesystem::path& written,
                                                             const PackedCacheKey& key) {
  namespace fs = std::filesystem;
  std::vector<fs::path> removed;
  const std::string ours = file_name(key), prefix = key.fingerprint + "-" + to_string(key.format) + "-v";
  const auto hour_ago = fs::file_time_type::clock::now() - std::chrono::hours(1);
  // "<name>.packed.tmp.<pid>.<n>": a write of process <pid>, gone when kill(pid, 0) says so
  const auto dead_write = [&](const std::string& name, const fs::path& p) {
    const auto at = name.find(".packed.tmp.");
    if (at == std::string::npos) return false;
    const long pid = std::strtol(name.c_str() + at + 12, nullptr, 10);
    std::error_code ec;
    const auto when = fs::last_write_time(p, ec);
    return pid > 0 && !ec && when < hour_ago && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
  };
  try {
    std::error_code ec;
    for (fs::directory_iterator it(written.parent_path(), ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      const bool other_layout = name != ours && name.rfind(prefix, 0) == 0 && name.size() > 7 &&
                                name.compare(name.size() - 7, 7, ".packed") == 0;
      std::error_code kind;
      if (!it->is_regular_file(kind) || kind || !(other_layout || dead_write(name, it->path()))) continue;
      if (fs::remove(it->path(), kind)) removed.push_back(it->path());
    }
  } catch (...) {  // a cleanup that fails leaves files, nothing else
  }
  return removed;
}

}  // namespace writeup::model

#pragma once
// The packed-weights cache file: PackedLinear's layout (every block projection and the LM head,
// in one WeightFormat) written once after a model is packed, and mapped on the next load so the
// packed matrices are views into the mapping (no repack, no copy; the workers of one model, and
// every process loading it, share the page cache).
//
// File: a 256-byte header (magic, layout version, kTile, kInt8Group, format, the weights
// fingerprint, entry count, file size, data checksum, header checksum), one 64-byte entry per
// layer ([K, N], the offsets of its packed weights, int8 scales and bias, each 64-byte aligned),
// then the data. Written to a temporary name and renamed. Read: anything that does not match
// (missing, truncated, another magic, version, format, fingerprint or shape, a checksum) is
// logged and the caller repacks; never trusted, never a crash.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "writeup/model/packed_linear.hpp"

namespace writeup::model {

struct PackedCacheKey {
  std::string fingerprint;  // the weights file's digest (model_fingerprint), without a format suffix
  WeightFormat format = WeightFormat::f32;
  // Each layer's [K, N], in file order (GPT-2: 4 per block, then the LM head).
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;
};

class PackedCache {
 public:
  // Bump whenever PackedLinear's storage or this file's layout changes.
  // 2: int8 as k pairs in whole groups; 3: int8 scales in blocks of kInt8BlockTiles tiles;
  // 4: int8 weights in those blocks too, the block's tiles interleaved by k pair
  static constexpr std::uint32_t kLayoutVersion = 4;

  // The folder a setting names: "auto" = `.writeup-cache/` in `model_dir` when that is writable,
  // else $XDG_CACHE_HOME/writeup or ~/.cache/writeup; "" or "off" = none (an empty path);
  // anything else = that folder. A non-empty $WRITEUP_PACKED_CACHE ("off" or a folder) replaces
  // what "auto" means (test harnesses set it to off, so no tool writes beside tests/data).
  static std::filesystem::path directory(const std::string& setting, const std::filesystem::path& model_dir);
  // "<fingerprint>-<format>-v<version>-t<kTile>-g<kInt8Group>.packed"
  static std::string file_name(const PackedCacheKey& key);

  // Maps `path` and checks it against `key`; the layers (views into the mapping, which they keep
  // alive) or, when the file is missing or does not check out, an empty vector and the reason in
  // *why (a missing file: "missing").
  static std::vector<PackedLinear> read(const std::filesystem::path& path, const PackedCacheKey& key,
                                        std::string* why = nullptr);
  // Writes `layers` (in key.shapes' order) to a temporary file beside `path`, then renames it
  // over `path`; creates the folder. False with the reason in *why when anything fails (nothing
  // is left behind).
  static bool write(const std::filesystem::path& path, const PackedCacheKey& key,
                    const std::vector<const PackedLinear*>& layers, std::string* why = nullptr);

  // write() on a thread of its own, so a load does not wait for the disk: the thread holds the
  // layers' storage until it is done, then calls `done(written, why)`. Every such write ends
  // before the process exits (finish_writes() runs at exit too).
  static void write_in_background(std::filesystem::path path, PackedCacheKey key, std::vector<PackedLinear> layers,
                                  std::function<void(bool, const std::string&)> done);
  // Waits for every background write started so far.
  static void finish_writes();

  // After `written` (file_name(key)) is in place: removes, in its folder, the files of the same
  // weights and format with another layout (an older build's, never read again) and the
  // temporary files of writes whose process is gone (older than an hour). Other models' and
  // formats' files stay. Returns what it removed; never throws.
  static std::vector<std::filesystem::path> remove_stale(const std::filesystem::path& written,
                                                         const PackedCacheKey& key);

  // The checksum over the data: 64-bit words hashed in 8 independent lanes per 1 MiB chunk,
  // chunks in parallel (on the intra-op threads unless `parallel` is false; the same value either
  // way), their hashes folded in order. `bytes` a multiple of 64.
  static std::uint64_t checksum(const void* data, std::uint64_t bytes, bool parallel = true);
};

}  // namespace writeup::model

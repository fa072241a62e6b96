// Fuzz target: the safetensors reader. The bytes are written to a file and opened with
// model::SafetensorsFile::open, as the model loader does. Properties: a bad file is rejected
// with model::ModelError (nothing else), and every tensor of an accepted file lies inside the
// mapping with a byte range that matches its shape and dtype (reading its first and last byte
// is checked by AddressSanitizer).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz_support.hpp"
#include "writeup/model/errors.hpp"
#include "writeup/model/safetensors.hpp"

using namespace writeup;

namespace {
const std::filesystem::path& scratch_file() {
  static const auto path = std::filesystem::temp_directory_path() /
                           ("writeup-safetensors-fuzz-" + std::to_string(::getpid()) + ".safetensors");
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& path = scratch_file();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const auto file = model::SafetensorsFile::open(path);
    if (file->file_size() != size) fuzz::finding("file_size differs from the bytes written");
    unsigned sum = 0;
    for (const auto& t : file->tensors()) {
      if (t.end < t.begin) fuzz::finding("tensor " + t.name + ": end before begin");
      if (static_cast<std::uint64_t>(t.numel()) * model::dtype_size(t.dtype) != t.end - t.begin) {
        fuzz::finding("tensor " + t.name + ": byte range does not match shape x dtype");
      }
      if (file->find(t.name) == nullptr) fuzz::finding("tensor " + t.name + ": find() misses it");
      if (t.end > t.begin) {
        const auto* p = file->data(t);
        sum += static_cast<unsigned>(p[0]) + static_cast<unsigned>(p[t.end - t.begin - 1]);
      }
    }
    (void)sum;
  } catch (const model::ModelError&) {
    // rejected, with a message naming the file
  } catch (const std::exception& e) {
    fuzz::finding(std::string("SafetensorsFile::open threw a non-ModelError: ") + e.what());
  }
  return 0;
}

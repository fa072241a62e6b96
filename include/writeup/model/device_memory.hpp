#pragma once
// No ATen here: the service reads a worker's memory for its metrics.
#include <cstdint>

namespace writeup::model {

struct DeviceMemory {
  std::int64_t allocated = 0;  // bytes in live tensors
  std::int64_t reserved = 0;   // bytes held by the caching allocator
};

}  // namespace writeup::model

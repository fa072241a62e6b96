#pragma once
// The few device-allocator calls the engine needs, the same on CPU-only and CUDA builds (on
// a build without CUDA, or for a CPU device, they do nothing and report zeros).
#include <c10/core/Device.h>

#include <cstdint>

#include "writeup/model/device_memory.hpp"

namespace writeup::model {

// True when this binary was built against a libtorch with CUDA.
bool cuda_build();
DeviceMemory device_memory(const c10::Device& device);
// Returns the allocator's cached, unused blocks to the driver (after an out-of-memory error,
// before retrying with a smaller batch).
void empty_device_cache(const c10::Device& device);
// Caps what the caching allocator may take on `device`, as a fraction of its memory (0, 1];
// the GPU check uses it to provoke a real out-of-memory error. Throws std::invalid_argument.
void set_device_memory_fraction(const c10::Device& device, double fraction);

}  // namespace writeup::model

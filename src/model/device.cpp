#include "writeup/model/device.hpp"

#include <stdexcept>
#include <string>

#if defined(WRITEUP_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace writeup::model {

bool cuda_build() {
#if defined(WRITEUP_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

DeviceMemory device_memory(const c10::Device& device) {
  DeviceMemory m;
#if defined(WRITEUP_WITH_CUDA)
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
    // Index 0 is the aggregate over pool types (StatType::AGGREGATE, whose namespace moved
    // between PyTorch releases).
    m.allocated = stats.allocated_bytes[0].current;
    m.reserved = stats.reserved_bytes[0].current;
  }
#else
  (void)device;
#endif
  return m;
}

void empty_device_cache(const c10::Device& device) {
#if defined(WRITEUP_WITH_CUDA)
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

void set_device_memory_fraction(const c10::Device& device, double fraction) {
  if (!(fraction > 0 && fraction <= 1)) {
    throw std::invalid_argument("device memory fraction must be in (0, 1], got " + std::to_string(fraction));
  }
#if defined(WRITEUP_WITH_CUDA)
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, device.has_index() ? device.index() : 0);
  }
#else
  (void)device;
#endif
}

}  // namespace writeup::model

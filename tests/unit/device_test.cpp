#include "writeup/model/device.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace {

TEST(Device, CpuReportsNoDeviceMemoryAndIgnoresCacheCalls) {
  const c10::Device cpu("cpu");
  const auto m = writeup::model::device_memory(cpu);
  EXPECT_EQ(m.allocated, 0);
  EXPECT_EQ(m.reserved, 0);
  EXPECT_NO_THROW(writeup::model::empty_device_cache(cpu));
  EXPECT_NO_THROW(writeup::model::set_device_memory_fraction(cpu, 0.5));
}

TEST(Device, MemoryFractionOutsideZeroToOneIsRejected) {
  const c10::Device cpu("cpu");
  EXPECT_THROW(writeup::model::set_device_memory_fraction(cpu, 0), std::invalid_argument);
  EXPECT_THROW(writeup::model::set_device_memory_fraction(cpu, 1.5), std::invalid_argument);
  EXPECT_THROW(writeup::model::set_device_memory_fraction(cpu, -0.1), std::invalid_argument);
}

}  // namespace

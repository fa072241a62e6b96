#include "writeup/engine/device_failure.hpp"

#include <c10/util/Exception.h>

#include <array>
#include <typeinfo>

namespace writeup::engine {

bool is_device_failure_message(std::string_view message) {
  // What libtorch puts in the text of the errors its CUDA/accelerator checks raise, in 1.13
  // (a plain c10::Error "CUDA error: ...") and 2.x (c10::CUDAError / c10::AcceleratorError).
  static constexpr std::array<std::string_view, 10> kMarkers = {
      "CUDA error",        "CUDA driver error",    "CUBLAS_STATUS_", "cuDNN error",
      "CUDNN_STATUS_",     "NCCL error",           "device-side assert",
      "illegal memory access", "no CUDA-capable device", "Accelerator error",
  };
  for (const auto marker : kMarkers) {
    if (message.find(marker) != std::string_view::npos) return true;
  }
  return false;
}

bool is_device_failure(const std::exception& error) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error)) return false;
  const auto* c10 = dynamic_cast<const c10::Error*>(&error);
  if (!c10) return false;  // our own checks and the standard library: a request's problem
  // The 2.x types, by name, so that this compiles against 1.13 too.
  const std::string_view type = typeid(error).name();
  if (type.find("CUDAError") != std::string_view::npos || type.find("AcceleratorError") != std::string_view::npos) {
    return true;
  }
  return is_device_failure_message(c10->what_without_backtrace());
}

std::string describe(const std::exception& error) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&error)) return c10->what_without_backtrace();
  return error.what();
}

}  // namespace writeup::engine

#pragma once
// Telling a failed device from a failed request. A forward pass can throw for reasons that
// belong to one request (a bad token id, a shape the model cannot take, an allocation for one
// batch) or because the device itself is broken (a CUDA launch or driver error, an illegal
// memory access, a lost device). Only the second takes a worker out of rotation.
#include <exception>
#include <string>
#include <string_view>

namespace writeup::engine {

// True when `message` (an exception's text) reports a failure of the device or its runtime:
// CUDA, cuBLAS, cuDNN, NCCL or driver errors, device-side asserts, a lost accelerator.
bool is_device_failure_message(std::string_view message);

// True when `error` is such a failure. Out-of-memory is never one (the batch is split and the
// worker stays ready); std::invalid_argument and the like from our own checks never are.
bool is_device_failure(const std::exception& error);

// The error's text for a log line: c10 errors without their backtrace.
std::string describe(const std::exception& error);

}  // namespace writeup::engine

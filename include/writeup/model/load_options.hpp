#pragma once
// How to load a model: kept apart from gpt2_model.hpp so that headers without ATen (the
// engine's worker.hpp, which the service includes) can carry it.
#include <string>

namespace writeup::model {

struct LoadOptions {
  std::string device = "cpu";  // "cpu", "cuda", "cuda:N"
  std::string dtype = "auto";  // auto (float32 on CPU, float16 on CUDA), float32, float16, bfloat16
  bool packed = true;          // CPU: batch-invariant packed kernels (else BLAS GEMM/GEMV)
};

}  // namespace writeup::model

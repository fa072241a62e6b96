#pragma once
// How to load a model: kept apart from gpt2_model.hpp so that headers without ATen (the
// engine's worker.hpp, which the service includes) can carry it.
#include <string>

namespace writeup::model {

struct LoadOptions {
  std::string device = "cpu";  // "cpu", "cuda", "cuda:N"
  std::string dtype = "auto";  // auto (float32 on CPU, float16 on CUDA), float32, float16, bfloat16
  bool packed = true;          // CPU: batch-invariant packed kernels (else BLAS GEMM/GEMV)
  // How the packed kernels store the projection and LM-head weights: f32, bf16 or int8
  // (model::WeightFormat). Anything but f32 needs the CPU packed path (device cpu, packed).
  std::string weights = "f32";
  // Where the packed layout is cached between loads (model::PackedCache): "auto" (a
  // .writeup-cache/ folder beside the model when writable, else $XDG_CACHE_HOME/writeup or
  // ~/.cache/writeup), a folder, or "" / "off" for none. Off here, for libraries and tests; the
  // server's models[].packed_cache and the tools' --packed-cache default to "auto".
  std::string packed_cache;
};

}  // namespace writeup::model

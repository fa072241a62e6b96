#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace writeup::model {

// y = x @ W + b for float32 on the CPU, with W packed once into column tiles laid out for
// streaming ([N/16][K][16]), and a kernel whose every output element is the same fused
// multiply-add chain over k = 0..K-1 whatever the number of rows. So a row's result does not
// depend on which other rows share the batch (BLAS GEMM/GEMV pick different reduction orders
// by shape): the basis of batch-invariant, seeded determinism. Threads: libtorch's intra-op
// pool splits the tiles.
class PackedLinear {
 public:
  static constexpr std::int64_t kTile = 16;
  // Which kernel runs: the widest the CPU has (automatic), or, for tests, a narrower one
  // (falling back to generic when the CPU lacks it). Every kernel gives bitwise the same y.
  enum class Kernel { automatic, avx512, avx2, generic };
  static void force_kernel(Kernel kernel);
  static bool allows(Kernel kernel);  // not excluded by force_kernel (the CPU may still lack it)

  PackedLinear() = default;
  // `weight` [K, N] (HF Conv1D layout) or, with `transposed`, [N, K] (e.g. wte for the LM head);
  // `bias` [N] or undefined.
  PackedLinear(const at::Tensor& weight, const at::Tensor& bias, bool transposed = false);

  bool defined() const { return packed_.defined(); }
  std::int64_t in_features() const { return k_; }
  std::int64_t out_features() const { return n_; }
  std::size_t bytes() const;

  at::Tensor forward(const at::Tensor& x) const;  // x [M, K] float32 -> [M, N]
  // The same into caller-owned memory: x [M, K] row-major, y [M, N] row-major.
  void forward(const float* x, std::int64_t M, float* y) const;

 private:
  std::int64_t k_ = 0, n_ = 0, tiles_ = 0;
  at::Tensor packed_;  // [tiles, K, 16] float32, zero-padded past N
  at::Tensor bias_;    // [tiles * 16] float32 (zeros when none)
};

}  // namespace writeup::model

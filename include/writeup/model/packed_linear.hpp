#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace writeup::model {

// How PackedLinear stores its weights (ModelConfig::weights, LoadOptions::weights):
// - f32: as given;
// - bf16: each weight rounded to bfloat16 (round to nearest even), 2 bytes; a kernel widens it
//   back to float32 exactly (a 16-bit shift);
// - int8: weight-only, symmetric: per output column, one float32 scale per group of
//   kInt8Group consecutive k (scale = max |w| / 127, q = round-half-even(w / scale)),
//   1 byte + 4/kInt8Group. Its kernels quantise the activations too, to int16 per row and group
//   (scale = max |x| / 32767), sum q_x * q_w exactly in int32 per group, and add each group's
//   sum times the two scales to a float32 total (packed_int8.cpp).
// f32 and bf16 compute in float32: one FMA chain over the widened weights.
enum class WeightFormat { f32, bf16, int8 };
const char* to_string(WeightFormat format);
// "f32" | "bf16" | "int8"; throws std::invalid_argument naming the value otherwise.
WeightFormat parse_weight_format(const std::string& name);

// y = x @ W + b on the CPU, x and y float32, with W packed once into column tiles laid out for
// streaming ([N/16][K][16], in the chosen WeightFormat), and a kernel whose every output element
// is bias + the same fused multiply-add chain over k = 0..K-1 (of the dequantised weights)
// whatever the number of rows. So a row's result does not depend on which other rows share the
// batch (BLAS GEMM/GEMV pick different reduction orders by shape): the basis of batch-invariant,
// seeded determinism. Threads: libtorch's intra-op pool splits the tiles.
class PackedLinear {
 public:
  static constexpr std::int64_t kTile = 16;
  static constexpr std::int64_t kInt8Group = 64;  // k values per int8 scale
  // int8 weights and scales are stored by blocks of this many tiles, the block's tiles
  // interleaved row by row ([blocks][k pairs][tiles in the block][16][2] and
  // [blocks][groups][tiles in the block][16]), so a kernel working on a block's tiles (the
  // AVX-512 one takes 3) reads its weights as one sequential stream and its scales as another,
  // rather than one stream per tile: one core then streams ~1.3x faster (BENCHMARKS.md).
  static constexpr std::int64_t kInt8BlockTiles = 3;
  // Which kernel runs: the widest the CPU has (automatic), or, for tests and before/after
  // benchmarks, a narrower one (falling back to generic when the CPU lacks it). avx512bw is
  // AVX-512 without VNNI: int8 then sums with vpmaddwd + add, as on CPUs before Cascade Lake
  // or Zen 4; the float kernels are avx512's. Every kernel gives bitwise the same y.
  enum class Kernel { automatic, avx512, avx512bw, avx2, generic };
  static void force_kernel(Kernel kernel);
  // The kernel forward runs now for a format: "avx512-vnni", "avx512bw", "avx512", "avx2" or
  // "generic" (int8 on an AVX-512 CPU: one of the first two; f32 and bf16: "avx512").
  static const char* kernel_name(WeightFormat format);

  PackedLinear() = default;
  // `weight` [K, N] (HF Conv1D layout) or, with `transposed`, [N, K] (e.g. wte for the LM head);
  // `bias` [N] or undefined.
  PackedLinear(const at::Tensor& weight, const at::Tensor& bias, bool transposed = false,
               WeightFormat format = WeightFormat::f32);
  // An already packed layer (the packed-weights cache file: views into its mapping, no copy):
  // `packed` [ceil(N/16), K, 16] of the format's storage type (int8: in the block order of
  // kInt8BlockTiles), `scales` (int8 only) [tiles, ceil(K/kInt8Group), 16] float32 (the same),
  // `bias` [tiles * 16] float32, all contiguous.
  // Throws std::invalid_argument naming what does not fit.
  static PackedLinear from_parts(WeightFormat format, std::int64_t k, std::int64_t n, at::Tensor packed,
                                 at::Tensor scales, at::Tensor bias);

  bool defined() const { return packed_.defined(); }
  WeightFormat format() const { return format_; }
  std::int64_t in_features() const { return k_; }
  std::int64_t out_features() const { return n_; }
  std::size_t bytes() const;  // the packed weights (zero-padded to whole tiles) and int8 scales
  // Rows of k in the packed storage: K, or for int8 whole groups of kInt8Group.
  static std::int64_t packed_rows(WeightFormat format, std::int64_t k) {
    return format == WeightFormat::int8 ? (k + kInt8Group - 1) / kInt8Group * kInt8Group : k;
  }

  // The weights the kernels multiply by, [K, N] float32 (the format's rounding included).
  at::Tensor dequantized() const;

  // The packed storage as laid out above (what the cache file stores; scales undefined unless int8).
  const at::Tensor& packed() const { return packed_; }
  const at::Tensor& scales() const { return scales_; }
  const at::Tensor& bias() const { return bias_; }

  // What forward does to each block of outputs right after the kernel wrote it (still in cache):
  // nothing, GPT-2's tanh GELU, or adding a residual [M, N] (y = residual + (x @ W + b)).
  enum class Epilogue { none, gelu, residual };

  at::Tensor forward(const at::Tensor& x) const;  // x [M, K] float32 -> [M, N]
  at::Tensor forward(const at::Tensor& x, Epilogue epilogue, const at::Tensor& residual = at::Tensor()) const;
  // The same into caller-owned memory: x [M, K] row-major, y [M, N] row-major (not aliasing
  // x or residual).
  void forward(const float* x, std::int64_t M, float* y, Epilogue epilogue = Epilogue::none,
               const float* residual = nullptr) const;

 private:
  WeightFormat format_ = WeightFormat::f32;
  std::int64_t k_ = 0, n_ = 0, tiles_ = 0;
  // [tiles, K, 16] float32 | bf16 bits (int16); int8: [blocks of kInt8BlockTiles tiles]
  // [groups * kInt8Group / 2 k pairs][tiles in the block][16][2] (zero past K; the tensor's
  // shape is [tiles, groups * kInt8Group, 16]); zero-padded past N
  at::Tensor packed_;
  // int8: tiles x ceil(K / kInt8Group) x 16 float32 (zeros past N), as [blocks of
  // kInt8BlockTiles tiles][groups][tiles in the block][16] (the tensor's shape is [tiles, groups, 16])
  at::Tensor scales_;
  at::Tensor bias_;    // [tiles * 16] float32 (zeros when none)
};

}  // namespace writeup::model

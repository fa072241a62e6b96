#pragma once
// The packed kernels behind PackedLinear (internal to src/model): one tile loop per weight
// format and CPU feature level. For f32 and bf16 each output element is bias + one FMA chain
// over k in k order with the same widened weights; int8 sums exactly in int32 per group
// (packed_int8.cpp). Either way every kernel gives the generic kernel's bits.
#include <cstdint>

#include "writeup/model/packed_linear.hpp"

namespace writeup::model::detail {

// A packed matrix as the kernels see it (PackedLinear's storage).
struct PackedView {
  WeightFormat format = WeightFormat::f32;
  std::int64_t K = 0, N = 0, tiles = 0;
  // [tiles][K][16] of float | bf16 bits; int8: [tiles / 3][groups * 64 / 2][3][16][2] (k pairs,
  // zero past K; int8_block_row)
  const void* weights = nullptr;
  const float* scales = nullptr;  // int8: [tiles / 3][groups][3][16] (int8_block_row)
  const float* bias = nullptr;    // [tiles * 16]
  PackedLinear::Epilogue epilogue = PackedLinear::Epilogue::none;
  const float* residual = nullptr;  // [M, N] with Epilogue::residual
};

// The epilogue on the block of y that a kernel just wrote: rows [row0, row0 + rows), columns
// [col0, col0 + cols) of y [M, N].
void finish_block(const PackedView& v, float* y, std::int64_t row0, std::int64_t rows, std::int64_t col0,
                  std::int64_t cols);

// y [M, N] = x [M, K] @ W + b, row-major, split over libtorch's intra-op threads.
void packed_forward(const PackedView& v, const float* x, std::int64_t M, float* y);
// The int8 format's kernels (packed_int8.cpp): 8-bit weights x 16-bit activations in int32.
void packed_forward_int8(const PackedView& v, const float* x, std::int64_t M, float* y);

// int8's blocks (PackedLinear::kInt8BlockTiles tiles a block, the last one maybe smaller):
// storage [blocks][rows][n][16 units] with n = the block's tiles, rows = k pairs for the weights
// (a unit: 2 bytes) and groups for the scales (a unit: a float). Where tile t's row r starts, in
// units, and the step from one of its rows to the next.
inline std::int64_t int8_block_row(std::int64_t t, std::int64_t r, std::int64_t tiles, std::int64_t rows) {
  constexpr std::int64_t S = PackedLinear::kInt8BlockTiles;
  const std::int64_t first = t / S * S, n = tiles - first < S ? tiles - first : S;
  return (first * rows + r * n + (t - first)) * PackedLinear::kTile;
}
inline std::int64_t int8_block_step(std::int64_t t, std::int64_t tiles) {
  constexpr std::int64_t S = PackedLinear::kInt8BlockTiles;
  const std::int64_t first = t / S * S;
  return (tiles - first < S ? tiles - first : S) * PackedLinear::kTile;
}

// float32 of a bfloat16's bits: exact.
inline float bf16_to_float(std::uint16_t bits) {
  const std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float f;
  __builtin_memcpy(&f, &wide, sizeof f);
  return f;
}

}  // namespace writeup::model::detail

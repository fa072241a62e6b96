#pragma once
// The element-wise work of a GPT-2 block on the CPU packed path (internal to src/model), each
// one pass over rows that are already in cache, with no tensor-op dispatch or allocation:
// - layer_norm_rows: one row at a time (mean, variance, then the affine output);
// - gelu (tanh form) and the residual add, run by PackedLinear as its projections' epilogue on
//   each block of outputs right after the kernel wrote it (packed_linear.hpp, Epilogue).
// Each has an AVX-512 form and a scalar form doing the same float operations in the same order
// (reductions in 16 lanes, then a fixed tree), so they give the same bits whichever runs, and
// each row's result depends on that row alone (batch invariance).
#include <cstdint>

namespace writeup::model::detail {

// y[r] = (x[r] - mean) / sqrt(var + eps) * g + b for rows r in [0, M), C values each.
void layer_norm_rows(const float* x, std::int64_t M, std::int64_t C, const float* g, const float* b, float eps,
                     float* y);

// y = y * sigmoid(2 * sqrt(2 / pi) * (y + 0.044715 y^3)), i.e. GPT-2's tanh-approximated GELU.
void gelu_inplace(float* y, std::int64_t n);

// y = y + r.
void add_inplace(float* y, const float* r, std::int64_t n);

}  // namespace writeup::model::detail

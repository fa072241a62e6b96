#include "writeup/model/packed_linear.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace writeup::model {
namespace {

constexpr std::int64_t T = PackedLinear::kTile;
constexpr std::int64_t kRows = 6;  // rows per register block: 6 x 2 accumulators + 3 = 15 ymm

// One tile, rows [m0, m0+rows): y[m, t*16 + j] = bias[j] + sum_k x[m,k] * w[k][j], the sum
// as one FMA chain in k order.
void tile_generic(const float* x, std::int64_t ldx, const float* w, const float* bias, float* y,
                  std::int64_t ldy, std::int64_t rows, std::int64_t K, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float acc[T] = {};
    for (std::int64_t k = 0; k < K; ++k) {
      const float xv = x[r * ldx + k];
      for (std::int64_t j = 0; j < T; ++j) acc[j] = std::fma(xv, w[k * T + j], acc[j]);
    }
    for (std::int64_t j = 0; j < cols; ++j) y[r * ldy + j] = acc[j] + bias[j];
  }
}

#if defined(__x86_64__)
// ROWS rows of one tile, fully unrolled so the k loop is loads, broadcasts and FMAs only.
template <int ROWS>
__attribute__((target("avx2,fma"))) void tile_avx2(const float* x, std::int64_t ldx, const float* w,
                                                    const float* bias, float* y, std::int64_t ldy,
                                                    std::int64_t K, std::int64_t cols) {
  __m256 acc[ROWS][2];
  for (int r = 0; r < ROWS; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (std::int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(w + k * T), w1 = _mm256_loadu_ps(w + k * T + 8);
#pragma GCC unroll 6
    for (int r = 0; r < ROWS; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * ldx + k);
      acc[r][0] = _mm256_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(xv, w1, acc[r][1]);
    }
  }
  const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
  for (int r = 0; r < ROWS; ++r) {
    float out[T];
    _mm256_storeu_ps(out, _mm256_add_ps(acc[r][0], b0));
    _mm256_storeu_ps(out + 8, _mm256_add_ps(acc[r][1], b1));
    for (std::int64_t j = 0; j < cols; ++j) y[r * ldy + j] = out[j];
  }
}

using TileFn = void (*)(const float*, std::int64_t, const float*, const float*, float*, std::int64_t,
                        std::int64_t, std::int64_t);
constexpr TileFn kAvx2Tiles[kRows + 1] = {nullptr,       tile_avx2<1>, tile_avx2<2>, tile_avx2<3>,
                                          tile_avx2<4>, tile_avx2<5>, tile_avx2<6>};

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

}  // namespace

PackedLinear::PackedLinear(const at::Tensor& weight, const at::Tensor& bias, bool transposed) {
  const at::Tensor w = weight.to(at::kFloat).contiguous();  // [K, N], or [N, K] when transposed
  k_ = transposed ? w.size(1) : w.size(0);
  n_ = transposed ? w.size(0) : w.size(1);
  tiles_ = (n_ + T - 1) / T;
  packed_ = at::empty({tiles_, k_, T}, at::kFloat);
  const float* src = w.data_ptr<float>();
  float* dst = packed_.data_ptr<float>();
  const std::int64_t K = k_, N = n_;
  // dst[t][k][j] = W[k][t*16 + j], zero past N; each loop reads its source sequentially.
  if (transposed) {  // source rows are output columns: read a row, scatter along k
    at::parallel_for(0, tiles_, 1, [&](std::int64_t t0, std::int64_t t1) {
      for (std::int64_t t = t0; t < t1; ++t) {
        for (std::int64_t j = 0; j < T; ++j) {
          const std::int64_t col = t * T + j;
          float* out = dst + t * K * T + j;
          for (std::int64_t k = 0; k < K; ++k) out[k * T] = col < N ? src[col * K + k] : 0.0f;
        }
      }
    });
  } else {  // source rows are k: blocks of 16 rows, so each tile gets 16 consecutive lines
    constexpr std::int64_t B = 16;
    at::parallel_for(0, (K + B - 1) / B, 1, [&](std::int64_t b0, std::int64_t b1) {
      for (std::int64_t b = b0; b < b1; ++b) {
        const std::int64_t k0 = b * B, k1 = std::min(K, k0 + B);
        for (std::int64_t t = 0; t < tiles_; ++t) {
          const std::int64_t cols = std::min(T, N - t * T);
          for (std::int64_t k = k0; k < k1; ++k) {
            float* out = dst + (t * K + k) * T;
            std::memcpy(out, src + k * N + t * T, static_cast<std::size_t>(cols) * sizeof(float));
            std::fill(out + cols, out + T, 0.0f);
          }
        }
      }
    });
  }
  bias_ = at::zeros({tiles_ * T}, at::kFloat);
  if (bias.defined()) bias_.narrow(0, 0, n_).copy_(bias.to(at::kFloat));
}

std::size_t PackedLinear::bytes() const {
  return packed_.defined() ? static_cast<std::size_t>(packed_.numel()) * sizeof(float) : 0;
}

at::Tensor PackedLinear::forward(const at::Tensor& input) const {
  const at::Tensor x = input.contiguous();
  TORCH_CHECK(x.dim() == 2 && x.size(1) == k_ && x.scalar_type() == at::kFloat,
              "PackedLinear expects float32 [M, ", k_, "]");
  const std::int64_t M = x.size(0);
  at::Tensor y = at::empty({M, n_}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = packed_.data_ptr<float>();
  const float* bp = bias_.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const std::int64_t K = k_, N = n_;
  // Split tiles over threads; every tile's arithmetic is the same whichever thread runs it.
  at::parallel_for(0, tiles_, std::max<std::int64_t>(1, 64 * 1024 / std::max<std::int64_t>(1, K * M)),
                   [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const float* w = wp + t * K * T;
      const std::int64_t cols = std::min(T, N - t * T);
      // Rows in blocks of at most 6, balanced (8 rows: 4 + 4, not 6 + 2). Which block a row
      // lands in does not change its arithmetic.
      const std::int64_t blocks = (M + kRows - 1) / kRows, per = (M + blocks - 1) / blocks;
      for (std::int64_t m = 0; m < M; m += per) {
        const std::int64_t rows = std::min(per, M - m);
#if defined(__x86_64__)
        if (has_avx2()) {
          kAvx2Tiles[rows](xp + m * K, K, w, bp + t * T, yp + m * N + t * T, N, K, cols);
          continue;
        }
#endif
        tile_generic(xp + m * K, K, w, bp + t * T, yp + m * N + t * T, N, rows, K, cols);
      }
    }
  });
  return y;
}

}  // namespace writeup::model

#include "writeup/model/packed_linear.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
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

// AVX-512: ROWS rows x G consecutive tiles (16 columns = one zmm each), so the weights of a
// step stream once for up to 8 rows: ROWS*G accumulators + G weights + 1 broadcast <= 32 zmm.
// Each output element is still one FMA chain in k order plus the bias: bitwise the AVX2 and
// generic result.
template <int ROWS, int G>
__attribute__((target("avx512f"))) void tiles_avx512(const float* x, std::int64_t ldx, const float* w,
                                                     const float* bias, float* y, std::int64_t ldy,
                                                     std::int64_t K, std::int64_t cols) {
  __m512 acc[ROWS][G];
  for (int r = 0; r < ROWS; ++r) {
    for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_ps();
  }
  for (std::int64_t k = 0; k < K; ++k) {
    __m512 wv[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) wv[g] = _mm512_loadu_ps(w + (g * K + k) * T);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * ldx + k]);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) acc[r][g] = _mm512_fmadd_ps(xv, wv[g], acc[r][g]);
    }
  }
  // cols: valid columns of the last tile (16 unless it is the matrix's last)
  const __mmask16 last = static_cast<__mmask16>((1u << cols) - 1u);
  for (int g = 0; g < G; ++g) {
    const __m512 b = _mm512_loadu_ps(bias + g * T);
    const __mmask16 mask = g == G - 1 ? last : static_cast<__mmask16>(0xFFFF);
    for (int r = 0; r < ROWS; ++r) _mm512_mask_storeu_ps(y + r * ldy + g * T, mask, _mm512_add_ps(acc[r][g], b));
  }
}

using TileFn = void (*)(const float*, std::int64_t, const float*, const float*, float*, std::int64_t,
                        std::int64_t, std::int64_t);
constexpr TileFn kAvx2Tiles[kRows + 1] = {nullptr,       tile_avx2<1>, tile_avx2<2>, tile_avx2<3>,
                                          tile_avx2<4>, tile_avx2<5>, tile_avx2<6>};

constexpr std::int64_t kRows512 = 8;   // rows per AVX-512 block
constexpr std::int64_t kGroup512 = 3;  // tiles per AVX-512 group (8 rows x 3 = 24 accumulators)
template <int G>
constexpr TileFn kAvx512Row[kRows512 + 1] = {nullptr,           tiles_avx512<1, G>, tiles_avx512<2, G>,
                                             tiles_avx512<3, G>, tiles_avx512<4, G>, tiles_avx512<5, G>,
                                             tiles_avx512<6, G>, tiles_avx512<7, G>, tiles_avx512<8, G>};
constexpr const TileFn* kAvx512Tiles[kGroup512 + 1] = {nullptr, kAvx512Row<1>, kAvx512Row<2>, kAvx512Row<3>};

std::atomic<PackedLinear::Kernel> forced{PackedLinear::Kernel::automatic};

bool use(PackedLinear::Kernel k) {
  const auto f = forced.load(std::memory_order_relaxed);
  return f == PackedLinear::Kernel::automatic || f == k;
}

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes && use(PackedLinear::Kernel::avx2);
}

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes && use(PackedLinear::Kernel::avx512);
}
#endif

}  // namespace

void PackedLinear::force_kernel(Kernel kernel) { forced = kernel; }
bool PackedLinear::allows(Kernel kernel) { return use(kernel); }

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
  at::Tensor y = at::empty({x.size(0), n_}, x.options());  // [M, N]
  forward(x.data_ptr<float>(), x.size(0), y.data_ptr<float>());
  return y;
}

void PackedLinear::forward(const float* xp, std::int64_t M, float* yp) const {
  const float* wp = packed_.data_ptr<float>();
  const float* bp = bias_.data_ptr<float>();
  const std::int64_t K = k_, N = n_;
  const std::int64_t grain = std::max<std::int64_t>(1, 64 * 1024 / std::max<std::int64_t>(1, K * M));  // tiles
#if defined(__x86_64__)
  if (has_avx512()) {
    // Groups of 3 tiles over threads, every row of the batch in one pass over a group's weights
    // (blocks of at most 8 rows, balanced). Neither the group nor the block changes an element's
    // arithmetic.
    const std::int64_t groups = (tiles_ + kGroup512 - 1) / kGroup512;
    const std::int64_t blocks = (M + kRows512 - 1) / kRows512, per = (M + blocks - 1) / blocks;
    at::parallel_for(0, groups, (grain + kGroup512 - 1) / kGroup512, [&](std::int64_t g0, std::int64_t g1) {
      for (std::int64_t g = g0; g < g1; ++g) {
        const std::int64_t t = g * kGroup512, count = std::min(kGroup512, tiles_ - t);
        const std::int64_t cols = std::min(T, N - (t + count - 1) * T);  // of the group's last tile
        for (std::int64_t m = 0; m < M; m += per) {
          const std::int64_t rows = std::min(per, M - m);
          kAvx512Tiles[count][rows](xp + m * K, K, wp + t * K * T, bp + t * T, yp + m * N + t * T, N, K, cols);
        }
      }
    });
    return;
  }
#endif
  // Split tiles over threads; every tile's arithmetic is the same whichever thread runs it.
  at::parallel_for(0, tiles_, grain, [&](std::int64_t t0, std::int64_t t1) {
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
}

}  // namespace writeup::model

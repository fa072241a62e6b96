#include "packed_kernels.hpp"

#include "cpu_features.hpp"
#include "fused_ops.hpp"
#include "parallel_chunks.hpp"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace writeup::model::detail {
namespace {

constexpr std::int64_t T = PackedLinear::kTile;
constexpr std::int64_t kRows = 6;  // AVX2 rows per register block: 6 x 2 accumulators + 3 = 15 ymm

template <WeightFormat F>
struct Format;
template <>
struct Format<WeightFormat::f32> {
  using Elem = float;
};
template <>
struct Format<WeightFormat::bf16> {
  using Elem = std::uint16_t;
};
template <WeightFormat F>
using Elem = typename Format<F>::Elem;

// The widening every kernel reproduces: exact for both formats.
template <WeightFormat F>
inline float widen(Elem<F> e) {
  if constexpr (F == WeightFormat::f32) {
    return e;
  } else {
    return bf16_to_float(e);
  }
}

// One tile, rows [0, rows): y[r, j] = bias[j] + sum_k x[r, k] * w[k][j], the sum as one FMA
// chain in k order.
template <WeightFormat F>
void tile_generic(const float* x, std::int64_t ldx, const void* wv, const float* bias, float* y, std::int64_t ldy,
                  std::int64_t rows, std::int64_t K, std::int64_t cols) {
  const auto* w = static_cast<const Elem<F>*>(wv);
  for (std::int64_t r = 0; r < rows; ++r) {
    float acc[T] = {};
    for (std::int64_t k = 0; k < K; ++k) {
      const float xv = x[r * ldx + k];
      for (std::int64_t j = 0; j < T; ++j) acc[j] = std::fma(xv, widen<F>(w[k * T + j]), acc[j]);
    }
    for (std::int64_t j = 0; j < cols; ++j) y[r * ldy + j] = acc[j] + bias[j];
  }
}

#if defined(__x86_64__)
// 8 widened weights from p (AVX2).
template <WeightFormat F>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 load8(const Elem<F>* p) {
  if constexpr (F == WeightFormat::f32) {
    return _mm256_loadu_ps(p);
  } else {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
}

// ROWS rows of one tile, fully unrolled so the k loop is loads, broadcasts and FMAs only.
template <int ROWS, WeightFormat F>
__attribute__((target("avx2,fma"))) void tile_avx2(const float* x, std::int64_t ldx, const void* wv,
                                                    const float* bias, float* y, std::int64_t ldy, std::int64_t K,
                                                    std::int64_t cols) {
  const auto* w = static_cast<const Elem<F>*>(wv);
  __m256 acc[ROWS][2];
  for (int r = 0; r < ROWS; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (std::int64_t k = 0; k < K; ++k) {
    const __m256 w0 = load8<F>(w + k * T), w1 = load8<F>(w + k * T + 8);
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

// 16 widened weights from p (AVX-512F).
template <WeightFormat F>
__attribute__((target("avx512f"), always_inline)) inline __m512 load16(const Elem<F>* p) {
  if constexpr (F == WeightFormat::f32) {
    return _mm512_loadu_ps(p);
  } else {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
}

// AVX-512: ROWS rows x G consecutive tiles (16 columns = one zmm each), so the weights of a
// step stream (and are widened) once for up to 8 rows: ROWS*G accumulators + G weights + 1
// broadcast <= 32 zmm. Each output element is still one FMA chain in k order plus the bias:
// bitwise the AVX2 and generic result.
template <int ROWS, int G, WeightFormat F>
__attribute__((target("avx512f"))) void tiles_avx512(const float* x, std::int64_t ldx, const void* wv,
                                                     const float* bias, float* y, std::int64_t ldy, std::int64_t K,
                                                     std::int64_t cols) {
  const auto* w = static_cast<const Elem<F>*>(wv);
  __m512 acc[ROWS][G];
  for (int r = 0; r < ROWS; ++r) {
    for (int g = 0; g < G; ++g) acc[r][g] = _mm512_setzero_ps();
  }
  for (std::int64_t k = 0; k < K; ++k) {
    __m512 wk[G];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) wk[g] = load16<F>(w + (g * K + k) * T);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * ldx + k]);
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) acc[r][g] = _mm512_fmadd_ps(xv, wk[g], acc[r][g]);
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

using TileFn = void (*)(const float*, std::int64_t, const void*, const float*, float*, std::int64_t, std::int64_t,
                        std::int64_t);
template <WeightFormat F>
constexpr TileFn kAvx2Tiles[kRows + 1] = {nullptr,          tile_avx2<1, F>, tile_avx2<2, F>, tile_avx2<3, F>,
                                          tile_avx2<4, F>, tile_avx2<5, F>, tile_avx2<6, F>};

constexpr std::int64_t kRows512 = 8;   // rows per AVX-512 block
constexpr std::int64_t kGroup512 = 3;  // tiles per AVX-512 group (8 rows x 3 = 24 accumulators)
template <int G, WeightFormat F>
constexpr TileFn kAvx512Row[kRows512 + 1] = {
    nullptr,                 tiles_avx512<1, G, F>, tiles_avx512<2, G, F>, tiles_avx512<3, G, F>,
    tiles_avx512<4, G, F>, tiles_avx512<5, G, F>, tiles_avx512<6, G, F>, tiles_avx512<7, G, F>,
    tiles_avx512<8, G, F>};
template <WeightFormat F>
constexpr const TileFn* kAvx512Tiles[kGroup512 + 1] = {nullptr, kAvx512Row<1, F>, kAvx512Row<2, F>,
                                                       kAvx512Row<3, F>};
#endif

template <WeightFormat F>
void forward_format(const PackedView& v, const float* xp, std::int64_t M, float* yp) {
  const auto* wp = static_cast<const Elem<F>*>(v.weights);
  const float* bp = v.bias;
  const std::int64_t K = v.K, N = v.N, tiles = v.tiles;
  // Tiles per chunk the threads take (parallel_chunks): ~16K multiply-adds per column, e.g.
  // 16 tiles (1 MB of float32) for one row of K = 1024.
  const std::int64_t grain = std::max<std::int64_t>(1, 16 * 1024 / std::max<std::int64_t>(1, K * M));
#if defined(__x86_64__)
  if (use_avx512()) {
    // Groups of 3 tiles over threads, every row of the batch in one pass over a group's weights
    // (blocks of at most 8 rows, balanced). Neither the group nor the block changes an element's
    // arithmetic.
    const std::int64_t count_groups = (tiles + kGroup512 - 1) / kGroup512;
    const std::int64_t blocks = (M + kRows512 - 1) / kRows512, per = (M + blocks - 1) / blocks;
    parallel_chunks(count_groups, (grain + kGroup512 - 1) / kGroup512, [&](std::int64_t g0, std::int64_t g1) {
      for (std::int64_t g = g0; g < g1; ++g) {
        const std::int64_t t = g * kGroup512, count = std::min(kGroup512, tiles - t);
        const std::int64_t cols = std::min(T, N - (t + count - 1) * T);  // of the group's last tile
        for (std::int64_t m = 0; m < M; m += per) {
          const std::int64_t rows = std::min(per, M - m);
          kAvx512Tiles<F>[count][rows](xp + m * K, K, wp + t * K * T, bp + t * T,
                                       yp + m * N + t * T, N, K, cols);
          finish_block(v, yp, m, rows, t * T, (count - 1) * T + cols);
        }
      }
    });
    return;
  }
#endif
  // Split tiles over threads; every tile's arithmetic is the same whichever thread runs it.
  parallel_chunks(tiles, grain, [&](std::int64_t t0, std::int64_t t1) {
    for (std::int64_t t = t0; t < t1; ++t) {
      const Elem<F>* w = wp + t * K * T;
      const std::int64_t cols = std::min(T, N - t * T);
      // Rows in blocks of at most 6, balanced (8 rows: 4 + 4, not 6 + 2). Which block a row
      // lands in does not change its arithmetic.
      const std::int64_t blocks = (M + kRows - 1) / kRows, per = (M + blocks - 1) / blocks;
      for (std::int64_t m = 0; m < M; m += per) {
        const std::int64_t rows = std::min(per, M - m);
#if defined(__x86_64__)
        if (use_avx2()) {
          kAvx2Tiles<F>[rows](xp + m * K, K, w, bp + t * T, yp + m * N + t * T, N, K, cols);
        } else
#endif
        {
          tile_generic<F>(xp + m * K, K, w, bp + t * T, yp + m * N + t * T, N, rows, K, cols);
        }
        finish_block(v, yp, m, rows, t * T, cols);
      }
    }
  });
}

}  // namespace

void finish_block(const PackedView& v, float* y, std::int64_t row0, std::int64_t rows, std::int64_t col0,
                  std::int64_t cols) {
  if (v.epilogue == PackedLinear::Epilogue::none) return;
  for (std::int64_t r = row0; r < row0 + rows; ++r) {
    float* out = y + r * v.N + col0;
    if (v.epilogue == PackedLinear::Epilogue::gelu) {
      gelu_inplace(out, cols);
    } else {
      add_inplace(out, v.residual + r * v.N + col0, cols);
    }
  }
}

void packed_forward(const PackedView& v, const float* x, std::int64_t M, float* y) {
  if (M <= 0 || v.tiles == 0) return;
  switch (v.format) {
    case WeightFormat::f32: return forward_format<WeightFormat::f32>(v, x, M, y);
    case WeightFormat::bf16: return forward_format<WeightFormat::bf16>(v, x, M, y);
    case WeightFormat::int8: return packed_forward_int8(v, x, M, y);
  }
}

}  // namespace writeup::model::detail

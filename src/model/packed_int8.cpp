// The int8 weight format's kernels (w8a16): 8-bit weights times 16-bit activations, summed
// exactly in int32 per group of kInt8Group k values, then scaled into a float32 sum per group.
//
// Per row and group g of 64 k values, the activations are quantised once per call:
//   xs = max_k |x_k| / 32767,  xq_k = round-half-even(x_k * (32767 / max)) in [-32767, 32767]
// and each output element is
//   o = 0;  for g in order: o = fma(float(sum_k xq_k * q_kj), ws_gj * xs_g, o);  y_j = o + b_j
// The integer sums are exact (|sum| <= 64 * 32767 * 127 < 2^31), so whichever instructions form
// them (VNNI vpdpwssd, vpmaddwd + add, scalar), every kernel gives the same bits, and a row's
// result depends on nothing but the row: batch invariance as for the float formats.
// The activations' rounding (a relative 2^-16 of the group's largest value) is two orders of
// magnitude under the weights' (2^-8): the fidelity is the weights'.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_features.hpp"
#include "packed_kernels.hpp"
#include "parallel_chunks.hpp"

namespace writeup::model::detail {
namespace {

constexpr std::int64_t T = PackedLinear::kTile;
constexpr std::int64_t G = PackedLinear::kInt8Group;
constexpr std::int64_t P = G / 2;  // k pairs per group

// A call's activations: xq [M][groups * G] int16 (zero past K), xs [M][groups].
struct Activations {
  std::vector<std::int16_t> q;
  std::vector<float> s;
};

// 32767 / max overflows for max < ~1e-34: such a group is scaled up by 2^64 first (exactly: a
// power of two), so that its values still quantise to round(x * 32767 / max).
inline float tiny_boost(float amax) { return amax < 0x1p-64f ? 0x1p64f : 1.0f; }

// One group's scale and int16 values (n <= G; q has G slots, zero past n). Returns false for a
// NaN or infinity in the group.
bool quantize_group(const float* xg, std::int64_t n, std::int16_t* q, float& scale) {
  float amax = 0.0f;
  bool finite = true;
  for (std::int64_t k = 0; k < n; ++k) {
    amax = std::max(amax, std::fabs(xg[k]));
    finite = finite && std::isfinite(xg[k]);
  }
  std::fill(q, q + G, std::int16_t{0});
  if (!finite) return false;
  scale = amax / 32767.0f;
  if (amax == 0.0f) return true;
  const float boost = tiny_boost(amax), inv = 32767.0f / (amax * boost);
  for (std::int64_t k = 0; k < n; ++k) {
    // round half to even without a library call: exact for |v| < 2^22 (here <= 32767)
    const float v = (xg[k] * boost * inv + 12582912.0f) - 12582912.0f;
    q[k] = static_cast<std::int16_t>(std::clamp(v, -32767.0f, 32767.0f));
  }
  return true;
}

#if defined(__x86_64__)
// The same in AVX-512: the maximum is exact in any order and every value takes the same float
// operations (no contraction in this file), so the bits are quantize_group's.
__attribute__((target("avx512f,avx512bw"))) bool quantize_group_avx512(const float* xg, std::int64_t n,
                                                                      std::int16_t* q, float& scale) {
  constexpr int L = 16;
  __m512 x[G / L];
  __m512 amax = _mm512_setzero_ps();
  __mmask16 finite = 0xFFFF;
  for (int c = 0; c < G / L; ++c) {
    const std::int64_t left = std::clamp<std::int64_t>(n - c * L, 0, L);
    const auto mask = static_cast<__mmask16>((1u << left) - 1u);
    x[c] = _mm512_maskz_loadu_ps(mask, xg + c * L);
    const __m512 a = _mm512_abs_ps(x[c]);
    finite &= _mm512_cmp_ps_mask(a, _mm512_set1_ps(std::numeric_limits<float>::max()), _CMP_LE_OQ);
    amax = _mm512_max_ps(amax, a);
  }
  alignas(64) float lanes[L];
  _mm512_store_ps(lanes, amax);
  const float m = *std::max_element(lanes, lanes + L);
  if (finite != 0xFFFF) {
    std::fill(q, q + G, std::int16_t{0});
    return false;
  }
  scale = m / 32767.0f;
  const float boost = tiny_boost(m);
  const __m512 inv = _mm512_set1_ps(m == 0.0f ? 0.0f : 32767.0f / (m * boost)), magic = _mm512_set1_ps(12582912.0f);
  for (int c = 0; c < G / L; ++c) {
    const __m512 xb = _mm512_mul_ps(x[c], _mm512_set1_ps(boost));
    const __m512 v = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(xb, inv), magic), magic);
    const __m512 lim = _mm512_set1_ps(32767.0f);
    const __m512i i = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + c * L), _mm512_cvtepi32_epi16(i));
  }
  return true;
}
#endif

void quantize_rows(const float* x, std::int64_t M, std::int64_t K, std::int64_t groups, Activations& a) {
  const std::int64_t Kp = groups * G;
  a.q.resize(static_cast<std::size_t>(M * Kp));
  a.s.resize(static_cast<std::size_t>(M * groups));
#if defined(__x86_64__)
  const bool wide = use_avx512();
#endif
  for (std::int64_t r = 0; r < M; ++r) {
    for (std::int64_t g = 0; g < groups; ++g) {
      const float* xg = x + r * K + g * G;
      const std::int64_t n = std::min(G, K - g * G);
      std::int16_t* q = a.q.data() + r * Kp + g * G;
      float& scale = a.s[static_cast<std::size_t>(r * groups + g)];
#if defined(__x86_64__)
      const bool ok = wide ? quantize_group_avx512(xg, n, q, scale) : quantize_group(xg, n, q, scale);
#else
      const bool ok = quantize_group(xg, n, q, scale);
#endif
      // a NaN or infinity reaches the output as NaN, as float32 arithmetic would
      if (!ok) scale = std::numeric_limits<float>::quiet_NaN();
    }
  }
}

// The shared epilogue of one group: o[j] = fma(float(acc[j]), ws[j] * xs, o[j]).
inline void scale_group(const std::int32_t* acc, const float* ws, float xs, float* o) {
  for (std::int64_t j = 0; j < T; ++j) o[j] = std::fma(static_cast<float>(acc[j]), ws[j] * xs, o[j]);
}

// One tile (16 columns), rows [0, rows): the reference every other kernel reproduces.
// w: the tile's k pair 0 ([16][2] bytes); pair p's at w + p * wstep. ws: the tile's scales of
// group 0; group g's at ws + g * step (int8_block_row / int8_block_step).
void tile_generic(const Activations& a, std::int64_t row0, std::int64_t rows, std::int64_t groups, const std::int8_t* w,
                  std::int64_t wstep, const float* ws, std::int64_t step, const float* bias, float* y,
                  std::int64_t ldy, std::int64_t cols) {
  const std::int64_t Kp = groups * G;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int16_t* xq = a.q.data() + (row0 + r) * Kp;
    float o[T] = {};
    for (std::int64_t g = 0; g < groups; ++g) {
      std::int32_t acc[T] = {};
      for (std::int64_t p = 0; p < P; ++p) {
        const std::int8_t* wp = w + (g * P + p) * wstep;  // [16][2]
        const std::int32_t x0 = xq[g * G + 2 * p], x1 = xq[g * G + 2 * p + 1];
        for (std::int64_t j = 0; j < T; ++j) acc[j] += x0 * wp[j * 2] + x1 * wp[j * 2 + 1];
      }
      scale_group(acc, ws + g * step, a.s[static_cast<std::size_t>((row0 + r) * groups + g)], o);
    }
    for (std::int64_t j = 0; j < cols; ++j) y[r * ldy + j] = o[j] + bias[j];
  }
}

#if defined(__x86_64__)
// AVX2: ROWS rows x one block's GT tiles, reading the block's weights as the one sequential
// stream they are stored as; a tile's pair row is 32 bytes = two ymm of 8 columns x (k, k+1)
// int16 after sign extension; vpmaddwd sums each column's pair into int32. ROWS * GT * 2
// accumulators + 2 weights + 1 broadcast <= 16 ymm: at most 2 rows. w, ws: the block's weights
// and scales; cols: valid columns of its last tile.
template <int ROWS, int GT>
__attribute__((target("avx2,fma"))) void tiles_avx2(const Activations& a, std::int64_t row0, std::int64_t groups,
                                                     const std::int8_t* w, const float* ws, const float* bias,
                                                     float* y, std::int64_t ldy, std::int64_t cols) {
  const std::int64_t Kp = groups * G;
  alignas(32) float o[ROWS][GT][T] = {};
  for (std::int64_t g = 0; g < groups; ++g) {
    __m256i acc[ROWS][GT][2];
    for (int r = 0; r < ROWS; ++r) {
      for (int t = 0; t < GT; ++t) acc[r][t][0] = acc[r][t][1] = _mm256_setzero_si256();
    }
    for (std::int64_t p = 0; p < P; ++p) {
#pragma GCC unroll 3
      for (int t = 0; t < GT; ++t) {
        const std::int8_t* wp = w + ((g * P + p) * GT + t) * 2 * T;
        const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wp)));
        const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wp + 16)));
#pragma GCC unroll 2
        for (int r = 0; r < ROWS; ++r) {
          std::int32_t pair;
          __builtin_memcpy(&pair, a.q.data() + (row0 + r) * Kp + g * G + 2 * p, sizeof pair);
          const __m256i xv = _mm256_set1_epi32(pair);
          acc[r][t][0] = _mm256_add_epi32(acc[r][t][0], _mm256_madd_epi16(xv, w0));
          acc[r][t][1] = _mm256_add_epi32(acc[r][t][1], _mm256_madd_epi16(xv, w1));
        }
      }
    }
    for (int r = 0; r < ROWS; ++r) {
      const __m256 xs = _mm256_set1_ps(a.s[static_cast<std::size_t>((row0 + r) * groups + g)]);
      for (int t = 0; t < GT; ++t) {
        const float* st = ws + (g * GT + t) * T;  // the block's scales
        for (int h = 0; h < 2; ++h) {
          const __m256 sc = _mm256_mul_ps(_mm256_loadu_ps(st + 8 * h), xs);
          _mm256_store_ps(o[r][t] + 8 * h,
                          _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][t][h]), sc, _mm256_load_ps(o[r][t] + 8 * h)));
        }
      }
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int t = 0; t < GT; ++t) {
      const std::int64_t n = t == GT - 1 ? cols : T;
      for (std::int64_t j = 0; j < n; ++j) y[r * ldy + t * T + j] = o[r][t][j] + bias[t * T + j];
    }
  }
}

// AVX-512 (BW; VNNI's vpdpwssd where the CPU has it): ROWS rows x one block's GT tiles, so a
// group of weights is loaded and widened once for up to 8 rows. ROWS * GT int32 accumulators +
// GT weights + 1 broadcast <= 28 zmm. w: the block's weights (its tiles interleaved by k pair,
// one sequential stream), ws: its scales (another).
template <int ROWS, int GT, bool VNNI>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void tiles_avx512(const Activations& a, std::int64_t row0,
                                                                          std::int64_t groups, const std::int8_t* w,
                                                                          const float* ws, const float* bias, float* y,
                                                                          std::int64_t ldy, std::int64_t cols) {
  const std::int64_t Kp = groups * G;
  alignas(64) float o[ROWS][GT][T] = {};
  for (std::int64_t g = 0; g < groups; ++g) {
    __m512i acc[ROWS][GT];
    for (int r = 0; r < ROWS; ++r) {
      for (int t = 0; t < GT; ++t) acc[r][t] = _mm512_setzero_si512();
    }
    for (std::int64_t p = 0; p < P; ++p) {
      __m512i wv[GT];
#pragma GCC unroll 4
      for (int t = 0; t < GT; ++t) {
        const std::int8_t* src = w + ((g * P + p) * GT + t) * 2 * T;  // the block's tiles interleaved
        wv[t] = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
      }
#pragma GCC unroll 8
      for (int r = 0; r < ROWS; ++r) {
        std::int32_t pair;
        __builtin_memcpy(&pair, a.q.data() + (row0 + r) * Kp + g * G + 2 * p, sizeof pair);
        const __m512i xv = _mm512_set1_epi32(pair);
#pragma GCC unroll 4
        for (int t = 0; t < GT; ++t) {
          if constexpr (VNNI) {
            acc[r][t] = _mm512_dpwssd_epi32(acc[r][t], xv, wv[t]);
          } else {
            acc[r][t] = _mm512_add_epi32(acc[r][t], _mm512_madd_epi16(xv, wv[t]));
          }
        }
      }
    }
    for (int r = 0; r < ROWS; ++r) {
      const __m512 xs = _mm512_set1_ps(a.s[static_cast<std::size_t>((row0 + r) * groups + g)]);
      for (int t = 0; t < GT; ++t) {
        const __m512 s = _mm512_mul_ps(_mm512_loadu_ps(ws + (g * GT + t) * T), xs);  // the block's scales
        _mm512_store_ps(o[r][t], _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][t]), s, _mm512_load_ps(o[r][t])));
      }
    }
  }
  const __mmask16 last = static_cast<__mmask16>((1u << cols) - 1u);
  for (int t = 0; t < GT; ++t) {
    const __m512 b = _mm512_loadu_ps(bias + t * T);
    const __mmask16 mask = t == GT - 1 ? last : static_cast<__mmask16>(0xFFFF);
    for (int r = 0; r < ROWS; ++r) _mm512_mask_storeu_ps(y + r * ldy + t * T, mask, _mm512_add_ps(_mm512_load_ps(o[r][t]), b));
  }
}

// A block kernel: rows [row0, row0 + ROWS) x one block's tiles (its weights, scales, bias, y).
using BlockFn = void (*)(const Activations&, std::int64_t, std::int64_t, const std::int8_t*, const float*,
                         const float*, float*, std::int64_t, std::int64_t);
constexpr std::int64_t kRows512 = 6, kTiles512 = 3;
static_assert(kTiles512 == PackedLinear::kInt8BlockTiles, "a group of tiles is one block of weights and scales");
template <int GT, bool V>
constexpr BlockFn kRow512[kRows512 + 1] = {nullptr,
                                            tiles_avx512<1, GT, V>,
                                            tiles_avx512<2, GT, V>,
                                            tiles_avx512<3, GT, V>,
                                            tiles_avx512<4, GT, V>,
                                            tiles_avx512<5, GT, V>,
                                            tiles_avx512<6, GT, V>};
template <bool V>
constexpr const BlockFn* kTable512[kTiles512 + 1] = {nullptr, kRow512<1, V>, kRow512<2, V>, kRow512<3, V>};

constexpr std::int64_t kRows2 = 2;
template <int GT>
constexpr BlockFn kRow2[kRows2 + 1] = {nullptr, tiles_avx2<1, GT>, tiles_avx2<2, GT>};
constexpr const BlockFn* kTable2[kTiles512 + 1] = {nullptr, kRow2<1>, kRow2<2>, kRow2<3>};

#endif

// Rows in balanced blocks of at most `most` (8 rows: 4 + 4): which block a row lands in does not
// change its arithmetic.
std::int64_t per_block(std::int64_t M, std::int64_t most) {
  const std::int64_t blocks = (M + most - 1) / most;
  return (M + blocks - 1) / blocks;
}

}  // namespace

void packed_forward_int8(const PackedView& v, const float* x, std::int64_t M, float* y) {
  const std::int64_t K = v.K, N = v.N, tiles = v.tiles, groups = (K + G - 1) / G, Kp = groups * G;
  thread_local Activations mine;  // the calling thread's, reused across calls
  // The pool's threads read the caller's buffer through this reference (naming the
  // thread_local inside the lambda would give each of them its own, empty one).
  Activations& a = mine;
  quantize_rows(x, M, K, groups, a);
  const auto* w = static_cast<const std::int8_t*>(v.weights);
  const float* ws = v.scales;
  const float* b = v.bias;
  // Tiles per chunk the threads take, as the float kernels' (16 tiles, 256 KB for a row of K = 1024).
  const std::int64_t grain = std::max<std::int64_t>(1, 16 * 1024 / std::max<std::int64_t>(1, Kp * M));
  // The block kernel this CPU runs (AVX-512: rows by up to 6, AVX2: by up to 2), or none: the
  // generic kernel, tile by tile.
  const BlockFn* const* table = nullptr;
  std::int64_t most_rows = 6;
#if defined(__x86_64__)
  if (use_avx512()) {
    table = use_avx512_vnni() ? kTable512<true> : kTable512<false>;
    most_rows = kRows512;
  } else if (use_avx2()) {
    table = kTable2;
    most_rows = kRows2;
  }
#endif
  const std::int64_t per = per_block(M, most_rows);
  // By whole blocks of tiles: a block kernel reads a block's one stream; the generic one goes tile
  // by tile, the block's lines that the first tile's pass brought in serving the others from cache.
  constexpr std::int64_t S = PackedLinear::kInt8BlockTiles;
  parallel_chunks((tiles + S - 1) / S, (grain + S - 1) / S, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t t0 = b0 * S; t0 < std::min(tiles, b1 * S); t0 += S) {
      const std::int64_t n = std::min(S, tiles - t0);
      if (table != nullptr) {
        const std::int64_t cols = std::min(T, N - (t0 + n - 1) * T);  // of the block's last tile
        for (std::int64_t m = 0; m < M; m += per) {
          const std::int64_t rows = std::min(per, M - m);
          table[n][rows](a, m, groups, w + t0 * Kp * T, ws + int8_block_row(t0, 0, tiles, groups), b + t0 * T,
                         y + m * N + t0 * T, N, cols);
          finish_block(v, y, m, rows, t0 * T, (n - 1) * T + cols);
        }
        continue;
      }
      for (std::int64_t t = t0; t < t0 + n; ++t) {
        const std::int64_t cols = std::min(T, N - t * T);
        const std::int8_t* wt = w + 2 * int8_block_row(t, 0, tiles, Kp / 2);
        const std::int64_t wstep = 2 * int8_block_step(t, tiles);
        const float* st = ws + int8_block_row(t, 0, tiles, groups);
        const std::int64_t step = int8_block_step(t, tiles);
        for (std::int64_t m = 0; m < M; m += per) {
          const std::int64_t rows = std::min(per, M - m);
          tile_generic(a, m, rows, groups, wt, wstep, st, step, b + t * T, y + m * N + t * T, N, cols);
          finish_block(v, y, m, rows, t * T, cols);
        }
      }
    }
  });
}

}  // namespace writeup::model::detail

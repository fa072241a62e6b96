#include "fused_ops.hpp"

#include <cmath>
#include <cstring>

#include "cpu_features.hpp"

namespace writeup::model::detail {
namespace {

constexpr int L = 16;  // lanes: the AVX-512 width, which the scalar forms reproduce

// exp(a) as e^r * 2^n, n = round(a / ln 2), r = a - n ln 2 in two parts, e^r by a degree-7
// polynomial (Cephes' expf coefficients), a clamped to [-87.3, 88] (NaN becomes the lower end:
// the callers' NaN reaches their result another way).
constexpr float kLo = -87.3f, kHi = 88.0f, kLog2e = 1.44269504088896341f, kC1 = 0.693359375f, kC2 = -2.12194440e-4f;
constexpr float kP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                         4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
// GELU: x * sigmoid(2u), u = sqrt(2 / pi) * (x + 0.044715 x^3) = x / (1 + exp(-2u))
constexpr float kCube = 0.044715f, kMinus2Sqrt2OverPi = -2.0f * 0.7978845608028654f;

float exp_scalar(float a) {
  a = a > kLo ? a : kLo;  // as maxps(a, lo)
  a = a < kHi ? a : kHi;  // as minps(a, hi)
  const float n = std::nearbyint(a * kLog2e);
  float r = std::fma(n, -kC1, a);
  r = std::fma(n, -kC2, r);
  float p = kP[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kP[i]);
  const float e = std::fma(p, r * r, r) + 1.0f;
  const std::uint32_t bits = static_cast<std::uint32_t>(static_cast<int>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}

float gelu_scalar(float x) {
  const float a = std::fma(kCube, (x * x) * x, x) * kMinus2Sqrt2OverPi;
  return x / (1.0f + exp_scalar(a));
}

// The 16 lane sums added in a fixed tree: lanes l and l + w for w = 8, 4, 2, 1.
float tree_sum(float* lanes) {
  for (int w = L / 2; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) lanes[l] += lanes[l + w];
  }
  return lanes[0];
}

void layer_norm_row_scalar(const float* x, std::int64_t C, const float* g, const float* b, float eps, float* y) {
  float s[L] = {};
  for (std::int64_t j = 0; j < C; ++j) s[j % L] += x[j];
  const float mean = tree_sum(s) / static_cast<float>(C);
  float v[L] = {};
  for (std::int64_t j = 0; j < C; ++j) {
    const float d = x[j] - mean;
    v[j % L] = std::fma(d, d, v[j % L]);
  }
  const float rstd = 1.0f / std::sqrt(tree_sum(v) / static_cast<float>(C) + eps);
  for (std::int64_t j = 0; j < C; ++j) y[j] = std::fma((x[j] - mean) * rstd, g[j], b[j]);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) __m512 exp16(__m512 a) {
  a = _mm512_min_ps(_mm512_max_ps(a, _mm512_set1_ps(kLo)), _mm512_set1_ps(kHi));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kC1), a);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-kC2), r);
  __m512 p = _mm512_set1_ps(kP[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP[i]));
  const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(e, _mm512_castsi512_ps(bits));
}

__attribute__((target("avx512f"))) void gelu_avx512(float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; i += L) {
    const __mmask16 m = n - i >= L ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 x = _mm512_maskz_loadu_ps(m, y + i);
    const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    const __m512 a = _mm512_mul_ps(_mm512_fmadd_ps(_mm512_set1_ps(kCube), cube, x), _mm512_set1_ps(kMinus2Sqrt2OverPi));
    _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(a))));
  }
}

__attribute__((target("avx512f"))) void layer_norm_row_avx512(const float* x, std::int64_t C, const float* g,
                                                              const float* b, float eps, float* y) {
  auto mask = [C](std::int64_t j) {
    return C - j >= L ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (C - j)) - 1u);
  };
  __m512 s = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < C; j += L) s = _mm512_mask_add_ps(s, mask(j), s, _mm512_maskz_loadu_ps(mask(j), x + j));
  alignas(64) float lanes[L];
  _mm512_store_ps(lanes, s);
  const float mean = tree_sum(lanes) / static_cast<float>(C);
  const __m512 mv = _mm512_set1_ps(mean);
  __m512 v = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < C; j += L) {
    const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask(j), x + j), mv);
    v = _mm512_mask3_fmadd_ps(d, d, v, mask(j));
  }
  _mm512_store_ps(lanes, v);
  const __m512 rstd = _mm512_set1_ps(1.0f / std::sqrt(tree_sum(lanes) / static_cast<float>(C) + eps));
  for (std::int64_t j = 0; j < C; j += L) {
    const __mmask16 m = mask(j);
    const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + j), mv), rstd);
    _mm512_mask_storeu_ps(y + j, m, _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, g + j), _mm512_maskz_loadu_ps(m, b + j)));
  }
}

#endif

}  // namespace

void layer_norm_rows(const float* x, std::int64_t M, std::int64_t C, const float* g, const float* b, float eps,
                     float* y) {
  for (std::int64_t r = 0; r < M; ++r) {
#if defined(__x86_64__)
    if (use_avx512()) {
      layer_norm_row_avx512(x + r * C, C, g, b, eps, y + r * C);
      continue;
    }
#endif
    layer_norm_row_scalar(x + r * C, C, g, b, eps, y + r * C);
  }
}

void gelu_inplace(float* y, std::int64_t n) {
#if defined(__x86_64__)
  if (use_avx512()) return gelu_avx512(y, n);
#endif
  for (std::int64_t i = 0; i < n; ++i) y[i] = gelu_scalar(y[i]);
}

void add_inplace(float* y, const float* r, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += r[i];  // one IEEE add each: the same bits vectorised or not
}

}  // namespace writeup::model::detail

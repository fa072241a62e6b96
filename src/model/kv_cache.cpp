#include "writeup/model/kv_cache.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "cpu_features.hpp"

namespace writeup::model {

KVCache::KVCache(const GPT2Config& config, int slots, int max_tokens,
                 const at::TensorOptions& options)
    : slots_(slots), max_tokens_(max_tokens) {
  if (slots <= 0) throw std::invalid_argument("KV cache needs at least one slot");
  if (max_tokens <= 0 || max_tokens > config.n_positions) {
    throw std::invalid_argument("KV cache length " + std::to_string(max_tokens) +
                                " must be in 1.." + std::to_string(config.n_positions));
  }
  const std::vector<std::int64_t> shape = {config.n_layer, slots, config.n_head, max_tokens,
                                           config.head_dim()};
  k_ = at::zeros(shape, options);
  v_ = at::zeros(shape, options);
}

std::size_t KVCache::bytes() const { return 2 * k_.numel() * k_.element_size(); }

at::Tensor KVCache::keys(int layer, int slot) const { return k_[layer][slot]; }
at::Tensor KVCache::values(int layer, int slot) const { return v_[layer][slot]; }
at::Tensor KVCache::keys(int layer) const { return k_[layer]; }
at::Tensor KVCache::values(int layer) const { return v_[layer]; }

void KVCache::copy_prefix(int from, int to, int tokens) {
  if (from == to || tokens == 0) return;
  // Narrow over T for all layers at once: [L, H, tokens, D].
  k_.select(1, to).narrow(2, 0, tokens).copy_(k_.select(1, from).narrow(2, 0, tokens));
  v_.select(1, to).narrow(2, 0, tokens).copy_(v_.select(1, from).narrow(2, 0, tokens));
}

namespace {

// The dot product's 16 lanes summed by the fixed tree (l, l+8), (l, l+4), (l, l+2), (0, 1).
float lane_tree(const float* s) {
  float t[8], u[4];
  for (int l = 0; l < 8; ++l) t[l] = s[l] + s[l + 8];
  for (int l = 0; l < 4; ++l) u[l] = t[l] + t[l + 4];
  return (u[0] + u[2]) + (u[1] + u[3]);
}

// exp(score - max) in place, returning their sum in position order.
float exp_and_sum(float* scores, std::int64_t len, float max) {
  float sum = 0;
  for (std::int64_t j = 0; j < len; ++j) {
    scores[j] = std::exp(scores[j] - max);
    sum += scores[j];
  }
  return sum;
}

void attend_scalar(const float* q, const float* keys, const float* values, std::int64_t len, std::int64_t D,
                   float scale, float* scores, float* out) {
  float max = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < len; ++j) {
    float s[16] = {};
    for (std::int64_t d = 0; d < D; ++d) s[d % 16] = std::fma(q[d], keys[j * D + d], s[d % 16]);
    scores[j] = lane_tree(s) * scale;
    max = std::max(max, scores[j]);
  }
  const float sum = exp_and_sum(scores, len, max);
  for (std::int64_t d = 0; d < D; ++d) out[d] = 0;
  for (std::int64_t j = 0; j < len; ++j) {
    const float p = scores[j] / sum;
    for (std::int64_t d = 0; d < D; ++d) out[d] = std::fma(p, values[j * D + d], out[d]);
  }
}

#if defined(__x86_64__)
// 8 lanes (l, l+4) then (l, l+2), (0, 1): the tail of lane_tree on a [t0..t7] vector.
__attribute__((target("avx2,fma"))) float tree8(__m256 t) {
  const __m128 u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  const __m128 w = _mm_add_ps(u, _mm_movehl_ps(u, u));
  return _mm_cvtss_f32(_mm_add_ss(w, _mm_movehdup_ps(w)));
}

// D = 16 * B. (Memory-bound: AVX-512 would not be faster here.)
template <int B>
__attribute__((target("avx2,fma"))) void attend_avx2(const float* q, const float* keys, const float* values,
                                                    std::int64_t len, float scale, float* scores, float* out) {
  constexpr std::int64_t D = 16 * B;
  float max = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < len; ++j) {
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();  // lanes 0..7, 8..15
    for (int b = 0; b < B; ++b) {
      lo = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16 * b), _mm256_loadu_ps(keys + j * D + 16 * b), lo);
      hi = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16 * b + 8), _mm256_loadu_ps(keys + j * D + 16 * b + 8), hi);
    }
    scores[j] = tree8(_mm256_add_ps(lo, hi)) * scale;
    max = std::max(max, scores[j]);
  }
  const float sum = exp_and_sum(scores, len, max);
  __m256 acc[2 * B];
  for (int b = 0; b < 2 * B; ++b) acc[b] = _mm256_setzero_ps();
  for (std::int64_t j = 0; j < len; ++j) {
    const __m256 p = _mm256_set1_ps(scores[j] / sum);
    for (int b = 0; b < 2 * B; ++b) acc[b] = _mm256_fmadd_ps(p, _mm256_loadu_ps(values + j * D + 8 * b), acc[b]);
  }
  for (int b = 0; b < 2 * B; ++b) _mm256_storeu_ps(out + 8 * b, acc[b]);
}
#endif

}  // namespace

void attend(const float* q, const float* keys, const float* values, std::int64_t len, std::int64_t D, float scale,
            float* scores, float* out) {
#if defined(__x86_64__)
  // AVX2 code, which the AVX-512 choices (avx512, avx512bw) also run
  if (D == 64 && (detail::use_avx2() || detail::use_avx512())) {
    return attend_avx2<4>(q, keys, values, len, scale, scores, out);
  }
#endif
  attend_scalar(q, keys, values, len, D, scale, scores, out);
}

}  // namespace writeup::model

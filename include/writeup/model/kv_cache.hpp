#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "writeup/model/gpt2_config.hpp"

namespace writeup::model {

// Keys and values of every layer for a fixed number of sequence slots, each able to hold
// `max_tokens` positions. A slot's first `length` positions are valid; the owner tracks
// lengths (the forward pass is told where each chunk starts).
class KVCache {
 public:
  KVCache(const GPT2Config& config, int slots, int max_tokens, const at::TensorOptions& options);

  int slots() const { return slots_; }
  int max_tokens() const { return max_tokens_; }
  std::size_t bytes() const;

  at::Tensor keys(int layer, int slot) const;    // [H, T, D]
  at::Tensor values(int layer, int slot) const;  // [H, T, D]
  at::Tensor keys(int layer) const;              // [S, H, T, D]
  at::Tensor values(int layer) const;            // [S, H, T, D]
  // Copies the first `tokens` positions of slot `from` into slot `to` (shared prompt).
  void copy_prefix(int from, int to, int tokens);

 private:
  int slots_;
  int max_tokens_;
  at::Tensor k_;  // [L, S, H, T, D]
  at::Tensor v_;  // [L, S, H, T, D]
};

// Attention of one query over positions [0, len) of one head: out[D] = softmax(q . K^T * scale) . V
// with keys, values [len, D] row-major and `scores` [len] scratch. The arithmetic is fixed,
// whatever kernel runs it (AVX2 or scalar; PackedLinear::force_kernel(generic) forces scalar, for tests):
// each dot product as 16 lanes (lane l: an FMA chain over d = l, l+16, ...) summed by the tree
// ((l, l+8), then (l, l+4), (l, l+2), (0, 1)); exp(score - max) summed in position order; each
// out[d] an FMA chain over positions of (e_j / sum) * v[j][d].
void attend(const float* q, const float* keys, const float* values, std::int64_t len, std::int64_t D, float scale,
            float* scores, float* out);

}  // namespace writeup::model

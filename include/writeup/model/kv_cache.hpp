#pragma once
#include <ATen/core/Tensor.h>

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
  // Copies the first `tokens` positions of slot `from` into slot `to` (shared prompt).
  void copy_prefix(int from, int to, int tokens);

 private:
  int slots_;
  int max_tokens_;
  at::Tensor k_;  // [L, S, H, T, D]
  at::Tensor v_;  // [L, S, H, T, D]
};

}  // namespace writeup::model

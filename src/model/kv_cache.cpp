#include "writeup/model/kv_cache.hpp"

#include <ATen/ATen.h>

#include <stdexcept>

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

void KVCache::copy_prefix(int from, int to, int tokens) {
  if (from == to || tokens == 0) return;
  // Narrow over T for all layers at once: [L, H, tokens, D].
  k_.select(1, to).narrow(2, 0, tokens).copy_(k_.select(1, from).narrow(2, 0, tokens));
  v_.select(1, to).narrow(2, 0, tokens).copy_(v_.select(1, from).narrow(2, 0, tokens));
}

}  // namespace writeup::model

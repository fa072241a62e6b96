#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <vector>

#include "writeup/model/gpt2_config.hpp"
#include "writeup/model/safetensors.hpp"

namespace writeup::model {

// One transformer block, named as in the checkpoint (h.N.*). HF's Conv1D stores weights
// as [in, out], so every projection is y = x @ W + b.
struct GPT2Block {
  at::Tensor ln_1_weight, ln_1_bias;            // [C]
  at::Tensor attn_c_attn_weight;                // [C, 3C] fused q|k|v
  at::Tensor attn_c_attn_bias;                  // [3C]
  at::Tensor attn_c_proj_weight;                // [C, C]
  at::Tensor attn_c_proj_bias;                  // [C]
  at::Tensor ln_2_weight, ln_2_bias;            // [C]
  at::Tensor mlp_c_fc_weight;                   // [C, 4C]
  at::Tensor mlp_c_fc_bias;                     // [4C]
  at::Tensor mlp_c_proj_weight;                 // [4C, C]
  at::Tensor mlp_c_proj_bias;                   // [C]
};

struct GPT2Weights {
  at::Tensor wte;                // [V, C] token embeddings
  at::Tensor wpe;                // [P, C] position embeddings
  std::vector<GPT2Block> h;      // n_layer blocks
  at::Tensor ln_f_weight, ln_f_bias;  // [C]
  at::Tensor lm_head;            // [V, C]; the same storage as wte when tied
  bool tied_lm_head = true;
  bool zero_copy = false;        // true when every tensor points into the mmap
  // False when the block matrices (and an untied lm_head) were left undefined: loaded with
  // `projections` false from a file that would need converting them (the packed-weights cache
  // had them). Views into the mapping cost nothing and are kept.
  bool projections = true;
};

// Builds the weights from a checkpoint: keys with or without "transformer.", attention
// mask buffers ignored, lm_head.weight when present else tied to wte. Each tensor must be
// present with its exact shape or ModelError names it. F32 tensors on CPU in float32 are
// used straight from the mapping; everything else is converted (F16/BF16 compute in float32
// on CPU) and moved to `device`. With `projections` false the block matrices and an untied
// lm_head are only taken when they are such views (shapes checked, nothing read).
GPT2Weights load_gpt2_weights(const std::shared_ptr<SafetensorsFile>& file,
                              const GPT2Config& config, c10::Device device,
                              c10::ScalarType dtype, bool projections = true);

}  // namespace writeup::model

#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "writeup/model/gpt2_config.hpp"
#include "writeup/model/gpt2_weights.hpp"
#include "writeup/model/kv_cache.hpp"
#include "writeup/model/load_options.hpp"
#include "writeup/model/packed_linear.hpp"
#include "writeup/model/sequence_chunk.hpp"

namespace writeup::model {

// GPT-2 with a KV cache. Thread-compatible: one thread (the model's worker) calls forward.
class GPT2Model {
 public:
  // Loads config.json + model.safetensors from a Hugging Face model directory.
  static std::shared_ptr<GPT2Model> load(const std::filesystem::path& dir,
                                         const LoadOptions& options = {});
  // `prepacked`: the packed layers (every block's c_attn, attn c_proj, c_fc, mlp c_proj, then
  // the LM head; PackedCache) when they are already at hand, else empty (packed here).
  GPT2Model(GPT2Config config, GPT2Weights weights, c10::Device device, c10::ScalarType dtype,
            std::string fingerprint, bool packed = false, WeightFormat format = WeightFormat::f32,
            std::vector<PackedLinear> prepacked = {});

  const GPT2Config& config() const { return config_; }
  const GPT2Weights& weights() const { return weights_; }
  c10::Device device() const { return device_; }
  c10::ScalarType dtype() const { return dtype_; }
  // True when the CPU packed kernels run the projections: a row's logits are then bitwise the
  // same whatever else shares its batch.
  bool batch_invariant() const { return packed_; }
  // The packed kernels' weight format (f32 when they do not run).
  WeightFormat weight_format() const { return weight_format_; }
  // Stable hash of the weights file's header and size (hex), for cache keys; "-bf16" or "-int8"
  // appended when the packed kernels use that weight format (its logits differ).
  const std::string& fingerprint() const { return fingerprint_; }

  // The packed layers in PackedCache order (empty when the packed kernels do not run).
  std::vector<const PackedLinear*> packed_layers() const;
  // Whether the packed layers came from the packed-weights cache file.
  bool packed_from_cache() const { return packed_from_cache_; }

  KVCache make_cache(int slots, int max_tokens = 0) const;  // 0 = n_positions

  // Runs every chunk in one batch, writes their keys/values into `cache`, and returns float32
  // logits on the CPU: [chunks, V] for each chunk's last token, or [total tokens, V] with
  // `all_logits`. Throws std::invalid_argument when a chunk would run past the context.
  // A thin wrapper over a ForwardStep made for this call (tools and tests; a worker keeps a
  // ModelRunner, whose step buffers persist).
  at::Tensor forward(std::span<const SequenceChunk> chunks, KVCache& cache,
                     bool all_logits = false) const;

 private:
  friend class ForwardStep;  // the one step implementation (forward_step.hpp)

  struct PackedBlock {
    PackedLinear c_attn, attn_proj, c_fc, mlp_proj;
  };

  GPT2Config config_;
  GPT2Weights weights_;
  c10::Device device_;
  c10::ScalarType dtype_;
  std::string fingerprint_;
  bool packed_ = false;
  WeightFormat weight_format_ = WeightFormat::f32;
  std::vector<PackedBlock> packed_blocks_;
  PackedLinear packed_lm_head_;
  bool packed_from_cache_ = false;
};

// Stable fingerprint of a safetensors file: its header, size and sampled tensor values
// (SafetensorsFile::content_digest).
std::string model_fingerprint(const SafetensorsFile& file);

}  // namespace writeup::model

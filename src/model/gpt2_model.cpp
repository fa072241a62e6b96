#include "writeup/model/gpt2_model.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <stdexcept>

#include "writeup/model/errors.hpp"
#include "writeup/model/forward_step.hpp"
#include "writeup/model/packed_cache.hpp"
#include "writeup/util/hash.hpp"
#include "writeup/util/logging.hpp"

namespace writeup::model {
namespace {

c10::ScalarType parse_dtype(const std::string& name, const c10::Device& device) {
  if (name == "auto") return device.is_cpu() ? at::kFloat : at::kHalf;
  if (name == "float32" || name == "fp32") return at::kFloat;
  if (name == "float16" || name == "fp16") return at::kHalf;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  throw std::invalid_argument("unknown dtype '" + name +
                              "' (expected auto, float32, float16 or bfloat16)");
}

c10::Device parse_device(const std::string& name) {
  try {
    return c10::Device(name);
  } catch (const std::exception&) {
    throw std::invalid_argument("unknown device '" + name + "' (expected cpu or cuda[:N])");
  }
}

// The packed layers' shapes in PackedCache order: per block c_attn, attn c_proj, c_fc, mlp
// c_proj ([K, N]), then the LM head ([C, V]).
std::vector<std::pair<std::int64_t, std::int64_t>> packed_shapes(const GPT2Config& c) {
  const std::int64_t C = c.n_embd, M = c.mlp_dim();
  std::vector<std::pair<std::int64_t, std::int64_t>> out;
  for (int l = 0; l < c.n_layer; ++l) out.insert(out.end(), {{C, 3 * C}, {C, C}, {C, M}, {M, C}});
  out.emplace_back(C, c.vocab_size);
  return out;
}

}  // namespace

std::string model_fingerprint(const SafetensorsFile& file) {
  return to_hex64(file.content_digest());
}

std::shared_ptr<GPT2Model> GPT2Model::load(const std::filesystem::path& dir,
                                           const LoadOptions& options) {
  if (!std::filesystem::is_directory(dir)) {
    throw ModelError(dir.string() + ": model directory does not exist");
  }
  const auto device = parse_device(options.device);
  auto dtype = parse_dtype(options.dtype, device);
  if (device.is_cpu() && dtype != at::kFloat) {
    dtype = at::kFloat;  // CPU kernels for half GEMM are slow or missing: compute in float32
  }
  const WeightFormat weights_format = parse_weight_format(options.weights);
  if (weights_format != WeightFormat::f32 && (!device.is_cpu() || !options.packed)) {
    throw std::invalid_argument("weights '" + options.weights +
                                "' needs the CPU packed kernels (device cpu, packed); use f32 on " +
                                (device.is_cpu() ? std::string("the unpacked path") : device.str()));
  }
  auto config = GPT2Config::from_file(dir / "config.json");
  const auto weights_path = dir / "model.safetensors";
  if (!std::filesystem::exists(weights_path)) {
    throw ModelError(dir.string() + ": no model.safetensors (convert .bin checkpoints first)");
  }
  auto file = SafetensorsFile::open(weights_path);
  auto fingerprint = model_fingerprint(*file);
  // The packed-weights cache: on a hit the block matrices are not read from the weights file.
  const bool packs = options.packed && device.is_cpu() && config.head_dim() <= 256;
  const auto cache_dir = packs ? PackedCache::directory(options.packed_cache, dir) : std::filesystem::path();
  PackedCacheKey key{fingerprint, weights_format, packed_shapes(config)};
  const auto cache_path = cache_dir.empty() ? cache_dir : cache_dir / PackedCache::file_name(key);
  std::vector<PackedLinear> cached;
  if (!cache_path.empty()) {
    std::string why;
    try {
      cached = PackedCache::read(cache_path, key, &why);
    } catch (const std::exception& e) {  // never a failed load
      cached.clear();
      why = e.what();
    }
    if (cached.empty() && why != "missing") {
      log::warn("packed-weights cache " + cache_path.string() + " ignored (" + why + "): repacking");
    }
  }
  const bool hit = !cached.empty();
  auto weights = load_gpt2_weights(file, config, device, dtype, /*projections=*/!hit);
  auto model = std::make_shared<GPT2Model>(std::move(config), std::move(weights), device, dtype, std::move(fingerprint),
                                           options.packed && device.is_cpu(), weights_format, std::move(cached));
  if (hit) {
    log::info("packed weights mapped from " + cache_path.string());
  } else if (!cache_path.empty() && model->batch_invariant()) {
    // Written on a thread of its own: this load does not wait for the disk. (Logging first also
    // builds the logger before the writers' registry, which then ends, at exit, before it.)
    log::debug("writing the packed-weights cache " + cache_path.string());
    std::vector<PackedLinear> layers;
    for (const auto* l : model->packed_layers()) layers.push_back(*l);
    PackedCache::write_in_background(cache_path, key, std::move(layers),
                                     [cache_path, key](bool written, const std::string& why) {
                                       if (written) {
                                         log::info("packed weights cached in " + cache_path.string());
                                         for (const auto& old : PackedCache::remove_stale(cache_path, key)) {
                                           log::info("removed the stale packed-weights file " + old.string());
                                         }
                                       } else {
                                         log::warn("packed-weights cache not written (" + why +
                                                   "); the model loaded without it");
                                       }
                                     });
  }
  return model;
}

std::vector<const PackedLinear*> GPT2Model::packed_layers() const {
  std::vector<const PackedLinear*> out;
  if (!packed_) return out;
  for (const auto& b : packed_blocks_) out.insert(out.end(), {&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj});
  out.push_back(&packed_lm_head_);
  return out;
}

GPT2Model::GPT2Model(GPT2Config config, GPT2Weights weights, c10::Device device,
                     c10::ScalarType dtype, std::string fingerprint, bool packed, WeightFormat format,
                     std::vector<PackedLinear> prepacked)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      device_(device),
      dtype_(dtype),
      fingerprint_(std::move(fingerprint)),
      packed_(packed && device.is_cpu() && dtype == at::kFloat && config_.head_dim() <= 256) {
  if (!packed_) {
    if (format != WeightFormat::f32) {
      throw std::invalid_argument(std::string("weights '") + to_string(format) +
                                  "' needs the CPU packed kernels, which this model cannot use");
    }
    return;
  }
  weight_format_ = format;
  // Another format gives other logits, so other cache keys: "<file digest>-bf16" / "-int8".
  if (format != WeightFormat::f32) fingerprint_ += std::string("-") + to_string(format);
  const std::size_t layers = weights_.h.size();
  if (!prepacked.empty()) {
    if (prepacked.size() != 4 * layers + 1) throw std::invalid_argument("prepacked layers do not match the model");
    for (std::size_t l = 0; l < layers; ++l) {
      packed_blocks_.push_back({std::move(prepacked[4 * l]), std::move(prepacked[4 * l + 1]),
                                std::move(prepacked[4 * l + 2]), std::move(prepacked[4 * l + 3])});
    }
    packed_lm_head_ = std::move(prepacked.back());
    packed_from_cache_ = true;
    return;
  }
  if (!weights_.projections) throw std::invalid_argument("the model has neither its projection weights nor packed ones");
  c10::InferenceMode guard;
  for (const auto& b : weights_.h) {
    packed_blocks_.push_back({PackedLinear(b.attn_c_attn_weight, b.attn_c_attn_bias, false, format),
                              PackedLinear(b.attn_c_proj_weight, b.attn_c_proj_bias, false, format),
                              PackedLinear(b.mlp_c_fc_weight, b.mlp_c_fc_bias, false, format),
                              PackedLinear(b.mlp_c_proj_weight, b.mlp_c_proj_bias, false, format)});
  }
  packed_lm_head_ = PackedLinear(weights_.lm_head, at::Tensor(), /*transposed=*/true, format);
}

KVCache GPT2Model::make_cache(int slots, int max_tokens) const {
  if (max_tokens <= 0) max_tokens = config_.n_positions;
  return KVCache(config_, slots, max_tokens, at::TensorOptions().dtype(dtype_).device(device_));
}

at::Tensor GPT2Model::forward(std::span<const SequenceChunk> chunks, KVCache& cache,
                              bool all_logits) const {
  std::size_t tokens = 0;
  for (const auto& c : chunks) tokens += c.tokens.size();
  StepOptions options;
  options.max_step_tokens = static_cast<int>(std::max<std::size_t>(tokens, 1));
  options.slots = cache.slots();
  options.max_tokens = cache.max_tokens();
  ForwardStep step(*this, options);
  return step.run(chunks, cache, all_logits);
}

}  // namespace writeup::model

#include "writeup/model/gpt2_model.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "writeup/model/errors.hpp"
#include "writeup/util/hash.hpp"

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

// y = x @ W + b with HF Conv1D weights [in, out]. A single row goes through GEMV: W^T is
// column-major, so BLAS streams the weights once instead of packing them as GEMM does.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (x.size(0) == 1) return at::addmv(bias, weight.t(), x[0]).unsqueeze(0);
  return at::addmm(bias, x, weight);
}

// logits = x @ wte^T; one row as GEMV over wte's rows.
at::Tensor lm_head(const at::Tensor& x, const at::Tensor& weight) {
  if (x.size(0) == 1) return at::mv(weight, x[0]).unsqueeze(0);
  return at::mm(x, weight.t());
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
  auto config = GPT2Config::from_file(dir / "config.json");
  const auto weights_path = dir / "model.safetensors";
  if (!std::filesystem::exists(weights_path)) {
    throw ModelError(dir.string() + ": no model.safetensors (convert .bin checkpoints first)");
  }
  auto file = SafetensorsFile::open(weights_path);
  auto fingerprint = model_fingerprint(*file);
  auto weights = load_gpt2_weights(file, config, device, dtype);
  return std::make_shared<GPT2Model>(std::move(config), std::move(weights), device, dtype,
                                     std::move(fingerprint), options.packed && device.is_cpu());
}

GPT2Model::GPT2Model(GPT2Config config, GPT2Weights weights, c10::Device device,
                     c10::ScalarType dtype, std::string fingerprint, bool packed)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      device_(device),
      dtype_(dtype),
      fingerprint_(std::move(fingerprint)),
      packed_(packed && device.is_cpu() && dtype == at::kFloat && config_.head_dim() <= 256) {
  if (!packed_) return;
  c10::InferenceMode guard;
  for (const auto& b : weights_.h) {
    packed_blocks_.push_back({PackedLinear(b.attn_c_attn_weight, b.attn_c_attn_bias),
                              PackedLinear(b.attn_c_proj_weight, b.attn_c_proj_bias),
                              PackedLinear(b.mlp_c_fc_weight, b.mlp_c_fc_bias),
                              PackedLinear(b.mlp_c_proj_weight, b.mlp_c_proj_bias)});
  }
  packed_lm_head_ = PackedLinear(weights_.lm_head, at::Tensor(), /*transposed=*/true);
}

at::Tensor GPT2Model::project(const at::Tensor& x, int layer, int which) const {
  const auto l = static_cast<std::size_t>(layer);
  if (packed_) {
    const auto& p = packed_blocks_[l];
    const PackedLinear* lin[] = {&p.c_attn, &p.attn_proj, &p.c_fc, &p.mlp_proj};
    return lin[which]->forward(x);
  }
  const auto& b = weights_.h[l];
  switch (which) {
    case 0: return linear(x, b.attn_c_attn_weight, b.attn_c_attn_bias);
    case 1: return linear(x, b.attn_c_proj_weight, b.attn_c_proj_bias);
    case 2: return linear(x, b.mlp_c_fc_weight, b.mlp_c_fc_bias);
    default: return linear(x, b.mlp_c_proj_weight, b.mlp_c_proj_bias);
  }
}

at::Tensor GPT2Model::logits(const at::Tensor& x) const {
  return packed_ ? packed_lm_head_.forward(x) : lm_head(x, weights_.lm_head);
}

KVCache GPT2Model::make_cache(int slots, int max_tokens) const {
  if (max_tokens <= 0) max_tokens = config_.n_positions;
  return KVCache(config_, slots, max_tokens, at::TensorOptions().dtype(dtype_).device(device_));
}

at::Tensor GPT2Model::forward(std::span<const SequenceChunk> chunks, KVCache& cache,
                              bool all_logits) const {
  c10::InferenceMode guard;
  if (chunks.empty()) throw std::invalid_argument("forward needs at least one sequence");
  std::vector<std::int64_t> ids, pos, last_rows;
  for (const auto& c : chunks) {
    if (c.tokens.empty()) throw std::invalid_argument("a sequence chunk has no tokens");
    if (c.slot < 0 || c.slot >= cache.slots()) {
      throw std::invalid_argument("KV-cache slot " + std::to_string(c.slot) + " out of range");
    }
    const auto end = static_cast<std::int64_t>(c.start) + static_cast<std::int64_t>(c.tokens.size());
    if (c.start < 0 || end > cache.max_tokens()) {
      throw std::invalid_argument(
          "sequence of " + std::to_string(end) + " tokens exceeds the model context of " +
          std::to_string(cache.max_tokens()) + " tokens");
    }
    for (std::size_t i = 0; i < c.tokens.size(); ++i) {
      if (c.tokens[i] < 0 || c.tokens[i] >= config_.vocab_size) {
        throw std::invalid_argument("token id " + std::to_string(c.tokens[i]) +
                                    " is outside the vocabulary");
      }
      ids.push_back(c.tokens[i]);
      pos.push_back(c.start + static_cast<std::int64_t>(i));
    }
    last_rows.push_back(static_cast<std::int64_t>(ids.size()) - 1);
  }
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  const auto ids_t = at::tensor(ids, long_opts).to(device_);
  const auto pos_t = at::tensor(pos, long_opts).to(device_);
  // [N, C] token + position embeddings for every new token of every chunk
  at::Tensor x = weights_.wte.index_select(0, ids_t) + weights_.wpe.index_select(0, pos_t);
  for (int l = 0; l < config_.n_layer; ++l) x = block(x, chunks, cache, l);
  x = at::layer_norm(x, {config_.n_embd}, weights_.ln_f_weight, weights_.ln_f_bias,
                     config_.layer_norm_epsilon);  // [N, C]
  if (!all_logits) x = x.index_select(0, at::tensor(last_rows, long_opts).to(device_));
  return logits(x).to(at::kCPU, at::kFloat).contiguous();  // [B, V]
}

at::Tensor GPT2Model::block(const at::Tensor& x, std::span<const SequenceChunk> chunks,
                            KVCache& cache, int layer) const {
  const auto& b = weights_.h[static_cast<std::size_t>(layer)];
  const double eps = config_.layer_norm_epsilon;
  at::Tensor h = at::layer_norm(x, {config_.n_embd}, b.ln_1_weight, b.ln_1_bias, eps);  // [N, C]
  at::Tensor qkv = project(h, layer, 0);                                              // [N, 3C]
  at::Tensor a = attention(qkv, chunks, cache, layer);                               // [N, C]
  at::Tensor x1 = x + project(a, layer, 1);                                          // [N, C]
  h = at::layer_norm(x1, {config_.n_embd}, b.ln_2_weight, b.ln_2_bias, eps);          // [N, C]
  at::Tensor m = at::gelu(project(h, layer, 2), "tanh");                             // [N, 4C]
  return x1 + project(m, layer, 3);                                                  // [N, C]
}

at::Tensor GPT2Model::attention(const at::Tensor& qkv, std::span<const SequenceChunk> chunks,
                                KVCache& cache, int layer) const {
  const std::int64_t C = config_.n_embd, H = config_.n_head, D = config_.head_dim();
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  at::Tensor out = at::empty({qkv.size(0), C}, qkv.options());  // [N, C]
  std::vector<DecodeRow> decode_rows;  // one-token chunks: the fused CPU kernel below
  std::int64_t row = 0;
  for (const auto& c : chunks) {
    const std::int64_t t = static_cast<std::int64_t>(c.tokens.size());
    const std::int64_t total = c.start + t;
    if (t == 1 && packed_) {
      decode_rows.push_back({row, c.slot, c.start});
      row += 1;
      continue;
    }
    const auto rows = qkv.narrow(0, row, t);                            // [t, 3C]
    const auto q = rows.narrow(1, 0, C).view({t, H, D}).transpose(0, 1);      // [H, t, D]
    const auto k = rows.narrow(1, C, C).view({t, H, D}).transpose(0, 1);      // [H, t, D]
    const auto v = rows.narrow(1, 2 * C, C).view({t, H, D}).transpose(0, 1);  // [H, t, D]
    at::Tensor kc = cache.keys(layer, c.slot);                          // [H, T, D]
    at::Tensor vc = cache.values(layer, c.slot);                        // [H, T, D]
    kc.narrow(1, c.start, t).copy_(k);
    vc.narrow(1, c.start, t).copy_(v);
    const auto keys = kc.narrow(1, 0, total);                           // [H, total, D]
    const auto values = vc.narrow(1, 0, total);                         // [H, total, D]
    at::Tensor scores = at::matmul(q, keys.transpose(1, 2)).mul_(scale);  // [H, t, total]
    if (t > 1) {
      // Causal: new token i (at position start+i) sees positions 0..start+i.
      const auto mask = at::ones({t, total}, at::TensorOptions().dtype(at::kBool).device(device_))
                            .triu(c.start + 1);
      scores.masked_fill_(mask, -std::numeric_limits<float>::infinity());
    }
    const auto probs = at::softmax(scores, -1, at::kFloat).to(scores.scalar_type());
    const auto y = at::matmul(probs, values);                           // [H, t, D]
    out.narrow(0, row, t).copy_(y.transpose(0, 1).reshape({t, C}));
    row += t;
  }
  if (!decode_rows.empty()) decode_attention(qkv, decode_rows, cache, layer, out);
  return out;
}

// Attention for single-token decode rows, one (row, head) per task, no tensor ops: writes the
// row's key and value into its slot, then softmax(q.K^T * scale) . V over its own positions.
// Each reduction runs in a fixed order (see attend), so a row's result depends on nothing but
// its own sequence, and this pass costs no per-sequence operator overhead.
void GPT2Model::decode_attention(const at::Tensor& qkv, const std::vector<DecodeRow>& rows, KVCache& cache,
                                 int layer, at::Tensor& out) const {
  const std::int64_t C = config_.n_embd, H = config_.n_head, D = config_.head_dim();
  const std::int64_t T = cache.max_tokens();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const float* in = qkv.data_ptr<float>();  // [N, 3C] contiguous
  float* o = out.data_ptr<float>();         // [N, C]
  float* kbase = cache.keys(layer, 0).data_ptr<float>();
  float* vbase = cache.values(layer, 0).data_ptr<float>();
  const std::int64_t slot_stride = H * T * D;
  at::parallel_for(0, static_cast<std::int64_t>(rows.size()) * H, 1, [&](std::int64_t b, std::int64_t e) {
    thread_local std::vector<float> scores;  // [T], reused across steps
    scores.resize(static_cast<std::size_t>(T));
    for (std::int64_t task = b; task < e; ++task) {
      const auto& r = rows[static_cast<std::size_t>(task / H)];
      const std::int64_t h = task % H;
      const float* q = in + r.row * 3 * C + h * D;
      float* kc = kbase + r.slot * slot_stride + h * T * D;  // [T, D]
      float* vc = vbase + r.slot * slot_stride + h * T * D;
      std::memcpy(kc + r.pos * D, in + r.row * 3 * C + C + h * D, static_cast<std::size_t>(D) * sizeof(float));
      std::memcpy(vc + r.pos * D, in + r.row * 3 * C + 2 * C + h * D, static_cast<std::size_t>(D) * sizeof(float));
      attend(q, kc, vc, r.pos + 1, D, scale, scores.data(), o + r.row * C + h * D);
    }
  });
}

}  // namespace writeup::model

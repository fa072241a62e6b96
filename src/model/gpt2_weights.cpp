#include "writeup/model/gpt2_weights.hpp"

#include <ATen/ATen.h>

#include "writeup/model/errors.hpp"

namespace writeup::model {
namespace {

c10::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
  }
  return at::kFloat;
}

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class TensorSource {
 public:
  TensorSource(std::shared_ptr<SafetensorsFile> file, c10::Device device, c10::ScalarType dtype)
      : file_(std::move(file)), device_(device), dtype_(dtype) {
    // Published GPT-2 checkpoints have no prefix; save_pretrained writes "transformer.".
    prefix_ = file_->find("transformer.wte.weight") ? "transformer." : "";
  }

  bool has(const std::string& name) const { return file_->find(name) != nullptr; }
  bool all_zero_copy() const { return zero_copy_; }

  // The named tensor (prefix added unless `bare`), checked against `shape`.
  // With `needed` false: the tensor only when it is a view into the mapping (nothing read),
  // else an undefined tensor.
  at::Tensor get(const std::string& name, std::vector<std::int64_t> shape, bool bare = false, bool needed = true) {
    const std::string key = bare ? name : prefix_ + name;
    const TensorInfo* info = file_->find(key);
    if (!info) {
      throw ModelError(file_->path().string() + ": required tensor '" + key + "' is missing");
    }
    if (info->shape != shape) {
      throw ModelError(file_->path().string() + ": tensor '" + key + "' has shape " +
                       shape_str(info->shape) + ", expected " + shape_str(shape));
    }
    if (!needed && !free_view(*info)) {
      skipped_ = true;
      return at::Tensor();
    }
    return materialise(*info);
  }
  bool skipped() const { return skipped_; }

 private:
  bool free_view(const TensorInfo& info) const {
    const bool aligned = reinterpret_cast<std::uintptr_t>(file_->data(info)) % dtype_size(info.dtype) == 0;
    return aligned && to_scalar_type(info.dtype) == dtype_ && device_.is_cpu();
  }

  at::Tensor materialise(const TensorInfo& info) {
    const auto type = to_scalar_type(info.dtype);
    const auto* ptr = file_->data(info);
    const bool aligned = reinterpret_cast<std::uintptr_t>(ptr) % dtype_size(info.dtype) == 0;
    // The deleter holds the mapping alive for as long as any view of it exists.
    auto keep = file_;
    at::Tensor view;
    if (aligned) {
      view = at::from_blob(const_cast<std::byte*>(ptr), info.shape,
                           [keep](void*) mutable { keep.reset(); },
                           at::TensorOptions().dtype(type));
    } else {
      view = at::empty(info.shape, at::TensorOptions().dtype(type));
      std::memcpy(view.data_ptr(), ptr, info.end - info.begin);
    }
    if (aligned && type == dtype_ && device_.is_cpu()) return view;  // zero copy
    zero_copy_ = false;
    return view.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true).contiguous();
  }

  std::shared_ptr<SafetensorsFile> file_;
  c10::Device device_;
  c10::ScalarType dtype_;
  std::string prefix_;
  bool zero_copy_ = true;
  bool skipped_ = false;
};

}  // namespace

GPT2Weights load_gpt2_weights(const std::shared_ptr<SafetensorsFile>& file,
                              const GPT2Config& config, c10::Device device,
                              c10::ScalarType dtype, bool projections) {
  TensorSource src(file, device, dtype);
  const std::int64_t C = config.n_embd, V = config.vocab_size, P = config.n_positions,
                     M = config.mlp_dim();
  GPT2Weights w;
  w.wte = src.get("wte.weight", {V, C});
  w.wpe = src.get("wpe.weight", {P, C});
  w.h.resize(static_cast<std::size_t>(config.n_layer));
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    auto& b = w.h[static_cast<std::size_t>(l)];
    b.ln_1_weight = src.get(p + "ln_1.weight", {C});
    b.ln_1_bias = src.get(p + "ln_1.bias", {C});
    b.attn_c_attn_weight = src.get(p + "attn.c_attn.weight", {C, 3 * C}, false, projections);
    b.attn_c_attn_bias = src.get(p + "attn.c_attn.bias", {3 * C});
    b.attn_c_proj_weight = src.get(p + "attn.c_proj.weight", {C, C}, false, projections);
    b.attn_c_proj_bias = src.get(p + "attn.c_proj.bias", {C});
    b.ln_2_weight = src.get(p + "ln_2.weight", {C});
    b.ln_2_bias = src.get(p + "ln_2.bias", {C});
    b.mlp_c_fc_weight = src.get(p + "mlp.c_fc.weight", {C, M}, false, projections);
    b.mlp_c_fc_bias = src.get(p + "mlp.c_fc.bias", {M});
    b.mlp_c_proj_weight = src.get(p + "mlp.c_proj.weight", {M, C}, false, projections);
    b.mlp_c_proj_bias = src.get(p + "mlp.c_proj.bias", {C});
  }
  w.ln_f_weight = src.get("ln_f.weight", {C});
  w.ln_f_bias = src.get("ln_f.bias", {C});
  w.tied_lm_head = !src.has("lm_head.weight");
  w.lm_head = w.tied_lm_head ? w.wte : src.get("lm_head.weight", {V, C}, /*bare=*/true, projections);
  w.zero_copy = src.all_zero_copy();
  w.projections = !src.skipped();
  return w;
}

}  // namespace writeup::model

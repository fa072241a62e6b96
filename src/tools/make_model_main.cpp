// writeup-make-model: a random-weight Hugging Face GPT-2 directory at the real shapes, for
// benchmarks and GPU checks where no weights can be downloaded.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "cli_args.hpp"
#include "writeup/model/gpt2_config.hpp"
#include "writeup/model/safetensors.hpp"

namespace fs = std::filesystem;
using writeup::model::DType;
using writeup::model::GPT2Config;
using writeup::model::TensorSpec;

namespace {

constexpr const char* kUsage =
    "usage: writeup-make-model --shape tiny|small|medium|large|xl --out DIR\n"
    "                          [--dtype f32|f16|bf16] [--seed S] [--vocab-from DIR]\n";

GPT2Config shape_config(const std::string& shape) {
  struct Dims { int layer, head, embd, positions; };
  static const std::map<std::string, Dims> shapes = {
      {"tiny", {2, 4, 64, 128}},       {"small", {12, 12, 768, 1024}},
      {"medium", {24, 16, 1024, 1024}}, {"large", {36, 20, 1280, 1024}},
      {"xl", {48, 25, 1600, 1024}}};
  auto it = shapes.find(shape);
  if (it == shapes.end()) {
    throw std::invalid_argument("--shape must be tiny, small, medium, large or xl, got '" + shape + "'");
  }
  GPT2Config c;
  c.n_layer = it->second.layer;
  c.n_head = it->second.head;
  c.n_embd = it->second.embd;
  c.n_positions = it->second.positions;
  return c;
}

DType parse_dtype(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f16") return DType::F16;
  if (s == "bf16") return DType::BF16;
  throw std::invalid_argument("--dtype must be f32, f16 or bf16, got '" + s + "'");
}

// Tensor list in checkpoint order, with the init std of each (GPT-2's init: N(0, 0.02),
// residual projections scaled by 1/sqrt(2 n_layer), LayerNorm weight 1 and bias 0).
struct Init { TensorSpec spec; double std; double fill; };
std::vector<Init> tensor_plan(const GPT2Config& c, DType dtype) {
  const std::int64_t C = c.n_embd, M = c.mlp_dim();
  const double s = 0.02, proj = 0.02 / std::sqrt(2.0 * c.n_layer);
  std::vector<Init> plan;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape, double std, double fill = 0) {
    plan.push_back({{"transformer." + name, dtype, std::move(shape)}, std, fill});
  };
  add("wte.weight", {c.vocab_size, C}, s);
  add("wpe.weight", {c.n_positions, C}, 0.01);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C}, 0, 1);
    add(p + "ln_1.bias", {C}, 0);
    add(p + "attn.c_attn.weight", {C, 3 * C}, s);
    add(p + "attn.c_attn.bias", {3 * C}, 0);
    add(p + "attn.c_proj.weight", {C, C}, proj);
    add(p + "attn.c_proj.bias", {C}, 0);
    add(p + "ln_2.weight", {C}, 0, 1);
    add(p + "ln_2.bias", {C}, 0);
    add(p + "mlp.c_fc.weight", {C, M}, s);
    add(p + "mlp.c_fc.bias", {M}, 0);
    add(p + "mlp.c_proj.weight", {M, C}, proj);
    add(p + "mlp.c_proj.bias", {C}, 0);
  }
  add("ln_f.weight", {C}, 0, 1);
  add("ln_f.bias", {C}, 0);
  return plan;
}

int run(int argc, char** argv) {
  writeup::tools::CliArgs args(argc, argv, {"shape", "dtype", "seed", "out", "vocab-from"}, {"help"});
  if (args.has("help")) {
    std::cout << kUsage;
    return 0;
  }
  const auto config = shape_config(args.require("shape"));
  const DType dtype = parse_dtype(args.get("dtype", "f32"));
  const fs::path out = args.require("out");
  const fs::path vocab_dir = args.get("vocab-from", WRITEUP_SOURCE_DIR "/tests/data/tiny-gpt2");
  for (const char* f : {"vocab.json", "merges.txt"}) {
    if (!fs::exists(vocab_dir / f)) {
      throw std::invalid_argument("--vocab-from " + vocab_dir.string() + " has no " + f);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  fs::create_directories(out);
  auto gen = at::detail::createCPUGenerator(args.get_u64("seed", 1234));
  const auto plan = tensor_plan(config, dtype);
  std::vector<TensorSpec> specs;
  for (const auto& p : plan) specs.push_back(p.spec);
  const auto scalar = dtype == DType::F32 ? at::kFloat : dtype == DType::F16 ? at::kHalf : at::kBFloat16;
  writeup::model::write_safetensors(out / "model.safetensors", specs, {{"format", "pt"}}, [&](std::size_t i) {
    const auto& p = plan[i];
    at::Tensor t = p.std > 0 ? at::empty(p.spec.shape).normal_(0.0, p.std, gen)
                             : at::full(p.spec.shape, p.fill);
    t = t.to(scalar).contiguous();
    return std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  });
  std::ofstream(out / "config.json") << config.to_json();
  for (const char* f : {"vocab.json", "merges.txt"}) {
    fs::copy_file(vocab_dir / f, out / f, fs::copy_options::overwrite_existing);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "wrote " << out.string() << " (" << args.require("shape") << ", "
            << fs::file_size(out / "model.safetensors") / (1 << 20) << " MiB) in " << s << " s\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return writeup::tools::run_tool("writeup-make-model", kUsage, run, argc, argv);
}

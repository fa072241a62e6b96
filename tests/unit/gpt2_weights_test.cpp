#include "writeup/model/gpt2_weights.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "test_support.hpp"
#include "writeup/model/errors.hpp"
#include "writeup/model/gpt2_model.hpp"

using namespace writeup::model;
namespace t = writeup::test;
namespace fs = std::filesystem;

namespace {

// Copies tiny-gpt2 into `dir`, rewriting its weights: `edit` may drop (return false) or
// change the spec of each tensor; `extra` tensors are appended (bytes from `extra_bytes`).
void rewrite_model(const fs::path& dir, const std::function<bool(TensorSpec&)>& edit,
                   std::vector<TensorSpec> extra = {},
                   std::function<std::string(const TensorSpec&)> extra_bytes = {}) {
  const auto src = t::model_dir("tiny-gpt2");
  for (const char* f : {"config.json", "vocab.json", "merges.txt"}) fs::copy_file(src / f, dir / f);
  auto in = SafetensorsFile::open(src / "model.safetensors");
  std::vector<TensorSpec> specs;
  std::vector<const TensorInfo*> sources;
  for (const auto& ti : in->tensors()) {
    TensorSpec s{ti.name, ti.dtype, ti.shape};
    if (!edit(s)) continue;
    specs.push_back(s);
    sources.push_back(&ti);
  }
  const std::size_t n_src = specs.size();
  for (auto& e : extra) specs.push_back(e);
  write_safetensors(dir / "model.safetensors", specs, {}, [&](std::size_t i) {
    if (i >= n_src) return extra_bytes(specs[i]);
    std::uint64_t need = dtype_size(specs[i].dtype);
    for (auto d : specs[i].shape) need *= static_cast<std::uint64_t>(d);
    std::string bytes(reinterpret_cast<const char*>(in->data(*sources[i])),
                      sources[i]->end - sources[i]->begin);
    bytes.resize(need, '\0');
    return bytes;
  });
}

std::string load_error(const fs::path& dir) {
  try {
    GPT2Model::load(dir);
    return "";
  } catch (const ModelError& e) {
    return e.what();
  }
}

}  // namespace

TEST(GPT2Weights, LoadsAllThreeLayouts) {
  for (const char* name : {"tiny-gpt2", "tiny-gpt2-hub", "tiny-gpt2-f16"}) {
    auto m = GPT2Model::load(t::model_dir(name));
    EXPECT_EQ(m->config().n_layer, 2) << name;
    EXPECT_EQ(m->config().n_positions, 64) << name;
    EXPECT_EQ(m->weights().h.size(), 2u) << name;
    EXPECT_EQ(m->weights().wte.scalar_type(), at::kFloat) << name;
    EXPECT_TRUE(m->weights().tied_lm_head) << name;
    EXPECT_EQ(m->weights().lm_head.data_ptr(), m->weights().wte.data_ptr()) << name;
  }
}

TEST(GPT2Weights, Float32OnCpuIsUsedStraightFromTheMapping) {
  auto m = GPT2Model::load(t::model_dir("tiny-gpt2"));
  EXPECT_TRUE(m->weights().zero_copy);
  auto f16 = GPT2Model::load(t::model_dir("tiny-gpt2-f16"));
  EXPECT_FALSE(f16->weights().zero_copy);
  // The float16 copy holds the same weights to float16 precision.
  const auto diff = (m->weights().wte - f16->weights().wte).abs().max().item<float>();
  EXPECT_LT(diff, 2e-3);
  EXPECT_GT(diff, 0.0f);
}

TEST(GPT2Weights, UsesAnUntiedLmHeadWhenPresent) {
  t::TempDir dir;
  rewrite_model(dir.path(), [](TensorSpec&) { return true; },
                {{"lm_head.weight", DType::F32, {50257, 16}}},
                [](const TensorSpec& s) { return std::string(50257 * 16 * 4, '\0'); });
  auto m = GPT2Model::load(dir.path());
  EXPECT_FALSE(m->weights().tied_lm_head);
  EXPECT_EQ(m->weights().lm_head.abs().sum().item<float>(), 0.0f);
  EXPECT_NE(m->weights().wte.abs().sum().item<float>(), 0.0f);
}

TEST(GPT2Weights, NamesAMissingTensor) {
  t::TempDir dir;
  rewrite_model(dir.path(), [](TensorSpec& s) { return s.name != "transformer.h.1.mlp.c_fc.bias"; });
  const auto err = load_error(dir.path());
  EXPECT_NE(err.find("'transformer.h.1.mlp.c_fc.bias' is missing"), std::string::npos) << err;
}

TEST(GPT2Weights, NamesATensorWithTheWrongShape) {
  t::TempDir dir;
  rewrite_model(dir.path(), [](TensorSpec& s) {
    if (s.name == "transformer.h.0.attn.c_attn.weight") s.shape = {48, 16};
    return true;
  });
  const auto err = load_error(dir.path());
  EXPECT_NE(err.find("'transformer.h.0.attn.c_attn.weight' has shape [48, 16], expected [16, 48]"),
            std::string::npos)
      << err;
}

TEST(GPT2Weights, ConfigErrorsNameTheKey) {
  t::TempDir dir;
  rewrite_model(dir.path(), [](TensorSpec&) { return true; });
  auto config = t::load_json(dir / "config.json");
  config.erase("n_layer");
  t::write_file(dir / "config.json", config.dump());
  EXPECT_NE(load_error(dir.path()).find("'n_layer'"), std::string::npos);
  config["n_layer"] = 2;
  config["activation_function"] = "relu";
  t::write_file(dir / "config.json", config.dump());
  EXPECT_NE(load_error(dir.path()).find("activation_function"), std::string::npos);
  config["activation_function"] = "gelu_new";
  config["n_head"] = 5;
  t::write_file(dir / "config.json", config.dump());
  EXPECT_NE(load_error(dir.path()).find("not divisible"), std::string::npos);
  EXPECT_NE(load_error(dir / "nowhere").find("does not exist"), std::string::npos);
}

TEST(GPT2Weights, FingerprintIsStableAndTellsFilesApart) {
  const auto a1 = GPT2Model::load(t::model_dir("tiny-gpt2"))->fingerprint();
  const auto a2 = GPT2Model::load(t::model_dir("tiny-gpt2"))->fingerprint();
  const auto hub = GPT2Model::load(t::model_dir("tiny-gpt2-hub"))->fingerprint();
  const auto f16 = GPT2Model::load(t::model_dir("tiny-gpt2-f16"))->fingerprint();
  EXPECT_EQ(a1, a2);
  EXPECT_EQ(a1.size(), 16u);
  EXPECT_NE(a1, hub);
  EXPECT_NE(a1, f16);
}

TEST(GPT2Weights, FingerprintChangesWithOneWeightInTheMiddleOfATensor) {
  // A retrained model with the same shapes has the same header and size: the fingerprint must
  // still change, or the response cache serves the old model's texts.
  const auto src = t::model_dir("tiny-gpt2");
  const auto original = GPT2Model::load(src)->fingerprint();
  auto file = SafetensorsFile::open(src / "model.safetensors");
  const std::uint64_t data_offset = 8 + file->header().size();
  std::vector<const TensorInfo*> targets;
  for (const auto& ti : file->tensors()) {
    if (ti.name.find("h.0.mlp.c_fc.weight") != std::string::npos ||
        ti.name.find("ln_f.bias") != std::string::npos) {
      targets.push_back(&ti);
    }
  }
  ASSERT_EQ(targets.size(), 2u);
  for (const TensorInfo* ti : targets) {
    t::TempDir dir;
    for (const char* f : {"config.json", "vocab.json", "merges.txt", "model.safetensors"}) {
      fs::copy_file(src / f, dir / f);
    }
    EXPECT_EQ(GPT2Model::load(dir.path())->fingerprint(), original);  // same bytes elsewhere
    std::string bytes = t::read_file(dir / "model.safetensors");
    const std::uint64_t at = data_offset + ti->begin + (ti->numel() / 2) * 4;
    float v = 0;
    std::memcpy(&v, bytes.data() + at, 4);
    v = -v - 1.0f;
    std::memcpy(bytes.data() + at, &v, 4);
    t::write_file(dir / "model.safetensors", bytes);
    auto changed = SafetensorsFile::open(dir / "model.safetensors");
    EXPECT_EQ(changed->header(), file->header());
    EXPECT_EQ(changed->file_size(), file->file_size());
    EXPECT_NE(GPT2Model::load(dir.path())->fingerprint(), original) << ti->name;
  }
}

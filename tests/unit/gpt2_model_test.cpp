// Golden tests against Hugging Face transformers (fixtures golden.json and
// golden_logits.safetensors, produced on CPU in float32).
#include "writeup/model/gpt2_model.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "test_support.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/model/safetensors.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

using namespace writeup::model;
namespace t = writeup::test;

namespace {

nlohmann::json golden_cases() { return t::load_json(t::data_dir() / "golden.json")["cases"]; }

// The reference logits of the last rows of a case: [R, V].
at::Tensor golden_logits(const std::string& name) {
  static auto file = SafetensorsFile::open(t::data_dir() / "golden_logits.safetensors");
  const auto* info = file->find(name + ".logits");
  if (!info) throw std::runtime_error("no golden logits for " + name);
  return at::from_blob(const_cast<std::byte*>(file->data(*info)), info->shape, at::kFloat).clone();
}

at::Tensor all_logits(const GPT2Model& m, const std::vector<int>& ids) {
  auto cache = m.make_cache(1);
  std::vector<SequenceChunk> chunks{{0, 0, ids}};
  return m.forward(chunks, cache, /*all_logits=*/true);
}

struct Layout {
  const char* dir;
  double tolerance;
};
const Layout kLayouts[] = {{"tiny-gpt2", 1e-4}, {"tiny-gpt2-hub", 1e-4}, {"tiny-gpt2-f16", 2e-2}};

}  // namespace

TEST(GPT2Model, LogitsMatchTransformersForEveryCaseAndLayout) {
  for (const auto& layout : kLayouts) {
    auto model = GPT2Model::load(t::model_dir(layout.dir));
    for (const auto& c : golden_cases()) {
      const auto name = c["name"].get<std::string>();
      const auto ids = c["ids"].get<std::vector<int>>();
      const auto want = golden_logits(name);                        // [R, V]
      const auto got = all_logits(*model, ids);                     // [T, V]
      ASSERT_EQ(got.size(0), static_cast<std::int64_t>(ids.size()));
      const auto rows = got.narrow(0, got.size(0) - want.size(0), want.size(0));
      const double diff = (rows - want).abs().max().item<double>();
      EXPECT_LT(diff, layout.tolerance) << layout.dir << " / " << name;
      if (c.contains("last_top5_ids") && layout.tolerance < 1e-3) {
        const auto top = std::get<1>(rows[-1].topk(5));
        for (int k = 0; k < 5; ++k) {
          EXPECT_EQ(top[k].item<std::int64_t>(), c["last_top5_ids"][k].get<int>()) << name;
        }
      }
    }
  }
}

TEST(GPT2Model, FullContextCaseRunsAtExactlyNPositions) {
  auto model = GPT2Model::load(t::model_dir("tiny-gpt2"));
  for (const auto& c : golden_cases()) {
    if (c["name"] != "full") continue;
    const auto ids = c["ids"].get<std::vector<int>>();
    ASSERT_EQ(static_cast<int>(ids.size()), model->config().n_positions);
    const auto got = all_logits(*model, ids);
    EXPECT_LT((got.narrow(0, 60, 4) - golden_logits("full")).abs().max().item<double>(), 1e-4);
  }
}

// Greedy continuations through the whole engine: local_generation_test.cpp.

TEST(GPT2Model, KvCacheDecodeEqualsFullForward) {
  auto model = GPT2Model::load(t::model_dir("tiny-gpt2"));
  std::vector<int> ids;
  for (const auto& c : golden_cases()) {
    if (c["name"] == "seed") ids = c["ids"].get<std::vector<int>>();
  }
  ASSERT_EQ(ids.size(), 32u);
  const auto full = all_logits(*model, ids);  // [32, V]
  auto cache = model->make_cache(1);
  const int prefix = 20;
  std::vector<SequenceChunk> chunks{{0, 0, {ids.begin(), ids.begin() + prefix}}};
  auto logits = model->forward(chunks, cache);
  EXPECT_LT((logits[0] - full[prefix - 1]).abs().max().item<double>(), 1e-5);
  for (int p = prefix; p < 32; ++p) {
    chunks = {{0, p, {ids[p]}}};
    logits = model->forward(chunks, cache);
    EXPECT_LT((logits[0] - full[p]).abs().max().item<double>(), 1e-5) << "position " << p;
  }
}

TEST(GPT2Model, BatchedChunksAtDifferentPositionsEqualSeparateRuns) {
  auto model = GPT2Model::load(t::model_dir("tiny-gpt2"));
  const std::vector<int> a = {464, 2068, 7586, 21831, 18045}, b = {15496}, c = {13564, 929, 13};
  // Separately.
  auto cache1 = model->make_cache(3);
  std::vector<SequenceChunk> one{{0, 0, a}};
  const auto la = model->forward(one, cache1);
  one = {{1, 0, b}};
  const auto lb = model->forward(one, cache1);
  one = {{2, 0, c}};
  const auto lc = model->forward(one, cache1);
  // Together: a prefill, and decode steps for two sequences at other positions.
  auto cache2 = model->make_cache(3);
  std::vector<SequenceChunk> prefill{{1, 0, b}, {2, 0, {c[0], c[1]}}};
  model->forward(prefill, cache2);
  std::vector<SequenceChunk> mixed{{2, 2, {c[2]}}, {0, 0, a}};
  const auto lm = model->forward(mixed, cache2);
  EXPECT_LT((lm[0] - lc[0]).abs().max().item<double>(), 1e-5);
  EXPECT_LT((lm[1] - la[0]).abs().max().item<double>(), 1e-5);
  // Next decode step, both sequences, equals a one-sequence run on the first cache.
  std::vector<SequenceChunk> step{{0, 5, {11}}, {1, 1, {11}}};
  const auto ls = model->forward(step, cache2);
  one = {{1, 1, {11}}};
  EXPECT_LT((ls[1] - model->forward(one, cache1)[0]).abs().max().item<double>(), 1e-5);
  (void)lb;
}

TEST(GPT2Model, RejectsAPromptLongerThanTheContext) {
  auto model = GPT2Model::load(t::model_dir("tiny-gpt2"));
  auto cache = model->make_cache(1);
  std::vector<SequenceChunk> chunks{{0, 0, std::vector<int>(65, 11)}};
  try {
    model->forward(chunks, cache);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("65 tokens exceeds the model context of 64"), std::string::npos)
        << e.what();
  }
  chunks = {{0, 0, {50257}}};
  EXPECT_THROW(model->forward(chunks, cache), std::invalid_argument);
  chunks = {{3, 0, {1}}};
  EXPECT_THROW(model->forward(chunks, cache), std::invalid_argument);
}

TEST(GPT2Model, ASequencesLogitsAreBitwiseTheSameInAnyBatch) {
  auto model = GPT2Model::load(t::model_dir("tiny-gpt2"));
  ASSERT_TRUE(model->batch_invariant());
  const std::vector<int> a = {464, 2068, 7586, 21831, 18045}, b = {15496, 11, 995}, c = {13564, 929};
  auto alone = model->make_cache(4);
  std::vector<SequenceChunk> one{{0, 0, a}};
  model->forward(one, alone);
  one = {{0, 5, {11}}};
  const auto want = model->forward(one, alone);
  // The same two steps, with other sequences prefilling and decoding around it.
  auto busy = model->make_cache(4);
  std::vector<SequenceChunk> step1{{1, 0, b}, {0, 0, a}, {2, 0, c}};
  model->forward(step1, busy);
  std::vector<SequenceChunk> step2{{2, 2, {7}}, {1, 3, {8}}, {0, 5, {11}}, {3, 0, {1, 2, 3, 4, 5, 6, 7}}};
  const auto got = model->forward(step2, busy);
  EXPECT_TRUE(at::equal(got[2], want[0]));
}

TEST(GPT2Model, WriteupGenerateDumpsTheGoldenLogits) {
  const auto cases = golden_cases();
  const auto& fox = cases[1];
  ASSERT_EQ(fox["name"], "fox");
  const auto out = std::filesystem::temp_directory_path() / ("writeup-logits-" + std::to_string(::getpid()) + ".safetensors");
  const auto r = t::run_command(std::string(WRITEUP_GENERATE_BIN) + " --packed-cache off --model " + t::model_dir("tiny-gpt2").string() +
                                    " --prompt '" + fox["text"].get<std::string>() +
                                    "' --max-tokens 1 --temperature 0 --dump-logits " + out.string(),
                                false);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto file = SafetensorsFile::open(out);
  const auto* info = file->find("logits");
  ASSERT_NE(info, nullptr);
  ASSERT_EQ(info->shape.size(), 2u);
  EXPECT_EQ(info->shape[0], static_cast<std::int64_t>(fox["ids"].size()));
  const auto got = at::from_blob(const_cast<std::byte*>(file->data(*info)), info->shape, at::kFloat);
  const auto want = golden_logits("fox");
  EXPECT_LT((got.narrow(0, info->shape[0] - want.size(0), want.size(0)) - want).abs().max().item<double>(), 1e-4);
  std::filesystem::remove(out);
}

// The decode attention kernels (AVX2, scalar) compute the documented arithmetic
// bitwise: 16-lane FMA dot products summed by a fixed tree, exp sums in order, FMA chains for
// the weighted values.
TEST(GPT2Model, DecodeAttentionKernelsFollowTheFixedArithmetic) {
  using writeup::model::PackedLinear;
  at::manual_seed(11);
  constexpr std::int64_t D = 64;
  for (std::int64_t len : {1, 2, 17, 100}) {
    const auto q = at::randn({D}), k = at::randn({len, D}), v = at::randn({len, D});
    const float *qp = q.data_ptr<float>(), *kp = k.data_ptr<float>(), *vp = v.data_ptr<float>();
    const float scale = 0.125f;
    std::vector<float> e(static_cast<std::size_t>(len)), want(D, 0.0f);
    float max = -INFINITY, sum = 0;
    for (std::int64_t j = 0; j < len; ++j) {
      float s[16] = {};
      for (std::int64_t d = 0; d < D; ++d) s[d % 16] = std::fma(qp[d], kp[j * D + d], s[d % 16]);
      float t[8];
      for (int l = 0; l < 8; ++l) t[l] = s[l] + s[l + 8];
      e[j] = (((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]))) * scale;
      max = std::max(max, e[j]);
    }
    for (auto& x : e) sum += (x = std::exp(x - max));
    for (std::int64_t j = 0; j < len; ++j) {
      for (std::int64_t d = 0; d < D; ++d) want[d] = std::fma(e[j] / sum, vp[j * D + d], want[d]);
    }
    for (auto kernel : {PackedLinear::Kernel::avx512, PackedLinear::Kernel::avx512bw, PackedLinear::Kernel::avx2, PackedLinear::Kernel::generic}) {
      PackedLinear::force_kernel(kernel);
      std::vector<float> scores(static_cast<std::size_t>(len)), got(D);
      writeup::model::attend(qp, kp, vp, len, D, scale, scores.data(), got.data());
      EXPECT_EQ(got, want) << "len " << len << " kernel " << static_cast<int>(kernel);
    }
    PackedLinear::force_kernel(PackedLinear::Kernel::automatic);
  }
}

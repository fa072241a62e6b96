// The bf16 and int8 weight formats on the golden fixture (tests/data/tiny-gpt2, golden.json):
// logits against float32 within a stated tolerance, greedy continuations compared with
// transformers', and the load refusing a format where the packed kernels do not run.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <stdexcept>

#include "test_support.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/service/local_generation.hpp"

using namespace writeup::model;
namespace t = writeup::test;

namespace {

std::shared_ptr<GPT2Model> load(const std::string& weights) {
  LoadOptions o;
  o.weights = weights;
  return GPT2Model::load(t::model_dir("tiny-gpt2"), o);
}

at::Tensor all_logits(const GPT2Model& m, const std::vector<int>& ids) {
  auto cache = m.make_cache(1);
  std::vector<SequenceChunk> chunks{{0, 0, ids}};
  return m.forward(chunks, cache, /*all_logits=*/true);
}

// Measured on tiny-gpt2 (2 layers, n_embd 16, weights ~N(0, 0.2)): bf16 0.011, int8 0.027; greedy
// tokens equal before the first difference: bf16 72 of 72, int8 69 of 72 (seed differs at 22).
struct Tolerance {
  const char* weights;
  double max_relative;  // max over positions of max_v |l - l32| / max_v |l32|
  int greedy_prefix;    // at least this many of the 72 golden greedy tokens before a difference
};
const Tolerance kTolerances[] = {{"bf16", 0.02, 66}, {"int8", 0.05, 60}};

}  // namespace

// Every position of every golden case: the logits stay within the format's relative
// tolerance of float32's, and the arg-max token is float32's at (nearly) every position.
TEST(WeightFormats, GoldenLogitsStayWithinTheFormatsToleranceOfFloat32) {
  const auto f32 = load("f32");
  const auto cases = t::load_json(t::data_dir() / "golden.json")["cases"];
  for (const auto& tol : kTolerances) {
    const auto model = load(tol.weights);
    ASSERT_EQ(to_string(model->weight_format()), std::string(tol.weights));
    double worst = 0;
    long agree = 0, positions = 0;
    for (const auto& c : cases) {
      const auto ids = c["ids"].get<std::vector<int>>();
      const auto want = all_logits(*f32, ids), got = all_logits(*model, ids);
      const auto rel = (got - want).abs().amax(1) / want.abs().amax(1);
      worst = std::max(worst, rel.max().item<double>());
      agree += got.argmax(1).eq(want.argmax(1)).sum().item<std::int64_t>();
      positions += got.size(0);
    }
    std::printf("%s: max relative logit error %.3g, top-1 agreement %ld/%ld\n", tol.weights, worst, agree, positions);
    EXPECT_LE(worst, tol.max_relative) << tol.weights;
    EXPECT_GT(worst, 0.0) << tol.weights << " changed nothing";
    EXPECT_GE(static_cast<double>(agree), 0.95 * static_cast<double>(positions)) << tol.weights;
  }
}

// Greedy continuations through the whole engine, compared token by token with transformers'
// (float32 matches them exactly: local_generation_test).
TEST(WeightFormats, GreedyContinuationsAgreeWithTheGolden) {
  const auto cases = t::load_json(t::data_dir() / "golden.json")["cases"];
  for (const auto& tol : kTolerances) {
    const char* weights = tol.weights;
    writeup::service::LocalEngineOptions o;
    o.path = t::model_dir("tiny-gpt2").string();
    o.load.weights = weights;
    writeup::service::LocalEngine engine(o);
    int same = 0, total = 0, prefix_total = 0;
    for (const auto& c : cases) {
      if (!c.contains("greedy_new_ids")) continue;
      const auto want = c["greedy_new_ids"].get<std::vector<int>>();
      writeup::generate::GenerationRequest req;
      req.prompt = c["ids"].get<std::vector<int>>();
      req.params.temperature = 0;
      req.params.max_tokens = static_cast<int>(want.size());
      const auto got = engine.run(req).sequences.at(0).tokens;
      ASSERT_EQ(got.size(), want.size());
      int prefix = 0;
      while (prefix < static_cast<int>(want.size()) && got[prefix] == want[prefix]) ++prefix;
      for (std::size_t i = 0; i < want.size(); ++i) same += got[i] == want[i] ? 1 : 0;
      total += static_cast<int>(want.size());
      prefix_total += prefix;
      std::printf("%s / %s: %d of %zu tokens agree before the first difference\n", weights,
                  c["name"].get<std::string>().c_str(), prefix, want.size());
    }
    std::printf("%s: %d/%d greedy tokens equal (%d in the common prefixes)\n", weights, same, total, prefix_total);
    EXPECT_GE(prefix_total, tol.greedy_prefix) << weights;
  }
}

// The format changes the logits, so it is part of the fingerprint (and so of the cache keys).
TEST(WeightFormats, EachFormatHasItsOwnFingerprint) {
  const auto plain = GPT2Model::load(t::model_dir("tiny-gpt2"))->fingerprint();
  EXPECT_EQ(load("f32")->fingerprint(), plain);
  EXPECT_EQ(load("bf16")->fingerprint(), plain + "-bf16");
  EXPECT_EQ(load("int8")->fingerprint(), plain + "-int8");
}

TEST(WeightFormats, TheLoadRefusesAFormatWithoutThePackedKernels) {
  LoadOptions o;
  o.weights = "q4_0";
  try {
    GPT2Model::load(t::model_dir("tiny-gpt2"), o);
    FAIL() << "q4_0 loaded";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'q4_0'"), std::string::npos) << e.what();
  }
  for (const auto& [device, packed] : {std::pair<const char*, bool>{"cpu", false}, {"cuda", true}}) {
    o.device = device;
    o.packed = packed;
    o.weights = "int8";
    try {
      GPT2Model::load(t::model_dir("tiny-gpt2"), o);
      FAIL() << "int8 loaded on " << device << " packed=" << packed;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("weights 'int8' needs the CPU packed kernels"), std::string::npos)
          << e.what();
    }
    o.weights = "f32";
    if (device == std::string("cpu")) {
      EXPECT_NO_THROW(GPT2Model::load(t::model_dir("tiny-gpt2"), o));
    }
  }
}

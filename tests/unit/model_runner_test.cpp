// ModelRunner: the generic step (ATen ops, persistent buffers, batched decode attention with a
// length mask: the CUDA path) against the packed CPU kernels, the golden logits through the
// runner, mixed steps, the errors of a bad step and copy_prefix.
#include "writeup/model/model_runner.hpp"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "test_support.hpp"
#include "writeup/model/safetensors.hpp"

using namespace writeup::model;
namespace t = writeup::test;

namespace {

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

int top_token(const at::Tensor& row) { return static_cast<int>(row.argmax().item<std::int64_t>()); }

std::shared_ptr<const GPT2Model> tiny() {
  static const std::shared_ptr<const GPT2Model> model = GPT2Model::load(t::model_dir("tiny-gpt2"));
  return model;
}

// GPT-2 small's widths (C 768, 12 heads, V 50257) with random weights and two layers.
std::shared_ptr<const GPT2Model> small_shape() {
  static const std::shared_ptr<const GPT2Model> model = [] {
    at::manual_seed(1234);
    GPT2Config cfg;
    cfg.n_layer = 2;
    cfg.n_positions = 96;
    const std::int64_t C = cfg.n_embd, V = cfg.vocab_size;
    auto rnd = [](std::vector<std::int64_t> shape, double scale) { return at::randn(shape) * scale; };
    GPT2Weights w;
    w.wte = rnd({V, C}, 0.02);
    w.wpe = rnd({cfg.n_positions, C}, 0.01);
    for (int l = 0; l < cfg.n_layer; ++l) {
      GPT2Block b;
      b.ln_1_weight = 1 + rnd({C}, 0.1);
      b.ln_1_bias = rnd({C}, 0.1);
      b.attn_c_attn_weight = rnd({C, 3 * C}, 0.05);  // wide enough that attention is not uniform
      b.attn_c_attn_bias = rnd({3 * C}, 0.02);
      b.attn_c_proj_weight = rnd({C, C}, 0.02);
      b.attn_c_proj_bias = rnd({C}, 0.02);
      b.ln_2_weight = 1 + rnd({C}, 0.1);
      b.ln_2_bias = rnd({C}, 0.1);
      b.mlp_c_fc_weight = rnd({C, 4 * C}, 0.02);
      b.mlp_c_fc_bias = rnd({4 * C}, 0.02);
      b.mlp_c_proj_weight = rnd({4 * C, C}, 0.02);
      b.mlp_c_proj_bias = rnd({C}, 0.02);
      w.h.push_back(std::move(b));
    }
    w.ln_f_weight = 1 + rnd({C}, 0.1);
    w.ln_f_bias = rnd({C}, 0.1);
    w.lm_head = w.wte;
    return std::make_shared<const GPT2Model>(cfg, std::move(w), c10::Device("cpu"), at::kFloat, "random", true);
  }();
  return model;
}

RunnerOptions options(int slots, bool generic, int max_step_tokens = 0) {
  RunnerOptions o;
  o.slots = slots;
  o.generic = generic;
  o.max_step_tokens = max_step_tokens;
  return o;
}

// Runs the same scenario through a packed and a generic runner: prefills and decode rows of
// several slots at different lengths in the same steps, then greedy decoding of every slot.
// Every step's logits agree within `tolerance` and the greedy tokens are identical.
void expect_generic_matches_packed(const std::shared_ptr<const GPT2Model>& model, double tolerance) {
  ModelRunner packed(model, options(5, false));
  ModelRunner generic(model, options(5, true));
  ASSERT_TRUE(packed.packed());
  ASSERT_FALSE(generic.packed());
  const std::vector<int> a = {464, 2068, 7586, 21831, 18045, 625}, b = {15496, 11, 995}, c = {13564}, d = {40, 588, 257, 1310};
  auto both = [&](const std::vector<SequenceChunk>& chunks) {
    const auto p = packed.step(chunks).clone();
    const auto g = generic.step(chunks).clone();
    EXPECT_EQ(p.sizes(), g.sizes());
    EXPECT_EQ(g.size(0), static_cast<std::int64_t>(chunks.size()));
    EXPECT_LT(max_diff(p, g), tolerance);
    return std::make_pair(p, g);
  };
  // Step 1: two prefills and a one-token prompt (a decode row at length 1).
  auto [p1, g1] = both({{0, 0, a}, {2, 0, c}, {1, 0, b}});
  std::vector<int> lengths = {6, 3, 1, 0, 0};
  std::vector<int> next = {top_token(p1[0]), top_token(p1[2]), top_token(p1[1]), 0, 0};
  for (int s : {0, 1, 2}) EXPECT_EQ(next[s], top_token(g1[s == 0 ? 0 : s == 1 ? 2 : 1]));
  // Step 2: decode rows of three slots at lengths 7, 4, 2 and a prefill chunk of slot 3 in between.
  std::vector<SequenceChunk> mixed{{1, lengths[1], {next[1]}}, {3, 0, d}, {0, lengths[0], {next[0]}}, {2, lengths[2], {next[2]}}};
  auto [p2, g2] = both(mixed);
  lengths = {7, 4, 2, 4, 0};
  next = {top_token(p2[2]), top_token(p2[0]), top_token(p2[3]), top_token(p2[1]), 0};
  EXPECT_EQ(next, (std::vector<int>{top_token(g2[2]), top_token(g2[0]), top_token(g2[3]), top_token(g2[1]), 0}));
  // Greedy decoding of all four slots, plus a second chunk of slot 4's prompt midway.
  for (int i = 0; i < 12; ++i) {
    std::vector<SequenceChunk> chunks;
    for (int s = 0; s < 4; ++s) chunks.push_back({s, lengths[static_cast<std::size_t>(s)], {next[static_cast<std::size_t>(s)]}});
    if (i == 3) chunks.push_back({4, 0, {11, 12, 13}});
    if (i == 4) chunks.push_back({4, 3, {14, 15}});
    auto [p, g] = both(chunks);
    for (int s = 0; s < 4; ++s) {
      const auto us = static_cast<std::size_t>(s);
      ++lengths[us];
      next[us] = top_token(p[s]);
      EXPECT_EQ(next[us], top_token(g[s])) << "step " << i << " slot " << s;
    }
  }
}

std::string error_of(ModelRunner& runner, const std::vector<SequenceChunk>& chunks) {
  try {
    runner.step(chunks);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "no std::invalid_argument";
}

}  // namespace

TEST(ModelRunner, GenericPathMatchesPackedOnTheTinyFixture) { expect_generic_matches_packed(tiny(), 1e-4); }

TEST(ModelRunner, GenericPathMatchesPackedAtGPT2SmallWidths) { expect_generic_matches_packed(small_shape(), 1e-4); }

// The golden logits of every case: a prefill up to the first golden row, then one decode row
// per remaining position, through both paths.
TEST(ModelRunner, GoldenLogitsMatchThroughTheRunner) {
  const auto cases = t::load_json(t::data_dir() / "golden.json")["cases"];
  const auto file = SafetensorsFile::open(t::data_dir() / "golden_logits.safetensors");
  for (bool generic : {false, true}) {
    ModelRunner runner(tiny(), options(1, generic, 64));
    for (const auto& c : cases) {
      const auto name = c["name"].get<std::string>();
      const auto ids = c["ids"].get<std::vector<int>>();
      const auto* info = file->find(name + ".logits");
      ASSERT_NE(info, nullptr) << name;
      const auto want = at::from_blob(const_cast<std::byte*>(file->data(*info)), info->shape, at::kFloat);  // [R, V]
      const auto rows = static_cast<int>(want.size(0));
      const int first = static_cast<int>(ids.size()) - rows;  // position of the first golden row
      std::vector<SequenceChunk> chunk{{0, 0, {ids.begin(), ids.begin() + first + 1}}};
      EXPECT_LT(max_diff(runner.step(chunk)[0], want[0]), 1e-4) << name << " generic " << generic;
      for (int r = 1; r < rows; ++r) {
        chunk = {{0, first + r, {ids[static_cast<std::size_t>(first + r)]}}};
        EXPECT_LT(max_diff(runner.step(chunk)[0], want[r]), 1e-4) << name << " row " << r << " generic " << generic;
      }
    }
  }
}

TEST(ModelRunner, ABadStepFailsNamingWhatIsWrongAndChangesNothing) {
  for (bool generic : {false, true}) {
    ModelRunner runner(tiny(), options(2, generic, 8));
    ModelRunner fresh(tiny(), options(2, generic, 8));
    std::vector<SequenceChunk> prompt{{0, 0, {464, 2068, 7586}}};
    runner.step(prompt);
    fresh.step(prompt);
    // Each bad step carries a good chunk first: nothing of it may be written.
    const std::vector<int> nine(9, 11);
    EXPECT_NE(error_of(runner, {{0, 3, {5}}, {1, 0, {1, 2, 3, 4, 5, 6, 7, 8}}}).find("a step of 9 tokens exceeds the runner's max_step_tokens of 8"),
              std::string::npos);
    EXPECT_NE(error_of(runner, {{0, 3, {5}}, {2, 0, {1}}}).find("KV-cache slot 2 out of range"), std::string::npos);
    EXPECT_NE(error_of(runner, {{0, 3, {5}}, {1, 0, {50257}}}).find("token id 50257 is outside the vocabulary"), std::string::npos);
    EXPECT_NE(error_of(runner, {{0, 3, {5}}, {1, 0, {-1}}}).find("token id -1 is outside the vocabulary"), std::string::npos);
    EXPECT_NE(error_of(runner, {{0, 3, {5}}, {1, 62, {1, 2, 3}}}).find("sequence of 65 tokens exceeds the model context of 64"),
              std::string::npos);
    EXPECT_NE(error_of(runner, {{0, 3, {5}}, {1, -1, {1}}}).find("negative start -1"), std::string::npos);
    EXPECT_NE(error_of(runner, {{0, 3, {5}}, {1, 0, {}}}).find("has no tokens"), std::string::npos);
    EXPECT_NE(error_of(runner, {}).find("at least one sequence chunk"), std::string::npos);
    // The cache is as before: the next good step equals the runner that saw no bad step.
    std::vector<SequenceChunk> next{{0, 3, {21831}}, {1, 0, {15496, 11}}};
    EXPECT_TRUE(at::equal(runner.step(next), fresh.step(next))) << "generic " << generic;
  }
}

TEST(ModelRunner, CopyPrefixSharesAPromptBetweenSlots) {
  for (bool generic : {false, true}) {
    ModelRunner runner(tiny(), options(3, generic));
    const std::vector<int> prompt = {464, 2068, 7586, 21831, 18045};
    std::vector<SequenceChunk> chunk{{0, 0, prompt}};
    const auto first = runner.step(chunk).clone();
    runner.copy_prefix(0, 2, 5);
    const int tok = top_token(first[0]);
    // Slot 2 continues from the copied prompt as slot 0 does; slot 1 (no prompt) differs.
    std::vector<SequenceChunk> step{{0, 5, {tok}}, {2, 5, {tok}}, {1, 0, {tok}}};
    const auto got = runner.step(step);
    EXPECT_LT(max_diff(got[0], got[1]), 1e-6) << "generic " << generic;
    EXPECT_GT(max_diff(got[0], got[2]), 1e-3);
    EXPECT_THROW(runner.copy_prefix(0, 3, 5), std::invalid_argument);
    EXPECT_THROW(runner.copy_prefix(-1, 1, 5), std::invalid_argument);
    EXPECT_THROW(runner.copy_prefix(0, 1, 65), std::invalid_argument);
  }
}

TEST(ModelRunner, ReturnsFloatLogitsOnTheCpuOfEachChunksLastToken) {
  ModelRunner runner(tiny(), options(2, true));
  EXPECT_EQ(runner.max_step_tokens(), 2 + 128);
  EXPECT_EQ(runner.max_tokens(), 64);
  EXPECT_GT(runner.kv_cache_bytes(), 0u);
  std::vector<SequenceChunk> chunks{{1, 0, {1, 2, 3}}, {0, 0, {4}}};
  const auto logits = runner.step(chunks);
  EXPECT_EQ(logits.sizes(), (std::vector<std::int64_t>{2, 50257}));
  EXPECT_EQ(logits.scalar_type(), at::kFloat);
  EXPECT_TRUE(logits.device().is_cpu());
  // Row order is chunk order, whatever the step's internal row layout (decode rows first).
  auto cache = tiny()->make_cache(1);
  std::vector<SequenceChunk> alone{{0, 0, {1, 2, 3}}};
  EXPECT_LT(max_diff(logits[0], tiny()->forward(alone, cache)[0]), 1e-4);
}

// GPT2Model::forward runs a step made for the cache it is given; a step refuses any other cache
// (its checks of slots and positions are the cache's).
TEST(ModelRunner, AStepRefusesACacheOfAnotherShape) {
  ForwardStep step(*tiny(), StepOptions{8, 2, 64, false});
  auto other = tiny()->make_cache(3);
  std::vector<SequenceChunk> chunk{{2, 0, {1}}};
  try {
    step.run(chunk, other);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("a KV cache of 3 slots x 64 positions, the step was made for 2 x 64"), std::string::npos)
        << e.what();
  }
  auto right = tiny()->make_cache(2);
  EXPECT_EQ(step.run(chunk = {{1, 0, {1}}}, right).size(0), 1);
}

// score(): a chunk that kept its hidden states gives the log-softmax of a full forward pass at
// every position, over more rows than one slice of ForwardStep::kScoreRows, with the bias added
// before the log-softmax; the step's own logits are bitwise those of a step that kept nothing.
TEST(ModelRunner, ScoreGivesEveryKeptPositionsLogprobsInSlices) {
  const auto model = small_shape();
  const int T = 90, V = static_cast<int>(model->config().vocab_size);
  static_assert(ForwardStep::kScoreRows < 89);
  std::vector<int> ids;
  for (int i = 0; i < T; ++i) ids.push_back((i * 7919 + 13) % V);
  auto cache = model->make_cache(1);
  std::vector<SequenceChunk> whole{{0, 0, ids}};
  const auto full = model->forward(whole, cache, /*all_logits=*/true);  // [T, V]
  const std::vector<std::pair<int, float>> bias{{5, 3.0f}, {ids[10], -2.5f}};
  auto biased = full.clone();
  for (const auto& [id, value] : bias) biased.select(1, id).add_(value);
  const auto want = at::log_softmax(biased, 1);
  const std::vector<int> targets(ids.begin() + 1, ids.end());
  for (bool generic : {false, true}) {
    ModelRunner runner(model, options(2, generic));
    ModelRunner plain(model, options(2, generic));
    // A decode row of another slot first: the kept chunk is not the step's first row.
    std::vector<SequenceChunk> warm{{1, 0, {42}}};
    runner.step(warm);
    plain.step(warm);
    std::vector<SequenceChunk> chunks{{1, 1, {43}}, {0, 0, ids, /*keep_hidden=*/true}};
    const auto logits = runner.step(chunks).clone();
    chunks[1].keep_hidden = false;
    EXPECT_TRUE(at::equal(logits, plain.step(chunks))) << "generic " << generic;
    chunks[1].keep_hidden = true;
    runner.step(chunks);
    const auto got = runner.score(1, 0, targets, V, bias, 3);
    ASSERT_EQ(got.logprobs.size(0), T - 1);
    for (int p = 0; p + 1 < T; ++p) {
      EXPECT_NEAR(got.logprobs[p].item<float>(), want[p][ids[static_cast<std::size_t>(p + 1)]].item<float>(), 1e-4)
          << "generic " << generic << " position " << p;
      EXPECT_NEAR(got.top_logprobs[p][0].item<float>(), want[p].max().item<float>(), 1e-4);
    }
    // Part of a chunk, from an offset.
    const auto part = runner.score(1, 70, std::span<const int>(targets).subspan(70, 5), V, {}, 0);
    EXPECT_FALSE(part.top_ids.defined());
    const auto unbiased = at::log_softmax(full, 1);
    for (int j = 0; j < 5; ++j) {
      EXPECT_NEAR(part.logprobs[j].item<float>(), unbiased[70 + j][targets[70 + static_cast<std::size_t>(j)]].item<float>(), 1e-4);
    }
    // Nothing kept for the decode chunk, nor after a step that kept nothing.
    EXPECT_THROW(runner.score(0, 0, std::span<const int>(targets).first(1), V, {}, 0), std::invalid_argument);
    EXPECT_THROW(runner.score(1, 85, std::span<const int>(targets).first(10), V, {}, 0), std::invalid_argument);
    chunks[1].keep_hidden = false;
    runner.step(chunks);
    EXPECT_THROW(runner.score(1, 0, std::span<const int>(targets).first(1), V, {}, 0), std::invalid_argument);
  }
}

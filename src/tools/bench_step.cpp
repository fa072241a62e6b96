// writeup-bench step: where a decode step's time goes (see bench_step below).
#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "cli_args.hpp"
#include "stats.hpp"
#include "writeup/generate/sampler.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/model_runner.hpp"
#include "writeup/model/packed_linear.hpp"
#include "writeup/util/threads.hpp"

namespace writeup::tools {
namespace {

using Clock = std::chrono::steady_clock;

// Median milliseconds of `reps` calls of fn (after one warm-up call).
template <typename F>
double time_ms(int reps, F&& fn) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  return median(t);
}

}  // namespace

// Where a decode step's time goes (through the worker's ModelRunner), at batch 1 and batch n: the whole forward, each packed
// projection shape over all layers, the LM head, and sampling the n rows (default params).
// The per-shape figures run back to back, partly from the last-level cache: a guide only.
int bench_step(const CliArgs& args, model::LoadOptions options) {
  const std::string dir = args.require("model");
  configure_threads(args.get_int("threads", 0));
  const int n = args.get_int("n", 8), reps = args.get_int("tokens", 64);
  options.packed_cache.clear();  // it repacks from weights().h below: the dense matrices must be there
  std::shared_ptr<const model::GPT2Model> model = model::GPT2Model::load(dir, options);
  const auto& cfg = model->config();
  model::RunnerOptions ro;
  ro.slots = n;
  ro.max_tokens = std::min(cfg.n_positions, 64 + 2 * reps + 8);
  ro.max_step_tokens = std::max(n, 64);
  model::ModelRunner runner(model, ro);  // the worker's step: buffers, KV cache
  std::vector<int> prompt(64);
  for (int i = 0; i < 64; ++i) prompt[static_cast<std::size_t>(i)] = (i * 977) % cfg.vocab_size;
  for (int s = 0; s < n; ++s) {
    std::vector<model::SequenceChunk> c{{s, 0, prompt}};
    runner.step(c);
  }
  std::vector<std::array<model::PackedLinear, 4>> lin;  // every layer's, so weights stream as in a step
  const auto f = model->weight_format();
  for (const auto& b : model->weights().h) {
    lin.push_back({model::PackedLinear(b.attn_c_attn_weight, b.attn_c_attn_bias, false, f),
                   model::PackedLinear(b.attn_c_proj_weight, b.attn_c_proj_bias, false, f),
                   model::PackedLinear(b.mlp_c_fc_weight, b.mlp_c_fc_bias, false, f),
                   model::PackedLinear(b.mlp_c_proj_weight, b.mlp_c_proj_bias, false, f)});
  }
  const model::PackedLinear head(model->weights().lm_head, at::Tensor(), /*transposed=*/true, f);
  for (int m : {1, n}) {
    int pos = 64;
    std::vector<model::SequenceChunk> chunks;
    for (int s = 0; s < m; ++s) chunks.push_back({s, 64, {s + 11}});
    const double fwd = time_ms(reps, [&] {
      for (auto& c : chunks) c.start = pos;
      runner.step(chunks);
      ++pos;
    });
    double proj = 0;
    std::printf("{\"bench\":\"step\",\"rows\":%d,\"forward_ms\":%.3f", m, fwd);
    for (int i = 0; i < 4; ++i) {
      const auto x = at::randn({m, lin[0][static_cast<std::size_t>(i)].in_features()});
      const double ms = time_ms(reps, [&] {
        for (const auto& l : lin) l[static_cast<std::size_t>(i)].forward(x);
      });
      proj += ms;
      std::printf(",\"proj%d_all_layers_ms\":%.3f", i, ms);
    }
    const auto x = at::randn({m, head.in_features()});
    const double lm = time_ms(reps, [&] { head.forward(x); });
    const auto logits = at::randn({m, head.out_features()});
    std::vector<generate::Sampler> samplers;
    for (int s = 0; s < m; ++s) samplers.emplace_back(generate::SamplingParams{}, s, prompt);
    const double smp = time_ms(reps, [&] {
      for (int s = 0; s < m; ++s) {
        samplers[static_cast<std::size_t>(s)].sample(
            {logits[s].data_ptr<float>(), static_cast<std::size_t>(head.out_features())});
      }
    });
    std::printf(",\"lm_head_ms\":%.3f,\"rest_of_forward_ms\":%.3f,\"sample_ms\":%.3f}\n", lm,
                fwd - proj - lm, smp);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace writeup::tools

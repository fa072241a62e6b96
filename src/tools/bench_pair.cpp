// writeup-bench pair: two weight formats of one model, one stream each, their decode steps
// interleaved in one process (see bench_pair below).
#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli_args.hpp"
#include "stats.hpp"
#include "writeup/generate/sampler.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/model_runner.hpp"
#include "writeup/model/packed_linear.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/util/threads.hpp"

namespace writeup::tools {
namespace {

using Clock = std::chrono::steady_clock;

// One format's stream: its model, runner (one KV-cache slot) and sampler.
struct Stream {
  std::string weights;
  std::shared_ptr<const model::GPT2Model> model;
  std::unique_ptr<model::ModelRunner> runner;
  std::unique_ptr<generate::Sampler> sampler;
  int eos = -1;  // biased by -100 before sampling, as `decode --ignore-eos` does
  int position = 0;
  int last = 0;
  std::vector<double> steps_ms;

  // Runs `tokens` through the slot from the current position, samples the next token; ms taken.
  double step(std::vector<int> tokens) {
    const auto t0 = Clock::now();
    std::vector<model::SequenceChunk> chunk{{0, position, std::move(tokens)}};
    position += static_cast<int>(chunk[0].tokens.size());
    at::Tensor logits = runner->step(chunk);  // [1, V] float32 on the CPU
    float* row = logits.data_ptr<float>();
    if (eos >= 0) row[eos] -= 100.0f;
    last = sampler->sample({row, static_cast<std::size_t>(logits.size(1))});
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
};

}  // namespace

// Two weight formats of one model (--weights A, --against B) decode one stream each, their steps
// interleaved A, B, B, A, A, B, ... in one process, so that what a shared machine's neighbours
// do to memory bandwidth and CPU time falls on both alike (runs in separate processes, seconds
// apart, see different machines). A step: the forward of one token and sampling it (the worker's
// runner and sampler, without the engine's scheduling). Prints each format's median step, the
// median of the per-step ratios B / A (each pair ran back to back) and its 10th-90th percentiles.
int bench_pair(const CliArgs& args, model::LoadOptions options) {
  const std::string dir = args.require("model");
  configure_threads(args.get_int("threads", 0));
  const int tokens = args.get_int("tokens", 128), runs = args.get_int("runs", 3);
  if (tokens < 2 || runs < 1) throw std::invalid_argument("pair: --tokens must be at least 2 and --runs at least 1");
  const auto tokenizer = text::BpeTokenizer::from_model_dir(dir);
  const std::vector<int> prompt = tokenizer->encode(args.get("prompt", "The history of the written word begins"));
  generate::SamplingParams params;
  params.temperature = static_cast<float>(args.get_double("temperature", params.temperature));
  params.top_k = args.get_int("top-k", params.top_k);
  params.top_p = static_cast<float>(args.get_double("top-p", params.top_p));
  params.validate();
  std::array<Stream, 2> s;
  s[0].weights = args.get("weights", "int8");
  s[1].weights = args.get("against", "f32");
  for (auto& x : s) {
    options.weights = x.weights;
    x.model = model::GPT2Model::load(dir, options);
    model::RunnerOptions ro;
    ro.max_tokens = std::min(x.model->config().n_positions, static_cast<int>(prompt.size()) + tokens + 1);
    ro.max_step_tokens = std::max<int>(64, static_cast<int>(prompt.size()));
    x.runner = std::make_unique<model::ModelRunner>(x.model, ro);
    x.eos = tokenizer->eos_id() < x.model->config().vocab_size ? tokenizer->eos_id() : -1;
  }
  std::vector<double> ratios;
  for (int r = 0; r < runs; ++r) {
    params.seed = static_cast<std::uint64_t>(r);
    for (auto& x : s) {
      x.sampler = std::make_unique<generate::Sampler>(params, 0, prompt);
      x.position = 0;
      x.step(prompt);  // the prefill: not timed
    }
    for (int i = 1; i < tokens; ++i) {
      const int first = (i / 2) % 2;  // A B, B A, A B, ...: neither always runs right after the other
      std::array<double, 2> ms{};
      ms[first] = s[first].step({s[first].last});
      ms[1 - first] = s[1 - first].step({s[1 - first].last});
      for (int k = 0; k < 2; ++k) s[k].steps_ms.push_back(ms[k]);
      ratios.push_back(ms[1] / ms[0]);
    }
  }
  const auto kernel = [](const Stream& x) { return model::PackedLinear::kernel_name(x.model->weight_format()); };
  std::printf(
      "{\"bench\":\"pair\",\"model\":\"%s\",\"a\":\"%s\",\"b\":\"%s\",\"kernel_a\":\"%s\",\"kernel_b\":\"%s\","
      "\"prompt_tokens\":%zu,\"tokens\":%d,\"runs\":%d,\"steps\":%zu,\"a_median_step_ms\":%.3f,\"b_median_step_ms\":%.3f,"
      "\"b_over_a_median\":%.3f,\"b_over_a_p10\":%.3f,\"b_over_a_p90\":%.3f}\n",
      dir.c_str(), s[0].weights.c_str(), s[1].weights.c_str(), kernel(s[0]), kernel(s[1]),
      prompt.size(), tokens, runs, ratios.size(), median(s[0].steps_ms), median(s[1].steps_ms), median(ratios),
      percentile(ratios, 0.1), percentile(ratios, 0.9));
  return 0;
}

}  // namespace writeup::tools

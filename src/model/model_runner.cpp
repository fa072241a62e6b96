#include "writeup/model/model_runner.hpp"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <stdexcept>

namespace writeup::model {

namespace {

RunnerOptions checked(RunnerOptions options) {
  if (options.slots <= 0) throw std::invalid_argument("a model runner needs at least one slot");
  if (options.max_step_tokens < 0) throw std::invalid_argument("max_step_tokens must not be negative");
  if (options.max_step_tokens == 0) options.max_step_tokens = options.slots + 128;
  return options;
}

}  // namespace

ModelRunner::ModelRunner(std::shared_ptr<const GPT2Model> model, RunnerOptions options)
    : model_(std::move(model)), options_(checked(options)), cache_(model_->make_cache(options_.slots, options_.max_tokens)) {
  StepOptions step;
  step.max_step_tokens = options_.max_step_tokens;
  step.slots = cache_.slots();
  step.max_tokens = cache_.max_tokens();
  step.generic = options_.generic;
  if (step.generic && !model_->weights().projections) {
    throw std::invalid_argument("the generic path needs the projection weights, which this model took from its "
                                "packed-weights cache (load it with packed_cache off)");
  }
  step_ = std::make_unique<ForwardStep>(*model_, step);
}

ModelRunner::~ModelRunner() = default;

at::Tensor ModelRunner::step(std::span<const SequenceChunk> chunks) { return step_->run(chunks, cache_); }

PositionScores ModelRunner::score(std::size_t chunk, std::int64_t first, std::span<const int> targets, int vocab,
                                  std::span<const std::pair<int, float>> bias, int top) {
  return step_->score(chunk, first, targets, vocab, bias, top);
}

void ModelRunner::copy_prefix(int from, int to, int tokens) {
  if (from < 0 || from >= cache_.slots() || to < 0 || to >= cache_.slots()) {
    throw std::invalid_argument("copy_prefix: KV-cache slot " + std::to_string(from < 0 || from >= cache_.slots() ? from : to) +
                                " out of range (0.." + std::to_string(cache_.slots() - 1) + ")");
  }
  if (tokens < 0 || tokens > cache_.max_tokens()) {
    throw std::invalid_argument("copy_prefix: " + std::to_string(tokens) + " tokens is outside 0.." +
                                std::to_string(cache_.max_tokens()));
  }
  c10::InferenceMode guard;
  step_->copy_prefix(cache_, from, to, tokens);
}

int ModelRunner::max_tokens() const { return cache_.max_tokens(); }

std::size_t ModelRunner::kv_cache_bytes() const { return cache_.bytes(); }

}  // namespace writeup::model

#include "writeup/model/model_runner.hpp"

#include <ATen/ATen.h>

#include <stdexcept>

namespace writeup::model {

ModelRunner::ModelRunner(std::shared_ptr<const GPT2Model> model, RunnerOptions options)
    : model_(std::move(model)), options_(options), cache_(model_->make_cache(options.slots, options.max_tokens)) {
  if (options_.max_step_tokens <= 0) options_.max_step_tokens = options_.slots + 128;
}

ModelRunner::~ModelRunner() = default;

at::Tensor ModelRunner::step(std::span<const SequenceChunk> chunks) {
  std::size_t tokens = 0;
  for (const auto& c : chunks) tokens += c.tokens.size();
  if (tokens > static_cast<std::size_t>(options_.max_step_tokens)) {
    throw std::invalid_argument("a step of " + std::to_string(tokens) + " tokens exceeds the runner's " +
                                std::to_string(options_.max_step_tokens));
  }
  return model_->forward(chunks, cache_);
}

void ModelRunner::copy_prefix(int from, int to, int tokens) { cache_.copy_prefix(from, to, tokens); }

int ModelRunner::max_tokens() const { return cache_.max_tokens(); }

std::size_t ModelRunner::kv_cache_bytes() const { return cache_.bytes(); }

}  // namespace writeup::model

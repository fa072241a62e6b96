#include "writeup/model/step_buffers.hpp"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace writeup::model {

StepBuffers::StepBuffers(c10::Device device, int max_step_tokens, int slots, int max_tokens, int vocab_size)
    : capacity_(max_step_tokens), slots_(slots), max_tokens_(max_tokens), vocab_size_(vocab_size) {
  if (max_step_tokens <= 0) throw std::invalid_argument("max_step_tokens must be at least 1");
  auto host_opts = at::TensorOptions().dtype(at::kLong);
  if (device.is_cuda()) host_opts = host_opts.pinned_memory(true);  // only CUDA builds can pin
  host_ = at::zeros({kSections * static_cast<std::int64_t>(capacity_)}, host_opts);
  device_ = device.is_cpu() ? host_ : host_.to(device);
  arange_ = at::arange(max_tokens_, at::TensorOptions().dtype(at::kLong).device(device));
  prefills_.reserve(static_cast<std::size_t>(capacity_));
  chunk_rows_.reserve(static_cast<std::size_t>(capacity_));
}

std::int64_t* StepBuffers::host(Section s) const {
  return host_.data_ptr<std::int64_t>() + static_cast<std::int64_t>(s) * capacity_;
}

at::Tensor StepBuffers::section(const at::Tensor& buffer, Section s, std::int64_t n) const {
  return buffer.narrow(0, static_cast<std::int64_t>(s) * capacity_, n);
}

at::Tensor StepBuffers::ids() const { return section(device_, kIds, tokens_); }
at::Tensor StepBuffers::positions() const { return section(device_, kPositions, tokens_); }
at::Tensor StepBuffers::slots() const { return section(device_, kSlots, tokens_); }
at::Tensor StepBuffers::lengths() const { return section(device_, kLengths, decode_); }
at::Tensor StepBuffers::wanted() const { return section(device_, kWanted, wanted_); }
const std::int64_t* StepBuffers::host_slots() const { return host(kSlots); }
const std::int64_t* StepBuffers::host_positions() const { return host(kPositions); }

void StepBuffers::load(std::span<const SequenceChunk> chunks, bool all_logits) {
  // Check everything first: a bad chunk leaves the buffers (and the cache) as they were.
  if (chunks.empty()) throw std::invalid_argument("a step needs at least one sequence chunk");
  std::int64_t total = 0, decode = 0;
  for (const auto& c : chunks) {
    const auto t = static_cast<std::int64_t>(c.tokens.size());
    if (t == 0) throw std::invalid_argument("a sequence chunk has no tokens");
    if (c.slot < 0 || c.slot >= slots_) {
      throw std::invalid_argument("KV-cache slot " + std::to_string(c.slot) + " out of range (0.." +
                                  std::to_string(slots_ - 1) + ")");
    }
    const std::int64_t end = static_cast<std::int64_t>(c.start) + t;
    if (c.start < 0 || end > max_tokens_) {
      throw std::invalid_argument("sequence of " + std::to_string(end) + " tokens exceeds the model context of " +
                                  std::to_string(max_tokens_) + " tokens" +
                                  (c.start < 0 ? " (negative start " + std::to_string(c.start) + ")" : ""));
    }
    for (const int id : c.tokens) {
      if (id < 0 || id >= vocab_size_) {
        throw std::invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                    std::to_string(vocab_size_ - 1) + ")");
      }
    }
    total += t;
    if (t == 1) ++decode;
  }
  if (total > capacity_) {
    throw std::invalid_argument("a step of " + std::to_string(total) + " tokens exceeds the runner's max_step_tokens of " +
                                std::to_string(capacity_));
  }
  std::int64_t* ids = host(kIds);
  std::int64_t* pos = host(kPositions);
  std::int64_t* slot = host(kSlots);
  std::int64_t* len = host(kLengths);
  std::int64_t* want = host(kWanted);
  prefills_.clear();
  chunk_rows_.clear();
  std::int64_t next_decode = 0, next_prefill = decode, wanted = 0;
  for (const auto& c : chunks) {
    const auto t = static_cast<std::int64_t>(c.tokens.size());
    const std::int64_t row = t == 1 ? next_decode++ : next_prefill;
    chunk_rows_.push_back(row);
    if (t == 1) {
      len[row] = c.start + 1;
    } else {
      prefills_.push_back({row, t, c.slot, c.start});
      next_prefill += t;
    }
    for (std::int64_t i = 0; i < t; ++i) {
      ids[row + i] = c.tokens[static_cast<std::size_t>(i)];
      pos[row + i] = c.start + i;
      slot[row + i] = c.slot;
      if (all_logits) want[wanted++] = row + i;
    }
    if (!all_logits) want[wanted++] = row + t - 1;
  }
  tokens_ = total;
  decode_ = decode;
  wanted_ = wanted;
  // One asynchronous copy of the whole (small) buffer: the host memory is pinned and stays
  // untouched until the step's final synchronisation.
  if (!device_.is_same(host_)) device_.copy_(host_, /*non_blocking=*/true);
}

}  // namespace writeup::model

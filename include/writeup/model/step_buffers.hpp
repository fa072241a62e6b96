#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <span>
#include <vector>

#include "writeup/model/sequence_chunk.hpp"

namespace writeup::model {

// The index tensors of one forward step, allocated once (capacity: `max_step_tokens` tokens)
// and refilled each step: filled on the host (pinned memory when the device is CUDA), then
// copied to the device in one asynchronous copy on the current stream. Their addresses never
// change, so a captured step can replay over them.
//
// Row layout of a step: the decode rows (one-token chunks) first, in chunk order, then the
// tokens of the prefill chunks (several tokens), chunk after chunk.
class StepBuffers {
 public:
  // One prefill chunk: its rows [row, row + tokens) of the step, its slot and first position.
  struct Prefill {
    std::int64_t row;
    std::int64_t tokens;
    std::int64_t slot;
    std::int64_t start;
  };

  StepBuffers(c10::Device device, int max_step_tokens, int slots, int max_tokens, int vocab_size);

  // Checks every chunk (throws std::invalid_argument naming what is wrong, before anything is
  // written), fills the host buffers and starts their copy to the device. `all_logits`: the
  // wanted rows are every token in chunk order, else each chunk's last token.
  void load(std::span<const SequenceChunk> chunks, bool all_logits);

  int capacity() const { return capacity_; }
  std::int64_t tokens() const { return tokens_; }        // rows in this step
  std::int64_t decode_rows() const { return decode_; }   // rows [0, decode_rows())
  std::int64_t wanted_rows() const { return wanted_; }   // logits rows returned
  const std::vector<Prefill>& prefills() const { return prefills_; }
  // The step row of chunk `i`'s first token (chunks in the order given to load()).
  std::int64_t chunk_row(std::size_t i) const { return chunk_rows_[i]; }

  // Device views, [tokens()] unless said otherwise (all int64).
  at::Tensor ids() const;
  at::Tensor positions() const;
  at::Tensor slots() const;         // the slot of each row
  at::Tensor lengths() const;       // [decode_rows()]: each decode row's length after this step
  at::Tensor wanted() const;        // [wanted_rows()]: the rows whose logits are returned
  const at::Tensor& arange() const { return arange_; }  // [max_tokens]: 0, 1, ...
  // Host copies of the slots and positions (the CPU kernels read them directly).
  const std::int64_t* host_slots() const;
  const std::int64_t* host_positions() const;

 private:
  enum Section { kIds, kPositions, kSlots, kLengths, kWanted, kSections };
  at::Tensor section(const at::Tensor& buffer, Section s, std::int64_t n) const;
  std::int64_t* host(Section s) const;

  int capacity_;
  int slots_;
  int max_tokens_;
  int vocab_size_;
  at::Tensor host_;    // [kSections * capacity] int64, pinned on CUDA
  at::Tensor device_;  // the same on the device (the host buffer itself on the CPU)
  at::Tensor arange_;  // [max_tokens] int64 on the device
  std::int64_t tokens_ = 0, decode_ = 0, wanted_ = 0;
  std::vector<Prefill> prefills_;  // reserved once
  std::vector<std::int64_t> chunk_rows_;  // reserved once
};

}  // namespace writeup::model

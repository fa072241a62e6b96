#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Stream.h>

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "writeup/model/kv_cache.hpp"
#include "writeup/model/sequence_chunk.hpp"
#include "writeup/model/step_buffers.hpp"

namespace writeup::model {

class GPT2Model;

// Log-probabilities of given tokens at positions a step kept (SequenceChunk::keep_hidden), on
// the CPU: row i is the position's log-softmax over the first `vocab` logits (after the bias),
// at token targets[i], and its `top` most likely tokens (most likely first).
struct PositionScores {
  at::Tensor logprobs;      // [m] float32
  at::Tensor top_logprobs;  // [m, top] float32 (undefined when top = 0)
  at::Tensor top_ids;       // [m, top] int64 (undefined when top = 0)
};

struct StepOptions {
  int max_step_tokens = 1;  // tokens one step may carry
  int slots = 1;            // of the cache the step runs over
  int max_tokens = 1;       // positions per slot of that cache
  bool generic = false;     // CPU: the generic path even when the model has packed kernels
};

// The one forward step of GPT-2 over a KV cache (what ModelRunner::step and GPT2Model::forward
// run). Two paths:
// - packed (CPU, float32): PackedLinear projections (the bias + GELU and the residual adds as
//   their epilogues), one-pass layer norms and the fixed-order attend kernel for the decode
//   rows, so a row's logits are bitwise the same whatever shares its step;
// - generic (any device): ATen ops only. Token ids, positions, slots and lengths live in
//   persistent StepBuffers; keys/values are written by index; all decode rows attend in one
//   batched call over their slots with a length mask; prefill chunks use views with host
//   offsets. No host sync inside a step but the final logits copy, and on CUDA the decode
//   part's shapes depend only on the number of decode rows (what a CUDA graph per batch-size
//   bucket needs).
// On CUDA the step runs on its own stream from the pool and returns the logits through a
// pinned host buffer. One thread uses it at a time.
class ForwardStep {
 public:
  ForwardStep(const GPT2Model& model, StepOptions options);
  ~ForwardStep();
  ForwardStep(const ForwardStep&) = delete;
  ForwardStep& operator=(const ForwardStep&) = delete;

  // float32 logits on the CPU: [chunks, V] (each chunk's last token) or, with `all_logits`,
  // [tokens, V] in chunk order. The memory may be this object's: valid until the next run.
  // Throws std::invalid_argument (before touching the cache) when a chunk is out of range.
  at::Tensor run(std::span<const SequenceChunk> chunks, KVCache& cache, bool all_logits = false);

  // After a run() whose chunk `chunk` had keep_hidden: the log-probabilities of `targets` at
  // that chunk's positions first, first + 1, ... (one per target), with `bias` ((id, value),
  // ids < vocab) added to the logits first and the `top` most likely tokens of each position.
  // Runs the LM head over at most kScoreRows positions at a time: never [T, V] logits at
  // once. Throws std::invalid_argument when the last run kept nothing for that chunk or a
  // position, id or count is out of range; c10::OutOfMemoryError as run() does.
  static constexpr std::int64_t kScoreRows = 64;
  PositionScores score(std::size_t chunk, std::int64_t first, std::span<const int> targets, int vocab,
                       std::span<const std::pair<int, float>> bias, int top);

  // KVCache::copy_prefix on this step's stream (ordered with the steps, no host sync).
  void copy_prefix(KVCache& cache, int from, int to, int tokens);

  bool packed() const { return packed_; }

 private:
  at::Tensor forward(KVCache& cache);
  at::Tensor block(const at::Tensor& x, KVCache& cache, int layer);
  at::Tensor packed_block(const at::Tensor& x, KVCache& cache, int layer);  // fused element-wise work
  at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const;
  at::Tensor attention(const at::Tensor& qkv, KVCache& cache, int layer);
  void write_kv(const at::Tensor& qkv, KVCache& cache, int layer, std::int64_t first_row);
  void decode_generic(const at::Tensor& qkv, KVCache& cache, int layer, at::Tensor& out);
  void decode_packed(const at::Tensor& qkv, KVCache& cache, int layer, at::Tensor& out);
  void prefill(const at::Tensor& qkv, KVCache& cache, int layer, at::Tensor& out);
  at::Tensor project(const at::Tensor& x, int layer, int which) const;
  at::Tensor lm_head(const at::Tensor& x) const;
  at::Tensor to_host(const at::Tensor& logits);
  void synchronize() const;

  const GPT2Model& model_;
  StepOptions options_;
  bool packed_;
  StepBuffers buffers_;
  std::optional<c10::Stream> stream_;  // CUDA: this step's stream
  at::Tensor host_logits_;             // CUDA: [max_step_tokens, V] float32, pinned
  // Only after a run with a keep_hidden chunk: the final hidden states [N, C] of that step,
  // and per chunk its first row (-1: not kept) and its token count.
  at::Tensor hidden_;
  std::vector<std::int64_t> kept_rows_, kept_tokens_;
};

}  // namespace writeup::model

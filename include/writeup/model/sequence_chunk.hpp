#pragma once
#include <vector>

namespace writeup::model {

// One sequence's share of a batched forward step: `tokens` are appended to cache slot
// `slot` at positions start, start+1, ... (start = tokens already cached for it).
// A prefill is a chunk with many tokens; a decode step is a chunk with one.
// `keep_hidden`: the step also keeps the final hidden state of every one of the chunk's
// positions, so that ForwardStep::score can turn them into log-probabilities after the step
// (prompt logprobs); a step with no such chunk keeps nothing.
struct SequenceChunk {
  int slot = 0;
  int start = 0;
  std::vector<int> tokens;
  bool keep_hidden = false;
};

}  // namespace writeup::model

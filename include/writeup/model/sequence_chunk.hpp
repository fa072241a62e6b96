#pragma once
#include <vector>

namespace writeup::model {

// One sequence's share of a batched forward step: `tokens` are appended to cache slot
// `slot` at positions start, start+1, ... (start = tokens already cached for it).
// A prefill is a chunk with many tokens; a decode step is a chunk with one.
struct SequenceChunk {
  int slot = 0;
  int start = 0;
  std::vector<int> tokens;
};

}  // namespace writeup::model

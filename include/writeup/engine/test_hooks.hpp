#pragma once
// No ATen here: the service includes this header.
#include <functional>
#include <vector>

#include "writeup/model/sequence_chunk.hpp"

namespace writeup::engine {

using BeforeForward = std::function<void(long step, const std::vector<model::SequenceChunk>& chunks)>;

// Hooks for the end-to-end tests, from the environment (empty when neither is set):
// WRITEUP_TEST_OOM_OVER_TOKENS=N, a "device" with no room for a forward chunk of more than N
// tokens (throws c10::OutOfMemoryError); WRITEUP_TEST_STEP_DELAY_MS=M, a slow device (so that
// identical requests overlap).
BeforeForward test_hooks_from_env();

}  // namespace writeup::engine

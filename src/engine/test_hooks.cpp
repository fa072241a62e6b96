#include "writeup/engine/test_hooks.hpp"

#include <c10/util/Exception.h>

#include <chrono>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>

namespace writeup::engine {

BeforeForward test_hooks_from_env() {
  const char* limit = std::getenv("WRITEUP_TEST_OOM_OVER_TOKENS");
  const char* delay = std::getenv("WRITEUP_TEST_STEP_DELAY_MS");
  if (!limit && !delay) return {};
  const std::size_t max_tokens = limit ? std::stoul(limit) : std::numeric_limits<std::size_t>::max();
  const auto pause = std::chrono::milliseconds(delay ? std::stoi(delay) : 0);
  return [max_tokens, pause](long, const std::vector<model::SequenceChunk>& chunks) {
    std::this_thread::sleep_for(pause);
    for (const auto& c : chunks) {
      if (c.tokens.size() > max_tokens) {
        throw c10::OutOfMemoryError({__func__, __FILE__, static_cast<std::uint32_t>(__LINE__)},
                                    "injected by WRITEUP_TEST_OOM_OVER_TOKENS");
      }
    }
  };
}

}  // namespace writeup::engine

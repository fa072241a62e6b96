// Fuzz target: the GPT-2 byte-level BPE tokenizer of the tiny test model. Properties: on valid
// UTF-8, encode never throws, every id is in the vocabulary, and decode(encode(s)) == s; on
// any other bytes, encode throws std::invalid_argument and nothing else.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/text/utf8.hpp"

using namespace writeup;

namespace {
const text::BpeTokenizer& tokenizer() {
  static const auto tok = text::BpeTokenizer::from_model_dir(fuzz::test_data("tiny-gpt2"));
  return *tok;
}
}  // namespace

// The vocabulary loads before the first input, outside libFuzzer's per-input timeout.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const auto& tok = tokenizer();
  const bool valid = !text::find_invalid_utf8(s).has_value();
  std::vector<int> ids;
  try {
    ids = tok.encode(s);
  } catch (const std::invalid_argument& e) {
    if (valid) fuzz::finding(std::string("encode threw on valid UTF-8: ") + e.what());
    return 0;
  }
  if (!valid) fuzz::finding("encode accepted invalid UTF-8");
  for (const int id : ids) {
    if (id < 0 || id >= tok.vocab_size()) fuzz::finding("id " + std::to_string(id) + " outside the vocabulary");
  }
  if (tok.decode(ids) != s) fuzz::finding("decode(encode(s)) != s");
  return 0;
}

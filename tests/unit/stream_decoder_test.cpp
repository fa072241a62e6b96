#include "writeup/text/stream_decoder.hpp"

#include <gtest/gtest.h>

#include "test_support.hpp"
#include "writeup/text/bpe_tokenizer.hpp"
#include "writeup/text/utf8.hpp"

using namespace writeup::text;
namespace t = writeup::test;

namespace {
std::shared_ptr<BpeTokenizer> tok() {
  static auto tk = BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  return tk;
}
}  // namespace

TEST(StreamDecoder, NeverEmitsPartOfACharacter) {
  // CJK and emoji (with a skin-tone modifier and ZWJ) are split into byte-level tokens.
  const std::string text = "漢字かな交じり文 👩‍👩‍👧 👍🏽 ok Ünïcödé";
  const auto ids = tok()->encode(text);
  StreamDecoder dec(*tok());
  std::string out;
  int split_tokens = 0;
  for (int id : ids) {
    const std::string piece = dec.push(id);
    EXPECT_FALSE(find_invalid_utf8(piece)) << "partial character emitted";
    if (dec.pending_bytes() > 0) ++split_tokens;
    out += piece;
  }
  out += dec.flush();
  EXPECT_EQ(out, text);
  EXPECT_GT(split_tokens, 0) << "the text should contain characters split across tokens";
}

TEST(StreamDecoder, HeldBytesComeOutWhenTheCharacterCompletes) {
  // "👍" is F0 9F 91 8D; its bytes are tokens of their own or in pairs.
  const auto ids = tok()->encode("👍");
  ASSERT_GT(ids.size(), 1u);
  StreamDecoder dec(*tok());
  for (std::size_t i = 0; i + 1 < ids.size(); ++i) EXPECT_EQ(dec.push(ids[i]), "");
  EXPECT_EQ(dec.push(ids.back()), "👍");
  EXPECT_EQ(dec.flush(), "");
}

TEST(StreamDecoder, IncompleteTailBecomesReplacementOnFlush) {
  const auto ids = tok()->encode("👍");
  StreamDecoder dec(*tok());
  EXPECT_EQ(dec.push(ids.front()), "");
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD");
}

#include "writeup/text/utf8.hpp"

#include <gtest/gtest.h>

using namespace writeup::text;

TEST(Utf8, AcceptsValidText) {
  EXPECT_FALSE(find_invalid_utf8("plain ascii"));
  EXPECT_FALSE(find_invalid_utf8("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80"));
  EXPECT_FALSE(find_invalid_utf8(""));
}

TEST(Utf8, FindsInvalidBytesWithOffsets) {
  EXPECT_EQ(find_invalid_utf8("ab\xFF"), 2u);            // never valid
  EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);          // overlong '/'
  EXPECT_EQ(find_invalid_utf8("x\xED\xA0\x80"), 1u);     // UTF-16 surrogate
  EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(find_invalid_utf8("abc\xE6\x97"), 3u);       // truncated at the end
  EXPECT_EQ(find_invalid_utf8("\x80"), 0u);              // lone continuation
}

TEST(Utf8, RequireNamesWhatAndWhere) {
  try {
    require_utf8("hi\xFEthere", "prompt");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("prompt"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("offset 2"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("0xfe"), std::string::npos);
  }
}

TEST(Utf8, CompletePrefixHoldsBackIncompleteTail) {
  const std::string smile = "\xF0\x9F\x98\x80";
  EXPECT_EQ(complete_utf8_prefix("ab" + smile.substr(0, 1)), 2u);
  EXPECT_EQ(complete_utf8_prefix("ab" + smile.substr(0, 3)), 2u);
  EXPECT_EQ(complete_utf8_prefix("ab" + smile), 6u);
  EXPECT_EQ(complete_utf8_prefix("a\xFF"), 2u);  // invalid is complete (becomes U+FFFD)
}

TEST(Utf8, SanitizeReplacesInvalidSequences) {
  EXPECT_EQ(sanitize_utf8("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(sanitize_utf8("ok\xE6\x97"), "ok\xEF\xBF\xBD");
  EXPECT_EQ(sanitize_utf8("\xE6\x97\xA5"), "\xE6\x97\xA5");
}

TEST(Utf8, ReplacementFollowsTheMaximalSubpartRule) {
  // As Python's bytes.decode(errors="replace"): a truncated sequence cut short by a
  // non-continuation byte is one U+FFFD; lone continuation bytes are one each.
  EXPECT_EQ(sanitize_utf8("\xE6\x97" "a"), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(sanitize_utf8("\xF0\x9F\x98" "\xE6\x97\xA5"), "\xEF\xBF\xBD" "\xE6\x97\xA5");
  EXPECT_EQ(sanitize_utf8("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(sanitize_utf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

#include "writeup/service/text_stream.hpp"

#include <gtest/gtest.h>

using writeup::service::TextStream;

TEST(TextStream, ReleasesEverythingWithoutStopStrings) {
  TextStream s;
  EXPECT_EQ(s.append("Hello"), "Hello");
  EXPECT_EQ(s.append(" world"), " world");
  EXPECT_EQ(s.finish("Hello world"), "");
}

TEST(TextStream, HoldsBackAPossibleStopStringPrefix) {
  TextStream s({"\n\n", "END"});
  EXPECT_EQ(s.append("one E"), "one ");
  EXPECT_EQ(s.append("N"), "");
  EXPECT_EQ(s.append("x"), "ENx");  // not the stop string after all
  EXPECT_EQ(s.append(" two\n"), " two");
  EXPECT_EQ(s.append("\nthree"), "");  // the stop string: nothing after it
  EXPECT_EQ(s.released(), "one ENx two");
  EXPECT_EQ(s.finish("one ENx two"), "");
}

TEST(TextStream, StopStringInsideOnePiece) {
  TextStream s({"STOP"});
  EXPECT_EQ(s.append("abcSTOPdef"), "abc");
  EXPECT_EQ(s.finish("abc"), "");
}

TEST(TextStream, FinishReleasesTheHeldTail) {
  TextStream s({"ENDING"});
  EXPECT_EQ(s.append("the EN"), "the ");
  EXPECT_EQ(s.finish("the EN"), "EN");
}

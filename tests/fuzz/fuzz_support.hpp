#pragma once
// Shared by the libFuzzer targets: how a target reports a finding, and where the test data is.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#ifndef WRITEUP_TEST_DATA_DIR
#error "WRITEUP_TEST_DATA_DIR must name tests/data"
#endif

namespace writeup::fuzz {

inline std::string test_data(std::string_view rel) { return std::string(WRITEUP_TEST_DATA_DIR) + "/" + std::string(rel); }

// A broken property: print what broke and abort, so libFuzzer saves the input as a crash.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "FUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace writeup::fuzz

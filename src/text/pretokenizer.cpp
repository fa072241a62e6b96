#include "writeup/text/pretokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <stdexcept>
#include <string>

namespace writeup::text {
namespace {

constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct MatchDataFree {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

}  // namespace

Pretokenizer::Pretokenizer() {
  int error = 0;
  PCRE2_SIZE offset = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(error, msg, sizeof msg);
    throw std::runtime_error("GPT-2 pre-tokenizer pattern failed to compile: " +
                             std::string(reinterpret_cast<char*>(msg)));
  }
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  code_ = code;
}

Pretokenizer::~Pretokenizer() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Pretokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  std::unique_ptr<pcre2_match_data, MatchDataFree> match(
      pcre2_match_data_create_from_pattern(code, nullptr));
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE start = 0;
  uint32_t options = PCRE2_NO_UTF_CHECK;  // callers validate UTF-8 first
  while (start < text.size()) {
    int rc = pcre2_match(code, subject, text.size(), start, options, match.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // pathological input: retry without JIT
      rc = pcre2_match(code, subject, text.size(), start, options | PCRE2_NO_JIT, match.get(),
                       nullptr);
    }
    if (rc < 0) {
      // The alternatives cover every character, so a miss is a bug or a resource limit.
      throw std::runtime_error("pre-tokenizer match failed at offset " + std::to_string(start) +
                               " (pcre2 error " + std::to_string(rc) + ")");
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.get());
    if (ov[0] != start || ov[1] <= ov[0]) {
      throw std::runtime_error("pre-tokenizer skipped text at offset " + std::to_string(start));
    }
    out.push_back(text.substr(ov[0], ov[1] - ov[0]));
    start = ov[1];
  }
}

}  // namespace writeup::text

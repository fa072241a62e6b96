#pragma once
// The legacy completions API's `logprobs` object: {tokens, token_logprobs, top_logprobs,
// text_offset}, one entry per token.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace writeup::api {

struct LogprobEntry {
  std::string token;             // token_text() of the token's bytes
  std::optional<float> logprob;  // null: the first prompt token (nothing precedes it)
  std::optional<std::vector<std::pair<std::string, float>>> top;  // null likewise; most likely first
  int text_offset = 0;           // characters of prompt + completion before the token
};

// A token's text as JSON can carry it: its bytes when they are valid UTF-8 on their own; else
// (a token holding part of a character) "bytes:" and each byte as \xNN, as OpenAI writes it,
// e.g. "bytes:\xe2\x80".
std::string token_text(std::string_view bytes);
// Characters (code points) in UTF-8 text: the bytes that are not continuation bytes. A
// character split across tokens counts in the token holding its first byte.
int count_chars(std::string_view bytes);

// {"tokens": [...], "token_logprobs": [...], "top_logprobs": [...], "text_offset": [...]};
// top_logprobs entries are objects token -> logprob (a token text already listed keeps its
// first, most likely value).
nlohmann::json make_logprobs(const std::vector<LogprobEntry>& entries);

}  // namespace writeup::api

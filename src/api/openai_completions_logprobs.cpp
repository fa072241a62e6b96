#include "writeup/api/openai_completions_logprobs.hpp"

#include <cstdio>

namespace writeup::api {
namespace {

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

}  // namespace

std::string token_text(std::string_view bytes) {
  if (valid_utf8(bytes)) return std::string(bytes);
  std::string out = "bytes:";
  char buf[5];
  for (const char b : bytes) {
    std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(static_cast<unsigned char>(b)));
    out += buf;
  }
  return out;
}

int count_chars(std::string_view bytes) {
  int n = 0;
  for (const char b : bytes) {
    if ((static_cast<unsigned char>(b) & 0xC0) != 0x80) ++n;
  }
  return n;
}

nlohmann::json make_logprobs(const std::vector<LogprobEntry>& entries) {
  auto tokens = nlohmann::json::array(), logprobs = nlohmann::json::array(), tops = nlohmann::json::array(),
       offsets = nlohmann::json::array();
  for (const auto& e : entries) {
    tokens.push_back(e.token);
    logprobs.push_back(e.logprob ? nlohmann::json(static_cast<double>(*e.logprob)) : nlohmann::json(nullptr));
    if (e.top) {
      auto top = nlohmann::json::object();
      for (const auto& [t, lp] : *e.top) {
        if (!top.contains(t)) top[t] = static_cast<double>(lp);
      }
      tops.push_back(std::move(top));
    } else {
      tops.push_back(nullptr);
    }
    offsets.push_back(e.text_offset);
  }
  return {{"tokens", tokens}, {"token_logprobs", logprobs}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

}  // namespace writeup::api

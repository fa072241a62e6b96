#include "writeup/text/utf8.hpp"

#include <stdexcept>

namespace writeup::text {
namespace {

enum class Kind { valid, incomplete, invalid };
struct Sequence {
  Kind kind;
  std::size_t length;  // valid: its bytes; incomplete: bytes present; invalid: the maximal
                       // subpart to replace with one U+FFFD (at least 1)
};

// Classifies the sequence that starts at s[i] (Unicode "maximal subpart" rules, as Python's
// and WHATWG's decoders apply them).
Sequence sequence_at(std::string_view s, std::size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {Kind::valid, 1};
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range for the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Kind::invalid, 1};
  }
  for (std::size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) return {Kind::incomplete, k};
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char l = (k == 1) ? lo : 0x80, h = (k == 1) ? hi : 0xBF;
    if (b < l || b > h) return {Kind::invalid, k};
  }
  return {Kind::valid, len};
}

}  // namespace

std::optional<std::size_t> find_invalid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto seq = sequence_at(s, i);
    if (seq.kind != Kind::valid) return i;
    i += seq.length;
  }
  return std::nullopt;
}

void require_utf8(std::string_view s, std::string_view what) {
  if (auto bad = find_invalid_utf8(s)) {
    throw std::invalid_argument(std::string(what) + " is not valid UTF-8 (invalid byte 0x" +
                                [&] {
                                  static const char* hex = "0123456789abcdef";
                                  const auto b = static_cast<unsigned char>(s[*bad]);
                                  return std::string{hex[b >> 4], hex[b & 15]};
                                }() +
                                " at offset " + std::to_string(*bad) + ")");
  }
}

std::size_t complete_utf8_prefix(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto seq = sequence_at(s, i);
    if (seq.kind == Kind::incomplete) return i;  // hold the tail back
    i += seq.length;
  }
  return s.size();
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto seq = sequence_at(s, i);
    if (seq.kind == Kind::valid) {
      out.append(s.substr(i, seq.length));
    } else {
      out.append("\xEF\xBF\xBD");  // one U+FFFD per maximal invalid subpart
    }
    i += seq.length;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace writeup::text

#include "writeup/text/byte_unicode.hpp"

#include "writeup/text/utf8.hpp"

namespace writeup::text {

ByteUnicode::ByteUnicode() {
  codepoint_to_byte_.fill(-1);
  // Printable Latin-1 bytes map to themselves; the rest to 256, 257, ... in byte order.
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const int cp = printable ? b : next++;
    append_utf8(byte_to_utf8_[b], static_cast<char32_t>(cp));
    codepoint_to_byte_[cp] = b;
  }
}

const ByteUnicode& ByteUnicode::instance() {
  static const ByteUnicode map;
  return map;
}

std::optional<std::string> ByteUnicode::decode(std::string_view token) const {
  std::string out;
  out.reserve(token.size());
  for (std::size_t i = 0; i < token.size();) {
    const auto b0 = static_cast<unsigned char>(token[i]);
    int cp;
    if (b0 < 0x80) {
      cp = b0;
      i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < token.size()) {
      cp = ((b0 & 0x1F) << 6) | (static_cast<unsigned char>(token[i + 1]) & 0x3F);
      i += 2;
    } else {
      return std::nullopt;  // every mapped code point is below U+0800
    }
    if (cp >= static_cast<int>(codepoint_to_byte_.size()) || codepoint_to_byte_[cp] < 0) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(codepoint_to_byte_[cp]));
  }
  return out;
}

}  // namespace writeup::text

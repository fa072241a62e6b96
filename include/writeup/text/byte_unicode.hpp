#pragma once
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace writeup::text {

// GPT-2's reversible byte <-> printable-unicode map: vocabulary entries are written with
// one printable code point per byte (e.g. byte 0x20 ' ' is U+0120 'Ġ').
class ByteUnicode {
 public:
  static const ByteUnicode& instance();

  // The UTF-8 of the code point standing for `byte`.
  const std::string& encode(unsigned char byte) const { return byte_to_utf8_[byte]; }
  // Maps a vocabulary string back to raw bytes; nullopt when a code point is not in the map.
  std::optional<std::string> decode(std::string_view token) const;

 private:
  ByteUnicode();
  std::array<std::string, 256> byte_to_utf8_;
  std::array<int, 512> codepoint_to_byte_{};  // every mapped code point is below 512
};

}  // namespace writeup::text

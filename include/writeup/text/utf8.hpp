#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace writeup::text {

// Offset of the first byte that does not start or continue a valid UTF-8 sequence
// (overlongs, surrogates and code points above U+10FFFF are invalid), or nullopt.
std::optional<std::size_t> find_invalid_utf8(std::string_view s);

// Throws std::invalid_argument naming `what` and the byte offset when `s` is not UTF-8.
void require_utf8(std::string_view s, std::string_view what);

// Length of the longest prefix of `s` that ends on a character boundary, treating a
// trailing incomplete-but-valid sequence as "not yet complete". Invalid bytes are not
// held back (they are complete, if wrong).
std::size_t complete_utf8_prefix(std::string_view s);

// Replaces every invalid byte sequence with U+FFFD (as Python's errors="replace").
std::string sanitize_utf8(std::string_view s);

// Appends the UTF-8 encoding of code point `cp` to `out`.
void append_utf8(std::string& out, char32_t cp);

}  // namespace writeup::text

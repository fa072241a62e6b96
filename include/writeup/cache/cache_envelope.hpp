#pragma once
// How the cache stores a response in Redis: "writeup_cache:1\n<key>\n<body length>\n<body>".
// Binary-safe, and a value that is not ours (foreign, truncated, or written under another key)
// is recognised instead of being served.
#include <optional>
#include <string>
#include <string_view>

namespace writeup::cache {

std::string wrap_value(const std::string& key, const std::string& body);
// The body, or nullopt when `value` is not an envelope written under `key`.
std::optional<std::string> unwrap_value(const std::string& key, std::string_view value);

}  // namespace writeup::cache

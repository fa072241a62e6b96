#include "writeup/cache/cache_envelope.hpp"

namespace writeup::cache {
namespace {
constexpr std::string_view kEnvelopeMagic = "writeup_cache:1\n";
}  // namespace

std::string wrap_value(const std::string& key, const std::string& body) {
  std::string out(kEnvelopeMagic);
  out += key;
  out += '\n';
  out += std::to_string(body.size());
  out += '\n';
  out += body;
  return out;
}

std::optional<std::string> unwrap_value(const std::string& key, std::string_view v) {
  if (v.substr(0, kEnvelopeMagic.size()) != kEnvelopeMagic) return std::nullopt;
  v.remove_prefix(kEnvelopeMagic.size());
  if (v.substr(0, key.size()) != key || v.size() <= key.size() || v[key.size()] != '\n') {
    return std::nullopt;
  }
  v.remove_prefix(key.size() + 1);
  const auto eol = v.find('\n');
  if (eol == std::string_view::npos || eol == 0 || eol > 19) return std::nullopt;
  std::size_t length = 0;
  for (char c : v.substr(0, eol)) {
    if (c < '0' || c > '9') return std::nullopt;
    length = length * 10 + static_cast<std::size_t>(c - '0');
  }
  v.remove_prefix(eol + 1);
  if (v.size() != length) return std::nullopt;
  return std::string(v);
}

}  // namespace writeup::cache

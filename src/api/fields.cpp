#include "writeup/api/fields.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "writeup/api/api_error.hpp"
#include "writeup/text/utf8.hpp"

namespace writeup::api {
namespace {

std::string format_number(double v) {
  std::string s = nlohmann::json(v).dump();
  if (s.size() > 2 && s.substr(s.size() - 2) == ".0") s.resize(s.size() - 2);
  return s;
}

// A JSON number, or a string holding one.
std::optional<double> as_number(const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  if (!v.is_string()) return std::nullopt;
  const auto s = v.get<std::string>();
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return std::nullopt;
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(d)) return std::nullopt;
  return d;
}

}  // namespace

Fields::Fields(const nlohmann::json& object) : object_(object) {}

bool Fields::has(const std::string& name) const {
  auto it = object_.find(name);
  return it != object_.end() && !it->is_null();
}

std::optional<double> Fields::number(const std::string& name, double min, double max) const {
  if (!has(name)) return std::nullopt;
  const auto v = as_number(object_[name]);
  if (!v) throw ApiError::bad_request(name + " must be a number", name);
  if (*v < min || *v > max) {
    throw ApiError::bad_request(name + " must be between " + format_number(min) + " and " +
                                    format_number(max) + ", got " + format_number(*v),
                                name);
  }
  return v;
}

std::optional<std::int64_t> Fields::integer(const std::string& name, std::int64_t min,
                                            std::int64_t max) const {
  if (!has(name)) return std::nullopt;
  const auto v = as_number(object_[name]);
  if (!v || std::floor(*v) != *v) throw ApiError::bad_request(name + " must be an integer", name);
  if (*v < static_cast<double>(min) || *v > static_cast<double>(max)) {
    throw ApiError::bad_request(name + " must be between " + std::to_string(min) + " and " +
                                    std::to_string(max) + ", got " + format_number(*v),
                                name);
  }
  return static_cast<std::int64_t>(*v);
}

std::optional<std::uint64_t> Fields::seed(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  const auto& v = object_[name];
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
  if (v.is_string()) {
    const auto s = v.get<std::string>();
    char* end = nullptr;
    errno = 0;
    const auto u = std::strtoull(s.c_str(), &end, 10);
    if (!s.empty() && std::isdigit(static_cast<unsigned char>(s[0])) && end == s.c_str() + s.size() && errno == 0) return u;
  }
  throw ApiError::bad_request(name + " must be a non-negative integer", name);
}

std::optional<bool> Fields::boolean(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  const auto& v = object_[name];
  if (v.is_boolean()) return v.get<bool>();
  // Form values are strings: what HTML forms and clients send for a boolean.
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (s == "true" || s == "1" || s == "on" || s == "yes") return true;
    if (s == "false" || s == "0" || s == "off" || s == "no") return false;
  }
  throw ApiError::bad_request(name + " must be true or false", name);
}

std::optional<std::string> Fields::string(const std::string& name) const {
  if (!has(name)) return std::nullopt;
  const auto& v = object_[name];
  if (!v.is_string()) throw ApiError::bad_request(name + " must be a string", name);
  return v.get<std::string>();
}

void Fields::reject_unknown(const std::set<std::string>& known) const {
  for (const auto& [key, value] : object_.items()) {
    if (!known.count(key)) throw ApiError::bad_request("unknown field '" + key + "'", key);
  }
}

namespace {

// The value of the 4 hex digits at json[i..i+4), or -1.
int hex4(std::string_view json, std::size_t i) {
  if (i + 4 > json.size()) return -1;
  int v = 0;
  for (std::size_t k = i; k < i + 4; ++k) {
    const char c = json[k];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

bool is_high(int v) { return v >= 0xD800 && v <= 0xDBFF; }
bool is_low(int v) { return v >= 0xDC00 && v <= 0xDFFF; }

}  // namespace

std::optional<std::string> replace_lone_surrogates(std::string_view json) {
  std::optional<std::string> out;
  std::size_t copied = 0;  // json[0, copied) is in *out (once there is one)
  const auto replace = [&](std::size_t at) {  // the 6-byte escape at json[at] becomes \uFFFD
    if (!out) out.emplace().reserve(json.size());
    out->append(json.substr(copied, at - copied)).append("\\uFFFD");
    copied = at + 6;
  };
  for (std::size_t i = 0; i + 1 < json.size(); ++i) {
    if (json[i] != '\\') continue;
    if (json[i + 1] != 'u') {
      ++i;  // any other escape (\\, \", ...): its second character is not a new escape
      continue;
    }
    const int v = hex4(json, i + 2);
    if (is_high(v) && i + 12 <= json.size() && json[i + 6] == '\\' && json[i + 7] == 'u' && is_low(hex4(json, i + 8))) {
      i += 11;  // a valid pair
      continue;
    }
    if (is_high(v) || is_low(v)) {
      replace(i);
      i += 5;
      continue;
    }
    i += 5;
  }
  if (out) out->append(json.substr(copied));
  return out;
}

nlohmann::json parse_json_lenient(std::string_view text) {
  const auto repaired = replace_lone_surrogates(text);
  return nlohmann::json::parse(repaired ? std::string_view(*repaired) : text, nullptr, /*allow_exceptions=*/false);
}

nlohmann::json parse_json_object(std::string_view body) {
  if (auto bad = text::find_invalid_utf8(body)) {
    throw ApiError::bad_request("request body is not valid UTF-8 (offset " + std::to_string(*bad) + ")");
  }
  nlohmann::json j = parse_json_lenient(body);
  if (j.is_discarded()) throw ApiError(400, "invalid_json", "request body is not valid JSON");
  if (!j.is_object()) throw ApiError(400, "invalid_json", "request body must be a JSON object");
  return j;
}

nlohmann::json parse_form_urlencoded(std::string_view body) {
  const auto decode = [](std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '+') {
        out.push_back(' ');
      } else if (s[i] == '%' && i + 2 < s.size() + 0 && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
                 std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
        out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
        i += 2;
      } else if (s[i] == '%') {
        throw ApiError(400, "invalid_form", "malformed percent-escape in form body");
      } else {
        out.push_back(s[i]);
      }
    }
    return out;
  };
  nlohmann::json j = nlohmann::json::object();
  std::size_t pos = 0;
  while (pos <= body.size()) {
    auto amp = body.find('&', pos);
    if (amp == std::string_view::npos) amp = body.size();
    const auto pair = body.substr(pos, amp - pos);
    if (!pair.empty()) {
      const auto eq = pair.find('=');
      const std::string key = decode(pair.substr(0, eq));
      const std::string value = eq == std::string_view::npos ? "" : decode(pair.substr(eq + 1));
      if (text::find_invalid_utf8(key) || text::find_invalid_utf8(value)) {
        // The key is the client's bytes: only its sanitized form goes into the error.
        const auto name = text::sanitize_utf8(key);
        throw ApiError::bad_request("form field '" + name + "' is not valid UTF-8", name);
      }
      j[key] = value;
    }
    pos = amp + 1;
  }
  return j;
}

}  // namespace writeup::api

#include "writeup/api/fields.hpp"

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
  if (v == "true") return true;
  if (v == "false") return false;
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

nlohmann::json parse_json_object(std::string_view body) {
  if (auto bad = text::find_invalid_utf8(body)) {
    throw ApiError::bad_request("request body is not valid UTF-8 (offset " + std::to_string(*bad) + ")");
  }
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
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

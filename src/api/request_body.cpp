#include "writeup/api/request_body.hpp"

#include <algorithm>
#include <cctype>
#include <string>

#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"
#include "writeup/text/utf8.hpp"

namespace writeup::api {
namespace {

constexpr std::size_t kMaxParts = 1000;
constexpr std::size_t kMaxPartHeaderBytes = 8192;

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// What the client's bytes may say in an error message.
std::string shown(std::string_view s) {
  std::string out = text::sanitize_utf8(std::string(s.substr(0, 100)));
  if (s.size() > 100) out += "...";
  return "'" + out + "'";
}

// The parameters of a header value `type; a=b; c="d"` (names lower-cased; quoted values
// unescaped). The first item (the type) is returned in `value`.
struct HeaderValue {
  std::string value;
  std::vector<std::pair<std::string, std::string>> params;
  const std::string* param(const std::string& name) const {
    for (const auto& [k, v] : params) {
      if (k == name) return &v;
    }
    return nullptr;
  }
};

HeaderValue parse_header_value(std::string_view s) {
  HeaderValue out;
  auto semi = s.find(';');
  out.value = lower(trim(s.substr(0, semi)));
  std::size_t pos = semi == std::string_view::npos ? s.size() : semi + 1;
  while (pos < s.size()) {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == ';')) ++pos;
    const auto eq = s.find('=', pos);
    if (eq == std::string_view::npos) break;
    const auto name = lower(trim(s.substr(pos, eq - pos)));
    pos = eq + 1;
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t')) ++pos;
    std::string value;
    if (pos < s.size() && s[pos] == '"') {
      ++pos;
      while (pos < s.size() && s[pos] != '"') {
        if (s[pos] == '\\' && pos + 1 < s.size()) ++pos;
        value.push_back(s[pos++]);
      }
      ++pos;  // the closing quote
      const auto next = s.find(';', std::min(pos, s.size()));
      pos = next == std::string_view::npos ? s.size() : next + 1;
    } else {
      const auto next = s.find(';', pos);
      value = std::string(trim(s.substr(pos, next == std::string_view::npos ? std::string_view::npos : next - pos)));
      pos = next == std::string_view::npos ? s.size() : next + 1;
    }
    out.params.emplace_back(name, std::move(value));
  }
  return out;
}

bool starts_like_json(std::string_view body, bool array_too) {
  const auto first = body.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return false;
  return body[first] == '{' || (array_too && body[first] == '[');
}

// Fields that routes read as arrays or objects: a form carries them as JSON text.
void parse_structured_values(nlohmann::json& fields) {
  for (const char* name : {"stop", "messages", "tokens", "logit_bias", "stream_options"}) {
    auto it = fields.find(name);
    if (it == fields.end() || !it->is_string()) continue;
    const auto& s = it->get_ref<const std::string&>();
    const auto first = s.find_first_not_of(" \t\r\n");
    if (first == std::string::npos || (s[first] != '[' && s[first] != '{')) continue;
    auto parsed = parse_json_lenient(s);
    if (parsed.is_discarded()) {
      throw ApiError::bad_request(std::string("form field '") + name + "' starts like JSON but is not valid JSON", name);
    }
    *it = std::move(parsed);
  }
}

void check_charset(const HeaderValue& type) {
  const auto* charset = type.param("charset");
  if (!charset) return;
  const auto c = lower(*charset);
  if (c != "utf-8" && c != "utf8" && c != "us-ascii") {
    throw ApiError(415, "unsupported_media_type",
                   "request body charset " + shown(*charset) + " is not supported (send UTF-8)");
  }
}

}  // namespace

std::string multipart_boundary(std::string_view content_type) {
  const auto type = parse_header_value(content_type);
  const auto* b = type.param("boundary");
  return b ? *b : std::string();
}

nlohmann::json parse_multipart_form(std::string_view boundary, std::string_view body) {
  if (boundary.empty() || boundary.size() > 70) {
    throw ApiError(400, "invalid_multipart", "multipart/form-data needs a boundary parameter of 1 to 70 characters");
  }
  const std::string delimiter = "--" + std::string(boundary);
  const std::string next_delimiter = "\r\n" + delimiter;
  // The first delimiter: at the start, or after a preamble ending in CRLF.
  std::size_t pos;
  if (body.substr(0, delimiter.size()) == delimiter) {
    pos = delimiter.size();
  } else {
    const auto at = body.find(next_delimiter);
    if (at == std::string_view::npos) {
      throw ApiError(400, "invalid_multipart", "multipart body has no boundary line " + shown(delimiter));
    }
    pos = at + next_delimiter.size();
  }
  nlohmann::json fields = nlohmann::json::object();
  for (std::size_t part = 0;; ++part) {
    // After a delimiter: "--" ends the body; else optional whitespace and CRLF.
    if (body.substr(pos, 2) == "--") return fields;
    while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t')) ++pos;
    if (body.substr(pos, 2) != "\r\n") {
      throw ApiError(400, "invalid_multipart", "multipart boundary line is not followed by CRLF (part " +
                                                   std::to_string(part + 1) + ")");
    }
    if (part >= kMaxParts) {
      throw ApiError(400, "invalid_multipart", "multipart body has more than " + std::to_string(kMaxParts) + " parts");
    }
    pos += 2;
    const auto head_end = body.find("\r\n\r\n", pos - 2);
    if (head_end == std::string_view::npos) {
      throw ApiError(400, "invalid_multipart", "multipart part " + std::to_string(part + 1) + " has no end of headers");
    }
    const auto head = head_end < pos ? std::string_view() : body.substr(pos, head_end - pos);
    if (head.size() > kMaxPartHeaderBytes) {
      throw ApiError(400, "invalid_multipart", "multipart part " + std::to_string(part + 1) + " has headers over 8 KiB");
    }
    const auto content_start = head_end + 4;
    const auto content_end = body.find(next_delimiter, content_start - 2);
    if (content_end == std::string_view::npos) {
      throw ApiError(400, "invalid_multipart", "multipart body ends before its closing boundary " + shown(delimiter + "--"));
    }
    const auto content =
        content_end < content_start ? std::string_view() : body.substr(content_start, content_end - content_start);
    // The part's headers.
    std::optional<HeaderValue> disposition;
    std::optional<HeaderValue> type;
    std::size_t line_pos = 0;
    while (line_pos < head.size()) {
      auto eol = head.find("\r\n", line_pos);
      if (eol == std::string_view::npos) eol = head.size();
      const auto line = head.substr(line_pos, eol - line_pos);
      line_pos = eol + 2;
      const auto colon = line.find(':');
      if (colon == std::string_view::npos) {
        throw ApiError(400, "invalid_multipart", "multipart part " + std::to_string(part + 1) + " has a malformed header line " +
                                                     shown(line));
      }
      const auto name = lower(trim(line.substr(0, colon)));
      if (name == "content-disposition") disposition = parse_header_value(line.substr(colon + 1));
      if (name == "content-type") type = parse_header_value(line.substr(colon + 1));
    }
    const std::string* field = disposition && disposition->value == "form-data" ? disposition->param("name") : nullptr;
    if (!field || field->empty()) {
      throw ApiError(400, "invalid_multipart", "multipart part " + std::to_string(part + 1) +
                                                   " has no Content-Disposition: form-data with a name");
    }
    if (text::find_invalid_utf8(*field)) {
      throw ApiError(400, "invalid_multipart", "multipart part " + std::to_string(part + 1) + "'s name is not valid UTF-8");
    }
    if (const auto* file = disposition->param("filename")) {
      throw ApiError::bad_request("multipart field '" + *field + "' is a file (filename " + shown(*file) +
                                      "): only text fields are accepted",
                                  *field);
    }
    if (type && type->value.rfind("text/", 0) != 0 && type->value != "application/json") {
      throw ApiError::bad_request("multipart field '" + *field + "' has Content-Type " + shown(type->value) +
                                      ": only text fields are accepted",
                                  *field);
    }
    if (text::find_invalid_utf8(content)) {
      throw ApiError::bad_request("multipart field '" + *field + "' is not valid UTF-8", *field);
    }
    fields[*field] = std::string(content);
    pos = content_end + next_delimiter.size();
  }
}

RequestBody parse_request_body(std::string_view content_type, std::string_view body) {
  const auto type = parse_header_value(content_type);
  const auto& media = type.value;
  RequestBody out;
  const bool json_type = media == "application/json" ||
                         (media.size() > 5 && media.compare(media.size() - 5, 5, "+json") == 0 && media.find('/') != std::string::npos);
  if (json_type || (media.empty() && (starts_like_json(body, true) || body.find('=') == std::string_view::npos)) ||
      (media == "application/x-www-form-urlencoded" && starts_like_json(body, false))) {
    check_charset(type);
    out.fields = parse_json_object(body);
    return out;
  }
  if (media.empty() || media == "application/x-www-form-urlencoded") {
    check_charset(type);
    out.kind = BodyKind::form;
    out.fields = parse_form_urlencoded(body);
  } else if (media == "multipart/form-data") {
    check_charset(type);
    out.kind = BodyKind::multipart;
    const auto* boundary = type.param("boundary");
    if (!boundary) throw ApiError(400, "invalid_multipart", "multipart/form-data needs a boundary parameter");
    out.fields = parse_multipart_form(*boundary, body);
  } else {
    throw ApiError(415, "unsupported_media_type",
                   "Content-Type " + shown(media) +
                       " is not supported: send application/json, application/x-www-form-urlencoded or multipart/form-data");
  }
  parse_structured_values(out.fields);
  return out;
}

}  // namespace writeup::api

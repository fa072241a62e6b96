#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace writeup::api {

// Typed, range-checked reads of a request object. Every error is an ApiError (400) whose
// message and param name the field. Numbers may arrive as JSON numbers or as numeric strings
// (form-encoded bodies and the original editor send strings).
class Fields {
 public:
  explicit Fields(const nlohmann::json& object);

  bool has(const std::string& name) const;  // present and not null
  std::optional<double> number(const std::string& name, double min, double max) const;
  std::optional<std::int64_t> integer(const std::string& name, std::int64_t min, std::int64_t max) const;
  std::optional<std::uint64_t> seed(const std::string& name) const;  // any non-negative 64-bit integer
  // true/false, or a string: "true"/"1"/"on"/"yes" or "false"/"0"/"off"/"no" (any case; forms).
  std::optional<bool> boolean(const std::string& name) const;
  std::optional<std::string> string(const std::string& name) const;  // must be valid UTF-8
  // Throws for any key not in `known`.
  void reject_unknown(const std::set<std::string>& known) const;

 private:
  const nlohmann::json& object_;
};

// JSON text whose lone UTF-16 surrogate escapes (\uD800-\uDFFF not forming a high-low pair;
// e.g. the original editor's 500-character window cut inside an emoji) are replaced by
// \uFFFD, which a strict parser then accepts. nullopt when there is none (nothing copied).
// Only escapes are looked at; the text is not otherwise checked.
std::optional<std::string> replace_lone_surrogates(std::string_view json);
// Parses JSON text, with lone surrogate escapes replaced (above); discarded when malformed.
nlohmann::json parse_json_lenient(std::string_view text);

// Parses a JSON object body; a non-object or malformed body is a 400 naming the problem.
nlohmann::json parse_json_object(std::string_view body);
// Parses application/x-www-form-urlencoded into a JSON object of strings.
nlohmann::json parse_form_urlencoded(std::string_view body);

}  // namespace writeup::api

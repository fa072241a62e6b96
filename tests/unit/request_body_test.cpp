#include "writeup/api/request_body.hpp"

#include <gtest/gtest.h>

#include "writeup/api/api_error.hpp"
#include "writeup/api/fields.hpp"

using namespace writeup::api;

namespace {

// The status and message of the error a body raises ("" / 0 when it parses).
std::pair<int, std::string> error_of(std::string_view type, std::string_view body) {
  try {
    parse_request_body(type, body);
    return {0, ""};
  } catch (const ApiError& e) {
    return {e.status(), e.what()};
  }
}

std::string multipart(const std::string& boundary, const std::vector<std::pair<std::string, std::string>>& parts) {
  std::string body;
  for (const auto& [headers, value] : parts) body += "--" + boundary + "\r\n" + headers + "\r\n\r\n" + value + "\r\n";
  return body + "--" + boundary + "--\r\n";
}

}  // namespace

TEST(RequestBody, JsonByContentTypeOrByItsFirstByte) {
  EXPECT_EQ(parse_request_body("application/json", R"({"a":1})").fields["a"], 1);
  EXPECT_EQ(parse_request_body("application/json; charset=utf-8", R"({"a":1})").kind, BodyKind::json);
  EXPECT_EQ(parse_request_body("application/vnd.api+json", R"({"a":1})").kind, BodyKind::json);
  EXPECT_EQ(parse_request_body("", "  {\"a\":1}").fields["a"], 1);
  // curl -d labels JSON a form: a form body never starts with '{'.
  const auto curl = parse_request_body("application/x-www-form-urlencoded", R"({"prompt":"a=b&c"})");
  EXPECT_EQ(curl.kind, BodyKind::json);
  EXPECT_EQ(curl.fields["prompt"], "a=b&c");
  EXPECT_EQ(error_of("application/json", "prompt=x").first, 400);
  EXPECT_EQ(error_of("", "").first, 400);
}

TEST(RequestBody, FormsAreStringsWithStructuredFieldsParsed) {
  const auto b = parse_request_body("application/x-www-form-urlencoded", "prompt=Hi+there&n=2&stop=%5B%22a%22%2C%22b%22%5D");
  EXPECT_EQ(b.kind, BodyKind::form);
  EXPECT_EQ(b.fields["prompt"], "Hi there");
  EXPECT_EQ(b.fields["n"], "2");
  EXPECT_EQ(b.fields["stop"], nlohmann::json::array({"a", "b"}));
  EXPECT_EQ(parse_request_body("", "prompt=x").kind, BodyKind::form);
  // A stop that is just text stays text; one that starts like JSON but is not is an error.
  EXPECT_EQ(parse_request_body("application/x-www-form-urlencoded", "stop=end").fields["stop"], "end");
  const auto [status, message] = error_of("application/x-www-form-urlencoded", "stop=%5Bbroken");
  EXPECT_EQ(status, 400);
  EXPECT_NE(message.find("stop"), std::string::npos);
}

TEST(RequestBody, OtherTypesAre415NamingThem) {
  const auto [status, message] = error_of("text/plain", "hello");
  EXPECT_EQ(status, 415);
  EXPECT_NE(message.find("text/plain"), std::string::npos);
  EXPECT_EQ(error_of("application/json; charset=latin1", "{}").first, 415);
  EXPECT_EQ(error_of("application/xml", "<a/>").first, 415);
}

TEST(RequestBody, MultipartTextFields) {
  const auto body = multipart("XyZ", {{"Content-Disposition: form-data; name=\"prompt\"", "line one\r\nline two"},
                                      {"content-disposition: form-data; name=n", "3"},
                                      {"Content-Disposition: form-data; name=\"stop\"\r\nContent-Type: text/plain; charset=utf-8", "[\"x\"]"}});
  const auto b = parse_request_body("multipart/form-data; boundary=XyZ", body);
  EXPECT_EQ(b.kind, BodyKind::multipart);
  EXPECT_EQ(b.fields["prompt"], "line one\r\nline two");
  EXPECT_EQ(b.fields["n"], "3");
  EXPECT_EQ(b.fields["stop"], nlohmann::json::array({"x"}));
  // A quoted boundary, a preamble, and an empty value.
  const auto quoted = parse_request_body("multipart/form-data; boundary=\"a b\"",
                                         "preamble\r\n" + multipart("a b", {{"Content-Disposition: form-data; name=\"e\"", ""}}));
  EXPECT_EQ(quoted.fields["e"], "");
}

TEST(RequestBody, MultipartErrorsNameTheProblem) {
  const auto check = [](std::string_view type, const std::string& body, const std::string& needle) {
    const auto [status, message] = error_of(type, body);
    EXPECT_EQ(status, 400) << body;
    EXPECT_NE(message.find(needle), std::string::npos) << message;
  };
  check("multipart/form-data", "x", "boundary");
  check("multipart/form-data; boundary=B",
        multipart("B", {{"Content-Disposition: form-data; name=\"f\"; filename=\"a.txt\"", "data"}}), "file");
  check("multipart/form-data; boundary=B",
        multipart("B", {{"Content-Disposition: form-data; name=\"img\"\r\nContent-Type: image/png", "\x89PNG"}}), "image/png");
  check("multipart/form-data; boundary=B", multipart("B", {{"Content-Type: text/plain", "v"}}), "Content-Disposition");
  check("multipart/form-data; boundary=B", "--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
        "closing boundary");
  check("multipart/form-data; boundary=B", "no delimiter here", "boundary line");
  check("multipart/form-data; boundary=B", multipart("B", {{"Content-Disposition: form-data; name=\"a\"", "\xff"}}),
        "UTF-8");
  check("multipart/form-data; boundary=B", "--B\r\nbroken header\r\n\r\nv\r\n--B--", "header");
}

TEST(RequestBody, FormBooleansAndNumbersAreRead) {
  const auto b = parse_request_body("application/x-www-form-urlencoded", "stream=True&echo=0&n=2&temperature=0.5&seed=7");
  const Fields f(b.fields);
  EXPECT_EQ(f.boolean("stream"), true);
  EXPECT_EQ(f.boolean("echo"), false);
  EXPECT_EQ(f.integer("n", 1, 10), 2);
  EXPECT_EQ(f.number("temperature", 0, 2), 0.5);
  EXPECT_EQ(f.seed("seed"), 7u);
  const nlohmann::json maybe = {{"stream", "maybe"}};
  const Fields bad(maybe);
  EXPECT_THROW(bad.boolean("stream"), ApiError);
}

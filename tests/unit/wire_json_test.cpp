#include "writeup/api/wire_json.hpp"

#include <gtest/gtest.h>

#include "writeup/api/api_error.hpp"

namespace writeup::api {
namespace {

TEST(WireJson, InvalidUtf8IsReplacedInsteadOfThrowing) {
  const nlohmann::json j = {{std::string("k\xff"), std::string("a\xc3(b\xff")}};
  EXPECT_THROW((void)j.dump(), nlohmann::json::type_error);  // what the plain dump does
  const auto s = wire_dump(j);
  EXPECT_EQ(s, "{\"k\xEF\xBF\xBD\":\"a\xEF\xBF\xBD(b\xEF\xBF\xBD\"}");
  EXPECT_EQ(nlohmann::json::parse(s)["k\xEF\xBF\xBD"], "a\xEF\xBF\xBD(b\xEF\xBF\xBD");
}

TEST(WireJson, AnErrorNamingABadFieldStillRenders) {
  const ApiError e(400, "invalid_value", "form field '\xff' is not valid UTF-8", "\xff");
  const auto j = nlohmann::json::parse(wire_dump(e.to_json()));
  EXPECT_EQ(j["error"]["param"], "\xEF\xBF\xBD");
  EXPECT_EQ(j["error"]["code"], "invalid_value");
}

TEST(WireJson, ValidTextIsUnchanged) {
  const nlohmann::json j = {{"text", "caf\xC3\xA9 \xF0\x9F\x98\x80"}, {"n", 3}};
  EXPECT_EQ(wire_dump(j), j.dump());
}

}  // namespace
}  // namespace writeup::api

#include "writeup/cache/cache_key.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

using writeup::cache::cache_key;
using writeup::cache::sha256_hex;
using json = nlohmann::json;

// FIPS 180-2, appendix B.
TEST(CacheKey, Sha256MatchesFips180Vectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(CacheKey, Sha256PaddingBoundaries) {
  // Lengths around the one- and two-block padding limits must all differ and be stable.
  std::string previous;
  for (std::size_t n : {54u, 55u, 56u, 57u, 63u, 64u, 65u, 119u, 120u, 128u}) {
    const std::string h = sha256_hex(std::string(n, 'x'));
    EXPECT_EQ(h.size(), 64u);
    EXPECT_NE(h, previous) << n;
    EXPECT_EQ(h, sha256_hex(std::string(n, 'x')));
    previous = h;
  }
  // Binary bytes, including NUL and 0xff.
  EXPECT_EQ(sha256_hex(std::string("\0\xff", 2)).size(), 64u);
  EXPECT_NE(sha256_hex(std::string("\0", 1)), sha256_hex(""));
}

TEST(CacheKey, FormatAndKeySpace) {
  const std::string key = cache_key("completions", json{{"prompt", "hi"}});
  EXPECT_EQ(key, "writeup:v1:completions:" + sha256_hex(R"({"prompt":"hi"})"));
  EXPECT_THROW(cache_key("", json::object()), std::invalid_argument);
  EXPECT_THROW(cache_key("a:b", json::object()), std::invalid_argument);
}

TEST(CacheKey, KeyOrderDoesNotMatter) {
  const json a = json::parse(R"({"model":"gpt2","prompt":"x","seed":1,"top_k":10})");
  const json b = json::parse(R"({"top_k":10,"seed":1,"prompt":"x","model":"gpt2"})");
  json c;
  c["seed"] = 1;
  c["model"] = "gpt2";
  c["top_k"] = 10;
  c["prompt"] = "x";
  EXPECT_EQ(cache_key("c", a), cache_key("c", b));
  EXPECT_EQ(cache_key("c", a), cache_key("c", c));
}

TEST(CacheKey, EqualDoublesHashEqual) {
  const json a = json::parse(R"({"temperature":0.7,"top_p":1.0})");
  const json b = json::parse(R"({"temperature":0.70,"top_p":1.00})");
  const json c = {{"temperature", 0.7}, {"top_p", 1.0}};
  EXPECT_EQ(cache_key("c", a), cache_key("c", b));
  EXPECT_EQ(cache_key("c", a), cache_key("c", c));
  // Why callers must pass real-valued parameters as double: an integer 1 dumps as "1".
  const json d = {{"temperature", 0.7}, {"top_p", 1}};
  EXPECT_NE(cache_key("c", c), cache_key("c", d));
  EXPECT_EQ(cache_key("c", c), cache_key("c", json{{"temperature", 0.7}, {"top_p", double(1)}}));
}

TEST(CacheKey, AnyChangedFieldChangesTheKey) {
  const json base = {{"model", "gpt2"},
                     {"fingerprint", "abc"},
                     {"prompt", "Once"},
                     {"temperature", 0.7},
                     {"top_k", 10},
                     {"seed", 42},
                     {"n", 3},
                     {"length", 40},
                     {"stop", json::array({"\n"})}};
  const std::string key = cache_key("c", base);
  for (const auto& [name, value] : base.items()) {
    json changed = base;
    if (value.is_string()) {
      changed[name] = value.get<std::string>() + "!";
    } else if (value.is_number_float()) {
      changed[name] = value.get<double>() + 0.01;
    } else if (value.is_number()) {
      changed[name] = value.get<int>() + 1;
    } else {
      changed[name] = json::array();
    }
    EXPECT_NE(cache_key("c", changed), key) << name;
  }
  EXPECT_NE(cache_key("other", base), key);
  json extra = base;
  extra["top_p"] = 0.9;
  EXPECT_NE(cache_key("c", extra), key);
}

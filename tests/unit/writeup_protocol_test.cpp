#include "writeup/api/writeup_protocol.hpp"

#include "writeup/api/fields.hpp"
#include "writeup/api/wire_json.hpp"

#include <gtest/gtest.h>

using namespace writeup::api;

namespace {
std::string field_of(const std::string& text) {
  try {
    parse_client_message(text, {});
    return "";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    return e.param();
  }
}
}  // namespace

TEST(WriteupProtocol, ParsesANewRequestWithDefaults) {
  const auto m = parse_client_message(R"({"message_type":"new_request","prompt":"Once"})", {});
  ASSERT_EQ(m.type, ClientMessage::Type::new_request);
  EXPECT_EQ(m.request.prompt, "Once");
  EXPECT_FLOAT_EQ(m.request.temperature, 0.7f);
  EXPECT_EQ(m.request.top_k, 10);
  EXPECT_EQ(m.request.length, 40);
  EXPECT_EQ(m.request.batch_size, 5);
  EXPECT_FALSE(m.request.seed);
}

TEST(WriteupProtocol, AcceptsNumbersAsStringsLikeTheOriginalEditor) {
  const auto m = parse_client_message(
      R"({"message_type":"new_request","prompt":"x","temperature":"0.5","top_k":"5","length":"12","batch_size":"2","seed":"9"})", {});
  EXPECT_FLOAT_EQ(m.request.temperature, 0.5f);
  EXPECT_EQ(m.request.top_k, 5);
  EXPECT_EQ(m.request.length, 12);
  EXPECT_EQ(m.request.batch_size, 2);
  EXPECT_EQ(m.request.seed, 9u);
}

TEST(WriteupProtocol, RejectsOutOfRangeValuesNamingTheField) {
  const std::string base = R"({"message_type":"new_request","prompt":"x",)";
  EXPECT_EQ(field_of(base + R"("temperature":0.05})"), "temperature");
  EXPECT_EQ(field_of(base + R"("temperature":1.5})"), "temperature");
  EXPECT_EQ(field_of(base + R"("top_k":41})"), "top_k");
  EXPECT_EQ(field_of(base + R"("top_p":1.1})"), "top_p");
  EXPECT_EQ(field_of(base + R"("length":0})"), "length");
  EXPECT_EQ(field_of(base + R"("length":257})"), "length");
  EXPECT_EQ(field_of(base + R"("batch_size":11})"), "batch_size");
  EXPECT_EQ(field_of(base + R"("batch_size":2.5})"), "batch_size");
  EXPECT_EQ(field_of(base + R"("seed":-1})"), "seed");
  EXPECT_EQ(field_of(R"({"message_type":"new_request","prompt":" \n "})"), "prompt");
  EXPECT_EQ(field_of(R"({"message_type":"new_request"})"), "prompt");
  EXPECT_EQ(field_of(R"({"message_type":"new_request","prompt":7})"), "prompt");
  EXPECT_EQ(field_of(R"({"message_type":"other","prompt":"x"})"), "message_type");
  EXPECT_EQ(field_of(R"({"prompt":"x"})"), "message_type");
  EXPECT_EQ(field_of("not json"), "");
  EXPECT_THROW(parse_client_message(R"({"message_type":"new_request","prompt":"x","length":100})", {10, 50}),
               ApiError);
}

TEST(WriteupProtocol, ErrorFramesKeepWhatCouldBeRead) {
  WriteupRequest partial;
  EXPECT_THROW(parse_client_message(R"({"message_type":"new_request","prompt":"abc","batch_size":3,"top_k":99})",
                                    {}, &partial),
               ApiError);
  EXPECT_EQ(partial.prompt, "abc");
  EXPECT_EQ(partial.batch_size, 3);
  const auto frame = make_error_frame(partial, ApiError::bad_request("top_k must be between 0 and 40", "top_k"));
  const auto& m = frame["message"];
  EXPECT_EQ(m["message_type"], "error");
  EXPECT_EQ(m["prompt"], "abc");
  EXPECT_NE(m["text_0"].get<std::string>().find("top_k"), std::string::npos);
  EXPECT_EQ(m["text_2"], "");
  EXPECT_FALSE(m.contains("text_3"));
  EXPECT_EQ(m["error"]["field"], "top_k");
}

// Issue 13: error frames carried 5 text_ fields whatever batch_size was and an empty prompt when
// the error was about the message itself (message_type) rather than a writeup field.
TEST(WriteupProtocol, ErrorFramesEchoThePromptAndBatchSizeWhateverTheError) {
  const auto error_frame_of = [](const std::string& text) {
    WriteupRequest partial;
    try {
      parse_client_message(text, {}, &partial);
    } catch (const ApiError& e) {
      return make_error_frame(partial, e)["message"];
    }
    ADD_FAILURE() << "expected an error for " << text;
    return nlohmann::json();
  };
  const auto count_texts = [](const nlohmann::json& m) {
    int n = 0;
    for (const auto& [k, v] : m.items()) n += k.rfind("text_", 0) == 0 ? 1 : 0;
    return n;
  };
  // The prompt (non-ASCII, escapes, spaces kept byte for byte) and batch_size 7 are echoed
  // whether the bad field comes before or after them, and for a bad message_type too.
  const std::string prompt = R"(  caf\u00e9 \\ \"quoted\" \ud83d\ude00 end  )";
  const std::string decoded = "  caf\xc3\xa9 \\ \"quoted\" \xf0\x9f\x98\x80 end  ";
  for (const std::string& text : {
           R"({"message_type":"new_request","prompt":")" + prompt + R"(","batch_size":7,"top_k":99})",
           R"({"top_k":99,"batch_size":"7","prompt":")" + prompt + R"(","message_type":"new_request"})",
           R"({"message_type":"what","prompt":")" + prompt + R"(","batch_size":7})",
           R"({"prompt":")" + prompt + R"(","batch_size":7,"model_name":"gpt2-medium"})",
           R"({"message_type":"new_request","prompt":")" + prompt + R"(","batch_size":7,"seed":-1})",
       }) {
    const auto m = error_frame_of(text);
    EXPECT_EQ(m["message_type"], "error") << text;
    EXPECT_EQ(m["prompt"], decoded) << text;
    EXPECT_EQ(count_texts(m), 7) << text;
    EXPECT_EQ(m["text_6"], "") << text;
  }
  // batch_size itself invalid: the protocol's default count (5); the prompt is still echoed.
  for (const char* bad : {"11", "0", "2.5", "\"many\"", "[]"}) {
    const auto m = error_frame_of(std::string(R"({"message_type":"new_request","prompt":"abc","batch_size":)") + bad + "}");
    EXPECT_EQ(m["error"]["field"], "batch_size") << bad;
    EXPECT_EQ(m["prompt"], "abc") << bad;
    EXPECT_EQ(count_texts(m), 5) << bad;
  }
  // A batch_size over the configured limit is invalid too.
  WriteupRequest partial;
  EXPECT_THROW(parse_client_message(R"({"message_type":"new_request","prompt":"p","batch_size":8})", {6, 256}, &partial),
               ApiError);
  EXPECT_EQ(partial.batch_size, 5);
  // Unreadable: not JSON, a prompt that is not a string.
  auto m = error_frame_of(R"({"message_type":"new_request","prompt":"abc",)");
  EXPECT_EQ(m["prompt"], "");
  EXPECT_EQ(count_texts(m), 5);
  m = error_frame_of(R"({"message_type":"new_request","prompt":42,"batch_size":2})");
  EXPECT_EQ(m["prompt"], "");
  EXPECT_EQ(count_texts(m), 2);
  EXPECT_EQ(m["error"]["field"], "prompt");
}

TEST(WriteupProtocol, CancelRequest) {
  EXPECT_EQ(parse_client_message(R"({"message_type":"cancel_request"})", {}).type,
            ClientMessage::Type::cancel_request);
}

TEST(WriteupProtocol, FramesCarryPromptAndExactlyTheTexts) {
  const auto f = make_frame("updated_response", "p", {"a", "b"}, {{"model_name", "m"}, {"completed", 3}});
  const auto& m = f["message"];
  EXPECT_EQ(m["message_type"], "updated_response");
  EXPECT_EQ(m["prompt"], "p");
  EXPECT_EQ(m["text_0"], "a");
  EXPECT_EQ(m["text_1"], "b");
  EXPECT_EQ(m["model_name"], "m");
  EXPECT_EQ(m.size(), 6u);
}

TEST(WriteupProtocol, SuggestionsAreCutAndTrimmed) {
  EXPECT_EQ(clean_suggestion("  hello world \n"), "hello world");
  EXPECT_EQ(clean_suggestion(" one<|endoftext|>two"), "one");
  EXPECT_EQ(clean_suggestion("\n\n"), "");
  EXPECT_EQ(count_words(" a  b\tc\n"), 3);
  EXPECT_EQ(count_words(""), 0);
}

TEST(WriteupProtocol, SamplingParamsFollowTheProtocol) {
  WriteupRequest r;
  r.top_p = 0;
  r.length = 12;
  auto p = to_sampling_params(r, 42);
  EXPECT_FLOAT_EQ(p.top_p, 1.0f);  // 0 = off
  EXPECT_EQ(p.max_tokens, 12);
  EXPECT_EQ(p.seed, 42u);
  r.seed = 7;
  r.top_p = 0.9f;
  p = to_sampling_params(r, 42);
  EXPECT_EQ(p.seed, 7u);
  EXPECT_FLOAT_EQ(p.top_p, 0.9f);
}

TEST(WriteupProtocol, MessagesThatAreNotUtf8AreRejectedAsInvalidJson) {
  for (const std::string& text : {std::string("{\"message_type\":\"new_request\",\"prompt\":\"\xff\"}"),
                                 std::string("{\"message_type\":\"new_\xc3\"}"), std::string("\xfe\xff")}) {
    WriteupRequest partial;
    try {
      parse_client_message(text, {}, &partial);
      ADD_FAILURE() << "accepted a message that is not UTF-8";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_EQ(e.code(), "invalid_json");
    }
    EXPECT_EQ(partial.prompt, "");
  }
}

// Error frames may quote bytes a client sent (a header, a query string, a form key): they go to
// the wire through wire_dump, which replaces what is not UTF-8 where a plain dump() throws.
TEST(WriteupProtocol, ErrorFramesQuotingBytesThatAreNotUtf8StillReachTheWire) {
  const ApiError e(403, "origin_not_allowed", "origin http://\xff.example is not allowed", "or\xc3igin");
  WriteupRequest echo;
  echo.prompt = "prompt \xfe";
  echo.batch_size = 2;
  const auto frame = make_error_frame(echo, e);
  EXPECT_THROW((void)frame.dump(), nlohmann::json::type_error);
  const auto back = nlohmann::json::parse(wire_dump(frame));
  const auto& m = back["message"];
  EXPECT_EQ(m["message_type"], "error");
  EXPECT_EQ(m["prompt"], "prompt \xef\xbf\xbd");
  EXPECT_EQ(m["error"]["code"], "origin_not_allowed");
  EXPECT_EQ(m["error"]["message"], "origin http://\xef\xbf\xbd.example is not allowed");
  EXPECT_EQ(m["error"]["field"], "or\xef\xbf\xbdigin");
  EXPECT_EQ(m["text_1"], "");
  echo.prompt = "\xff";
  echo.batch_size = 1;
  const auto oom = nlohmann::json::parse(wire_dump(make_oom_frame(echo)));
  EXPECT_EQ(oom["message"]["message_type"], "oom_response");
  EXPECT_TRUE(oom["message"]["request_id"].is_null());
}

// Issue 14: the editor names each request so it can tell frames of two requests apart that differ
// only in fields the frames do not echo (temperature, top_k, top_p).
TEST(WriteupProtocol, RequestIdIsCheckedAndEchoedByErrorFrames) {
  const auto m = parse_client_message(R"({"message_type":"new_request","prompt":"x","request_id":"r7:a.b_c-9"})", {});
  EXPECT_EQ(m.request.request_id, "r7:a.b_c-9");
  EXPECT_EQ(request_id_json(m.request), "r7:a.b_c-9");
  const auto none = parse_client_message(R"({"message_type":"new_request","prompt":"x","request_id":null})", {});
  EXPECT_TRUE(request_id_json(none.request).is_null());
  EXPECT_TRUE(valid_request_id(std::string(64, 'a')));
  for (const char* bad : {R"("")", R"("a b")", R"("é")", R"(7)", R"(["a"])", "\"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "\""}) {
    WriteupRequest partial;
    try {
      parse_client_message(std::string(R"({"message_type":"new_request","prompt":"p","request_id":)") + bad + "}", {},
                           &partial);
      ADD_FAILURE() << "accepted request_id " << bad;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.param(), "request_id") << bad;
      EXPECT_TRUE(request_id_json(partial).is_null()) << bad;
    }
  }
  // An error about another field still names the request it answers.
  WriteupRequest partial;
  try {
    parse_client_message(R"({"message_type":"new_request","prompt":"p","top_k":99,"request_id":"q1"})", {}, &partial);
    ADD_FAILURE() << "top_k 99 accepted";
  } catch (const ApiError& e) {
    const auto frame = make_error_frame(partial, e)["message"];
    EXPECT_EQ(frame["request_id"], "q1");
    EXPECT_EQ(frame["error"]["field"], "top_k");
    EXPECT_EQ(make_oom_frame(partial)["message"]["request_id"], "q1");
  }
}

// The original editor sends the last 500 characters of the document: a window that starts
// inside an emoji begins with a lone low surrogate escape, which strict JSON parsers reject.
TEST(WriteupProtocol, LoneSurrogateEscapesBecomeTheReplacementCharacter) {
  const auto m = parse_client_message(R"({"message_type":"new_request","prompt":"\ude00 smiles"})", {});
  EXPECT_EQ(m.request.prompt, "\xEF\xBF\xBD smiles");
  // A lone high surrogate, at the end and before another escape; a valid pair is kept.
  EXPECT_EQ(parse_json_object(R"({"p":"a\ud83d"})")["p"], "a\xEF\xBF\xBD");
  EXPECT_EQ(parse_json_object(R"({"p":"\ud83d\n"})")["p"], "\xEF\xBF\xBD\n");
  EXPECT_EQ(parse_json_object(R"({"p":"\ud83d\ud83d\ude00"})")["p"], "\xEF\xBF\xBD\xF0\x9F\x98\x80");
  EXPECT_EQ(parse_json_object(R"({"p":"\ud83d\ude00"})")["p"], "\xF0\x9F\x98\x80");
  // An escaped backslash followed by "ude00" is text, not an escape.
  EXPECT_EQ(parse_json_object(R"({"p":"\\ude00"})")["p"], "\\ude00");
  EXPECT_FALSE(replace_lone_surrogates(R"({"p":"\\ude00 \ud83d\ude00 \u00e9"})").has_value());
  EXPECT_EQ(*replace_lone_surrogates(R"(["\udc00","\udbff"])"), R"(["\uFFFD","\uFFFD"])");
  // Still not JSON: refused as before.
  EXPECT_THROW(parse_json_object(R"({"p":"\ud83d)"), ApiError);
}

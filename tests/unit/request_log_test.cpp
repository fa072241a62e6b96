#include "writeup/server/request_log.hpp"

#include <gtest/gtest.h>

#include "writeup/server/cors.hpp"

using namespace writeup;
using namespace writeup::server;

TEST(RequestLog, TextAndJsonLines) {
  RequestRecord r;
  r.id = "abc";
  r.route = "/v1/completions";
  r.model = "tiny";
  r.prompt_tokens = 4;
  r.generated_tokens = 8;
  r.traces.push_back(std::make_shared<service::RequestTrace>());
  r.traces.back()->cache = service::CacheOutcome::join;
  r.status = 200;
  r.finish = "length";
  r.first_output = r.arrived + std::chrono::milliseconds(5);
  const auto now = r.arrived + std::chrono::milliseconds(12);
  EXPECT_EQ(format_request_line(r, false, now),
            "request id=abc route=/v1/completions protocol=http model=tiny prompt_tokens=4 generated_tokens=8 cache=join "
            "status=200 finish=length queue_ms=5.0 total_ms=12.0");
  const auto j = nlohmann::json::parse(format_request_line(r, true, now));
  EXPECT_EQ(j["event"], "request");
  EXPECT_EQ(j["cache"], "join");
  EXPECT_EQ(j["queue_ms"], 5.0);
  EXPECT_EQ(j["total_ms"], 12.0);
  RequestRecord bare;
  bare.id = "x";
  bare.route = "/health";
  const auto b = nlohmann::json::parse(format_request_line(bare, true, bare.arrived));
  EXPECT_TRUE(b["model"].is_null());
  EXPECT_TRUE(b["cache"].is_null());
  EXPECT_EQ(format_request_line(bare, false, bare.arrived), "request id=x route=/health protocol=http queue_ms=0.0 total_ms=0.0");
}

TEST(RequestLog, ObserveRecordsResultsBeforeDelivering) {
  auto record = std::make_shared<RequestRecord>();
  int seen_tokens = -2;
  service::StreamEvents events;
  events.on_done = [&](const std::vector<generate::GeneratedSequence>&) { seen_tokens = record->generated_tokens; };
  auto observed = RequestRecord::observe(std::move(events), record);
  generate::GeneratedSequence a, b;
  a.tokens = {1, 2};
  a.finish_reason = "length";
  b.tokens = {3};
  b.finish_reason = "stop";
  observed.on_done({a, b});
  EXPECT_EQ(seen_tokens, 3);
  EXPECT_EQ(record->finish, "length,stop");
}

TEST(Cors, OriginsAndRequestIds) {
  EXPECT_EQ(allowed_origin({}, "https://a.example"), "");
  EXPECT_EQ(allowed_origin({"https://a.example"}, "https://a.example"), "https://a.example");
  EXPECT_EQ(allowed_origin({"https://a.example"}, "https://b.example"), "");
  EXPECT_EQ(allowed_origin({"*"}, "https://b.example"), "https://b.example");
  EXPECT_EQ(allowed_origin({"*"}, "bad origin"), "");
  EXPECT_EQ(request_id_for("client-1:abc"), "client-1:abc");
  EXPECT_EQ(request_id_for("").size(), 32u);
  EXPECT_EQ(request_id_for("has space").size(), 32u);
  EXPECT_EQ(request_id_for(std::string(129, 'a')).size(), 32u);
  EXPECT_NE(new_request_id(), new_request_id());
}

// The pure scheduler's events, without a model: cancellation at every stage, stop flags,
// deadlines, failures and the OOM split.
#include "writeup/engine/scheduler.hpp"

#include <gtest/gtest.h>

#include "scheduler_fakes.hpp"

using namespace writeup::test::sched;

TEST(Scheduler, ACancelledRequestLeavesAtEveryStage) {
  Scheduler s(options(2, 4), kLimits);
  ASSERT_TRUE(s.add(1, req(10, 2)));  // prefilling over 3 steps
  ASSERT_TRUE(s.add(2, req(2, 2)));   // queued behind it
  complete(s, s.plan(t0));
  // Queued: leaves the queue at once, each sequence cancelled without a token.
  s.cancel(2);
  EXPECT_EQ(s.waiting(), 0);
  auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].request, 2u);
  EXPECT_TRUE(n[0].ended);
  ASSERT_EQ(n[0].outputs.size(), 2u);
  for (const auto& o : n[0].outputs) {
    EXPECT_EQ(o.finish, FinishReason::cancelled);
    EXPECT_EQ(o.token, -1);
  }
  // Prefilling: its slots are free at once.
  s.cancel(1);
  EXPECT_EQ(s.free_slots(), 2);
  n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].outputs.size(), 2u);
  EXPECT_TRUE(s.plan(t0).empty());
  // Decoding, one sequence already ended: only the other is cancelled.
  ASSERT_TRUE(s.add(3, req(2, 2, 10)));
  complete(s, s.plan(t0), [](RequestId, int i) { return i == 0 ? kEos : 5; });
  s.take_notices();
  complete(s, s.plan(t0));
  s.take_notices();
  s.cancel(3);
  n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  ASSERT_EQ(n[0].outputs.size(), 1u);
  EXPECT_EQ(n[0].outputs[0].index, 1);
  EXPECT_EQ(n[0].outputs[0].finish, FinishReason::cancelled);
  EXPECT_TRUE(n[0].ended);
  // Already finished: nothing happens.
  s.cancel(3);
  s.cancel(42);
  EXPECT_TRUE(s.take_notices().empty());
  EXPECT_EQ(s.free_slots(), 2);
}

TEST(Scheduler, ARowOfARequestThatEndedMeanwhileIsIgnored) {
  Scheduler s(options(2, 4), kLimits);
  ASSERT_TRUE(s.add(1, req(2, 1, 10)));
  const auto plan = s.plan(t0);
  s.cancel(1);  // while its step runs
  s.take_notices();
  complete(s, plan);
  EXPECT_TRUE(s.take_notices().empty());
  EXPECT_EQ(s.free_slots(), 2);
}

TEST(Scheduler, AStopWhileWaitingEndsTheSequenceAtAdmissionAndACancelStillEndsEveryOne) {
  Scheduler s(options(2, 4), kLimits);
  ASSERT_TRUE(s.add(1, req(2, 2, 10)));
  ASSERT_TRUE(s.add(2, req(2, 2, 10)));
  ASSERT_TRUE(s.add(3, req(2, 2, 10)));
  s.plan(t0);
  s.stop(2, 0);
  s.stop(3, 1);
  EXPECT_TRUE(s.take_notices().empty());  // nothing ran yet
  s.cancel(3);
  auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].outputs.size(), 2u);  // every sequence ends exactly once
  s.cancel(1);
  s.take_notices();
  const auto plan = s.plan(t0);  // 2 is admitted: its sequence 0 ends with stop, 1 runs
  n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  ASSERT_EQ(n[0].outputs.size(), 1u);
  EXPECT_EQ(n[0].outputs[0].index, 0);
  EXPECT_EQ(n[0].outputs[0].finish, FinishReason::stop);
  ASSERT_EQ(plan.rows.size(), 1u);
  EXPECT_EQ(plan.rows[0].samples, std::vector<int>{1});
}

TEST(Scheduler, ARowCompletedTwiceAdvancesItsSequenceOnce) {
  Scheduler s(options(2, 4), kLimits);
  ASSERT_TRUE(s.add(1, req(2, 1, 10)));
  complete(s, s.plan(t0));
  const auto plan = s.plan(t0);
  complete(s, plan);
  complete(s, plan);  // a stale repeat: ignored
  const auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].outputs.size(), 2u);  // the first token and one decode
  EXPECT_EQ(s.plan(t0).rows[0].chunk.start, 3);
}

TEST(Scheduler, DeadlinesFailWaitingAndRunningRequestsWithTimeout) {
  Scheduler s(options(1, 4), kLimits);
  const auto later = [](int ms) { return t0 + std::chrono::milliseconds(ms); };
  ASSERT_TRUE(s.add(1, req(2, 1, 10), later(100)));
  ASSERT_TRUE(s.add(2, req(2, 1, 10), later(50)));  // waits for the one slot
  ASSERT_TRUE(s.add(3, req(2, 1, 10)));             // no deadline
  complete(s, s.plan(later(10)));
  s.take_notices();
  // 2 times out in the queue (and leaves it); 1 still runs.
  auto plan = s.plan(later(60));
  auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].request, 2u);
  EXPECT_TRUE(n[0].failed);
  EXPECT_EQ(n[0].error, ErrorKind::timeout);
  EXPECT_TRUE(n[0].ended);
  EXPECT_EQ(rows_by_request(plan), (std::map<RequestId, int>{{1, 1}}));
  complete(s, plan);
  s.take_notices();
  // 1 times out while running: its slot serves 3 in the same plan.
  plan = s.plan(later(200));
  n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].request, 1u);
  EXPECT_EQ(n[0].error, ErrorKind::timeout);
  EXPECT_EQ(rows_by_request(plan), (std::map<RequestId, int>{{3, 1}}));
}

TEST(Scheduler, AStopFlagEndsItsSequenceAtTheNextPlan) {
  Scheduler s(options(4, 8), kLimits);
  ASSERT_TRUE(s.add(1, req(3, 2, 10)));
  complete(s, s.plan(t0));
  s.take_notices();
  s.stop(1, 1);
  s.stop(1, 7);  // no such sequence: ignored
  auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  ASSERT_EQ(n[0].outputs.size(), 1u);
  EXPECT_EQ(n[0].outputs[0].index, 1);
  EXPECT_EQ(n[0].outputs[0].finish, FinishReason::stop);
  EXPECT_EQ(n[0].outputs[0].token, -1);
  EXPECT_FALSE(n[0].ended);
  const auto plan = s.plan(t0);
  ASSERT_EQ(plan.rows.size(), 1u);
  EXPECT_EQ(plan.rows[0].samples, std::vector<int>{0});
  EXPECT_TRUE(plan.copies.empty());
  s.stop(1, 0);
  EXPECT_TRUE(s.take_notices()[0].ended);
  EXPECT_TRUE(s.idle());
}

TEST(Scheduler, OutOfMemoryHalvesThePlanDownToOneRowWhichFailsItsRequest) {
  Scheduler s(options(8, 8), kLimits);
  ASSERT_TRUE(s.add(1, req(2, 3, 10)));
  ASSERT_TRUE(s.add(2, req(2, 1, 10)));
  complete(s, s.plan(t0));
  s.take_notices();
  auto plan = s.plan(t0);
  ASSERT_EQ(plan.rows.size(), 4u);  // 3 + 1 decode rows
  auto halves = s.split_out_of_memory(plan.rows);
  ASSERT_EQ(halves.size(), 2u);
  EXPECT_EQ(halves[0].size(), 2u);
  EXPECT_EQ(halves[1].size(), 2u);
  // The first half fits; the second still does not: quarters.
  complete(s, {{}, halves[0]});
  auto quarters = s.split_out_of_memory(halves[1]);
  ASSERT_EQ(quarters.size(), 2u);
  ASSERT_EQ(quarters[0].size(), 1u);
  EXPECT_EQ(quarters[0][0].request, 1u);
  EXPECT_EQ(quarters[1][0].request, 2u);
  complete(s, {{}, quarters[0]});
  // One row that does not fit on its own: its request fails, nothing is left to run.
  EXPECT_TRUE(s.split_out_of_memory(quarters[1]).empty());
  auto n = s.take_notices();
  const auto* failed = find(n, 2);
  ASSERT_NE(failed, nullptr);
  EXPECT_TRUE(failed->failed);
  EXPECT_EQ(failed->error, ErrorKind::out_of_memory);
  EXPECT_FALSE(s.running(2));
  EXPECT_TRUE(s.running(1));
  EXPECT_EQ(s.free_slots(), 5);
  // Every sequence of request 1 advanced exactly once.
  plan = s.plan(t0);
  ASSERT_EQ(plan.rows.size(), 3u);
  for (const auto& r : plan.rows) EXPECT_EQ(r.chunk.start, 3);
  // Halves drop the rows of requests that ended.
  s.fail(1, ErrorKind::internal, "gone");
  EXPECT_TRUE(s.split_out_of_memory(plan.rows).empty());
}

TEST(Scheduler, AnErrorInOneRowFailsOnlyItsRequestByHalving) {
  Scheduler s(options(8, 8), kLimits);
  ASSERT_TRUE(s.add(1, req(2)));
  ASSERT_TRUE(s.add(2, req(2)));
  const auto plan = s.plan(t0);
  ASSERT_EQ(plan.rows.size(), 2u);
  auto parts = s.split_failed(plan.rows, ErrorKind::internal, "the model failed on this request");
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_TRUE(s.split_failed(parts[1], ErrorKind::internal, "the model failed on this request").empty());
  const auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].request, 2u);
  EXPECT_EQ(n[0].error, ErrorKind::internal);
  EXPECT_EQ(n[0].message, "the model failed on this request");
  EXPECT_TRUE(s.running(1));
}

TEST(Scheduler, FailRunningKeepsTheQueueAndFailAllEmptiesIt) {
  Scheduler s(options(1), kLimits);
  ASSERT_TRUE(s.add(1, req(2)));
  ASSERT_TRUE(s.add(2, req(2)));
  s.plan(t0);
  s.fail_running(ErrorKind::internal, "the model's device failed");
  auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].request, 1u);
  EXPECT_EQ(s.waiting(), 1);
  EXPECT_EQ(s.free_slots(), 1);
  s.fail_all(ErrorKind::shutdown, "the server is stopping");
  n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].request, 2u);
  EXPECT_EQ(n[0].error, ErrorKind::shutdown);
  EXPECT_TRUE(s.idle());
}

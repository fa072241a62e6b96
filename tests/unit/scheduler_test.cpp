// The pure scheduler, without a model: fake step outputs drive it.
#include "writeup/engine/scheduler.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <map>

using namespace writeup::engine;
using Clock = Scheduler::Clock;
using writeup::generate::GenerationRequest;

namespace {

constexpr int kEos = 99;
const ModelLimits kLimits{64, 100, kEos};  // context, vocabulary, EOS
const Clock::time_point t0{};

SchedulerOptions options(int slots = 4, int chunk = 4, int max_queue = 8) {
  SchedulerOptions o;
  o.slots = slots;
  o.prefill_chunk = chunk;
  o.max_queue = max_queue;
  return o;
}

GenerationRequest req(int prompt_len, int n = 1, int max_tokens = 3) {
  GenerationRequest r;
  for (int i = 0; i < prompt_len; ++i) r.prompt.push_back(1 + i % 50);
  r.n = n;
  r.params.max_tokens = max_tokens;
  return r;
}

// Completes every row of `plan` as a forward pass and the samplers would: each sampling
// sequence gets token(request, index) (7 by default).
void complete(Scheduler& s, const StepPlan& plan, const std::function<int(RequestId, int)>& token = {}) {
  for (const auto& row : plan.rows) {
    std::vector<TokenOutput> out;
    for (const int i : row.samples) {
      TokenOutput o;
      o.index = i;
      o.token = token ? token(row.request, i) : 7;
      out.push_back(o);
    }
    s.complete(row, std::move(out));
  }
}

// Rows of `plan` per request: number of rows.
std::map<RequestId, int> rows_by_request(const StepPlan& plan) {
  std::map<RequestId, int> m;
  for (const auto& r : plan.rows) ++m[r.request];
  return m;
}

const Notice* find(const std::vector<Notice>& notices, RequestId id) {
  for (const auto& n : notices) {
    if (n.request == id) return &n;
  }
  return nullptr;
}

}  // namespace

TEST(Scheduler, AdmitsFirstComeFirstServedAndNothingOvertakesTheHead) {
  Scheduler s(options(4), kLimits);
  ASSERT_TRUE(s.add(1, req(2, 3)));
  ASSERT_TRUE(s.add(2, req(2, 2)));  // needs 2 slots, 1 free
  ASSERT_TRUE(s.add(3, req(2, 1)));  // would fit, but waits behind 2
  const auto plan = s.plan(t0);
  EXPECT_EQ(rows_by_request(plan), (std::map<RequestId, int>{{1, 1}}));
  EXPECT_EQ(s.free_slots(), 1);
  EXPECT_EQ(s.waiting(), 2);
  EXPECT_TRUE(s.running(1));
  EXPECT_FALSE(s.running(3));
}

TEST(Scheduler, ABigRequestIsNotStarvedBySmallOnes) {
  Scheduler s(options(4), kLimits);
  ASSERT_TRUE(s.add(1, req(2, 1, 5)));
  ASSERT_TRUE(s.add(2, req(2, 4, 2)));  // every slot: waits for 1 to end
  for (RequestId id = 3; id < 8; ++id) ASSERT_TRUE(s.add(id, req(2, 1, 2)));
  std::vector<RequestId> admitted;
  for (int step = 0; step < 50 && !s.idle(); ++step) {
    const auto plan = s.plan(t0);
    for (const auto& [id, rows] : rows_by_request(plan)) {
      if (std::find(admitted.begin(), admitted.end(), id) == admitted.end()) admitted.push_back(id);
    }
    complete(s, plan);
    s.take_notices();
  }
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(admitted, (std::vector<RequestId>{1, 2, 3, 4, 5, 6, 7}));
}

TEST(Scheduler, APromptIsCutAtMultiplesOfTheChunkWhateverElseRuns) {
  Scheduler s(options(4, 4), kLimits);
  ASSERT_TRUE(s.add(1, req(2, 1, 20)));  // decoding beside the long prompt
  complete(s, s.plan(t0));
  ASSERT_TRUE(s.add(2, req(10, 1)));
  std::vector<std::pair<int, int>> cuts;  // (start, size) of request 2's chunks
  for (int step = 0; step < 5; ++step) {
    const auto plan = s.plan(t0);
    int decode_rows = 0;
    for (const auto& r : plan.rows) {
      if (r.request == 2) {
        cuts.emplace_back(r.chunk.start, static_cast<int>(r.chunk.tokens.size()));
        // Only the prompt's last chunk samples.
        EXPECT_EQ(r.samples.empty(), r.chunk.start + static_cast<int>(r.chunk.tokens.size()) < 10);
      } else {
        ++decode_rows;
        EXPECT_EQ(r.chunk.tokens.size(), 1u);
      }
    }
    EXPECT_EQ(decode_rows, 1);  // request 1 decodes in every step
    complete(s, plan);
  }
  EXPECT_EQ(cuts, (std::vector<std::pair<int, int>>{{0, 4}, {4, 4}, {8, 2}, {10, 1}, {11, 1}}));
}

TEST(Scheduler, ShortPromptsShareAStepsChunkBudgetInOrder) {
  Scheduler s(options(4, 4), kLimits);
  ASSERT_TRUE(s.add(1, req(2)));
  ASSERT_TRUE(s.add(2, req(2)));
  ASSERT_TRUE(s.add(3, req(3)));  // 3 > the 0 left: waits a step
  ASSERT_TRUE(s.add(4, req(1)));  // fits the budget, but does not overtake 3
  auto plan = s.plan(t0);
  EXPECT_EQ(rows_by_request(plan), (std::map<RequestId, int>{{1, 1}, {2, 1}}));
  complete(s, plan);
  plan = s.plan(t0);
  EXPECT_EQ(rows_by_request(plan), (std::map<RequestId, int>{{1, 1}, {2, 1}, {3, 1}, {4, 1}}));
}

TEST(Scheduler, APromptSharedByNSequencesIsCopiedBeforeTheirFirstDecode) {
  Scheduler s(options(4, 8), kLimits);
  ASSERT_TRUE(s.add(1, req(5, 3)));
  auto plan = s.plan(t0);
  ASSERT_EQ(plan.rows.size(), 1u);
  EXPECT_EQ(plan.rows[0].samples, (std::vector<int>{0, 1, 2}));
  EXPECT_TRUE(plan.copies.empty());
  const int slot0 = plan.rows[0].chunk.slot;
  complete(s, plan, [](RequestId, int i) { return 10 + i; });
  auto notices = s.take_notices();
  ASSERT_EQ(notices.size(), 1u);
  ASSERT_EQ(notices[0].outputs.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(notices[0].outputs[static_cast<std::size_t>(i)].token, 10 + i);
  plan = s.plan(t0);
  ASSERT_EQ(plan.copies.size(), 2u);
  for (const auto& c : plan.copies) {
    EXPECT_EQ(c.from, slot0);
    EXPECT_NE(c.to, slot0);
    EXPECT_EQ(c.tokens, 5);
  }
  ASSERT_EQ(plan.rows.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const auto& r = plan.rows[static_cast<std::size_t>(i)];
    EXPECT_EQ(r.chunk.start, 5);
    EXPECT_EQ(r.chunk.tokens, std::vector<int>{10 + i});  // each feeds its own first token
    EXPECT_EQ(r.samples, std::vector<int>{i});
  }
  complete(s, plan);
  EXPECT_TRUE(s.plan(t0).copies.empty());  // once
}

TEST(Scheduler, SequencesEndByEosAndByLength) {
  // Sequence 0 draws EOS at once; sequence 1 runs to max_tokens.
  Scheduler t(options(4, 8), kLimits);
  ASSERT_TRUE(t.add(1, req(3, 2, 2)));
  auto plan = t.plan(t0);
  complete(t, plan, [](RequestId, int i) { return i == 0 ? kEos : 5; });
  auto n = t.take_notices();
  ASSERT_EQ(n.size(), 1u);
  ASSERT_EQ(n[0].outputs.size(), 2u);
  EXPECT_EQ(n[0].outputs[0].finish, FinishReason::eos);
  EXPECT_EQ(n[0].outputs[0].token, kEos);
  EXPECT_EQ(n[0].outputs[1].finish, FinishReason::none);
  EXPECT_EQ(t.running_sequences(), 1);
  plan = t.plan(t0);
  EXPECT_EQ(plan.copies.size(), 1u);  // sequence 1 still needs the prompt; 0 ended
  ASSERT_EQ(plan.rows.size(), 1u);
  complete(t, plan);
  n = t.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].outputs[0].finish, FinishReason::length);
  EXPECT_EQ(n[0].outputs[0].token, 7);  // the last token comes with its end
  EXPECT_TRUE(n[0].ended);
  EXPECT_EQ(t.free_slots(), 4);
  EXPECT_TRUE(t.idle());
}

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

TEST(Scheduler, TheQueueIsBoundedByMaxQueue) {
  Scheduler s(options(1, 4, 2), kLimits);
  ASSERT_TRUE(s.add(1, req(2)));
  ASSERT_TRUE(s.add(2, req(2)));
  EXPECT_FALSE(s.add(3, req(2)));
  EXPECT_FALSE(s.known(3));
  s.plan(t0);  // 1 runs: a place in the queue is free
  EXPECT_TRUE(s.add(3, req(2)));
  EXPECT_EQ(s.waiting(), 2);
}

TEST(Scheduler, RequestsThatCanNeverRunFailOnceWithAClearMessage) {
  Scheduler s(options(2), kLimits);
  const auto message = [&](RequestId id, const GenerationRequest& r) {
    EXPECT_TRUE(s.add(id, r));
    const auto n = s.take_notices();
    EXPECT_EQ(n.size(), 1u);
    EXPECT_EQ(n[0].error, ErrorKind::invalid);
    EXPECT_TRUE(n[0].ended);
    EXPECT_FALSE(s.known(id));
    return n[0].message;
  };
  EXPECT_EQ(message(1, req(2, 3)), "n = 3 exceeds the 2 sequences this worker runs at once");
  EXPECT_EQ(message(2, req(2, 0)), "n = 0 exceeds the 2 sequences this worker runs at once");
  EXPECT_EQ(message(3, req(0)), "prompt is empty");
  auto bad = req(3);
  bad.prompt[1] = 100;
  EXPECT_EQ(message(4, bad), "prompt token id 100 is outside the tokenizer's 100 tokens");
  bad.prompt[1] = -1;
  EXPECT_EQ(message(5, bad), "prompt token id -1 is outside the tokenizer's 100 tokens");
  EXPECT_EQ(message(6, req(60, 1, 5)),
            "prompt (60 tokens) + max_tokens (5) exceeds the model context of 64");
  EXPECT_TRUE(s.idle());
  EXPECT_TRUE(s.add(7, req(60, 1, 4)));  // exactly the context
  EXPECT_TRUE(s.take_notices().empty());
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

TEST(Scheduler, TheKvBudgetCapsTheSlots) {
  EXPECT_EQ(slots_within_budget(16, 1, 0, 1000, 64), 16);         // no budget: as asked
  EXPECT_EQ(slots_within_budget(16, 1, 3500, 1000, 64), 3);       // 3 fit
  EXPECT_EQ(slots_within_budget(2, 1, 3500, 1000, 64), 2);        // fewer asked
  try {
    slots_within_budget(16, 5, 2u << 20, 1u << 20, 64);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("holds 2 sequence(s) of 64 positions (1 MiB each)"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("kv_cache_mb"), std::string::npos);
  }
}

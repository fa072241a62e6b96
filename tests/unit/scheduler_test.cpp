// The pure scheduler, without a model: fake step outputs drive it. Admission, budgets, the
// prefill chunk policy, prefix copies, EOS and length, the queue bound, validation.
#include "writeup/engine/scheduler.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "scheduler_fakes.hpp"

using namespace writeup::test::sched;

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

TEST(Scheduler, ALogitBiasIdOutsideTheVocabularyIsRefused) {
  Scheduler s(options(2), kLimits);
  auto r = req(3);
  r.params.logit_bias = {{4, 1.0f}, {100, -2.0f}};
  EXPECT_TRUE(s.add(1, r));
  auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0].error, ErrorKind::invalid);
  EXPECT_EQ(n[0].message, "logit_bias token id 100 is outside the tokenizer's 100 tokens");
  r.params.logit_bias = {{99, -2.0f}};
  EXPECT_TRUE(s.add(2, r));
  EXPECT_TRUE(s.take_notices().empty());
  EXPECT_TRUE(s.known(2));
}

// Only a prompt_logprobs request's chunks keep their hidden states, and only those holding a
// position 0..T-2 (the last position only samples); the prompt logprobs handed over come in
// the request's notice, once, and not for a request that ended.
TEST(Scheduler, PromptLogprobsChunksKeepTheirHiddenStates) {
  for (const int size : {9, 10}) {  // chunks of 4: the last holds 1 or 2 positions
    Scheduler s(options(4, 4), kLimits);
    auto r = req(size, 2);
    r.prompt_logprobs = true;
    ASSERT_TRUE(s.add(1, r));
    ASSERT_TRUE(s.add(2, req(size)));
    std::vector<std::pair<int, bool>> kept;  // request 1: (start, keep_hidden)
    for (int step = 0; step < 8; ++step) {
      const auto plan = s.plan(t0);
      for (const auto& row : plan.rows) {
        if (row.request == 2) {
          EXPECT_FALSE(row.chunk.keep_hidden);
        }
        if (row.request == 1 && row.chunk.start < size) kept.emplace_back(row.chunk.start, row.chunk.keep_hidden);
        if (row.request == 1 && row.chunk.start >= size) {
          EXPECT_FALSE(row.chunk.keep_hidden);  // decode rows
        }
      }
      complete(s, plan);
      s.take_notices();
    }
    const std::vector<std::pair<int, bool>> want{{0, true}, {4, true}, {8, size == 10}};
    EXPECT_EQ(kept, want) << size;
  }
  Scheduler s(options(4, 4), kLimits);
  auto r = req(3);
  r.prompt_logprobs = true;
  ASSERT_TRUE(s.add(1, r));
  const auto plan = s.plan(t0);
  s.prompt_logprobs(1, std::vector<TokenOutput>(2));
  complete(s, plan);
  auto n = s.take_notices();
  ASSERT_EQ(n.size(), 1u);
  EXPECT_TRUE(n[0].has_prompt_logprobs);
  EXPECT_EQ(n[0].prompt_logprobs.size(), 2u);
  EXPECT_EQ(n[0].outputs.size(), 1u);
  s.cancel(1);
  s.take_notices();
  s.prompt_logprobs(1, std::vector<TokenOutput>(2));  // not running: ignored
  EXPECT_TRUE(s.take_notices().empty());
}

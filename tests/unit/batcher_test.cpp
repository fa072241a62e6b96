// Engine v2: continuous batching, batch-invariant determinism, cancellation, OOM recovery.
#include "writeup/engine/worker.hpp"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <future>
#include <random>
#include <thread>

#include "test_support.hpp"
#include "writeup/model/gpt2_config.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

using namespace writeup::engine;
namespace t = writeup::test;

namespace {

struct Outcome {
  std::vector<writeup::generate::GeneratedSequence> results;
  std::string error;  // to_string(JobError) when it failed
};

struct Submitted {
  std::shared_ptr<Job> job;
  std::future<Outcome> outcome;
};

std::shared_ptr<const writeup::text::BpeTokenizer> tokenizer() {
  static auto tok = writeup::text::BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  return tok;
}

std::unique_ptr<Worker> make_worker(int max_batch = 16, decltype(BatcherOptions::before_forward) hook = {},
                                    std::size_t kv_budget_bytes = 0, int min_slots = 1) {
  WorkerOptions o;
  o.batch.kv_budget_bytes = kv_budget_bytes;
  o.batch.min_slots = min_slots;
  o.model_name = "tiny-gpt2";
  o.path = t::model_dir("tiny-gpt2").string();
  o.batch.slots = max_batch;
  o.max_queue = 100;
  o.batch.prefill_chunk = 8;  // small, so prompts prefill over several steps beside running streams
  o.batch.before_forward = std::move(hook);
  auto w = std::make_unique<Worker>(std::move(o), tokenizer());
  while (!w->load_ended()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return w;
}

writeup::generate::GenerationRequest request(int i, std::mt19937& rng) {
  static const char* prompts[] = {"The quick brown fox", "Once upon a time in a land far away, there lived",
                                  "writeup.ai is", "漢字 and emoji 👍", "In the beginning", "Dear diary, today"};
  writeup::generate::GenerationRequest r;
  r.prompt = tokenizer()->encode(prompts[rng() % std::size(prompts)]);
  r.n = 1 + static_cast<int>(rng() % 3);
  r.params.max_tokens = 5 + static_cast<int>(rng() % 26);
  r.params.temperature = 0.5f + 0.1f * static_cast<float>(rng() % 6);
  r.params.top_k = std::vector<int>{0, 10, 40}[rng() % 3];
  r.params.top_p = (rng() % 2) ? 1.0f : 0.9f;
  r.params.seed = static_cast<std::uint64_t>(1000 + i);
  return r;
}

Submitted submit(Worker& w, const writeup::generate::GenerationRequest& r) {
  auto promise = std::make_shared<std::promise<Outcome>>();
  Submitted s{std::make_shared<Job>(), promise->get_future()};
  s.job->request = r;
  s.job->callbacks.on_done = [promise](std::vector<writeup::generate::GeneratedSequence> res) {
    promise->set_value({std::move(res), ""});
  };
  s.job->callbacks.on_error = [promise](JobError e, const std::string&) { promise->set_value({{}, to_string(e)}); };
  EXPECT_TRUE(w.submit(s.job));
  return s;
}

std::vector<std::vector<int>> tokens(const Outcome& o) {
  std::vector<std::vector<int>> out;
  for (const auto& r : o.results) out.push_back(r.tokens);
  return out;
}

}  // namespace

TEST(Batcher, SeededRequestsGiveTheSameTextsAloneOrBatchedWithOthers) {
  auto worker = make_worker();
  std::mt19937 rng(2026);
  std::vector<writeup::generate::GenerationRequest> seeded, noise;
  for (int i = 0; i < 20; ++i) seeded.push_back(request(i, rng));
  for (int i = 0; i < 20; ++i) noise.push_back(request(100 + i, rng));
  // Alone, one at a time.
  std::vector<Outcome> alone;
  for (const auto& r : seeded) alone.push_back(submit(*worker, r).outcome.get());
  // Together with 20 other requests, in random order, arriving at random times.
  std::vector<std::pair<int, const writeup::generate::GenerationRequest*>> order;
  for (int i = 0; i < 20; ++i) order.emplace_back(i, &seeded[i]);
  for (int i = 0; i < 20; ++i) order.emplace_back(-1, &noise[i]);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::future<Outcome>> together(20);
  std::vector<std::future<Outcome>> others;
  for (auto& [i, r] : order) {
    auto s = submit(*worker, *r);
    if (i >= 0) together[static_cast<std::size_t>(i)] = std::move(s.outcome);
    else others.push_back(std::move(s.outcome));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
  }
  int differ = 0;
  for (int i = 0; i < 20; ++i) {
    const auto got = together[static_cast<std::size_t>(i)].get();
    ASSERT_EQ(got.error, "");
    if (tokens(got) != tokens(alone[static_cast<std::size_t>(i)])) ++differ;
    for (std::size_t k = 0; k < got.results.size(); ++k) {
      EXPECT_EQ(got.results[k].text, alone[static_cast<std::size_t>(i)].results[k].text) << "request " << i;
    }
  }
  EXPECT_EQ(differ, 0);
  for (auto& f : others) EXPECT_EQ(f.get().error, "");
}

TEST(Batcher, ACancelledJobLeavesAndItsSlotsServeTheNext) {
  // Slow steps (2 ms) so that the first job is surely still running when it is cancelled.
  auto worker = make_worker(2, [](long, const std::vector<writeup::model::SequenceChunk>&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  });
  std::mt19937 rng(1);
  auto long_req = request(0, rng);
  long_req.n = 2;
  long_req.params.max_tokens = 60 - static_cast<int>(long_req.prompt.size());
  auto next_req = request(1, rng);
  next_req.n = 2;
  auto a = submit(*worker, long_req);
  auto b = submit(*worker, next_req);  // needs both slots: waits behind a
  for (int i = 0; i < 1000 && (worker->queue_depth() != 1u || worker->running_sequences() != 2); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(worker->queue_depth(), 1u);
  EXPECT_EQ(worker->running_sequences(), 2);
  a.job->cancel();
  const auto ra = a.outcome.get();
  ASSERT_EQ(ra.error, "");
  EXPECT_EQ(ra.results[0].finish_reason, "cancelled");
  const auto rb = b.outcome.get();
  ASSERT_EQ(rb.error, "");
  EXPECT_NE(rb.results[0].finish_reason, "cancelled");
  EXPECT_EQ(worker->queue_depth(), 0u);
}

TEST(Batcher, InjectedOomSplitsTheBatchAndTheTextsStayTheSame) {
  std::mt19937 rng(7);
  std::vector<writeup::generate::GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) reqs.push_back(request(i, rng));
  const auto run_all = [&](Worker& w) {
    std::vector<Submitted> subs;
    for (const auto& r : reqs) subs.push_back(submit(w, r));
    std::vector<Outcome> out;
    for (auto& s : subs) out.push_back(s.outcome.get());
    return out;
  };
  auto clean = make_worker();
  const auto want = run_all(*clean);
  std::atomic<int> injected{0};
  // OOM whenever more than two sequences share a forward pass, at steps 1 (prefill) to 12.
  auto faulty = make_worker(16, [&](long step, const std::vector<writeup::model::SequenceChunk>& chunks) {
    if (step <= 12 && chunks.size() > 2) {
      ++injected;
      throw c10::OutOfMemoryError({__func__, __FILE__, static_cast<std::uint32_t>(__LINE__)}, "injected OOM");
    }
  });
  const auto got = run_all(*faulty);
  EXPECT_GT(injected.load(), 0);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(got[i].error, "") << i;
    EXPECT_EQ(tokens(got[i]), tokens(want[i])) << "request " << i;
  }
  EXPECT_TRUE(faulty->ready());
}

TEST(Batcher, OnlyTheRequestThatCannotRunAloneFails) {
  std::mt19937 rng(9);
  // A "device" with no room for prefill chunks longer than 4 tokens.
  auto worker = make_worker(16, [](long, const std::vector<writeup::model::SequenceChunk>& chunks) {
    for (const auto& c : chunks) {
      if (c.tokens.size() > 4) {
        throw c10::OutOfMemoryError({__func__, __FILE__, static_cast<std::uint32_t>(__LINE__)}, "injected OOM");
      }
    }
  });
  auto small = request(0, rng);
  small.prompt = tokenizer()->encode("Hi there");
  auto big = request(1, rng);
  big.prompt = tokenizer()->encode("This prompt is long enough to need a prefill chunk of eight tokens");
  auto a = submit(*worker, small), b = submit(*worker, big), c = submit(*worker, small);
  EXPECT_EQ(a.outcome.get().error, "");
  EXPECT_EQ(b.outcome.get().error, "out_of_memory");
  EXPECT_EQ(c.outcome.get().error, "");
  EXPECT_TRUE(worker->ready());
}

TEST(Batcher, RequestsThatCanNeverRunFailClearly) {
  auto worker = make_worker(2);
  std::mt19937 rng(3);
  auto r = request(0, rng);
  r.n = 3;  // more sequences than slots
  EXPECT_EQ(submit(*worker, r).outcome.get().error, "invalid_request");
  r.n = 1;
  r.params.max_tokens = 64;  // prompt + 64 > 64 positions
  EXPECT_EQ(submit(*worker, r).outcome.get().error, "invalid_request");
}

TEST(Batcher, TheKvCacheBudgetCapsTheSlotsAndAdmission) {
  const auto cfg = writeup::model::GPT2Config::from_file(t::model_dir("tiny-gpt2") / "config.json");
  const std::size_t slot_bytes = 2ull * cfg.n_layer * cfg.n_positions * cfg.n_embd * sizeof(float);
  auto worker = make_worker(16, {}, 3 * slot_bytes + slot_bytes / 2);
  ASSERT_TRUE(worker->ready()) << worker->load_error();
  EXPECT_EQ(worker->slots(), 3);
  EXPECT_EQ(worker->kv_cache_bytes(), static_cast<double>(3 * slot_bytes));
  std::mt19937 rng(4);
  auto r = request(0, rng);
  r.n = 4;  // more than the budget holds
  EXPECT_EQ(submit(*worker, r).outcome.get().error, "invalid_request");
  // Requests of 3 + 2 + 1 sequences queue for the 3 slots and all complete.
  std::vector<Submitted> jobs;
  for (int n : {3, 2, 1}) {
    r.n = n;
    jobs.push_back(submit(*worker, r));
  }
  for (auto& j : jobs) EXPECT_EQ(j.outcome.get().error, "");
}

TEST(Batcher, ABudgetTooSmallForTheLargestRequestFailsTheLoadClearly) {
  const auto cfg = writeup::model::GPT2Config::from_file(t::model_dir("tiny-gpt2") / "config.json");
  const std::size_t slot_bytes = 2ull * cfg.n_layer * cfg.n_positions * cfg.n_embd * sizeof(float);
  auto worker = make_worker(16, {}, 2 * slot_bytes, /*min_slots=*/5);
  EXPECT_FALSE(worker->ready());
  EXPECT_NE(worker->load_error().find("holds 2 sequence(s) of 64 positions"), std::string::npos) << worker->load_error();
  EXPECT_NE(worker->load_error().find("kv_cache_mb"), std::string::npos);
  std::mt19937 rng(5);
  EXPECT_EQ(submit(*worker, request(0, rng)).outcome.get().error, "internal_error");
}

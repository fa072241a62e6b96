// The worker executing the scheduler's plans on the tiny model: batch-invariant determinism,
// cancellation, stops, OOM recovery, budgets, log-probabilities, shared weights.
#include "writeup/engine/worker.hpp"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>

#include "test_support.hpp"
#include "writeup/engine/run_job.hpp"
#include "writeup/engine/shared_weights.hpp"
#include "writeup/engine/step_executor.hpp"
#include "writeup/model/gpt2_config.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

using namespace writeup::engine;
namespace t = writeup::test;
using Hook = decltype(WorkerOptions::before_forward);

namespace {

struct Submitted {
  std::shared_ptr<Job> job;
  std::shared_ptr<t::CollectingSink> sink;
};

std::shared_ptr<const writeup::text::BpeTokenizer> tokenizer() {
  static auto tok = writeup::text::BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  return tok;
}

WorkerOptions options(int slots = 16, Hook hook = {}, std::size_t kv_budget_bytes = 0, int min_slots = 1,
                      const std::string& weights = "f32") {
  WorkerOptions o;
  o.load.weights = weights;
  o.scheduler.kv_budget_bytes = kv_budget_bytes;
  o.scheduler.min_slots = min_slots;
  o.model_name = "tiny-gpt2";
  o.path = t::model_dir("tiny-gpt2").string();
  o.scheduler.slots = slots;
  o.max_queue = 100;
  o.scheduler.prefill_chunk = 8;  // small, so prompts prefill over several steps beside running streams
  o.before_forward = std::move(hook);
  return o;
}

std::unique_ptr<Worker> make_worker(WorkerOptions o) {
  auto w = std::make_unique<Worker>(std::move(o), tokenizer());
  for (int i = 0; i < 30000 && !w->load_ended(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return w;
}

std::unique_ptr<Worker> make_worker(int slots = 16, Hook hook = {}, std::size_t kv_budget_bytes = 0,
                                    int min_slots = 1, const std::string& weights = "f32") {
  return make_worker(options(slots, std::move(hook), kv_budget_bytes, min_slots, weights));
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
  Submitted s{std::make_shared<Job>(), std::make_shared<t::CollectingSink>(r.n)};
  s.job->request = r;
  s.job->sink = s.sink;
  EXPECT_TRUE(w.submit(s.job));
  return s;
}

// Submits and waits for the end.
std::shared_ptr<t::CollectingSink> run(Worker& w, const writeup::generate::GenerationRequest& r) {
  auto s = submit(w, r);
  EXPECT_TRUE(s.sink->wait());
  return s.sink;
}

c10::OutOfMemoryError oom() {
  return c10::OutOfMemoryError({__func__, __FILE__, static_cast<std::uint32_t>(__LINE__)}, "injected OOM");
}

}  // namespace

// The determinism tests run for every weight format of the packed kernels (f32, bf16, int8).
class WorkerWeights : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Formats, WorkerWeights, ::testing::Values("f32", "bf16", "int8"),
                         [](const auto& info) { return info.param; });

TEST_P(WorkerWeights, SeededRequestsGiveTheSameTokensAloneOrBatchedWithOthers) {
  auto worker = make_worker(16, {}, 0, 1, GetParam());
  ASSERT_TRUE(worker->loaded()) << worker->load_error();
  EXPECT_EQ(to_string(worker->model()->weight_format()), GetParam());
  std::mt19937 rng(2026);
  std::vector<writeup::generate::GenerationRequest> seeded, noise;
  for (int i = 0; i < 20; ++i) seeded.push_back(request(i, rng));
  for (int i = 0; i < 20; ++i) noise.push_back(request(100 + i, rng));
  std::vector<std::vector<std::vector<int>>> alone;
  for (const auto& r : seeded) alone.push_back(run(*worker, r)->tokens());
  // Together with 20 other requests, in random order, arriving at random times.
  std::vector<std::pair<int, const writeup::generate::GenerationRequest*>> order;
  for (int i = 0; i < 20; ++i) order.emplace_back(i, &seeded[i]);
  for (int i = 0; i < 20; ++i) order.emplace_back(-1, &noise[i]);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::shared_ptr<t::CollectingSink>> together(20), others;
  for (auto& [i, r] : order) {
    auto s = submit(*worker, *r);
    if (i >= 0) together[static_cast<std::size_t>(i)] = s.sink;
    else others.push_back(s.sink);
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
  }
  int differ = 0;
  for (int i = 0; i < 20; ++i) {
    const auto& got = *together[static_cast<std::size_t>(i)];
    ASSERT_TRUE(got.wait());
    ASSERT_EQ(got.error(), "");
    if (got.tokens() != alone[static_cast<std::size_t>(i)]) ++differ;
    EXPECT_FALSE(got.tokens()[0].empty());
  }
  EXPECT_EQ(differ, 0);
  for (auto& s : others) {
    EXPECT_TRUE(s->wait());
    EXPECT_EQ(s->error(), "");
  }
}

TEST(Worker, ACancelledJobLeavesAndItsSlotsServeTheNext) {
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
  ASSERT_TRUE(a.sink->wait());
  ASSERT_EQ(a.sink->error(), "");
  EXPECT_EQ(a.sink->sequences()[0].finish, FinishReason::cancelled);
  EXPECT_EQ(a.sink->sequences()[1].finish, FinishReason::cancelled);
  ASSERT_TRUE(b.sink->wait());
  ASSERT_EQ(b.sink->error(), "");
  EXPECT_NE(b.sink->sequences()[0].finish, FinishReason::cancelled);
  EXPECT_EQ(worker->queue_depth(), 0u);
}

TEST(Worker, ACancelledQueuedJobLeavesTheQueueAtOnce) {
  std::atomic<bool> hold{true};
  auto worker = make_worker(2, [&](long, const std::vector<writeup::model::SequenceChunk>&) {
    for (int i = 0; i < 5000 && hold; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  std::mt19937 rng(11);
  auto r = request(0, rng);
  r.n = 2;
  auto running = submit(*worker, r);
  auto queued = submit(*worker, r);  // waits behind `running` for both slots
  for (int i = 0; i < 2000 && worker->queue_depth() != 1u; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(worker->queue_depth(), 1u);
  queued.job->cancel();  // while the running one's step is held
  hold = false;
  ASSERT_TRUE(queued.sink->wait());
  EXPECT_EQ(queued.sink->error(), "");
  for (const auto& s : queued.sink->sequences()) {
    EXPECT_EQ(s.finish, FinishReason::cancelled);
    EXPECT_TRUE(s.tokens.empty());  // it never ran
  }
  ASSERT_TRUE(running.sink->wait());
  EXPECT_EQ(running.sink->error(), "");
}

TEST(Worker, AStopFromTheSinkEndsThatSequenceAtTheNextStep) {
  auto worker = make_worker();
  std::mt19937 rng(12);
  auto r = request(0, rng);
  r.n = 2;
  r.params.max_tokens = 30;
  auto job = std::make_shared<Job>();
  auto sink = std::make_shared<t::CollectingSink>(2);
  job->request = r;
  job->sink = sink;
  std::weak_ptr<Job> weak = job;
  int seen = 0;
  // Inline, on the worker's thread, as an output processor finding a stop string does.
  sink->on_each = [&](std::span<const TokenOutput> outputs) {
    for (const auto& o : outputs) {
      if (o.index != 1 || ++seen != 3) continue;
      if (const auto j = weak.lock()) j->stop(1);
    }
  };
  ASSERT_TRUE(worker->submit(job));
  ASSERT_TRUE(sink->wait());
  const auto seqs = sink->sequences();
  EXPECT_EQ(seqs[1].finish, FinishReason::stop);
  EXPECT_EQ(seqs[1].tokens.size(), 3u);
  EXPECT_EQ(seqs[1].outputs.back().token, -1);  // the stop carries no token
  EXPECT_NE(seqs[0].finish, FinishReason::stop);
}

TEST(Worker, APassedDeadlineFailsWithTimeout) {
  auto worker = make_worker();
  std::mt19937 rng(13);
  auto s = Submitted{std::make_shared<Job>(), std::make_shared<t::CollectingSink>(1)};
  s.job->request = request(0, rng);
  s.job->request.n = 1;
  s.job->sink = s.sink;
  s.job->deadline = Job::Clock::now() - std::chrono::seconds(1);
  ASSERT_TRUE(worker->submit(s.job));
  ASSERT_TRUE(s.sink->wait());
  EXPECT_EQ(s.sink->error(), "timeout");
}

TEST_P(WorkerWeights, InjectedOomSplitsTheBatchAndTheTokensStayTheSame) {
  std::mt19937 rng(7);
  std::vector<writeup::generate::GenerationRequest> reqs;
  for (int i = 0; i < 6; ++i) reqs.push_back(request(i, rng));
  const auto run_all = [&](Worker& w) {
    std::vector<Submitted> subs;
    for (const auto& r : reqs) subs.push_back(submit(w, r));
    for (auto& s : subs) EXPECT_TRUE(s.sink->wait());
    return subs;
  };
  auto clean = make_worker(16, {}, 0, 1, GetParam());
  const auto want = run_all(*clean);
  std::atomic<int> injected{0};
  // OOM whenever more than two rows share a forward pass, at steps 1 (prefill) to 12.
  auto faulty = make_worker(
      16,
      [&](long step, const std::vector<writeup::model::SequenceChunk>& chunks) {
        if (step <= 12 && chunks.size() > 2) {
          ++injected;
          throw oom();
        }
      },
      0, 1, GetParam());
  const auto got = run_all(*faulty);
  EXPECT_GT(injected.load(), 0);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(got[i].sink->error(), "") << i;
    EXPECT_EQ(got[i].sink->tokens(), want[i].sink->tokens()) << "request " << i;
  }
  EXPECT_TRUE(faulty->ready());
}

TEST(Worker, OnlyTheRequestThatCannotRunAloneFails) {
  std::mt19937 rng(9);
  // A "device" with no room for prefill chunks longer than 4 tokens.
  auto worker = make_worker(16, [](long, const std::vector<writeup::model::SequenceChunk>& chunks) {
    for (const auto& c : chunks) {
      if (c.tokens.size() > 4) throw oom();
    }
  });
  auto small = request(0, rng);
  small.prompt = tokenizer()->encode("Hi there");
  auto big = request(1, rng);
  big.prompt = tokenizer()->encode("This prompt is long enough to need a prefill chunk of eight tokens");
  auto a = submit(*worker, small), b = submit(*worker, big), c = submit(*worker, small);
  for (auto* s : {&a, &b, &c}) ASSERT_TRUE(s->sink->wait());
  EXPECT_EQ(a.sink->error(), "");
  EXPECT_EQ(b.sink->error(), "out_of_memory");
  EXPECT_EQ(c.sink->error(), "");
  EXPECT_TRUE(worker->ready());
}

TEST(Worker, RequestsThatCanNeverRunFailClearly) {
  auto worker = make_worker(2);
  std::mt19937 rng(3);
  auto r = request(0, rng);
  r.n = 3;  // more sequences than slots
  EXPECT_EQ(run(*worker, r)->error(), "invalid_request");
  {
    r.n = 1 << 30;  // refused before anything is set up for its sequences
    auto job = std::make_shared<Job>();
    job->request = r;
    auto sink = std::make_shared<t::CollectingSink>(1);  // only its error comes
    job->sink = sink;
    ASSERT_TRUE(worker->submit(job));
    ASSERT_TRUE(sink->wait());
    EXPECT_EQ(sink->error(), "invalid_request");
  }
  r.n = 1;
  r.params.max_tokens = 64;  // prompt + 64 > 64 positions
  auto s = run(*worker, r);
  EXPECT_EQ(s->error(), "invalid_request");
  EXPECT_NE(s->message().find("exceeds the model context of 64"), std::string::npos) << s->message();
  r.params.max_tokens = 5;
  r.params.temperature = -1;  // the sampler's own check
  EXPECT_EQ(run(*worker, r)->error(), "invalid_request");
}

TEST(Worker, TheKvCacheBudgetCapsTheSlotsAndAdmission) {
  const auto cfg = writeup::model::GPT2Config::from_file(t::model_dir("tiny-gpt2") / "config.json");
  const std::size_t slot_bytes = 2ull * cfg.n_layer * cfg.n_positions * cfg.n_embd * sizeof(float);
  auto worker = make_worker(16, {}, 3 * slot_bytes + slot_bytes / 2);
  ASSERT_TRUE(worker->ready()) << worker->load_error();
  EXPECT_EQ(worker->slots(), 3);
  EXPECT_EQ(worker->kv_cache_bytes(), static_cast<double>(3 * slot_bytes));
  std::mt19937 rng(4);
  auto r = request(0, rng);
  r.n = 4;  // more than the budget holds
  EXPECT_EQ(run(*worker, r)->error(), "invalid_request");
  // Requests of 3 + 2 + 1 sequences queue for the 3 slots and all complete.
  std::vector<Submitted> jobs;
  for (int n : {3, 2, 1}) {
    r.n = n;
    jobs.push_back(submit(*worker, r));
  }
  for (auto& j : jobs) {
    ASSERT_TRUE(j.sink->wait());
    EXPECT_EQ(j.sink->error(), "");
  }
}

TEST(Worker, ABudgetTooSmallForTheLargestRequestFailsTheLoadClearly) {
  const auto cfg = writeup::model::GPT2Config::from_file(t::model_dir("tiny-gpt2") / "config.json");
  const std::size_t slot_bytes = 2ull * cfg.n_layer * cfg.n_positions * cfg.n_embd * sizeof(float);
  auto worker = make_worker(16, {}, 2 * slot_bytes, /*min_slots=*/5);
  EXPECT_FALSE(worker->ready());
  EXPECT_NE(worker->load_error().find("holds 2 sequence(s) of 64 positions"), std::string::npos) << worker->load_error();
  EXPECT_NE(worker->load_error().find("kv_cache_mb"), std::string::npos);
  std::mt19937 rng(5);
  EXPECT_EQ(run(*worker, request(0, rng))->error(), "model_unavailable");
}

TEST(Worker, EachTokenComesWithItsLogprobAndTheTopAlternatives) {
  auto worker = make_worker();
  std::mt19937 rng(14);
  auto r = request(0, rng);
  r.n = 1;
  r.params.temperature = 0;  // greedy: the token is the most likely one
  r.params.max_tokens = 6;
  r.logprobs = 3;
  const auto greedy = run(*worker, r);
  ASSERT_EQ(greedy->error(), "");
  const auto seq = greedy->sequences()[0];
  ASSERT_FALSE(seq.outputs.empty());
  for (const auto& o : seq.outputs) {
    ASSERT_EQ(o.n_top, 3);
    EXPECT_EQ(o.token, o.top[0].token);
    EXPECT_FLOAT_EQ(o.logprob, o.top[0].logprob);
    EXPECT_LE(o.top[0].logprob, 0.0f);
    EXPECT_GE(o.top[0].logprob, o.top[1].logprob);
    EXPECT_GE(o.top[1].logprob, o.top[2].logprob);
  }
  // Without logprobs: the token's own log-probability still, no alternatives; the same tokens.
  r.logprobs = 0;
  const auto plain = run(*worker, r);
  EXPECT_EQ(plain->tokens(), greedy->tokens());
  const auto plain_seqs = plain->sequences();
  for (const auto& o : plain_seqs[0].outputs) {
    EXPECT_EQ(o.n_top, 0);
    EXPECT_TRUE(std::isfinite(o.logprob));
    EXPECT_LE(o.logprob, 0.0f);
  }
}

TEST(Worker, WorkersShareOneWeightCopyAndRunJobWaitsForTheEnd) {
  auto model = std::shared_ptr<const writeup::model::GPT2Model>(writeup::model::GPT2Model::load(t::model_dir("tiny-gpt2")));
  int calls = 0;
  auto o = options();
  o.path = "/nonexistent";  // not read: the weights come from the function
  o.weights = [&] {
    ++calls;
    return model;
  };
  auto a = make_worker(o), b = make_worker(o);
  ASSERT_TRUE(a->ready()) << a->load_error();
  ASSERT_TRUE(b->ready());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(a->model().get(), model.get());
  EXPECT_EQ(b->model().get(), model.get());
  EXPECT_EQ(a->fingerprint(), model->fingerprint());
  EXPECT_FALSE(a->fingerprint().empty());
  std::mt19937 rng(15);
  auto job = std::make_shared<Job>();
  job->request = request(0, rng);
  auto sink = std::make_shared<t::CollectingSink>(job->request.n);
  job->sink = sink;
  ASSERT_TRUE(run_job(*b, job));
  EXPECT_TRUE(sink->wait(std::chrono::milliseconds(0)));  // already ended
  EXPECT_EQ(sink->error(), "");
}

// What the server configures: engine::shared_weights loads once for every worker of a model
// (one copy of the weights), and a load error reaches every worker.
TEST(Worker, SharedWeightsLoadOnceForAllWorkersAndShareTheirError) {
  auto o = options();
  o.weights = writeup::engine::shared_weights(t::model_dir("tiny-gpt2").string(), {});
  auto a = make_worker(o), b = make_worker(o), c = make_worker(o);
  ASSERT_TRUE(a->ready()) << a->load_error();
  ASSERT_TRUE(b->ready() && c->ready());
  EXPECT_EQ(a->model().get(), b->model().get());
  EXPECT_EQ(a->model().get(), c->model().get());
  std::mt19937 rng(17);
  for (auto* w : {a.get(), c.get()}) {
    auto job = std::make_shared<Job>(request(1, rng), nullptr);
    auto sink = std::make_shared<t::CollectingSink>(job->request.n);
    job->sink = sink;
    ASSERT_TRUE(run_job(*w, job));
    EXPECT_EQ(sink->error(), "");
  }
  auto bad = options();
  bad.weights = writeup::engine::shared_weights("/nonexistent/model", {});
  auto x = make_worker(bad), y = make_worker(bad);
  EXPECT_FALSE(x->loaded());
  EXPECT_FALSE(y->loaded());
  EXPECT_NE(x->load_error().find("/nonexistent/model"), std::string::npos) << x->load_error();
  EXPECT_EQ(x->load_error(), y->load_error());
}

TEST(Worker, ASubmitBeyondTheQueueIsRefused) {
  std::atomic<bool> hold{true};
  auto o = options(1, [&](long, const std::vector<writeup::model::SequenceChunk>&) {
    for (int i = 0; i < 5000 && hold; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  o.max_queue = 2;
  auto worker = make_worker(o);
  std::mt19937 rng(16);
  auto r = request(0, rng);
  r.n = 1;
  std::vector<Submitted> subs{submit(*worker, r)};  // runs (held)
  for (int i = 0; i < 2000 && worker->running_sequences() != 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  subs.push_back(submit(*worker, r));
  subs.push_back(submit(*worker, r));
  auto job = std::make_shared<Job>();
  job->request = r;
  EXPECT_FALSE(worker->submit(job));
  EXPECT_EQ(worker->queue_depth(), 2u);
  hold = false;
  for (auto& s : subs) {
    ASSERT_TRUE(s.sink->wait());
    EXPECT_EQ(s.sink->error(), "");
  }
}

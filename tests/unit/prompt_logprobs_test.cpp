// Prompt logprobs (GenerationRequest::prompt_logprobs) and logit_bias through the worker on the
// tiny model: the prompt's log-probabilities against a full forward pass and the golden logits
// of HF transformers, on both runner paths, over several prefill chunks, n > 1, with and
// without alternatives, once and before the first token; logit_bias in the greedy choice and
// the reported log-probabilities.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "test_support.hpp"
#include "writeup/engine/run_job.hpp"
#include "writeup/engine/worker.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/safetensors.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

using namespace writeup::engine;
namespace t = writeup::test;
using writeup::generate::GenerationRequest;
using Hook = decltype(WorkerOptions::before_forward);

namespace {

constexpr int kVocab = 50257;  // the tokenizer's ids (the tiny model has exactly as many rows)

std::shared_ptr<const writeup::text::BpeTokenizer> tokenizer() {
  static auto tok = writeup::text::BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  return tok;
}

std::unique_ptr<Worker> make_worker(bool packed, Hook hook = {}) {
  WorkerOptions o;
  o.model_name = "tiny-gpt2";
  o.path = t::model_dir("tiny-gpt2").string();
  o.load.packed = packed;
  o.scheduler.slots = 8;
  o.scheduler.prefill_chunk = 8;  // the 32-token prompt prefills in 4 chunks
  o.max_queue = 100;
  o.before_forward = std::move(hook);
  auto w = std::make_unique<Worker>(std::move(o), tokenizer());
  for (int i = 0; i < 30000 && !w->load_ended(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(w->loaded()) << w->load_error();
  return w;
}

// Records the prompt logprobs and when they came (after how many on_outputs calls).
class PromptSink final : public t::CollectingSink {
 public:
  using t::CollectingSink::CollectingSink;
  void on_prompt_logprobs(std::vector<TokenOutput> prompt) override {
    const int before = calls();
    std::lock_guard lock(mutex_);
    ++prompt_calls_;
    outputs_before_ = before;
    prompt_ = std::move(prompt);
  }
  int prompt_calls() const {
    std::lock_guard lock(mutex_);
    return prompt_calls_;
  }
  int outputs_before() const {
    std::lock_guard lock(mutex_);
    return outputs_before_;
  }
  std::vector<TokenOutput> prompt() const {
    std::lock_guard lock(mutex_);
    return prompt_;
  }

 private:
  mutable std::mutex mutex_;
  int prompt_calls_ = 0;
  int outputs_before_ = -1;
  std::vector<TokenOutput> prompt_;
};

std::shared_ptr<PromptSink> run(Worker& w, const GenerationRequest& r) {
  auto job = std::make_shared<Job>();
  job->request = r;
  auto sink = std::make_shared<PromptSink>(r.n);
  job->sink = sink;
  EXPECT_TRUE(run_job(w, job));
  return sink;
}

nlohmann::json golden_case(const std::string& name) {
  const auto golden = t::load_json(t::data_dir() / "golden.json");  // kept alive for the loop
  for (const auto& c : golden["cases"]) {
    if (c["name"] == name) return c;
  }
  throw std::runtime_error("no golden case " + name);
}

at::Tensor golden_logits(const std::string& name) {  // [4, V]: the case's last 4 positions
  static auto file = writeup::model::SafetensorsFile::open(t::data_dir() / "golden_logits.safetensors");
  const auto* info = file->find(name + ".logits");
  if (!info) throw std::runtime_error("no golden logits for " + name);
  return at::from_blob(const_cast<std::byte*>(file->data(*info)), info->shape, at::kFloat).clone();
}

// log_softmax of a full forward pass over the prompt: [T, V].
at::Tensor reference_logprobs(const std::vector<int>& ids) {
  static auto model = writeup::model::GPT2Model::load(t::model_dir("tiny-gpt2"));
  auto cache = model->make_cache(1);
  std::vector<writeup::model::SequenceChunk> chunks{{0, 0, ids}};
  return at::log_softmax(model->forward(chunks, cache, /*all_logits=*/true).narrow(1, 0, kVocab), 1);
}

GenerationRequest prompt_request(const std::vector<int>& ids, int logprobs, int n = 1) {
  GenerationRequest r;
  r.prompt = ids;
  r.n = n;
  r.logprobs = logprobs;
  r.prompt_logprobs = true;
  r.params.max_tokens = 4;
  r.params.temperature = 0.8f;
  r.params.seed = 5;
  return r;
}

// The prompt logprobs of `ids` agree with `want` ([T, V] log-probabilities) at every position.
void expect_prompt_logprobs(const std::vector<TokenOutput>& got, const std::vector<int>& ids, const at::Tensor& want,
                            int logprobs, const std::string& what) {
  ASSERT_EQ(got.size(), ids.size() - 1) << what;
  for (std::size_t p = 1; p < ids.size(); ++p) {
    const auto& o = got[p - 1];
    const auto row = want[static_cast<std::int64_t>(p - 1)];
    EXPECT_EQ(o.index, 0);
    EXPECT_EQ(o.token, ids[p]) << what << " position " << p;
    EXPECT_EQ(o.finish, FinishReason::none);
    EXPECT_NEAR(o.logprob, row[ids[p]].item<float>(), 1e-4) << what << " position " << p;
    ASSERT_EQ(o.n_top, logprobs) << what;
    if (logprobs == 0) continue;
    const auto top = at::topk(row, logprobs);
    for (int k = 0; k < logprobs; ++k) {
      EXPECT_NEAR(o.top[static_cast<std::size_t>(k)].logprob, std::get<0>(top)[k].item<float>(), 1e-4) << what;
      // The same token unless two alternatives tie within the tolerance.
      const int id = o.top[static_cast<std::size_t>(k)].token;
      EXPECT_NEAR(row[id].item<float>(), std::get<0>(top)[k].item<float>(), 1e-4) << what << " top " << k;
    }
  }
}

}  // namespace

// Every prompt position (over 4 prefill chunks of 8) matches a full forward pass and, for the
// last rows, HF's golden logits; on the packed and the generic path, with logprobs 0 and 5,
// n = 1 and 3; one call, before the first outputs; the tokens are those of the same request
// without prompt logprobs.
TEST(PromptLogprobs, MatchAFullForwardAndTheGoldenLogitsOnBothPathsOverSeveralChunks) {
  const auto c = golden_case("seed");
  const auto ids = c["ids"].get<std::vector<int>>();
  ASSERT_GT(ids.size(), 8u * 3);
  const auto want = reference_logprobs(ids);
  const auto golden = at::log_softmax(golden_logits("seed"), 1);  // positions T-4..T-1
  for (const bool packed : {true, false}) {
    auto worker = make_worker(packed);
    for (const int logprobs : {0, 5}) {
      for (const int n : {1, 3}) {
        const std::string what = std::string(packed ? "packed" : "generic") + " logprobs " +
                                 std::to_string(logprobs) + " n " + std::to_string(n);
        auto r = prompt_request(ids, logprobs, n);
        const auto sink = run(*worker, r);
        ASSERT_EQ(sink->error(), "") << sink->message();
        EXPECT_EQ(sink->prompt_calls(), 1) << what;
        EXPECT_EQ(sink->outputs_before(), 0) << what;
        const auto prompt = sink->prompt();
        expect_prompt_logprobs(prompt, ids, want, logprobs, what);
        // The golden rows: positions T-4, T-3, T-2 give the last three prompt tokens.
        const std::size_t T = ids.size();
        for (std::size_t g = 0; g < 3; ++g) {
          const std::size_t p = T - 4 + g;  // position; predicts token p + 1
          EXPECT_NEAR(prompt[p].logprob, golden[static_cast<std::int64_t>(g)][ids[p + 1]].item<float>(), 1e-4) << what;
        }
        r.prompt_logprobs = false;
        const auto plain = run(*worker, r);
        EXPECT_EQ(plain->prompt_calls(), 0);
        EXPECT_EQ(plain->tokens(), sink->tokens()) << what;
      }
    }
  }
}

TEST(PromptLogprobs, AOneTokenPromptGetsOneEmptyCall) {
  auto worker = make_worker(true);
  const auto sink = run(*worker, prompt_request({464}, 2));
  ASSERT_EQ(sink->error(), "");
  EXPECT_EQ(sink->prompt_calls(), 1);
  EXPECT_EQ(sink->outputs_before(), 0);
  EXPECT_TRUE(sink->prompt().empty());
}

// A prompt whose last chunk holds one token (the step's "decode" row layout) still gets every
// position, and the whole-context case (63 of 64 positions) matches the golden rows.
TEST(PromptLogprobs, ChunkBoundariesAndTheFullContext) {
  const auto full = golden_case("full")["ids"].get<std::vector<int>>();
  ASSERT_EQ(full.size(), 64u);
  auto worker = make_worker(false);
  for (const std::size_t size : {std::size_t{17}, std::size_t{63}}) {
    std::vector<int> ids(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(size));
    auto r = prompt_request(ids, 1);
    r.params.max_tokens = 1;
    const auto sink = run(*worker, r);
    ASSERT_EQ(sink->error(), "") << sink->message();
    EXPECT_EQ(sink->prompt_calls(), 1);
    expect_prompt_logprobs(sink->prompt(), ids, reference_logprobs(ids), 1, "size " + std::to_string(size));
    if (size == 63) {
      const auto golden = at::log_softmax(golden_logits("full"), 1);  // positions 60..63
      const auto prompt = sink->prompt();
      EXPECT_NEAR(prompt[60].logprob, golden[0][ids[61]].item<float>(), 1e-4);
      EXPECT_NEAR(prompt[61].logprob, golden[1][ids[62]].item<float>(), 1e-4);
    }
  }
}

// Out of memory whenever a step carries a prompt chunk beside anything else: the rows run
// again in halves; the prompt logprobs still come once, with the same values, and the other
// requests' tokens do not change.
TEST(PromptLogprobs, AnOomSplitRunsChunksAgainButDeliversOnce) {
  const auto ids = golden_case("seed")["ids"].get<std::vector<int>>();
  GenerationRequest other;
  other.prompt = tokenizer()->encode("The quick brown fox");
  other.params.max_tokens = 12;
  other.params.seed = 3;
  auto submit_both = [&](Worker& w) {
    auto other_job = std::make_shared<Job>();
    other_job->request = other;
    auto other_sink = std::make_shared<PromptSink>(1);
    other_job->sink = other_sink;
    EXPECT_TRUE(w.submit(other_job));
    auto sink = run(w, prompt_request(ids, 3, 2));
    EXPECT_TRUE(other_sink->wait());
    return std::make_pair(sink, other_sink);
  };
  auto clean = make_worker(true);
  const auto want = submit_both(*clean);
  std::atomic<int> injected{0};
  auto faulty = make_worker(true, [&](long, const std::vector<writeup::model::SequenceChunk>& chunks) {
    bool prompt_chunk = false;
    for (const auto& c : chunks) prompt_chunk = prompt_chunk || c.keep_hidden;
    if (prompt_chunk && chunks.size() > 1) {
      ++injected;
      throw c10::OutOfMemoryError({__func__, __FILE__, static_cast<std::uint32_t>(__LINE__)}, "injected");
    }
  });
  const auto got = submit_both(*faulty);
  EXPECT_GT(injected.load(), 0);
  ASSERT_EQ(got.first->error(), "") << got.first->message();
  EXPECT_EQ(got.first->prompt_calls(), 1);
  EXPECT_EQ(got.first->outputs_before(), 0);
  const auto a = want.first->prompt(), b = got.first->prompt();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].token, b[i].token);
    EXPECT_FLOAT_EQ(a[i].logprob, b[i].logprob) << i;
    EXPECT_EQ(a[i].top[0].token, b[i].top[0].token);
  }
  EXPECT_EQ(got.first->tokens(), want.first->tokens());
  EXPECT_EQ(got.second->tokens(), want.second->tokens());
  EXPECT_EQ(got.second->prompt_calls(), 0);
}

// A prompt-logprobs request running beside plain ones leaves their tokens as they are alone
// (packed path: batch-invariant logits).
TEST(PromptLogprobs, PlainRequestsBesideItAreUnchanged) {
  auto worker = make_worker(true);
  GenerationRequest plain;
  plain.prompt = tokenizer()->encode("Once upon a time in a land far away");
  plain.params.max_tokens = 10;
  plain.params.seed = 11;
  plain.n = 2;
  const auto alone = run(*worker, plain);
  auto job = std::make_shared<Job>();
  job->request = prompt_request(golden_case("seed")["ids"].get<std::vector<int>>(), 5, 2);
  auto sink = std::make_shared<PromptSink>(2);
  job->sink = sink;
  ASSERT_TRUE(worker->submit(job));
  const auto beside = run(*worker, plain);
  ASSERT_TRUE(sink->wait());
  EXPECT_EQ(beside->tokens(), alone->tokens());
  const auto a = alone->sequences(), b = beside->sequences();
  for (std::size_t s = 0; s < a.size(); ++s) {
    ASSERT_EQ(a[s].logprobs.size(), b[s].logprobs.size());
    for (std::size_t i = 0; i < a[s].logprobs.size(); ++i) EXPECT_NEAR(a[s].logprobs[i], b[s].logprobs[i], 1e-5);
  }
}

// +100 on a token makes greedy pick it with a log-probability of about 0; -100 on the greedy
// choice changes it; the prompt logprobs include the bias too.
TEST(LogitBias, ChangesGreedyPicksAndTheReportedLogprobs) {
  for (const bool packed : {true, false}) {
    auto worker = make_worker(packed);
    GenerationRequest r;
    r.prompt = tokenizer()->encode("The quick brown fox");
    r.params.temperature = 0;
    r.params.max_tokens = 3;
    r.logprobs = 2;
    const auto base = run(*worker, r);
    ASSERT_EQ(base->error(), "");
    const auto base_seq = base->sequences()[0];
    const int greedy = base_seq.tokens.at(0);
    const int chosen = greedy == 1000 ? 1001 : 1000;

    r.params.logit_bias = {{chosen, 100.0f}};
    const auto up = run(*worker, r);
    ASSERT_EQ(up->error(), "") << up->message();
    const auto up_seq = up->sequences()[0];
    ASSERT_EQ(up_seq.tokens.size(), 3u);
    for (std::size_t i = 0; i < up_seq.tokens.size(); ++i) {
      EXPECT_EQ(up_seq.tokens[i], chosen);
      EXPECT_NEAR(up_seq.logprobs[i], 0.0f, 1e-3);
      EXPECT_EQ(up_seq.outputs[i].top[0].token, chosen);
    }

    r.params.logit_bias = {{greedy, -100.0f}};
    const auto down = run(*worker, r);
    ASSERT_EQ(down->error(), "");
    const auto down_seq = down->sequences()[0];
    EXPECT_NE(down_seq.tokens.at(0), greedy);
    // The second most likely token without bias is the first now.
    EXPECT_EQ(down_seq.tokens.at(0), base_seq.outputs.at(0).top[1].token);

    // Prompt logprobs see the bias: a +100 token that is not the next prompt token gets ~0
    // probability mass elsewhere, so every prompt token's logprob drops to about -100.
    auto p = prompt_request(r.prompt, 1);
    const int absent = 1000;
    for (const int id : r.prompt) ASSERT_NE(id, absent);
    p.params.logit_bias = {{absent, 100.0f}};
    const auto biased = run(*worker, p);
    ASSERT_EQ(biased->error(), "") << biased->message();
    for (const auto& o : biased->prompt()) {
      EXPECT_LT(o.logprob, -80.0f);
      EXPECT_EQ(o.top[0].token, absent);
      EXPECT_NEAR(o.top[0].logprob, 0.0f, 1e-3);
    }
  }
}

TEST(LogitBias, AnIdOutsideTheVocabularyIsRefused) {
  auto worker = make_worker(true);
  GenerationRequest r;
  r.prompt = tokenizer()->encode("Hello");
  r.params.logit_bias = {{5, 1.0f}, {kVocab, 2.0f}};
  const auto sink = run(*worker, r);
  EXPECT_EQ(sink->error(), "invalid_request");
  EXPECT_NE(sink->message().find("logit_bias token id 50257"), std::string::npos) << sink->message();
  r.params.logit_bias = {{kVocab - 1, 2.0f}};
  EXPECT_EQ(run(*worker, r)->error(), "");
}

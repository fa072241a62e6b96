// The engine under faults: what one request raises fails that request only; a device failure
// takes the worker out of rotation until it works again; the model's vocabulary is checked
// against the tokenizer's at load; the worker pick skips workers that cannot serve.
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <span>
#include <thread>

#include "test_support.hpp"
#include "writeup/engine/device_failure.hpp"
#include "writeup/engine/worker.hpp"
#include "writeup/generate/generation.hpp"
#include "writeup/model/gpt2_model.hpp"
#include "writeup/model/safetensors.hpp"
#include "writeup/service/model_registry.hpp"
#include "writeup/text/bpe_tokenizer.hpp"

using namespace writeup::engine;
namespace t = writeup::test;
using Chunks = std::vector<writeup::model::SequenceChunk>;
using Hook = decltype(WorkerOptions::before_forward);

namespace {

// A job's end: its tokens per sequence, or its error.
struct Outcome {
  std::vector<std::vector<int>> tokens;
  std::string error;  // to_string(ErrorKind) when it failed
};

std::shared_ptr<const writeup::text::BpeTokenizer> tokenizer() {
  static auto tok = writeup::text::BpeTokenizer::from_model_dir(t::model_dir("tiny-gpt2"));
  return tok;
}

std::unique_ptr<Worker> make_worker(Hook hook = {}, std::string path = t::model_dir("tiny-gpt2").string()) {
  WorkerOptions o;
  o.model_name = "tiny-gpt2";
  o.path = std::move(path);
  o.scheduler.slots = 8;
  o.max_queue = 100;
  o.scheduler.prefill_chunk = 8;
  o.before_forward = std::move(hook);
  o.probe_interval = std::chrono::milliseconds(10);
  auto w = std::make_unique<Worker>(std::move(o), tokenizer());
  for (int i = 0; i < 30000 && !w->load_ended(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return w;
}

writeup::generate::GenerationRequest request(const std::string& prompt, int max_tokens, std::uint64_t seed) {
  writeup::generate::GenerationRequest r;
  r.prompt = tokenizer()->encode(prompt);
  r.n = 2;
  r.params.max_tokens = max_tokens;
  r.params.temperature = 0.8f;
  r.params.seed = seed;
  return r;
}

// Submits the request; get() waits (bounded) for its end.
struct Pending {
  std::shared_ptr<t::CollectingSink> sink;
  Outcome get() const {
    EXPECT_TRUE(sink->wait());
    return {sink->tokens(), sink->error()};
  }
};

Pending submit(Worker& w, const writeup::generate::GenerationRequest& r,
               std::function<void(std::span<const TokenOutput>)> on_outputs = {}) {
  auto job = std::make_shared<Job>();
  job->request = r;
  auto sink = std::make_shared<t::CollectingSink>(r.n);
  sink->on_each = std::move(on_outputs);
  job->sink = sink;
  EXPECT_TRUE(w.submit(job));
  return {sink};
}

std::vector<std::vector<int>> tokens(const Outcome& o) { return o.tokens; }

c10::Error c10_error(const std::string& message) {
  return c10::Error({__func__, __FILE__, static_cast<std::uint32_t>(__LINE__)}, message);
}

// Waits (bounded) until `done()`; returns its last value.
template <class F>
bool eventually(F done, int max_ms = 10000) {
  for (int i = 0; i < max_ms && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return done();
}

// The tiny model with its vocabulary resized to `rows` (the first rows, then padding rows that
// would win every draw: ln_f.bias and each padding row are the same large vector).
void write_resized_model(const std::filesystem::path& dir, std::int64_t rows) {
  const auto src = t::model_dir("tiny-gpt2");
  auto config = t::load_json(src / "config.json");
  config["vocab_size"] = rows;
  std::ofstream(dir / "config.json") << config.dump(2);
  for (const char* f : {"vocab.json", "merges.txt"}) std::filesystem::copy_file(src / f, dir / f);
  const auto file = writeup::model::SafetensorsFile::open(src / "model.safetensors");
  std::vector<writeup::model::TensorSpec> specs;
  for (const auto& info : file->tensors()) {
    ASSERT_EQ(info.dtype, writeup::model::DType::F32);
    auto shape = info.shape;
    if (info.name.ends_with("wte.weight")) shape[0] = rows;
    specs.push_back({info.name, info.dtype, shape});
  }
  writeup::model::write_safetensors(dir / "model.safetensors", specs, {{"format", "pt"}}, [&](std::size_t i) {
    const auto& info = file->tensors()[i];
    const auto* bytes = reinterpret_cast<const char*>(file->data(info));
    std::string data(bytes, info.end - info.begin);
    if (info.name.ends_with("ln_f.bias")) {
      std::vector<float> bias(static_cast<std::size_t>(info.numel()), 10.0f);
      data.assign(reinterpret_cast<const char*>(bias.data()), bias.size() * sizeof(float));
    }
    if (info.name.ends_with("wte.weight")) {
      const auto row_bytes = static_cast<std::size_t>(info.shape[1]) * sizeof(float);
      data.resize(static_cast<std::size_t>(rows) * row_bytes);
      for (std::int64_t r = info.shape[0]; r < rows; ++r) {
        for (std::int64_t c = 0; c < info.shape[1]; ++c) {
          const float v = 10.0f;
          std::memcpy(data.data() + static_cast<std::size_t>(r) * row_bytes + static_cast<std::size_t>(c) * sizeof(float),
                      &v, sizeof v);
        }
      }
    }
    return data;
  });
}

}  // namespace

TEST(WorkerFaults, DeviceFailuresAreToldFromRequestErrors) {
  EXPECT_TRUE(is_device_failure(c10_error("CUDA error: an illegal memory access was encountered")));
  EXPECT_TRUE(is_device_failure(c10_error("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm")));
  EXPECT_FALSE(is_device_failure(c10_error("index out of range in self")));
  EXPECT_FALSE(is_device_failure(c10::OutOfMemoryError({__func__, __FILE__, 1}, "CUDA out of memory.")));
  EXPECT_FALSE(is_device_failure(std::invalid_argument("CUDA error in a message of ours")));
}

TEST(WorkerFaults, AnErrorInOneRequestsForwardFailsOnlyThatRequest) {
  const auto poison = tokenizer()->encode("poison pill");
  ASSERT_GE(poison.size(), 2u);
  std::atomic<int> thrown{0};
  // A non-device c10::Error whenever the poisoned prompt is in the forward pass.
  auto worker = make_worker([&](long, const Chunks& chunks) {
    for (const auto& c : chunks) {
      if (c.tokens == poison) {
        ++thrown;
        throw c10_error("index out of range in self");
      }
    }
  });
  ASSERT_TRUE(worker->ready()) << worker->load_error();
  const auto a = request("The quick brown fox", 20, 1), c = request("Dear diary", 20, 3);
  auto bad = request("poison pill", 20, 2);
  const auto want_a = submit(*worker, a).get(), want_c = submit(*worker, c).get();
  auto fa = submit(*worker, a), fb = submit(*worker, bad), fc = submit(*worker, c);
  const auto got_a = fa.get(), got_b = fb.get(), got_c = fc.get();
  EXPECT_GT(thrown.load(), 0);
  EXPECT_EQ(got_b.error, "internal_error");
  ASSERT_EQ(got_a.error, "");
  ASSERT_EQ(got_c.error, "");
  EXPECT_EQ(tokens(got_a), tokens(want_a));  // the batch was split, not disturbed
  EXPECT_EQ(tokens(got_c), tokens(want_c));
  EXPECT_TRUE(worker->ready());  // a request's error is not a device failure
}

TEST(WorkerFaults, ASinkThatThrowsFailsOnlyItsJob) {
  auto worker = make_worker([](long, const Chunks&) { std::this_thread::sleep_for(std::chrono::milliseconds(1)); });
  auto running = submit(*worker, request("Once upon a time", 40, 5));
  auto throwing = submit(*worker, request("In the beginning", 10, 6),
                         [](std::span<const TokenOutput>) { throw std::runtime_error("a bug in a subscriber"); });
  EXPECT_EQ(throwing.get().error, "internal_error");
  const auto r = running.get();
  EXPECT_EQ(r.error, "");
  EXPECT_TRUE(worker->ready());
}

TEST(WorkerFaults, ADeviceFailureTakesTheWorkerOutUntilAProbeSucceedsWithoutRequests) {
  std::atomic<bool> broken{false};
  std::atomic<int> calls{0};
  auto worker = make_worker([&](long, const Chunks&) {
    ++calls;
    if (broken) throw c10_error("CUDA error: an illegal memory access was encountered");
  });
  ASSERT_TRUE(worker->ready()) << worker->load_error();
  broken = true;
  EXPECT_EQ(submit(*worker, request("Hello", 5, 1)).get().error, "internal_error");
  EXPECT_FALSE(worker->ready());
  // The worker probes on its own (every 10 ms here) and stays out while the probes fail.
  const int before = calls.load();
  EXPECT_TRUE(eventually([&] { return calls.load() >= before + 3; }));
  EXPECT_FALSE(worker->ready());
  // The device works again: with no request at all, readiness comes back.
  broken = false;
  EXPECT_TRUE(eventually([&] { return worker->ready(); }));
  EXPECT_EQ(submit(*worker, request("Hello", 5, 1)).get().error, "");
}

TEST(WorkerFaults, APaddedVocabularyIsServedAndThePaddingIsNeverSampled) {
  t::TempDir dir;
  write_resized_model(dir.path(), 50304);
  auto worker = make_worker({}, dir.path().string());
  ASSERT_TRUE(worker->ready()) << worker->load_error();
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    auto r = request("The quick brown fox", 30, seed);
    r.params.top_k = 0;
    r.params.top_p = 1.0f;
    r.params.temperature = 1.0f;
    const auto got = submit(*worker, r).get();
    ASSERT_EQ(got.error, "") << seed;
    for (const auto& s : got.tokens) {
      for (const int id : s) EXPECT_LT(id, tokenizer()->vocab_size());
    }
  }
}

// writeup-generate's loop follows the same rule as the engine: the padding is never sampled.
TEST(WorkerFaults, AVocabularySmallerThanTheTokenizersFailsTheLoadWithTheSizes) {
  t::TempDir dir;
  write_resized_model(dir.path(), 50000);
  auto worker = make_worker({}, dir.path().string());
  EXPECT_TRUE(worker->load_ended());
  EXPECT_FALSE(worker->ready());
  EXPECT_NE(worker->load_error().find("50000"), std::string::npos) << worker->load_error();
  EXPECT_NE(worker->load_error().find("50257"), std::string::npos) << worker->load_error();
  EXPECT_EQ(submit(*worker, request("Hello", 5, 1)).get().error, "model_unavailable");
}

TEST(WorkerFaults, ThePickSkipsAWorkerWhoseLoadFailed) {
  writeup::service::ModelEntry entry;
  entry.tokenizer = tokenizer();
  t::TempDir missing;
  entry.workers.push_back(make_worker({}, (missing / "no-such-model").string()));
  entry.workers.push_back(make_worker());
  ASSERT_FALSE(entry.workers[0]->ready());
  ASSERT_TRUE(entry.workers[1]->ready());
  // Both queues are empty (the failed one's always is): the ready worker serves.
  EXPECT_EQ(&entry.pick(), entry.workers[1].get());
  // Only failed workers: still one of them (it fails the job with its load error).
  entry.workers.pop_back();
  EXPECT_EQ(&entry.pick(), entry.workers[0].get());
}

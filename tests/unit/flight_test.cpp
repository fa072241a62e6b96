#include "writeup/service/flight.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "writeup/service/cached_response.hpp"

namespace {

using writeup::generate::GeneratedSequence;
using writeup::service::Flight;
using writeup::service::ServiceError;
using writeup::service::StreamEvents;
using writeup::service::TextDelta;

struct Recorder {
  std::string text;
  int releases = 0;
  std::vector<GeneratedSequence> done;
  std::string error;
  bool oom = false;
  StreamEvents events() {
    StreamEvents e;
    e.on_text = [this](const std::vector<TextDelta>& ds) {
      ++releases;
      for (const auto& d : ds) text += d.text;
    };
    e.on_done = [this](const std::vector<GeneratedSequence>& r) { done = r; };
    e.on_error = [this](const ServiceError& err) {
      error = err.error.code();
      oom = err.out_of_memory();
    };
    return e;
  }
};

TextDelta text_delta(int index, std::string text, int tokens) {
  TextDelta d;
  d.index = index;
  d.text = std::move(text);
  d.tokens = tokens;
  return d;
}

std::vector<TextDelta> delta(int index, const std::string& text, int tokens) { return {text_delta(index, text, tokens)}; }

GeneratedSequence sequence(std::vector<int> tokens, std::string text, std::string finish) {
  GeneratedSequence s;
  s.tokens = std::move(tokens);
  s.text = std::move(text);
  s.finish_reason = std::move(finish);
  return s;
}

std::vector<GeneratedSequence> results() { return {sequence({1, 2, 3}, "one two", "length"), sequence({4}, "ü", "stop")}; }

TEST(Flight, ALateJoinerGetsTheTextSoFarThenEverything) {
  Flight f(nullptr);
  Recorder a, b;
  f.join(a.events());
  f.text(delta(0, "Hello", 1));
  f.text(delta(0, " world", 2));
  f.join(b.events());
  EXPECT_EQ(b.text, "Hello world");
  EXPECT_EQ(b.releases, 1);  // the text so far comes as one release
  f.text(delta(0, "!", 3));
  f.done(results());
  EXPECT_EQ(a.text, "Hello world!");
  EXPECT_EQ(b.text, "Hello world!");
  EXPECT_EQ(b.done.size(), 2u);
  Recorder c;
  EXPECT_EQ(f.join(c.events()), 0u);  // ended: a new request starts a new flight
}

TEST(Flight, TheGenerationStopsOnlyWhenItsLastSubscriberLeaves) {
  int abandoned = 0;
  Flight f([&] { ++abandoned; });
  Recorder a, b;
  const auto ia = f.join(a.events()), ib = f.join(b.events());
  auto job = std::make_shared<writeup::engine::Job>();
  f.set_job(job);
  f.leave(ia);
  EXPECT_FALSE(job->cancelled());
  EXPECT_FALSE(f.finished());
  f.leave(ib);
  EXPECT_TRUE(job->cancelled());
  EXPECT_TRUE(f.abandoned());
  EXPECT_EQ(abandoned, 1);
  f.leave(ib);  // twice: nothing more
  EXPECT_EQ(abandoned, 1);
}

TEST(Flight, AJobArrivingAfterEveryoneLeftIsCancelledAtOnce) {
  Flight f(nullptr);
  Recorder a;
  f.leave(f.join(a.events()));
  auto job = std::make_shared<writeup::engine::Job>();
  f.set_job(job);
  EXPECT_TRUE(job->cancelled());
}

// A job's sink holds its flight (through the output processor), as in the service.
struct HoldingSink final : writeup::engine::JobSink {
  explicit HoldingSink(std::shared_ptr<Flight> f) : flight(std::move(f)) {}
  void on_outputs(std::span<const writeup::engine::TokenOutput>) override {}
  void on_error(writeup::engine::ErrorKind, const std::string&) override {}
  std::shared_ptr<Flight> flight;
};

// Regression: the job can finish on the worker before the service hands it to the flight. A
// flight that kept it then held the job whose callbacks hold the flight: a cycle, never freed.
TEST(Flight, AJobHandedOverAfterTheFlightEndedIsNotKept) {
  auto flight = std::make_shared<Flight>(nullptr);
  std::weak_ptr<Flight> weak = flight;
  Recorder a;
  flight->join(a.events());
  auto job = std::make_shared<writeup::engine::Job>(writeup::generate::GenerationRequest{},
                                                    std::make_shared<HoldingSink>(flight));
  flight->done(results());  // the worker finished it...
  flight->set_job(job);     // ...before the submitter got here
  EXPECT_EQ(a.done.size(), 2u);
  std::weak_ptr<writeup::engine::Job> weak_job = job;
  job.reset();
  flight.reset();
  EXPECT_TRUE(weak_job.expired());
  EXPECT_TRUE(weak.expired());
}

TEST(Flight, AJobOfARunningFlightIsReleasedWhenTheFlightEnds) {
  auto flight = std::make_shared<Flight>(nullptr);
  std::weak_ptr<Flight> weak = flight;
  Recorder a;
  flight->join(a.events());
  auto job = std::make_shared<writeup::engine::Job>(writeup::generate::GenerationRequest{},
                                                    std::make_shared<HoldingSink>(flight));
  flight->set_job(job);
  flight->done(results());
  std::weak_ptr<writeup::engine::Job> weak_job = job;
  job.reset();
  flight.reset();
  EXPECT_TRUE(weak_job.expired());
  EXPECT_TRUE(weak.expired());
}

TEST(Flight, ErrorsReachEverySubscriber) {
  Flight f(nullptr);
  Recorder a, b;
  f.join(a.events());
  f.join(b.events());
  f.error(writeup::service::engine_error(writeup::engine::ErrorKind::out_of_memory, "no room"));
  EXPECT_EQ(a.error, "out_of_memory");
  EXPECT_EQ(b.error, "out_of_memory");
  EXPECT_TRUE(a.oom);  // typed: sessions pick the frame from the kind
  EXPECT_FALSE(ServiceError(writeup::api::ApiError(503, "out_of_memory", "a code is not a kind")).out_of_memory());
}

// Regression: subscribers were called under the flight's lock, so one that touched the flight
// (leave, finished, subscribers) from its event deadlocked the producer's thread.
TEST(Flight, SubscribersRunOutsideTheLock) {
  Flight f(nullptr);
  std::uint64_t id = 0;
  std::size_t seen_subscribers = 0;
  bool seen_finished = true;
  StreamEvents e;
  e.on_text = [&](const std::vector<TextDelta>&) {
    seen_subscribers = f.subscribers();
    seen_finished = f.finished();
  };
  e.on_done = [&](const std::vector<GeneratedSequence>&) { f.leave(id); };
  Recorder other;
  id = f.join(e);
  f.join(other.events());
  f.text(delta(0, "x", 1));
  EXPECT_EQ(seen_subscribers, 2u);
  EXPECT_FALSE(seen_finished);
  f.done(results());
  EXPECT_TRUE(f.finished());
  EXPECT_EQ(other.done.size(), 2u);
}

TEST(Flight, AReleaseOfSeveralSequencesReachesSubscribersWhole) {
  Flight f(nullptr);
  std::vector<TextDelta> got;
  StreamEvents e;
  e.on_text = [&](const std::vector<TextDelta>& ds) { got = ds; };
  f.join(e);
  f.text({text_delta(0, "a", 1), text_delta(1, "b", 2)});
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].index, 1);
  EXPECT_EQ(got[1].text, "b");
  EXPECT_EQ(got[1].tokens, 2);
  // A late joiner gets each sequence's text so far, with its latest token count.
  f.text({text_delta(1, "c", 3)});
  std::vector<TextDelta> replay;
  StreamEvents le;
  le.on_text = [&](const std::vector<TextDelta>& ds) { replay = ds; };
  f.join(le);
  ASSERT_EQ(replay.size(), 2u);
  EXPECT_EQ(replay[0].text, "a");
  EXPECT_EQ(replay[1].text, "bc");
  EXPECT_EQ(replay[1].tokens, 3);
}

// Subscribers run outside the state lock, yet a joiner's replay still comes before any later
// release: whoever joins while the producer streams gets the whole text, in order, once.
TEST(Flight, JoinersDuringAStreamGetEveryByteInOrder) {
  Flight f(nullptr);
  constexpr int kReleases = 2000, kJoiners = 8;
  std::vector<std::string> got(kJoiners);
  std::vector<int> done(kJoiners, 0);
  std::atomic<int> produced{0};
  std::thread producer([&] {
    for (int i = 0; i < kReleases; ++i) {
      f.text(delta(0, std::string(1, static_cast<char>('a' + i % 26)), i + 1));
      ++produced;
    }
    f.done(results());
  });
  std::thread joiner([&] {
    for (int k = 0; k < kJoiners; ++k) {
      // Join at different points of the stream (bounded: the producer ends after kReleases).
      for (int spin = 0; spin < 100000 && produced.load() < k * kReleases / kJoiners; ++spin) std::this_thread::yield();
      StreamEvents e;
      e.on_text = [&got, k](const std::vector<TextDelta>& ds) {
        for (const auto& d : ds) got[static_cast<std::size_t>(k)] += d.text;
      };
      e.on_done = [&done, k](const std::vector<GeneratedSequence>&) { ++done[static_cast<std::size_t>(k)]; };
      f.join(e);
    }
  });
  producer.join();
  joiner.join();
  std::string all;
  for (int i = 0; i < kReleases; ++i) all += static_cast<char>('a' + i % 26);
  for (int k = 0; k < kJoiners; ++k) {
    if (done[static_cast<std::size_t>(k)] == 0) continue;  // joined after the end: refused
    EXPECT_EQ(got[static_cast<std::size_t>(k)], all) << "joiner " << k;
    EXPECT_EQ(done[static_cast<std::size_t>(k)], 1);
  }
}

TEST(CachedResponse, ResultsRoundTripAndForeignValuesAreRejected) {
  const auto encoded = writeup::service::encode_results(results());
  const auto decoded = writeup::service::decode_results(encoded, 2);
  ASSERT_TRUE(decoded);
  ASSERT_EQ(decoded->size(), 2u);
  EXPECT_EQ((*decoded)[0].tokens, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ((*decoded)[1].text, "ü");
  EXPECT_EQ((*decoded)[1].finish_reason, "stop");
  EXPECT_FALSE(writeup::service::decode_results(encoded, 3));  // another n
  EXPECT_FALSE(writeup::service::decode_results("garbage", 2));
  EXPECT_FALSE(writeup::service::decode_results(R"({"writeup_response":2,"sequences":[]})", 0));
  auto cancelled = results();
  cancelled[1].finish_reason = "cancelled";
  EXPECT_FALSE(writeup::service::cacheable(cancelled));
  EXPECT_FALSE(writeup::service::decode_results(writeup::service::encode_results(cancelled), 2));
}

// Issue 13: admission is an event, replayed to joiners, so a stream starts only once admitted.
TEST(Flight, AdmissionReachesSubscribersAndLaterJoiners) {
  writeup::service::Flight f(nullptr);
  int a = 0, b = 0;
  writeup::service::StreamEvents ea, eb;
  ea.on_admitted = [&] { ++a; };
  eb.on_admitted = [&] { ++b; };
  const auto ida = f.join(ea);
  ASSERT_NE(ida, 0u);
  EXPECT_EQ(a, 0);
  f.admit();
  f.admit();  // once
  EXPECT_EQ(a, 1);
  ASSERT_NE(f.join(eb), 0u);
  EXPECT_EQ(b, 1);
}

TEST(Flight, ACompositeSubscriptionLeavesEveryPart) {
  auto f1 = std::make_shared<writeup::service::Flight>(nullptr);
  auto f2 = std::make_shared<writeup::service::Flight>(nullptr);
  auto s1 = std::make_shared<writeup::service::Subscription>(f1, f1->join({}));
  auto s2 = std::make_shared<writeup::service::Subscription>(f2, f2->join({}));
  writeup::service::Subscription all({s1, s2});
  all.cancel();
  EXPECT_TRUE(f1->abandoned());
  EXPECT_TRUE(f2->abandoned());
}

TEST(CachedResponse, KeysCoverEveryParameterAndSeparateTheApis) {
  writeup::generate::GenerationRequest r;
  r.prompt = {1, 2};
  r.params.temperature = 0.7f;
  const auto key = [&](const writeup::generate::GenerationRequest& q, std::string_view space = "writeup") {
    return writeup::service::response_cache_key(space, "m", "fp", "Hi", q);
  };
  const auto base = key(r);
  EXPECT_EQ(base.rfind("writeup:v1:writeup:", 0), 0u);
  auto same = r;
  same.params.temperature = static_cast<float>(0.70);
  EXPECT_EQ(key(same), base);
  EXPECT_NE(key(r, "openai"), base);
  EXPECT_EQ(writeup::service::response_cache_key("writeup", "m", "", "Hi", r), "");  // not loaded
  std::vector<writeup::generate::GenerationRequest> changed(10, r);
  changed[9].params.logit_bias = {{13, 5.0f}};
  changed[0].params.temperature = 0.8f;
  changed[1].params.top_k = 5;
  changed[2].params.top_p = 0.5f;
  changed[3].params.repetition_penalty = 1.1f;
  changed[4].params.presence_penalty = 0.1f;
  changed[5].params.frequency_penalty = 0.1f;
  changed[6].params.max_tokens = 17;
  changed[7].params.stop = {"\n"};
  changed[8].params.seed = 43;
  for (const auto& c : changed) EXPECT_NE(key(c), base);
  auto n = r;
  n.n = 2;
  EXPECT_NE(key(n), base);
  EXPECT_NE(writeup::service::response_cache_key("writeup", "m", "fp2", "Hi", r), base);
  EXPECT_NE(writeup::service::response_cache_key("writeup", "m", "fp", "Hi!", r), base);
}

}  // namespace

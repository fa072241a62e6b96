#include "writeup/metrics/registry.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "test_support.hpp"

using namespace writeup::metrics;
namespace t = writeup::test;

namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

bool on_path(const std::string& program) {
  return t::run_command("command -v " + program + " >/dev/null", true).status == 0;
}

}  // namespace

TEST(Metrics, ExpositionTextIsExact) {
  Registry r;
  r.counter("writeup_requests_total", "Requests served.", {{"route", "/v1/completions"},
                                                          {"status", "200"}})
      .inc(3);
  r.counter("writeup_requests_total", "Requests served.", {{"route", "/health"},
                                                          {"status", "200"}})
      .inc();
  r.gauge("writeup_running_sequences", "Sequences in a batch.").set(0.25);
  auto& h = r.histogram("writeup_ttft_seconds", "Time to first token.", {0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(7);
  EXPECT_EQ(r.exposition(),
            "# HELP writeup_requests_total Requests served.\n"
            "# TYPE writeup_requests_total counter\n"
            "writeup_requests_total{route=\"/health\",status=\"200\"} 1\n"
            "writeup_requests_total{route=\"/v1/completions\",status=\"200\"} 3\n"
            "# HELP writeup_running_sequences Sequences in a batch.\n"
            "# TYPE writeup_running_sequences gauge\n"
            "writeup_running_sequences 0.25\n"
            "# HELP writeup_ttft_seconds Time to first token.\n"
            "# TYPE writeup_ttft_seconds histogram\n"
            "writeup_ttft_seconds_bucket{le=\"0.1\"} 1\n"
            "writeup_ttft_seconds_bucket{le=\"1\"} 2\n"
            "writeup_ttft_seconds_bucket{le=\"+Inf\"} 3\n"
            "writeup_ttft_seconds_sum 7.55\n"
            "writeup_ttft_seconds_count 3\n");
}

TEST(Metrics, EmptyRegistryRendersNothing) { EXPECT_EQ(Registry().exposition(), ""); }

TEST(Metrics, HistogramBucketsAreCumulative) {
  Registry r;
  auto& h = r.histogram("lat_seconds", "Latency.", {1, 2, 4}, {{"model", "gpt2"}});
  for (double v : {0.5, 1.0, 1.5, 3.0, 3.5, 100.0}) h.observe(v);
  EXPECT_EQ(h.count(), 6u);
  EXPECT_DOUBLE_EQ(h.sum(), 109.5);
  EXPECT_EQ(h.cumulative_counts(), (std::vector<std::uint64_t>{2, 3, 5, 6}));
  const auto text = r.exposition();
  EXPECT_TRUE(contains(text, "lat_seconds_bucket{model=\"gpt2\",le=\"1\"} 2\n")) << text;
  EXPECT_TRUE(contains(text, "lat_seconds_bucket{model=\"gpt2\",le=\"2\"} 3\n")) << text;
  EXPECT_TRUE(contains(text, "lat_seconds_bucket{model=\"gpt2\",le=\"4\"} 5\n")) << text;
  EXPECT_TRUE(contains(text, "lat_seconds_bucket{model=\"gpt2\",le=\"+Inf\"} 6\n")) << text;
  EXPECT_TRUE(contains(text, "lat_seconds_count{model=\"gpt2\"} 6\n")) << text;
  // The same series comes back; an explicit +Inf bound is the implicit one.
  EXPECT_EQ(&r.histogram("lat_seconds", "Latency.", {1, 2, 4, INFINITY}, {{"model", "gpt2"}}),
            &h);
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  Registry r;
  r.gauge("g", "Help with \\ and\nnewline \"quoted\".", {{"v", "a\\b\"c\nd"}}).set(-2);
  EXPECT_EQ(r.exposition(),
            "# HELP g Help with \\\\ and\\nnewline \"quoted\".\n"
            "# TYPE g gauge\n"
            "g{v=\"a\\\\b\\\"c\\nd\"} -2\n");
}

TEST(Metrics, FormatsNumbers) {
  EXPECT_EQ(format_value(3), "3");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(-0.0), "0");
  EXPECT_EQ(format_value(1e12), "1000000000000");
  EXPECT_EQ(format_value(0.005), "0.005");
  EXPECT_EQ(format_value(INFINITY), "+Inf");
  EXPECT_EQ(format_value(-INFINITY), "-Inf");
  EXPECT_EQ(format_value(NAN), "NaN");
}

TEST(Metrics, SameSeriesIsReturnedWhateverTheLabelOrder) {
  Registry r;
  auto& a = r.counter("x_total", "X.", {{"a", "1"}, {"b", "2"}});
  auto& b = r.counter("x_total", "X.", {{"b", "2"}, {"a", "1"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &r.counter("x_total", "X.", {{"a", "1"}, {"b", "3"}}));
}

TEST(Metrics, ConflictingRegistrationsThrow) {
  Registry r;
  r.counter("a_total", "A.");
  EXPECT_THROW(r.gauge("a_total", "A."), std::invalid_argument);
  EXPECT_THROW(r.histogram("a_total", "A.", {1}), std::invalid_argument);
  EXPECT_THROW(r.counter("a_total", "Other help."), std::invalid_argument);
  r.histogram("h", "H.", {1, 2});
  EXPECT_THROW(r.histogram("h", "H.", {1, 3}), std::invalid_argument);
  r.gauge("g", "G.", {{"k", "v"}});
  EXPECT_THROW(r.gauge_callback("g", "G.", {{"k", "v"}}, [] { return 1.0; }),
               std::invalid_argument);
  EXPECT_THROW(r.counter("g", "G."), std::invalid_argument);
}

TEST(Metrics, BadNamesAndValuesThrow) {
  Registry r;
  EXPECT_THROW(r.gauge("", "x"), std::invalid_argument);
  EXPECT_THROW(r.gauge("1abc", "x"), std::invalid_argument);
  EXPECT_THROW(r.gauge("a-b", "x"), std::invalid_argument);
  EXPECT_NO_THROW(r.gauge("ns:sub_name", "x"));
  EXPECT_THROW(r.counter("requests", "x"), std::invalid_argument);  // no _total
  EXPECT_THROW(r.gauge("g", "x", {{"__reserved", "v"}}), std::invalid_argument);
  EXPECT_THROW(r.gauge("g", "x", {{"a:b", "v"}}), std::invalid_argument);
  EXPECT_THROW(r.gauge("g", "x", {{"9a", "v"}}), std::invalid_argument);
  EXPECT_THROW(r.gauge("g", "x", {{"a", "1"}, {"a", "2"}}), std::invalid_argument);
  EXPECT_THROW(r.histogram("h", "x", {1}, {{"le", "1"}}), std::invalid_argument);
  EXPECT_THROW(r.histogram("h", "x", {2, 1}), std::invalid_argument);
  EXPECT_THROW(r.histogram("h", "x", {1, NAN}), std::invalid_argument);
  auto& c = r.counter("c_total", "x");
  EXPECT_THROW(c.inc(-1), std::invalid_argument);
  EXPECT_THROW(c.inc(NAN), std::invalid_argument);
  EXPECT_EQ(c.value(), 0);
}

TEST(Metrics, GaugeGoesUpAndDown) {
  Registry r;
  auto& g = r.gauge("g", "G.");
  g.inc(5);
  g.dec(2);
  g.inc();
  EXPECT_EQ(g.value(), 4);
  g.set(-1.5);
  EXPECT_EQ(g.value(), -1.5);
}

TEST(Metrics, ConcurrentIncrementsSumExactly) {
  Registry r;
  auto& h = r.histogram("h", "H.", latency_buckets());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&r, &h, t] {
      for (int i = 0; i < 20000; ++i) {
        r.counter("n_total", "N.").inc();
        r.counter("n_total", "N.", {{"thread", std::to_string(t)}}).inc(0.5);
        r.gauge("g", "G.").inc(2);
        h.observe(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(r.counter("n_total", "N.").value(), 80000);
  EXPECT_EQ(r.counter("n_total", "N.", {{"thread", "2"}}).value(), 10000);
  EXPECT_EQ(r.gauge("g", "G.").value(), 160000);
  EXPECT_EQ(h.count(), 80000u);
  EXPECT_EQ(h.sum(), 80000);
}

TEST(Metrics, CallbackGaugeIsReadAtScrapeTime) {
  Registry r;
  int depth = 3;
  r.gauge_callback("queue_depth", "Waiting requests.", {{"model", "gpt2"}},
                   [&depth] { return static_cast<double>(depth); });
  r.gauge("queue_depth", "Waiting requests.", {{"model", "a"}}).set(1);
  r.gauge_callback("queue_depth", "Waiting requests.", {{"model", "z"}},
                   []() -> double { throw std::runtime_error("worker gone"); });
  const std::string head =
      "# HELP queue_depth Waiting requests.\n# TYPE queue_depth gauge\n"
      "queue_depth{model=\"a\"} 1\n";
  EXPECT_EQ(r.exposition(), head + "queue_depth{model=\"gpt2\"} 3\n");
  depth = 7;
  EXPECT_EQ(r.exposition(), head + "queue_depth{model=\"gpt2\"} 7\n");
  // A callback may use the registry (it runs outside the lock); re-registering replaces it.
  r.gauge_callback("queue_depth", "Waiting requests.", {{"model", "gpt2"}},
                   [&r] { return r.gauge("queue_depth", "Waiting requests.", {{"model", "a"}})
                              .value() + 10; });
  EXPECT_EQ(r.exposition(), head + "queue_depth{model=\"gpt2\"} 11\n");
}

TEST(Metrics, LatencyBuckets) {
  const auto b = latency_buckets();
  ASSERT_GE(b.size(), 12u);
  ASSERT_LE(b.size(), 16u);
  EXPECT_EQ(b.front(), 0.005);
  EXPECT_EQ(b.back(), 60);
  for (std::size_t i = 1; i < b.size(); ++i) EXPECT_GT(b[i], b[i - 1]);
}

TEST(Metrics, PromtoolAcceptsTheExposition) {
  if (!on_path("promtool")) GTEST_SKIP() << "promtool not on PATH (apt-get install prometheus)";
  Registry r;
  r.counter("writeup_http_requests_total", "HTTP requests by route and status.",
            {{"route", "/v1/completions"}, {"status", "200"}})
      .inc(12);
  r.counter("writeup_http_requests_total", "HTTP requests by route and status.",
            {{"route", "/ws"}, {"status", "101"}})
      .inc();
  r.counter("writeup_tokens_generated_total", "Tokens generated.").inc(1e6);
  r.gauge("writeup_device_memory_allocated_bytes", "Device memory allocated.",
          {{"worker", "0"}, {"note", "quote\" back\\slash\nnewline"}})
      .set(123456789);
  r.gauge_callback("writeup_queue_depth", "Requests waiting.\nSecond line \\ here.",
                   {{"model", "gpt2"}}, [] { return 4.0; });
  auto& h = r.histogram("writeup_time_to_first_token_seconds", "Time to first token.",
                        latency_buckets(), {{"model", "gpt2"}});
  for (double v : {0.001, 0.02, 0.3, 4.0, 90.0}) h.observe(v);
  r.histogram("writeup_time_per_token_seconds", "Time per generated token.", latency_buckets());

  t::TempDir dir;
  t::write_file(dir / "metrics.txt", r.exposition());
  const auto res = t::run_command("promtool check metrics < '" + (dir / "metrics.txt").string() +
                                  "'");
  EXPECT_EQ(res.status, 0) << res.output << "\n---\n" << r.exposition();
  std::istringstream lines(res.output);
  for (std::string line; std::getline(lines, line);) {
    std::string lower = line;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_FALSE(contains(lower, "error")) << line;
  }
}

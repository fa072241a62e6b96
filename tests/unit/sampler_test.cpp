#include "writeup/generate/sampler.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <algorithm>
#include <map>
#include <numeric>
#include <set>

using namespace writeup::generate;

namespace {

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> out;
  for (double v : p) out.push_back(static_cast<float>(std::log(v)));
  return out;
}

std::set<int> ids_of(const std::vector<std::pair<int, double>>& c) {
  std::set<int> s;
  for (const auto& [id, p] : c) s.insert(id);
  return s;
}

SamplingParams params(float temperature, int top_k = 0, float top_p = 1.0f, std::uint64_t seed = 42) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.seed = seed;
  return p;
}

// Pearson chi-square of `counts` against probabilities `p`.
double chi_square(const std::vector<int>& counts, const std::vector<double>& p, int n) {
  double chi = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double e = p[i] * n;
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

}  // namespace

TEST(Sampler, TopKOneEqualsGreedy) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0, 3);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> logits(1000);
    for (auto& l : logits) l = normal(rng);
    Sampler greedy(params(0), 0, {}), top1(params(0.8f, 1, 1.0f, trial), 0, {});
    EXPECT_EQ(greedy.sample(logits), top1.sample(logits));
  }
}

TEST(Sampler, GreedyBreaksTiesByLowestId) {
  Sampler s(params(0), 0, {});
  EXPECT_EQ(s.sample(std::vector<float>{1, 3, 2, 3}), 1);
}

TEST(Sampler, TopKKeepsExactlyTheKBest) {
  Sampler s(params(1, 3), 0, {});
  const std::vector<float> logits{1, 5, 3, 5, 0, 4};
  EXPECT_EQ(ids_of(s.candidates(logits)), (std::set<int>{1, 3, 5}));
  const auto c = s.candidates(logits);
  double sum = 0;
  for (const auto& [id, p] : c) sum += p;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_NEAR(c[0].second, std::exp(5) / (2 * std::exp(5) + std::exp(4)), 1e-12);
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingTheMass) {
  const auto logits = log_probs({0.05, 0.5, 0.1, 0.2, 0.15});
  EXPECT_EQ(ids_of(Sampler(params(1, 0, 0.3f), 0, {}).candidates(logits)), (std::set<int>{1}));
  EXPECT_EQ(ids_of(Sampler(params(1, 0, 0.6f), 0, {}).candidates(logits)), (std::set<int>{1, 3}));
  EXPECT_EQ(ids_of(Sampler(params(1, 0, 0.9f), 0, {}).candidates(logits)), (std::set<int>{1, 3, 4, 2}));
  EXPECT_EQ(ids_of(Sampler(params(1, 0, 1.0f), 0, {}).candidates(logits)).size(), 5u);
  // top-k first, then top-p within the k.
  EXPECT_EQ(ids_of(Sampler(params(1, 2, 0.75f), 0, {}).candidates(logits)), (std::set<int>{1, 3}));
  const auto c = Sampler(params(1, 0, 0.6f), 0, {}).candidates(logits);
  EXPECT_NEAR(c[0].second, 0.5 / 0.7, 1e-6);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferent) {
  const std::vector<float> logits(500, 0.0f);  // uniform: every draw is pure randomness
  auto draw = [&](std::uint64_t seed, int index) {
    Sampler s(params(1, 0, 1.0f, seed), index, {});
    std::vector<int> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.sample(logits));
    return out;
  };
  EXPECT_EQ(draw(42, 0), draw(42, 0));
  EXPECT_NE(draw(42, 0), draw(43, 0));
  EXPECT_NE(draw(42, 0), draw(42, 1));  // each sequence of a request has its own stream
}

TEST(Sampler, TemperatureOneFollowsTheSoftmax) {
  const std::vector<double> p{0.3, 0.2, 0.15, 0.12, 0.1, 0.07, 0.04, 0.02};
  const auto logits = log_probs(p);
  Sampler s(params(1, 0, 1.0f, 2026), 0, {});
  const int n = 40000;
  std::vector<int> counts(p.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(s.sample(logits))];
  // 7 degrees of freedom: 24.32 is the p = 0.001 critical value.
  EXPECT_LT(chi_square(counts, p, n), 24.32);
}

TEST(Sampler, TemperatureSharpensTheDistribution) {
  const std::vector<double> p{0.4, 0.3, 0.2, 0.1};
  const auto logits = log_probs(p);
  // At T = 0.5, probabilities are p^2 renormalised.
  std::vector<double> q;
  double z = 0;
  for (double v : p) z += v * v;
  for (double v : p) q.push_back(v * v / z);
  Sampler s(params(0.5f, 0, 1.0f, 99), 0, {});
  const int n = 30000;
  std::vector<int> counts(p.size(), 0);
  for (int i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(s.sample(logits))];
  EXPECT_LT(chi_square(counts, q, n), 16.27);  // 3 dof, p = 0.001
  EXPECT_GT(chi_square(counts, p, n), 100.0);  // and clearly not the T = 1 distribution
}

TEST(Sampler, PenaltiesLowerRepeatedTokens) {
  const std::vector<float> logits{2, 2, 2, -1};
  SamplingParams rp = params(1);
  rp.repetition_penalty = 2.0f;
  const std::vector<int> prompt{0, 3};
  auto c = Sampler(rp, 0, prompt).candidates(logits);
  std::map<int, double> prob(c.begin(), c.end());
  EXPECT_NEAR(prob[0] / prob[1], std::exp(1.0 - 2.0), 1e-9);  // 2 / 2 = 1 vs 2
  EXPECT_NEAR(prob[3] / prob[1], std::exp(-2.0 - 2.0), 1e-9);  // -1 * 2 = -2
  SamplingParams pf = params(1);
  pf.presence_penalty = 0.5f;
  pf.frequency_penalty = 0.25f;
  Sampler s(pf, 0, {});
  s.observe(2);
  s.observe(2);
  c = s.candidates(logits);
  prob = std::map<int, double>(c.begin(), c.end());
  EXPECT_NEAR(prob[2] / prob[0], std::exp(-(0.5 + 2 * 0.25)), 1e-9);
}

TEST(Sampler, InvalidParametersNameTheField) {
  auto message = [](SamplingParams p) {
    try {
      p.validate();
      return std::string();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
  };
  SamplingParams p;
  p.temperature = -1;
  EXPECT_EQ(message(p).rfind("temperature", 0), 0u);
  p = {};
  p.top_p = 1.5f;
  EXPECT_EQ(message(p).rfind("top_p", 0), 0u);
  p = {};
  p.top_k = -2;
  EXPECT_EQ(message(p).rfind("top_k", 0), 0u);
  p = {};
  p.max_tokens = 0;
  EXPECT_EQ(message(p).rfind("max_tokens", 0), 0u);
  p = {};
  p.stop = {""};
  EXPECT_EQ(message(p).rfind("stop", 0), 0u);
  EXPECT_EQ(message(SamplingParams{}), "");
}

TEST(Sampler, TopPOverALargeVocabularyKeepsTheHighestMassPrefix) {
  // Checks the growing-prefix search against a plain full sort on 50257 logits.
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0, 2);
  std::vector<float> logits(50257);
  for (auto& l : logits) l = normal(rng);
  for (float top_p : {0.05f, 0.5f, 0.95f}) {
    const auto got = Sampler(params(1, 0, top_p), 0, {}).candidates(logits);
    std::vector<int> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int x, int y) {
      return logits[x] > logits[y] || (logits[x] == logits[y] && x < y);
    });
    double z = 0;
    for (float l : logits) z += std::exp(static_cast<double>(l));
    double mass = 0;
    std::size_t keep = 0;
    while (mass < top_p * z) mass += std::exp(static_cast<double>(logits[order[keep++]]));
    ASSERT_EQ(got.size(), keep) << top_p;
    for (std::size_t i = 0; i < keep; ++i) EXPECT_EQ(got[i].first, order[i]);
  }
}

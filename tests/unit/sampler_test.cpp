#include "writeup/generate/sampler.hpp"
#include "writeup/util/hash.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <limits>
#include <string>

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

// ---------------------------------------------------------------------------------------------
// The selection-based sampler against the definition it must keep: a full sort of the
// candidates (higher score first, equal scores by lower id) with every sum taken sequentially in
// that order (the sampler before it selected instead of sorting).

namespace {

class ReferenceSampler {
 public:
  ReferenceSampler(const SamplingParams& p, int index, std::vector<int> prompt)
      : p_(p), rng_(sequence_seed(p.seed, index)), prompt_(std::move(prompt)) {}

  std::vector<std::pair<int, double>> candidates(const std::vector<float>& logits) const {
    std::vector<double> a = adjusted(logits);
    const int V = static_cast<int>(a.size());
    const auto better = [&](int x, int y) { return a[x] > a[y] || (a[x] == a[y] && x < y); };
    std::vector<int> ids(static_cast<std::size_t>(V));
    std::iota(ids.begin(), ids.end(), 0);
    if (p_.greedy()) {
      std::sort(ids.begin(), ids.end(), better);
      return {{ids[0], 1.0}};
    }
    for (double& v : a) v /= p_.temperature;
    bool sorted = false;
    if (p_.top_k > 0 && p_.top_k < V) {
      std::sort(ids.begin(), ids.end(), better);
      ids.resize(static_cast<std::size_t>(p_.top_k));
      sorted = true;
    }
    double max = -INFINITY;
    for (int i : ids) max = std::max(max, a[i]);
    double total = 0;
    for (int i : ids) total += std::exp(a[i] - max);
    if (p_.top_p < 1.0f) {
      if (!sorted) std::sort(ids.begin(), ids.end(), better);
      const double need = p_.top_p * total;
      double mass = 0;
      std::size_t keep = 0;
      while (keep < ids.size() && mass < need) mass += std::exp(a[ids[keep++]] - max);
      ids.resize(keep);
    }
    std::vector<std::pair<int, double>> out;
    double sum = 0;
    for (int i : ids) {
      out.emplace_back(i, std::exp(a[i] - max));
      sum += out.back().second;
    }
    for (auto& c : out) c.second /= sum;
    return out;
  }

  int sample(const std::vector<float>& logits) {
    int token;
    if (!p_.greedy() && p_.top_k == 0 && p_.top_p >= 1.0f) {
      token = draw_full(logits);
    } else {
      const auto c = candidates(logits);
      token = c[0].first;
      if (c.size() > 1) {
        const double u = uniform();
        double cum = 0;
        token = c.back().first;
        for (const auto& [id, q] : c) {
          cum += q;
          if (u < cum) {
            token = id;
            break;
          }
        }
      }
    }
    ++generated_[token];
    return token;
  }

 private:
  std::vector<double> adjusted(const std::vector<float>& logits) const {
    std::vector<double> a(logits.begin(), logits.end());
    std::set<int> seen(prompt_.begin(), prompt_.end());
    for (const auto& [t, n] : generated_) seen.insert(t);
    if (p_.repetition_penalty != 1.0f) {
      for (int t : seen) a[t] = a[t] > 0 ? a[t] / p_.repetition_penalty : a[t] * p_.repetition_penalty;
    }
    for (const auto& [t, n] : generated_) a[t] -= p_.presence_penalty + p_.frequency_penalty * n;
    return a;
  }
  int draw_full(const std::vector<float>& logits) {
    std::vector<double> a = adjusted(logits);
    double max = -INFINITY;
    for (double v : a) max = std::max(max, v);
    double sum = 0;
    for (double& v : a) {
      v = std::exp((v - max) * (1.0 / p_.temperature));
      sum += v;
    }
    const double target = uniform() * sum;
    double cum = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      cum += a[i];
      if (target < cum) return static_cast<int>(i);
    }
    return static_cast<int>(a.size()) - 1;
  }
  double uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<int> prompt_;
  std::map<int, int> generated_;
};

enum class Shape { flat, peaked, ties, constant };

// A row of `V` logits: flat N(0, 0.7), peaked (N(0, 2) with a few tokens raised by 6..14),
// ties (N(0, 1.5) rounded to halves: many equal scores) or constant (all equal).
std::vector<float> make_row(Shape shape, int V, std::mt19937& rng) {
  std::normal_distribution<float> flat(0, 0.7f), wide(0, 2), mid(0, 1.5f);
  std::uniform_real_distribution<float> boost(6, 14);
  std::uniform_int_distribution<int> id(0, V - 1);
  std::vector<float> row(static_cast<std::size_t>(V));
  for (auto& l : row) {
    switch (shape) {
      case Shape::flat: l = flat(rng); break;
      case Shape::peaked: l = wide(rng); break;
      case Shape::ties: l = std::round(mid(rng) * 2) / 2; break;
      case Shape::constant: l = 0.25f; break;
    }
  }
  if (shape == Shape::peaked) {
    for (int i = 0; i < std::max(1, V / 1000 + 3); ++i) row[static_cast<std::size_t>(id(rng))] += boost(rng);
  }
  return row;
}

SamplingParams random_params(std::mt19937& rng, int V) {
  const float temperatures[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.0f, 2.5f};
  const int top_ks[] = {0, 0, 0, 1, 2, 10, 40, 300, 1000, V - 1, V, V + 5};
  const float top_ps[] = {1.0f, 1.0f, 0.05f, 0.5f, 0.9f, 0.9f, 0.95f, 0.999f};
  auto pick = [&](const auto& options) {
    return options[std::uniform_int_distribution<std::size_t>(0, std::size(options) - 1)(rng)];
  };
  SamplingParams p;
  p.temperature = pick(temperatures);
  p.top_k = std::max(0, pick(top_ks));
  p.top_p = pick(top_ps);
  p.seed = rng();
  const int penalties = std::uniform_int_distribution<int>(0, 3)(rng);
  if (penalties == 1) p.repetition_penalty = 1.2f;
  if (penalties == 2) {
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.3f;
  }
  return p;
}

std::vector<int> random_prompt(std::mt19937& rng, int V) {
  std::vector<int> prompt(std::uniform_int_distribution<std::size_t>(0, 30)(rng));
  for (auto& t : prompt) t = std::uniform_int_distribution<int>(0, V - 1)(rng);
  return prompt;
}

std::string describe(const SamplingParams& p, int V, int shape) {
  return "V=" + std::to_string(V) + " shape=" + std::to_string(shape) + " T=" + std::to_string(p.temperature) +
         " top_k=" + std::to_string(p.top_k) + " top_p=" + std::to_string(p.top_p) +
         " rep=" + std::to_string(p.repetition_penalty) + " pres=" + std::to_string(p.presence_penalty);
}

}  // namespace

TEST(Sampler, CandidatesEqualAFullSortOnManyRows) {
  std::mt19937 rng(20261201);
  const int sizes[] = {1, 2, 3, 7, 64, 257, 300, 1000, 4000, 9000};
  for (int trial = 0; trial < 700; ++trial) {
    const int V = trial < 20 ? 50257 : sizes[trial % std::size(sizes)];
    const int shape = trial % 4;
    const auto row = make_row(static_cast<Shape>(shape), V, rng);
    const SamplingParams p = random_params(rng, V);
    const auto prompt = random_prompt(rng, V);
    Sampler s(p, 0, prompt);
    ReferenceSampler ref(p, 0, prompt);
    for (int t = 0; t < 3; ++t) {  // after a few observed tokens, so the penalties change the row
      const auto got = s.candidates(row);
      const auto want = ref.candidates(row);
      ASSERT_EQ(got.size(), want.size()) << describe(p, V, shape) << " step " << t;
      for (std::size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i].first, want[i].first) << describe(p, V, shape) << " rank " << i;
        ASSERT_EQ(got[i].second, want[i].second) << describe(p, V, shape) << " rank " << i;
      }
      const int token = ref.sample(row);
      s.observe(token);
    }
  }
}

TEST(Sampler, DrawsTheSameTokensAsAFullSort) {
  std::mt19937 rng(77);
  const int sizes[] = {2, 50, 600, 5000, 50257};
  for (int trial = 0; trial < 150; ++trial) {
    const int V = sizes[trial % std::size(sizes)];
    const int shape = (trial / 5) % 4;
    SamplingParams p = random_params(rng, V);
    if (trial % 3 == 0) {  // the costly case: top-p alone over a flat row keeps most of the vocabulary
      p.temperature = 1.0f;
      p.top_k = 0;
      p.top_p = 0.9f;
    }
    const auto prompt = random_prompt(rng, V);
    std::vector<std::vector<float>> rows;
    for (int r = 0; r < 3; ++r) rows.push_back(make_row(static_cast<Shape>(shape), V, rng));
    Sampler s(p, trial % 3, prompt);
    ReferenceSampler ref(p, trial % 3, prompt);
    const int steps = V > 10000 ? 6 : 25;
    for (int t = 0; t < steps; ++t) {
      const auto& row = rows[static_cast<std::size_t>(t) % rows.size()];
      ASSERT_EQ(s.sample(row), ref.sample(row)) << describe(p, V, shape) << " step " << t;
    }
  }
}

TEST(Sampler, ABoundaryExactlyOnTheTopPMassIsDecidedAsAFullSortDoes) {
  // 1000 equal logits: every prefix mass is an integer and top_p 0.5 needs exactly 500 of
  // 1000, so the selection's estimate cannot decide alone; 0.375 * 1000 is exact as well.
  const std::vector<float> row(1000, 1.5f);
  for (float top_p : {0.5f, 0.375f, 0.001f}) {
    SamplingParams p = params(1, 0, top_p);
    const auto got = Sampler(p, 0, {}).candidates(row);
    const auto want = ReferenceSampler(p, 0, {}).candidates(row);
    ASSERT_EQ(got, want) << top_p;
    EXPECT_EQ(got.size(), static_cast<std::size_t>(std::ceil(static_cast<double>(top_p) * 1000))) << top_p;
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].first, static_cast<int>(i));  // ties: lower id first
    Sampler s(p, 1, {});
    ReferenceSampler r(p, 1, {});
    for (int t = 0; t < 200; ++t) ASSERT_EQ(s.sample(row), r.sample(row)) << top_p << " step " << t;
  }
}

TEST(Sampler, NonFiniteLogitsGiveATokenInRange) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> with_nan{nan, 1.0f, nan, 2.0f, -inf};
  for (const auto& p : {params(0), params(1), params(1, 0, 0.9f), params(1, 2, 1.0f), params(0.5f, 0, 0.9f)}) {
    for (int t = 0; t < 50; ++t) {
      const int token = Sampler(p, t, {}).sample(with_nan);
      EXPECT_TRUE(token == 1 || token == 3) << token;  // never a NaN or the -inf token
    }
  }
  const std::vector<float> with_inf{1.0f, inf, 3.0f, inf};
  for (int t = 0; t < 50; ++t) {
    const int token = Sampler(params(1, 0, 0.5f, t), 0, {}).sample(with_inf);
    EXPECT_TRUE(token == 1 || token == 3) << token;  // the +inf logits hold all the mass
  }
  const std::vector<float> all_masked(8, -inf);
  const int token = Sampler(params(1, 3, 0.9f), 0, {}).sample(all_masked);
  EXPECT_GE(token, 0);
  EXPECT_LT(token, 8);
}

namespace {

// A row of 50257 logits from splitmix64 only (no library distribution): the same on every
// platform. Flat: uniform in [-2, 2); peaked: uniform in [-4, 4) with every 997th id raised by 9.
std::vector<float> portable_row(bool peaked, std::uint64_t seed) {
  std::vector<float> row(50257);
  std::uint64_t x = seed;
  for (std::size_t i = 0; i < row.size(); ++i) {
    x = writeup::splitmix64(x);
    const double unit = static_cast<double>(x >> 11) * 0x1.0p-53;
    row[i] = static_cast<float>(peaked ? unit * 8 - 4 + (i % 997 == 5 ? 9 : 0) : unit * 4 - 2);
  }
  return row;
}

}  // namespace

TEST(Sampler, SeededDrawsAreTheSameAsBeforeTheSelection) {
  // Tokens the full-sort sampler drew (commit 221b8b4) for these seeds and rows: the
  // selection must not change which token a seed gives.
  struct Case {
    bool peaked;
    SamplingParams p;
    std::vector<int> want;
  };
  SamplingParams rep = params(1, 0, 0.9f, 7);
  rep.repetition_penalty = 1.2f;
  const std::vector<Case> cases{
      {false, params(1, 0, 0.9f, 42), {12219, 16593, 31127, 42834, 12298, 41235, 29043, 25428}},
      {true, params(1, 0, 0.9f, 42), {14960, 36894, 40882, 44870, 15957, 4990, 12966, 1002}},
      {false, params(1, 40, 0.9f, 43), {111, 47704, 35745, 47916, 371, 4055, 8980, 46463}},
      {false, params(0.7f, 10, 1.0f, 44), {1193, 34382, 29293, 1193, 34382, 33934, 1193, 39032}},
      {false, params(1, 1000, 1.0f, 45), {29334, 41111, 4347, 14324, 8869, 23391, 46928, 27753}},
      {false, rep, {5738, 4863, 34594, 649, 3016, 5546, 24206, 3962}},
      {true, params(2.5f, 0, 0.95f, 46), {45520, 22372, 9667, 35771, 49288, 26091, 7040, 19343}},
  };
  const std::vector<int> prompt{11, 22, 33};
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const auto& k = cases[c];
    Sampler s(k.p, 0, prompt);
    std::vector<int> got;
    for (int t = 0; t < 8; ++t) {
      got.push_back(s.sample(portable_row(k.peaked, 1000 * c + static_cast<std::uint64_t>(t % 3))));
    }
    EXPECT_EQ(got, k.want) << "case " << c;
  }
}

#include "writeup/generate/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <unordered_set>

#include "writeup/util/hash.hpp"

namespace writeup::generate {

std::uint64_t sequence_seed(std::uint64_t seed, int index) {
  return splitmix64(splitmix64(seed) ^ (0x5851f42d4c957f2dULL * (static_cast<std::uint64_t>(index) + 1)));
}

Sampler::Sampler(const SamplingParams& params, int index, std::span<const int> prompt)
    : params_(params), rng_(sequence_seed(params.seed, index)), prompt_(prompt.begin(), prompt.end()) {
  params_.validate();
}

void Sampler::observe(int token) { ++generated_[token]; }

double Sampler::uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

namespace {

// Applies the repetition, presence and frequency penalties to `a` (logits as double) in place.
void apply_penalties(std::vector<double>& a, const SamplingParams& params, const std::vector<int>& prompt,
                     const std::unordered_map<int, int>& generated) {
  const auto in_range = [&](int t) { return t >= 0 && static_cast<std::size_t>(t) < a.size(); };
  if (params.repetition_penalty != 1.0f) {
    std::unordered_set<int> seen(prompt.begin(), prompt.end());
    for (const auto& [t, n] : generated) seen.insert(t);
    for (int t : seen) {
      if (!in_range(t)) continue;
      a[t] = a[t] > 0 ? a[t] / params.repetition_penalty : a[t] * params.repetition_penalty;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    for (const auto& [t, n] : generated) {
      if (in_range(t)) a[t] -= params.presence_penalty + params.frequency_penalty * n;
    }
  }
}

}  // namespace

std::vector<double> Sampler::adjusted(std::span<const float> logits) const {
  std::vector<double> a(logits.begin(), logits.end());
  apply_penalties(a, params_, prompt_, generated_);
  return a;
}

std::vector<std::pair<int, double>> Sampler::candidates(std::span<const float> logits) const {
  if (logits.empty()) throw std::invalid_argument("sampler got empty logits");
  std::vector<double> a = adjusted(logits);
  const int V = static_cast<int>(a.size());
  // Higher score first; equal scores by lower id, so ties never depend on sort internals.
  const auto better = [&](int x, int y) { return a[x] > a[y] || (a[x] == a[y] && x < y); };
  if (params_.greedy()) {
    int best = 0;
    for (int i = 1; i < V; ++i) {
      if (better(i, best)) best = i;
    }
    return {{best, 1.0}};
  }
  for (double& v : a) v /= params_.temperature;
  std::vector<int> ids(static_cast<std::size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  if (params_.top_k > 0 && params_.top_k < V) {
    std::partial_sort(ids.begin(), ids.begin() + params_.top_k, ids.end(), better);
    ids.resize(static_cast<std::size_t>(params_.top_k));
  }
  double max = -INFINITY;
  for (int i : ids) max = std::max(max, a[i]);
  double total = 0;
  for (int i : ids) total += std::exp(a[i] - max);
  if (params_.top_p < 1.0f) {
    // The most likely tokens until their mass reaches top_p (at least one). Sorting the whole
    // vocabulary costs milliseconds and LM distributions are peaked, so sort a prefix of 64,
    // then 1024, and everything only when those do not hold enough mass.
    std::vector<std::pair<double, int>> scored;  // (score, id): contiguous for the sort
    scored.reserve(ids.size());
    for (int i : ids) scored.emplace_back(a[i], i);
    const auto higher = [](const auto& x, const auto& y) {
      return x.first > y.first || (x.first == y.first && x.second < y.second);
    };
    const double need = params_.top_p * total;
    std::size_t keep = 0;
    for (std::size_t k : {std::size_t{64}, std::size_t{1024}, scored.size()}) {
      k = std::min(k, scored.size());
      std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(k),
                        scored.end(), higher);
      double mass = 0;
      keep = 0;
      while (keep < k && mass < need) mass += std::exp(scored[keep++].first - max);
      if (mass >= need || k == scored.size()) break;
    }
    ids.resize(std::max<std::size_t>(keep, 1));
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = scored[i].second;
  }
  std::vector<std::pair<int, double>> out;
  out.reserve(ids.size());
  double sum = 0;
  for (int i : ids) {
    const double p = std::exp(a[i] - max);
    out.emplace_back(i, p);
    sum += p;
  }
  for (auto& c : out) c.second /= sum;
  return out;
}

int Sampler::sample(std::span<const float> logits) {
  int token;
  if (params_.greedy() || params_.top_k > 0 || params_.top_p < 1.0f) {
    const auto cands = candidates(logits);
    token = cands.size() == 1 ? cands[0].first : draw(cands);
  } else {
    token = draw_full(logits);
  }
  observe(token);
  return token;
}

int Sampler::draw(const std::vector<std::pair<int, double>>& cands) {
  const double u = uniform();
  double cum = 0;
  for (const auto& [id, p] : cands) {
    cum += p;
    if (u < cum) return id;
  }
  return cands.back().first;
}

int Sampler::draw_full(std::span<const float> logits) {
  // The whole vocabulary in id order, without sorting or per-call allocations.
  scratch_.assign(logits.begin(), logits.end());
  apply_penalties(scratch_, params_, prompt_, generated_);
  double max = -INFINITY;
  for (double v : scratch_) max = std::max(max, v);
  double sum = 0;
  const double inv_t = 1.0 / params_.temperature;
  for (double& v : scratch_) {
    v = std::exp((v - max) * inv_t);
    sum += v;
  }
  const double target = uniform() * sum;
  double cum = 0;
  for (std::size_t i = 0; i < scratch_.size(); ++i) {
    cum += scratch_[i];
    if (target < cum) return static_cast<int>(i);
  }
  return static_cast<int>(scratch_.size()) - 1;
}

}  // namespace writeup::generate

#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "writeup/generate/sampling_params.hpp"

namespace writeup::generate {

// Seed of sequence `index` of a request with seed `seed`: independent streams per sequence,
// the same on every build and machine.
std::uint64_t sequence_seed(std::uint64_t seed, int index);

// Picks tokens for one sequence from float32 logits, with its own generator. Deterministic:
// the same params, seed, index, prompt and logits give the same tokens on any platform
// (mt19937_64 and a hand-written uniform draw; no library distributions).
//
// Order of candidates: higher score first, equal scores by lower id (NaN scores count as -inf).
// Every setting costs O(V) per token: top-k by a heap of k (by selection past 256), top-p and the draw from a large
// kept set by a radix selection on the score whose floating-point decisions are checked
// against a rounding bound; only a decision within that bound sorts. The result is always the
// one a full sort with sequential sums in candidate order gives. The full-vocabulary buffers
// are per thread (sampler.cpp), so a Sampler stays small however many sequences run.
// SamplingParams::logit_bias is not applied here: the caller adds it to the logits it passes
// (engine::StepExecutor does, so that the reported log-probabilities include it).
class Sampler {
 public:
  Sampler(const SamplingParams& params, int index, std::span<const int> prompt);

  // Chooses the next token and records it (for penalties).
  int sample(std::span<const float> logits);
  // Records a token chosen elsewhere (e.g. forced), for penalties.
  void observe(int token);

  // Candidate ids that survive penalties, top-k and top-p, with their probabilities
  // (renormalised): most likely first when top-k or top-p apply, else in id order.
  // sample() draws from exactly this set (without building it: this call sorts the kept set).
  std::vector<std::pair<int, double>> candidates(std::span<const float> logits) const;

 private:
  void scores(std::span<const float> logits, std::vector<double>& a) const;  // penalties, NaN -> -inf
  int draw_full(std::span<const float> logits);  // temperature only: the whole vocabulary in id order
  double uniform();  // [0, 1) with 53 random bits

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::unordered_set<int> seen_;           // prompt + generated tokens (repetition penalty)
  std::unordered_map<int, int> generated_;  // token -> count
};

}  // namespace writeup::generate

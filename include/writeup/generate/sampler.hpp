#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "writeup/generate/sampling_params.hpp"

namespace writeup::generate {

// Seed of sequence `index` of a request with seed `seed`: independent streams per sequence,
// the same on every build and machine.
std::uint64_t sequence_seed(std::uint64_t seed, int index);

// Picks tokens for one sequence from float32 logits, with its own generator. Deterministic:
// the same params, seed, index, prompt and logits give the same tokens on any platform
// (mt19937_64 and a hand-written uniform draw; no library distributions).
class Sampler {
 public:
  Sampler(const SamplingParams& params, int index, std::span<const int> prompt);

  // Chooses the next token and records it (for penalties).
  int sample(std::span<const float> logits);
  // Records a token chosen elsewhere (e.g. forced), for penalties.
  void observe(int token);

  // Candidate ids that survive penalties, top-k and top-p, with their probabilities
  // (renormalised): most likely first when top-k or top-p sorted them, else in id order.
  // sample() draws from exactly this set.
  std::vector<std::pair<int, double>> candidates(std::span<const float> logits) const;

 private:
  std::vector<double> adjusted(std::span<const float> logits) const;
  int draw(const std::vector<std::pair<int, double>>& candidates);  // from a truncated list
  int draw_full(std::span<const float> logits);                     // from the whole vocabulary
  double uniform();  // [0, 1) with 53 random bits

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<int> prompt_;                    // for the repetition penalty
  std::unordered_map<int, int> generated_;     // token -> count
  std::vector<double> scratch_;                // full-vocabulary weights (reused)
};

}  // namespace writeup::generate

// writeup-bench sample [--vocab 50257] [--tokens N] [--runs N] [--rows N] [--setting NAME]
// [--shape flat|peaked]: the sampler alone, median microseconds per sampled token for each
// setting the server offers, over synthetic rows of a real-size vocabulary: "flat" (what a
// random-weight model or a high temperature gives: every token has some mass, so top-p keeps
// most of the vocabulary) and "peaked" (a trained model's shape: a few dozen tokens hold most
// of the mass). The checksum of the drawn tokens is equal across builds that draw the same.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_args.hpp"
#include "stats.hpp"
#include "writeup/generate/sampler.hpp"

namespace writeup::tools {
namespace {

using Clock = std::chrono::steady_clock;
using generate::SamplingParams;

struct Setting {
  const char* name;
  SamplingParams params;
};

SamplingParams make(float temperature, int top_k, float top_p, float repetition_penalty = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.repetition_penalty = repetition_penalty;
  return p;
}

std::vector<Setting> settings() {
  return {
      {"greedy", make(0.0f, 0, 1.0f)},
      {"temperature_1_full", make(1.0f, 0, 1.0f)},
      {"top_k_40", make(1.0f, 40, 1.0f)},
      {"top_p_0.9", make(1.0f, 0, 0.9f)},
      {"top_k_40_top_p_0.9", make(1.0f, 40, 0.9f)},
      {"repetition_1.2_top_p_0.9", make(1.0f, 0, 0.9f, 1.2f)},
      // The writeup editor's defaults: temperature 0.7, top_k 10, top_p 0 (the protocol's "off").
      {"editor_defaults", make(0.7f, 10, 1.0f)},
  };
}

// `count` rows of `vocab` logits. Flat: N(0, 1). Peaked: N(0, 2) with 40 tokens raised by 8..14.
std::vector<std::vector<float>> rows(bool peaked, int vocab, int count, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, peaked ? 2.0f : 1.0f);
  std::uniform_int_distribution<int> id(0, vocab - 1);
  std::uniform_real_distribution<float> boost(8.0f, 14.0f);
  std::vector<std::vector<float>> out(static_cast<std::size_t>(count));
  for (auto& row : out) {
    row.resize(static_cast<std::size_t>(vocab));
    for (auto& l : row) l = normal(rng);
    if (peaked) {
      for (int i = 0; i < 40; ++i) row[static_cast<std::size_t>(id(rng))] += boost(rng);
    }
  }
  return out;
}

}  // namespace

int bench_sample(int argc, char** argv) {
  const CliArgs args(argc, argv, {"vocab", "tokens", "runs", "rows", "setting", "shape"}, {});
  const std::string only_setting = args.get("setting", ""), only_shape = args.get("shape", "");
  const int vocab = args.get_int("vocab", 50257);
  const int tokens = args.get_int("tokens", 200);
  const int runs = args.get_int("runs", 5);
  const int row_count = args.get_int("rows", 16);
  if (vocab < 1 || tokens < 1 || runs < 1 || row_count < 1) {
    throw std::invalid_argument("--vocab, --tokens, --runs and --rows must be positive");
  }
  std::vector<int> prompt;  // 200 prompt tokens, so the repetition penalty has work
  for (int i = 0; i < 200; ++i) prompt.push_back((i * 7919) % vocab);
  for (const bool peaked : {false, true}) {
    if (!only_shape.empty() && only_shape != (peaked ? "peaked" : "flat")) continue;
    const auto data = rows(peaked, vocab, row_count, peaked ? 2u : 1u);
    for (const auto& s : settings()) {
      if (!only_setting.empty() && only_setting != s.name) continue;
      std::vector<double> per_token_us;
      std::uint64_t checksum = 0;  // of every draw: equal across builds when the tokens are
      for (int r = 0; r < runs; ++r) {
        generate::Sampler sampler(s.params, r, prompt);
        const auto t = Clock::now();
        for (int i = 0; i < tokens; ++i) {
          const int token = sampler.sample(data[static_cast<std::size_t>(i % row_count)]);
          checksum = checksum * 1000003u + static_cast<std::uint64_t>(token);
        }
        per_token_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t).count() / tokens);
      }
      std::printf("{\"bench\":\"sample\",\"rows\":\"%s\",\"setting\":\"%s\",\"vocab\":%d,\"tokens\":%d,"
                  "\"runs\":%d,\"median_us_per_token\":%.1f,\"max_us_per_token\":%.1f,\"checksum\":%llu}\n",
                  peaked ? "peaked" : "flat", s.name, vocab, tokens, runs, median(per_token_us),
                  percentile(per_token_us, 1.0), static_cast<unsigned long long>(checksum));
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace writeup::tools
